"""Reads of the stations app; tenant first."""

from __future__ import annotations

from decimal import Decimal

from django.db.models import Count, Prefetch, Q, QuerySet, Sum
from django.utils import timezone

from portal.models import Organization
from stations.models import (
    ChargingSession,
    Connector,
    SessionStatus,
    Station,
    StationCommand,
    UnknownChargePoint,
)


def stations_for(organization: Organization) -> QuerySet[Station]:
    """With connectors prefetched (2 queries whatever the count)."""
    return Station.objects.for_tenant(organization).prefetch_related(
        Prefetch("connectors", queryset=Connector.objects.order_by("connector_id"))
    )


def sessions_for(organization: Organization) -> QuerySet[ChargingSession]:
    return ChargingSession.objects.for_tenant(organization).select_related("station")


def commands_for(organization: Organization) -> QuerySet[StationCommand]:
    return StationCommand.objects.for_tenant(organization).select_related("station", "requested_by")


def unknown_identity(identity: str) -> UnknownChargePoint | None:
    """Connection attempts of exactly this identity, for the owner who has just registered it.

    Unknown identities belong to no tenant, so owners never get a list of them (it would show
    other owners' unregistered stations and their addresses); platform admins see them all in
    Django admin."""
    return UnknownChargePoint.objects.filter(identity__iexact=identity).first()


def dashboard_figures(organization: Organization) -> dict[str, int | Decimal]:
    """Two queries."""
    stations = Station.objects.for_tenant(organization).aggregate(
        total=Count("id"), online=Count("id", filter=Q(online=True))
    )
    # Today as the portal's users count it (TIME_ZONE), not since midnight UTC: in the
    # first hour or two of a Swiss day that took in most of the day before.
    since = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
    sessions = ChargingSession.objects.for_tenant(organization).aggregate(
        active=Count("id", filter=Q(status=SessionStatus.ACTIVE)),
        energy_today=Sum("energy_wh", filter=Q(started_at__gte=since)),
    )
    return {
        "total": stations["total"],
        "online": stations["online"],
        "active": sessions["active"],
        "energy_today_kwh": Decimal(sessions["energy_today"] or 0) / 1000,
    }
