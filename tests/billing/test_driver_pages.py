"""The driver's pages: cards, vehicles, stations open to them, app start and stop, sessions
and their CSV; and that a driver never reaches another driver's rows (404)."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from billing import pricing, selectors
from billing.authorization import tariff_snapshot
from billing.models import AppTag, RfidCard, Vehicle
from stations.models import AuthMode, ChargingSession, Connector, StationCommand
from tests.billing.factories import (
    AccessRuleFactory,
    ConnectorAccessFactory,
    SpecialUserFactory,
    TariffFactory,
    UserGroupFactory,
    UserGroupMemberFactory,
    VehicleFactory,
)
from tests.factories import UserFactory
from tests.stations.factories import RfidCardFactory, StationFactory

pytestmark = pytest.mark.django_db

# Monday 1 June 2026, 10:00 in Zurich (CEST) and 20:00 in Zurich.
MONDAY_10 = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)
MONDAY_20 = datetime(2026, 6, 1, 18, 0, tzinfo=UTC)


def open_connector(org, number=1, *, access="public", tariff=None, station=None, **station_kw):
    """A connector of a (new) station of ``org`` with access settings."""
    station = station or StationFactory(organization=org, connectors=2, **station_kw)
    connector = Connector.objects.get(station=station, connector_id=number)
    return ConnectorAccessFactory(connector=connector, access=access, tariff=tariff)


def make_session(station, user, *, connector_id=1, energy_wh=10_000, minutes=60, running=False):
    started = timezone.now() - timedelta(minutes=minutes)
    snapshot = tariff_snapshot(
        pricing.Tariff(per_kwh=Decimal("0.50"), per_hour=Decimal("1.00")),
        pricing.TariffSource.PUBLIC,
    )
    return ChargingSession.objects.create(
        station=station,
        connector_id=connector_id,
        id_tag="TAG",
        user_id_ref=user.pk if user else None,
        meter_start=0,
        energy_wh=energy_wh,
        started_at=started,
        stopped_at=None if running else started + timedelta(minutes=minutes),
        station_started_at=started,
        status="active" if running else "completed",
        tariff_snapshot=snapshot,
        idempotency_key=uuid.uuid4().hex,
    )


# --- Cards ---------------------------------------------------------------------------------


class TestCards:
    def test_add_normalizes_uid(self, tenants):
        client = tenants.client(tenants.driver)
        r = client.post("/me/cards/", {"uid": " de:ad:be:ef ", "label": "key fob"})
        assert r.status_code == 302
        card = RfidCard.objects.get(user=tenants.driver)
        assert (card.uid, card.label, card.organization_id) == ("DEADBEEF", "key fob", None)
        page = client.get("/me/cards/")
        assert b"DEADBEEF" in page.content and b"key fob" in page.content

    def test_malformed_uid_is_refused_with_the_rule(self, tenants):
        r = tenants.client(tenants.driver).post("/me/cards/", {"uid": "xyz!"})
        assert r.status_code == 400
        assert "hexadecimal" in r.content.decode()
        assert not RfidCard.objects.exists()

    def test_duplicate_uid_does_not_say_whose(self, tenants):
        other = UserFactory(username="secretsam", first_name="Samantha")
        RfidCardFactory(organization=None, user=other, uid="CAFEBABE")
        r = tenants.client(tenants.driver).post("/me/cards/", {"uid": "ca-fe-ba-be"})
        assert r.status_code == 400
        text = r.content.decode()
        assert "This card is already registered." in text
        assert "secretsam" not in text and "Samantha" not in text
        assert RfidCard.objects.get(uid="CAFEBABE").user == other

    def test_duplicate_of_an_organization_card_is_refused_too(self, tenants):
        RfidCardFactory(organization=tenants.a, user=None, uid="0A0B0C0D")
        r = tenants.client(tenants.driver).post("/me/cards/", {"uid": "0a0b0c0d"})
        assert r.status_code == 400
        assert "Alpha" not in r.content.decode()

    def test_block_unblock_and_remove_own_card(self, tenants):
        card = RfidCardFactory(organization=None, user=tenants.driver, uid="11223344")
        client = tenants.client(tenants.driver)
        client.post(f"/me/cards/{card.pk}/", {"action": "block"})
        card.refresh_from_db()
        assert card.blocked
        client.post(f"/me/cards/{card.pk}/", {"action": "unblock"})
        card.refresh_from_db()
        assert not card.blocked
        client.post(f"/me/cards/{card.pk}/", {"action": "remove"})
        assert not RfidCard.objects.filter(pk=card.pk).exists()

    def test_issued_card_can_be_blocked_not_removed(self, tenants):
        card = RfidCardFactory(organization=tenants.a, user=tenants.driver, uid="55667788")
        client = tenants.client(tenants.driver)
        r = client.post(f"/me/cards/{card.pk}/", {"action": "remove"}, follow=True)
        assert "issued by a station owner" in r.content.decode()
        assert RfidCard.objects.filter(pk=card.pk).exists()
        client.post(f"/me/cards/{card.pk}/", {"action": "block"})
        card.refresh_from_db()
        assert card.blocked

    def test_another_drivers_card_is_404(self, tenants):
        card = RfidCardFactory(organization=None, user=UserFactory(), uid="99887766")
        client = tenants.client(tenants.driver)
        for action in ("remove", "block"):
            assert client.post(f"/me/cards/{card.pk}/", {"action": action}).status_code == 404
        card.refresh_from_db()
        assert not card.blocked
        assert b"99887766" not in client.get("/me/cards/").content

    def test_login_required(self, tenants):
        for url in ("/me/charging/", "/me/cards/", "/me/vehicles/", "/me/stations/"):
            r = tenants.client(None).get(url)
            assert r.status_code == 302 and "/accounts/login/" in r["Location"]


# --- Vehicles ------------------------------------------------------------------------------


class TestVehicles:
    def test_add_normalizes_and_explains_car_detection(self, tenants):
        client = tenants.client(tenants.driver)
        assert "auto car detection" in client.get("/me/vehicles/").content.decode()
        r = client.post("/me/vehicles/", {"car_id": "wvw-zzz 1k", "label": "Golf"})
        assert r.status_code == 302
        assert Vehicle.objects.get(user=tenants.driver).car_id == "WVWZZZ1K"

    def test_bad_and_duplicate_car_ids(self, tenants):
        client = tenants.client(tenants.driver)
        r = client.post("/me/vehicles/", {"car_id": "ab"})
        assert r.status_code == 400 and "4 to 20 letters or digits" in r.content.decode()
        VehicleFactory(user=UserFactory(username="zelda"), car_id="CAR12345")
        r = client.post("/me/vehicles/", {"car_id": "car12345"})
        assert r.status_code == 400
        assert "already registered" in r.content.decode()
        assert "zelda" not in r.content.decode()
        assert not Vehicle.objects.filter(user=tenants.driver).exists()

    def test_remove_own_only(self, tenants):
        mine = VehicleFactory(user=tenants.driver)
        theirs = VehicleFactory()
        client = tenants.client(tenants.driver)
        assert client.post(f"/me/vehicles/{theirs.pk}/remove/").status_code == 404
        assert Vehicle.objects.filter(pk=theirs.pk).exists()
        assert client.post(f"/me/vehicles/{mine.pk}/remove/").status_code == 302
        assert not Vehicle.objects.filter(pk=mine.pk).exists()


# --- Stations open to the driver -----------------------------------------------------------


class TestStationsOpen:
    @pytest.fixture
    def world(self, tenants):
        public_tariff = TariffFactory(organization=tenants.b, per_kwh=Decimal("0.45"))
        public = open_connector(tenants.b, 1, tariff=public_tariff, name="Public One")
        private = open_connector(tenants.a, 2, access="private", station=public.connector.station)
        limited_special = open_connector(tenants.a, access="limited", name="Limited Special")
        public_a = open_connector(
            tenants.a, tariff=TariffFactory(organization=tenants.a, per_kwh=Decimal("0.60"))
        )
        mine = TariffFactory(organization=tenants.a, per_kwh=Decimal("0.30"))
        SpecialUserFactory(organization=tenants.a, user=tenants.driver, tariff=mine)
        limited_other = open_connector(tenants.b, access="limited", name="Limited Beta")
        ruled = open_connector(tenants.b, access="public", name="Ruled Beta")
        AccessRuleFactory(
            connector_access=ruled,
            weekdays="12345",
            start_time=time(7),
            end_time=time(18),
            access="limited",
        )
        elsewhere = open_connector(
            tenants.b,
            name="Third Party",
            auth_mode=AuthMode.THIRD_PARTY,
            third_party_url="wss://other.example/ocpp",
        )
        return locals()

    def codes(self, user, now):
        return {o.code: o for o in selectors.connectors_open_to(user, now)}

    def test_public_and_special_in_private_and_limited_out(self, tenants, world):
        found = self.codes(tenants.driver, MONDAY_10)
        assert world["public"].code in found
        assert world["limited_special"].code in found
        for excluded in ("private", "limited_other", "ruled", "elsewhere"):
            assert world[excluded].code not in found, excluded
        assert found[world["public"].code].price.tariff.per_kwh == Decimal("0.45")
        special = found[world["limited_special"].code].price
        assert special.tariff.per_kwh == Decimal("0.30")
        assert special.source == pricing.TariffSource.INDIVIDUAL
        # A special user's own price applies at the owner's public connectors too.
        assert found[world["public_a"].code].price.tariff.per_kwh == Decimal("0.30")
        assert found[world["public_a"].code].price.public.per_kwh == Decimal("0.60")

    def test_time_rules_in_the_station_time_zone(self, tenants, world):
        assert world["ruled"].code not in self.codes(tenants.driver, MONDAY_10)
        evening = self.codes(tenants.driver, MONDAY_20)
        assert world["ruled"].code in evening
        assert evening[world["ruled"].code].price.access == "public"

    def test_group_price_opens_limited(self, tenants, world):
        group = UserGroupFactory(
            organization=tenants.b,
            tariff=TariffFactory(organization=tenants.b, per_kwh=Decimal("0.25")),
        )
        UserGroupMemberFactory(group=group, user=tenants.driver)
        found = self.codes(tenants.driver, MONDAY_10)
        price = found[world["limited_other"].code].price
        assert (price.tariff.per_kwh, price.source) == (Decimal("0.25"), "group")
        assert world["ruled"].code in found  # limited now, but the driver is in a group

    def test_page_shows_status_and_price(self, tenants, world, django_assert_max_num_queries):
        station = world["public"].connector.station
        station.online = True
        station.save(update_fields=["online"])
        Connector.objects.filter(pk=world["public"].connector.pk).update(status="Available")
        client = tenants.client(tenants.driver)
        with django_assert_max_num_queries(12):
            r = client.get("/me/stations/")
        text = r.content.decode()
        assert "Public One" in text and "0.45 CHF/kWh" in text and "Available" in text
        assert "Limited Special" in text and "0.30 CHF/kWh" in text and "(your price)" in text
        assert "Limited Beta" not in text and "Third Party" not in text


# --- App start and stop --------------------------------------------------------------------


@pytest.fixture
def online_public(tenants):
    access = open_connector(
        tenants.a, tariff=TariffFactory(organization=tenants.a), online=True, name="Street"
    )
    Connector.objects.filter(pk=access.connector.pk).update(status="Available")
    return access


class TestStartStop:
    def test_start_sends_remote_start_with_app_tag(self, tenants, online_public):
        client = tenants.client(tenants.driver)
        r = client.post("/me/start/", {"code": online_public.code})
        command = StationCommand.objects.get(action="RemoteStartTransaction")
        assert r.status_code == 302 and r["Location"].endswith(f"?command={command.pk}")
        assert command.payload == {
            "connectorId": 1,
            "idTag": AppTag.objects.get(user=tenants.driver).id_tag,
        }
        assert command.requested_by == tenants.driver
        page = client.get(r["Location"])
        assert 'data-status="pending"' in page.content.decode()
        fragment = client.get(f"/me/commands/{command.pk}/")
        assert b"Pending" in fragment.content

    def test_start_refused_where_not_allowed(self, tenants):
        private = open_connector(tenants.a, access="private", online=True)
        r = tenants.client(tenants.driver).post("/me/start/", {"code": private.code}, follow=True)
        assert "You may not charge at this connector." in r.content.decode()
        assert not StationCommand.objects.exists()

    def test_start_offline_station_says_so(self, tenants, online_public):
        station = online_public.connector.station
        station.online = False
        station.save(update_fields=["online"])
        r = tenants.client(tenants.driver).post(
            "/me/start/", {"code": online_public.code}, follow=True
        )
        assert "offline" in r.content.decode()
        assert not StationCommand.objects.exists()

    def test_unknown_code_is_404(self, tenants):
        assert (
            tenants.client(tenants.driver).post("/me/start/", {"code": "nope"}).status_code == 404
        )

    def test_stop_own_running_session(self, tenants, online_public):
        session = make_session(online_public.connector.station, tenants.driver, running=True)
        ChargingSession.objects.filter(pk=session.pk).update(power_w=7400.0, energy_wh=3250)
        client = tenants.client(tenants.driver)
        home = client.get("/me/charging/").content.decode()
        assert "Street" in home and "Stop charging" in home
        assert "7.4&nbsp;kW" in home and "3.25&nbsp;kWh" in home  # live power and energy
        r = client.post(f"/me/sessions/{session.pk}/stop/")
        command = StationCommand.objects.get(action="RemoteStopTransaction")
        assert command.payload == {"transactionId": session.pk}
        assert r["Location"].endswith(f"?command={command.pk}")

    def test_cannot_stop_another_drivers_session(self, tenants, online_public):
        theirs = make_session(online_public.connector.station, UserFactory(), running=True)
        client = tenants.client(tenants.driver)
        assert client.post(f"/me/sessions/{theirs.pk}/stop/").status_code == 404
        assert not StationCommand.objects.exists()
        assert b"Stop charging" not in client.get("/me/charging/").content

    def test_finished_session_cannot_be_stopped(self, tenants, online_public):
        done = make_session(online_public.connector.station, tenants.driver)
        r = tenants.client(tenants.driver).post(f"/me/sessions/{done.pk}/stop/", follow=True)
        assert "not a running session" in r.content.decode()
        assert not StationCommand.objects.exists()

    def test_another_drivers_command_is_404(self, tenants, online_public):
        other = UserFactory()
        tenants.client(other).post("/me/start/", {"code": online_public.code})
        command = StationCommand.objects.get()
        client = tenants.client(tenants.driver)
        assert client.get(f"/me/commands/{command.pk}/").status_code == 404
        assert client.get(f"/me/charging/?command={command.pk}").status_code == 404


# --- Sessions and CSV ----------------------------------------------------------------------


class TestSessions:
    def test_sessions_page_and_csv(self, tenants, django_assert_max_num_queries):
        station = StationFactory(organization=tenants.a, name="=Evil Name")
        mine = make_session(station, tenants.driver, energy_wh=10_000, minutes=60)
        theirs = make_session(station, UserFactory(), energy_wh=7_000)
        client = tenants.client(tenants.driver)
        with django_assert_max_num_queries(8):
            page = client.get("/me/sessions/").content.decode()
        # 10 kWh × 0.50 + 1 h × 1.00 = 6.00 CHF
        assert "6.00" in page and "10.00" in page and "1:00:00" in page
        r = client.get("/me/sessions.csv")
        assert r["Content-Type"] == "text/csv"
        rows = list(csv.DictReader(io.StringIO(r.content.decode())))
        assert [int(row["session_id"]) for row in rows] == [mine.pk]
        assert theirs.pk not in [int(row["session_id"]) for row in rows]
        row = rows[0]
        assert row["station"] == "'=Evil Name"  # not a formula in a spreadsheet
        assert (row["kwh"], row["duration"], row["price"], row["currency"]) == (
            "10.000",
            "1:00:00",
            "6.00",
            "CHF",
        )
        assert row["vat_percent"] == "8.1" and row["vat"] == "0.45"  # 6.00 − 6.00/1.081
        assert row["stopped"] and row["connector"] == "1"
