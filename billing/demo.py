"""Demo access and prices: tariffs, open connectors with a time rule, a special user, a user
group, a vehicle, the owner's invoice details and the platform commission. Idempotent."""

from __future__ import annotations

from datetime import time
from decimal import Decimal
from typing import Any

from billing.models import (
    AccessRule,
    BillingProfile,
    ConnectorAccess,
    PlatformSettings,
    SpecialUser,
    Tariff,
    UserGroup,
    UserGroupMember,
    Vehicle,
)
from stations.models import Connector

TARIFFS = {
    # name: (per kWh, per hour connected)
    "Public": (Decimal("0.45"), Decimal("1.00")),
    "Neighbours": (Decimal("0.30"), Decimal("0")),
    "Staff": (Decimal("0.20"), Decimal("0")),
}
# charge point id → (access per connector, auto car detection)
ACCESS = {
    "DEMO-CP-001": (["public", "public"], False),
    # Connector 1: public, but only staff and neighbours on weekdays during office hours.
    "DEMO-CP-002": (["office-hours", "public"], False),
    "DEMO-CP-003": (["private"], False),
    "DEMO-CP-004": (["public", "public"], True),
}


def seed(context: Any) -> None:
    organization = context.organization
    tariffs = {
        name: Tariff.objects.update_or_create(
            organization=organization,
            name=name,
            defaults={"per_kwh": per_kwh, "per_hour": per_hour, "currency": "CHF"},
        )[0]
        for name, (per_kwh, per_hour) in TARIFFS.items()
    }
    for identity, (levels, car_detection) in ACCESS.items():
        connectors = Connector.objects.filter(station__charge_point_id=identity).select_related(
            "station"
        )
        for connector in connectors:
            level = levels[min(connector.connector_id, len(levels)) - 1]
            access, _ = ConnectorAccess.objects.update_or_create(
                connector=connector,
                defaults={
                    "access": "public" if level == "office-hours" else level,
                    "tariff": tariffs["Public"],
                },
            )
            if level == "office-hours":
                AccessRule.objects.update_or_create(
                    connector_access=access,
                    position=0,
                    defaults={
                        "weekdays": "12345",
                        "start_time": time(7),
                        "end_time": time(18),
                        "access": "limited",
                    },
                )
            connector.station.auto_car_detection = car_detection
            connector.station.save(update_fields=["auto_car_detection"])

    dario = context.users.get("dario")
    if dario is not None:
        SpecialUser.objects.update_or_create(
            organization=organization,
            user=dario,
            defaults={"tariff": None, "note": "Neighbour, Bahnhofstrasse 3"},
        )
        group, _ = UserGroup.objects.update_or_create(
            organization=organization, name="Neighbours", defaults={"tariff": tariffs["Neighbours"]}
        )
        UserGroupMember.objects.get_or_create(group=group, user=dario)
        Vehicle.objects.update_or_create(
            car_id="5C0E8B112233", defaults={"user": dario, "label": "Dario's e-Golf"}
        )
    UserGroup.objects.update_or_create(
        organization=organization, name="Staff", defaults={"tariff": tariffs["Staff"]}
    )
    BillingProfile.objects.update_or_create(
        organization=organization,
        defaults={
            "legal_name": "Demo Charging AG",
            "address": "Bahnhofstrasse 1\n8001 Zürich\nSwitzerland",
            "vat_id": "CHE-123.456.789 MWST",
        },
    )
    platform = PlatformSettings.load()
    if platform.commission_percent == 0:
        platform.commission_percent = Decimal("5")
        platform.save()
    _history(organization, context)


# (days ago, charge point, connector, idTag, kWh, hours connected)
HISTORY = [
    (40, "DEMO-CP-001", 1, "04A1B2C3D4", "18.4", "2.5"),
    (36, "DEMO-CP-004", 2, "5C0E8B112233", "31.2", "4.0"),
    (33, "DEMO-CP-001", 2, "04C0FFEE01", "12.0", "1.5"),
    (29, "DEMO-CP-002", 2, "04E5F60718", "9.6", "1.0"),
    (24, "DEMO-CP-003", 1, "04C0FFEE02", "22.1", "3.0"),
    (20, "DEMO-CP-001", 1, "04A1B2C3D4", "27.5", "3.5"),
    (12, "DEMO-CP-004", 1, "5C0E8B112233", "14.8", "2.0"),
    (6, "DEMO-CP-002", 1, "04A1B2C3D4", "7.3", "0.75"),
    (2, "DEMO-CP-001", 2, "04C0FFEE03", "16.9", "2.25"),
]


def _history(organization: Any, context: Any) -> None:
    """Finished sessions of the last weeks, priced by the real decision at their start, and
    last month's invoices, so that sessions, reports and invoices have something to show."""
    from datetime import timedelta

    from django.utils import timezone

    from billing.authorization import authorize
    from billing.invoices import invoices_issue
    from stations.authorization import AuthorizationRequest
    from stations.models import ChargingSession, Station

    now = timezone.now().replace(minute=0, second=0, microsecond=0)
    for days, identity, connector_id, tag, kwh, hours in HISTORY:
        key = f"demo-history-{identity}-{days}-{connector_id}"
        station = Station.objects.filter(charge_point_id=identity).first()
        if station is None or ChargingSession.objects.filter(idempotency_key=key).exists():
            continue
        start = (now - timedelta(days=days)).replace(hour=8 + days % 10)
        decision = authorize(
            AuthorizationRequest(
                organization_id=station.organization_id,
                station_id=station.pk,
                charge_point_id=identity,
                connector_id=connector_id,
                id_tag=tag,
                time=start,
            )
        )
        energy = int(Decimal(kwh) * 1000)
        stop = start + timedelta(seconds=int(Decimal(hours) * 3600))
        ChargingSession.objects.create(
            station=station,
            connector_id=connector_id,
            id_tag=tag,
            auth_status=decision.status,
            user_id_ref=decision.user_id,
            card_id_ref=decision.card_id,
            tariff_snapshot=decision.tariff,
            status="completed",
            meter_start=100_000,
            meter_stop=100_000 + energy,
            energy_wh=energy,
            last_meter_wh=100_000 + energy,
            started_at=start,
            stopped_at=stop,
            station_started_at=start,
            station_stopped_at=stop,
            start_received_at=start,
            stop_received_at=stop,
            stop_reason="EVDisconnected",
            idempotency_key=key,
        )
    first_of_month = timezone.localtime(now).replace(day=1)
    last_month = first_of_month - timedelta(days=1)
    invoices_issue(organization=organization, year=last_month.year, month=last_month.month)
