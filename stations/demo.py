"""Demo stations with known identities and passwords (the demo runner starts simulated
stations with these) and RFID cards for the demo users. Idempotent."""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from stations.credentials import station_password_hash
from stations.models import Connector, Station

# (charge_point_id, OCPP password, connectors)
DEMO_STATIONS: list[tuple[str, str, int]] = [
    ("DEMO-CP-001", "demo-station-pass-001", 2),
    ("DEMO-CP-002", "demo-station-pass-002", 2),
    ("DEMO-CP-003", "demo-station-pass-003", 1),
    ("DEMO-CP-004", "demo-station-pass-004", 2),
]
# (uid, account name of the holder or "" for the organization's own card, label)
DEMO_CARDS: list[tuple[str, str, str]] = [
    ("04A1B2C3D4", "dario", "Dario's card"),
    ("04E5F60718", "dario", "Dario's spare card"),
    ("0499AABBCC", "olivia", "Olivia's card"),
    # The organization's own cards (no holder): pool cars, charge free wherever it may.
    ("04C0FFEE01", "", "Pool car 1"),
    ("04C0FFEE02", "", "Pool car 2"),
    ("04C0FFEE03", "", "Pool car 3"),
]


def seed(context: Any) -> None:
    organization = context.organization
    for index, (identity, password, connectors) in enumerate(DEMO_STATIONS, start=1):
        station, _ = Station.objects.update_or_create(
            charge_point_id=identity,
            defaults={
                "organization": organization,
                "name": f"Demo station {index}",
                "password_hash": station_password_hash(password),
                "password_set_at": timezone.now(),
            },
        )
        for n in range(1, connectors + 1):
            Connector.objects.get_or_create(station=station, connector_id=n)
        if not station.display_payload:
            _demo_display(station, index)
    from importlib import import_module

    try:  # cards belong to billing; stations must not import it at module level
        RfidCard = import_module("billing.models").RfidCard
    except ModuleNotFoundError:  # pragma: no cover
        return
    for uid, account, label in DEMO_CARDS:
        RfidCard.objects.update_or_create(
            uid=uid,
            defaults={
                "organization": organization,
                "user": context.users.get(account),
                "label": label,
                "blocked": False,
            },
        )


def _demo_display(station: Station, index: int) -> None:
    """A personalised display per demo station (stored only: the simulated station gets it
    when the owner presses "Send again"; every demo station answers DisplayImage)."""
    from stations import display_image

    designs = list(display_image.DESIGNS)
    if index == 1:
        image, source = display_image.name_image(station.label), "name"
    else:
        key = designs[(index - 2) % len(designs)]
        image, source = display_image.design_image(key), f"design:{key}"
    station.display_source = source
    station.display_payload = image.station_payload()
    station.display_notes = list(image.notes)
    station.display_updated_at = timezone.now()
    station.save(
        update_fields=["display_source", "display_payload", "display_notes", "display_updated_at"]
    )
