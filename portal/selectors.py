"""Reads for organizations, members and invitations. Tenant first."""

from __future__ import annotations

from django.db.models import QuerySet
from django.utils import timezone

from portal.models import Invitation, Membership, Organization, User


def memberships_of_user(user: User) -> QuerySet[Membership]:
    return Membership.objects.filter(user=user).select_related("organization")


def organizations_of_user(user: User) -> QuerySet[Organization]:
    return Organization.objects.filter(memberships__user=user).order_by("name")


def members(organization: Organization) -> QuerySet[Membership]:
    return Membership.objects.for_tenant(organization).select_related("user")


def invitations_open(organization: Organization) -> QuerySet[Invitation]:
    return (
        Invitation.objects.for_tenant(organization)
        .filter(accepted_at__isnull=True, expires_at__gt=timezone.now())
        .select_related("invited_by")
    )


def landing_organization(user: User) -> Organization | None:
    """The organization a user lands in after login: the last used one, else the first."""
    if user.last_organization_id:
        found = organizations_of_user(user).filter(pk=user.last_organization_id).first()
        if found:
            return found
    return organizations_of_user(user).first()
