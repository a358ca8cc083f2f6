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
