"""Tenant scoping, enforced here and nowhere else.

The tenant is the organization named by the ``org`` slug in the URL (pages ``/o/<org>/...``,
API ``/api/v1/organizations/<org>/...``). It is resolved once per request from the
authenticated user's memberships (session or API token alike); an organization the user is
not a member of is a 404, indistinguishable from one that does not exist. Tenant-owned
models use ``portal.querysets.TenantQuerySet`` and declare ``tenant_path`` (the lookup to
their organization), and every view or viewset reads them through ``for_tenant``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib.auth.mixins import LoginRequiredMixin
from django.core.exceptions import PermissionDenied
from django.db import models
from django.http import Http404, HttpRequest, HttpResponseBase
from rest_framework import permissions

from portal.models import Membership, Organization, Role, User

if TYPE_CHECKING:
    from django.contrib.auth.models import AnonymousUser

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def membership_for(user: User | AnonymousUser, org_slug: str) -> Membership:
    """The user's membership in the organization with this slug, or 404."""
    if not user.is_authenticated:
        raise Http404
    try:
        return Membership.objects.select_related("organization").get(
            user=user, organization__slug=org_slug
        )
    except Membership.DoesNotExist as exc:
        raise Http404("No such organization.") from exc


class OrgViewMixin(LoginRequiredMixin):
    """For pages under ``/o/<org>/``: resolves ``self.membership`` and ``self.organization``.

    ``read_role`` guards safe methods, ``write_role`` the others; a member below the role gets
    403 (they know the organization exists), a non-member 404.
    """

    read_role: str = Role.VIEWER
    write_role: str = Role.MANAGER
    membership: Membership
    organization: Organization

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if not request.user.is_authenticated:
            return self.handle_no_permission()
        self.membership = membership_for(request.user, kwargs["org"])
        self.organization = self.membership.organization
        needed = self.read_role if request.method in SAFE_METHODS else self.write_role
        if not self.membership.has_role(needed):
            raise PermissionDenied("Your role does not allow this.")
        remember_organization(request.user, self.organization)
        return super().dispatch(request, *args, **kwargs)

    def tenant_queryset(self, model: type[models.Model]) -> models.QuerySet:
        return model.objects.for_tenant(self.organization)

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)  # type: ignore[misc]
        context.update(membership=self.membership, organization=self.organization)
        return context


def remember_organization(user: User, organization: Organization) -> None:
    """Land the user in the organization they used last (one UPDATE only when it changes)."""
    if user.last_organization_id != organization.id:
        User.objects.filter(pk=user.pk).update(last_organization=organization)
        user.last_organization_id = organization.id


class OrgRolePermission(permissions.BasePermission):
    """DRF permission that resolves the tenant from the ``org`` URL kwarg (404 for outsiders)
    and checks the member's role: ``view.read_role`` for safe methods, ``view.write_role``
    (or ``view.write_roles[action]``) for the others."""

    message = "Your role in this organization does not allow this."

    def has_permission(self, request: Any, view: Any) -> bool:
        membership = membership_for(request.user, view.kwargs["org"])
        view.membership = membership
        view.organization = membership.organization
        if request.method in SAFE_METHODS:
            needed = getattr(view, "read_role", Role.VIEWER)
        else:
            needed = getattr(view, "write_roles", {}).get(
                getattr(view, "action", None), getattr(view, "write_role", Role.MANAGER)
            )
        return membership.has_role(needed)
