"""The tenant-scoped queryset every tenant-owned model uses (see portal/tenancy.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.db import models

if TYPE_CHECKING:
    from portal.models import Organization


class TenantQuerySet(models.QuerySet):
    """``tenant_path`` on the model names the lookup from the row to its organization."""

    def for_tenant(self, organization: Organization) -> TenantQuerySet:
        path = getattr(self.model, "tenant_path", "organization")
        return self.filter(**{path: organization})
