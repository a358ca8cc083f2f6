"""The stations panel of the organization dashboard."""

from __future__ import annotations

from django.http import HttpRequest
from django.template.loader import render_to_string

from portal.models import Organization
from stations import selectors


def dashboard_panel(request: HttpRequest, organization: Organization) -> str:
    return render_to_string(
        "stations/_dashboard_panel.html",
        {
            "organization": organization,
            "figures": selectors.dashboard_figures(organization),
        },
        request=request,
    )
