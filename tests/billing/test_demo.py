"""The demo's access and prices: seeded idempotently and decided as the README describes."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.core.management import call_command

from billing.authorization import authorize, snapshot_tariff
from billing.models import ConnectorAccess, SpecialUser, Tariff, UserGroup, Vehicle
from stations.authorization import AuthorizationRequest
from stations.models import Station

pytestmark = pytest.mark.django_db

WEDNESDAY_10 = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
WEDNESDAY_20 = datetime(2026, 12, 2, 19, 0, tzinfo=UTC)


def ask(identity, connector_id, tag, when=WEDNESDAY_10):
    station = Station.objects.get(charge_point_id=identity)
    return authorize(
        AuthorizationRequest(
            organization_id=station.organization_id,
            station_id=station.pk,
            charge_point_id=identity,
            connector_id=connector_id,
            id_tag=tag,
            time=when,
        )
    )


def test_demo_access_and_prices():
    call_command("seed_demo", stdout=io.StringIO())
    counts = [m.objects.count() for m in (Tariff, ConnectorAccess, SpecialUser, UserGroup)]
    call_command("seed_demo", stdout=io.StringIO())
    assert counts == [m.objects.count() for m in (Tariff, ConnectorAccess, SpecialUser, UserGroup)]
    assert Vehicle.objects.filter(user__username="dario").exists()

    dario, pool = "04A1B2C3D4", "04C0FFEE01"
    # Dario is in the Neighbours group: the group's price on public connectors.
    result = ask("DEMO-CP-001", 1, dario)
    assert result.accepted
    assert snapshot_tariff(result.tariff)[0].per_kwh == Decimal("0.30")
    # The private station: the organization's pool card yes, Dario no.
    assert ask("DEMO-CP-003", 1, pool).accepted
    assert ask("DEMO-CP-003", 1, dario).status == "Invalid"
    # Office hours on DEMO-CP-002 #1: special users only; Olivia's card is the owner's.
    assert ask("DEMO-CP-002", 1, dario).accepted
    # CarID on the station with auto car detection only.
    assert ask("DEMO-CP-004", 1, "5C0E8B112233").accepted
    assert ask("DEMO-CP-001", 1, "5C0E8B112233").status == "Invalid"


def test_demo_history_is_priced_and_invoiced_once():
    from billing.models import Invoice
    from billing.services import session_price
    from stations.models import ChargingSession

    call_command("seed_demo", stdout=io.StringIO())
    sessions = ChargingSession.objects.filter(idempotency_key__startswith="demo-history-")
    invoices = Invoice.objects.filter(organization__slug="demo")
    counts = (sessions.count(), invoices.count())
    call_command("seed_demo", stdout=io.StringIO())
    assert (sessions.count(), invoices.count()) == counts
    assert counts[0] >= 5 and counts[1] >= 1
    dario = sessions.filter(id_tag="04A1B2C3D4").first()
    assert dario.auth_status == "Accepted" and dario.tariff_snapshot["source"] == "group"
    pool = sessions.filter(id_tag__startswith="04C0FFEE").first()
    assert session_price(pool).price.total == 0 and session_price(pool).notional.total > 0
    for invoice in invoices:
        assert invoice.total == sum(line.total for line in invoice.lines.all())
