"""The organization's audit trail page (owners and managers)."""

from __future__ import annotations

from typing import Any

from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.http import urlencode
from django.views import View

from audit import selectors
from portal.models import Role
from portal.tenancy import OrgViewMixin

PAGE_SIZE = 50


class AuditTrailView(OrgViewMixin, View):
    """Changes newest first, filtered by object type and by person, 50 a page."""

    read_role = Role.MANAGER

    def get(self, request: HttpRequest, org: str) -> HttpResponse:
        object_type = request.GET.get("type", "")
        actor = request.GET.get("actor", "")
        entries = selectors.audit_entries(self.organization, object_type=object_type, actor=actor)
        page = Paginator(entries, PAGE_SIZE).get_page(request.GET.get("page"))
        query = urlencode(
            {key: value for key, value in (("type", object_type), ("actor", actor)) if value}
        )
        context: dict[str, Any] = {
            "organization": self.organization,
            "membership": self.membership,
            "page": page,
            "rows": selectors.present(list(page.object_list)),
            "type_choices": selectors.object_type_choices(),
            "actor_choices": selectors.actor_choices(self.organization),
            "selected_type": object_type,
            "selected_actor": actor,
            "query": query,
        }
        return render(request, "audit/trail.html", context)
