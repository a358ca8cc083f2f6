"""The base of every tenant-scoped API viewset: a subclass names its model and serializers and
gets a queryset already limited to the organization in the URL (404 for outsiders)."""

from __future__ import annotations

from typing import Any

from django.db import models
from rest_framework import viewsets

from portal.models import Membership, Organization, Role
from portal.tenancy import OrgRolePermission


class OrgScopedViewSet(viewsets.GenericViewSet):
    permission_classes = [OrgRolePermission]
    read_role: str = Role.VIEWER
    write_role: str = Role.MANAGER
    write_roles: dict[str, str] = {}
    model: type[models.Model]
    membership: Membership
    organization: Organization

    def get_queryset(self) -> models.QuerySet:
        if getattr(self, "swagger_fake_view", False):  # drf-spectacular schema generation
            return self.model.objects.none()
        return self.scope(self.model.objects.for_tenant(self.organization))

    def scope(self, queryset: models.QuerySet) -> models.QuerySet:
        """Hook for select_related / ordering; the tenant filter is already applied."""
        return queryset

    def get_serializer_context(self) -> dict[str, Any]:
        context = super().get_serializer_context()
        context["organization"] = getattr(self, "organization", None)
        return context
