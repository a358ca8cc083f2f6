"""Charging sessions built directly (no OCPP), with a frozen tariff, for invoices and reports."""

from __future__ import annotations

import itertools
import re
import zlib
from datetime import datetime, timedelta
from decimal import Decimal

from billing import pricing
from billing.authorization import tariff_snapshot
from portal.models import User
from stations.models import ChargingSession, Station

_keys = itertools.count(1)


def tariff(
    per_kwh: str = "0.50", per_hour: str = "0", currency: str = "CHF", vat: str = "8.1"
) -> pricing.Tariff:
    return pricing.Tariff(
        per_kwh=Decimal(per_kwh),
        per_hour=Decimal(per_hour),
        currency=currency,
        vat_percent=Decimal(vat),
    )


def make_session(
    station: Station,
    *,
    driver: User | None,
    started_at: datetime,
    energy_wh: int = 10_000,
    minutes: int = 60,
    price: pricing.Tariff | None = None,
    source: pricing.TariffSource = pricing.TariffSource.PUBLIC,
    notional: pricing.Tariff | None = None,
    connector_id: int = 1,
    status: str = "completed",
) -> ChargingSession:
    """A finished session (``status``) of ``driver`` at ``price`` (default 0.50 CHF/kWh)."""
    stopped = started_at + timedelta(minutes=minutes) if status != "active" else None
    return ChargingSession.objects.create(
        station=station,
        connector_id=connector_id,
        id_tag="X",
        meter_start=0,
        energy_wh=energy_wh,
        started_at=started_at,
        stopped_at=stopped,
        station_started_at=started_at,
        status=status,
        idempotency_key=f"test-{next(_keys)}",
        user_id_ref=driver.pk if driver else None,
        tariff_snapshot=tariff_snapshot(price or tariff(), source, notional=notional),
    )


def free_session(station: Station, *, driver: User | None, started_at: datetime, **kw):
    """A private (free) session whose notional value is at 0.50 CHF/kWh."""
    return make_session(
        station,
        driver=driver,
        started_at=started_at,
        price=pricing.FREE,
        source=pricing.TariffSource.PRIVATE,
        notional=tariff(),
        **kw,
    )


def pdf_text(data: bytes) -> str:
    """The content streams of a PDF made with a core font, inflated (text is in them)."""
    out = []
    for match in re.finditer(rb"stream\r?\n(.*?)\r?\nendstream", data, re.S):
        try:
            out.append(zlib.decompress(match[1]).decode("latin-1"))
        except zlib.error:
            out.append(match[1].decode("latin-1"))
    return "\n".join(out)
