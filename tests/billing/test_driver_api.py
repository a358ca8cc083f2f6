"""The driver's API under /api/v1/me/: cards, vehicles, stations open to them, sessions
(with CSV), start and stop, command results; another driver's rows are 404."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from billing.models import AppTag, RfidCard, Vehicle
from stations.models import Connector, StationCommand
from tests.billing.factories import TariffFactory, VehicleFactory
from tests.billing.test_driver_pages import make_session, open_connector
from tests.factories import UserFactory
from tests.stations.factories import RfidCardFactory, StationFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def online_public(tenants):
    access = open_connector(
        tenants.a,
        tariff=TariffFactory(organization=tenants.a, per_kwh=Decimal("0.45")),
        online=True,
        name="Street",
    )
    Connector.objects.filter(pk=access.connector.pk).update(status="Available")
    return access


def test_anonymous_is_refused(tenants):
    api = tenants.api(None)
    for url in ("/api/v1/me/cards/", "/api/v1/me/stations/", "/api/v1/me/sessions/"):
        assert api.get(url).status_code in (401, 403)


class TestCards:
    def test_add_list_block_remove(self, tenants):
        api = tenants.api(tenants.driver)
        r = api.post("/api/v1/me/cards/", {"uid": "de:ad:be:ef", "label": "fob"})
        assert r.status_code == 201, r.json()
        card = r.json()
        assert (card["uid"], card["issued_by"], card["blocked"]) == ("DEADBEEF", None, False)
        assert [c["uid"] for c in api.get("/api/v1/me/cards/").json()["results"]] == ["DEADBEEF"]
        r = api.patch(f"/api/v1/me/cards/{card['id']}/", {"blocked": True})
        assert r.status_code == 200 and r.json()["blocked"] is True
        r = api.patch(f"/api/v1/me/cards/{card['id']}/", {"expires_at": "2030-01-01T00:00:00Z"})
        assert r.json()["expires_at"].startswith("2030-01-01")
        assert api.delete(f"/api/v1/me/cards/{card['id']}/").status_code == 204
        assert not RfidCard.objects.exists()

    def test_malformed_and_duplicate_uid(self, tenants):
        api = tenants.api(tenants.driver)
        r = api.post("/api/v1/me/cards/", {"uid": "nothex"})
        assert r.status_code == 400 and r.json()["error"] == "invalid"
        assert "hexadecimal" in r.json()["detail"]
        RfidCardFactory(organization=None, user=UserFactory(username="quentin"), uid="CAFE0001")
        r = api.post("/api/v1/me/cards/", {"uid": "cafe0001"})
        assert r.status_code == 409
        assert r.json() == {
            "error": "duplicate_uid",
            "detail": "This card is already registered.",
        }

    def test_other_drivers_card_is_404(self, tenants):
        card = RfidCardFactory(organization=None, user=UserFactory(), uid="ABCD1234")
        api = tenants.api(tenants.driver)
        assert api.get(f"/api/v1/me/cards/{card.pk}/").status_code == 404
        assert api.patch(f"/api/v1/me/cards/{card.pk}/", {"blocked": True}).status_code == 404
        assert api.delete(f"/api/v1/me/cards/{card.pk}/").status_code == 404
        card.refresh_from_db()
        assert not card.blocked


class TestVehicles:
    def test_add_remove_and_rules(self, tenants):
        api = tenants.api(tenants.driver)
        r = api.post("/api/v1/me/vehicles/", {"car_id": "ab-12-cd", "label": "Zoe"})
        assert r.status_code == 201 and r.json()["car_id"] == "AB12CD"
        assert api.post("/api/v1/me/vehicles/", {"car_id": "AB12CD"}).status_code == 409
        assert api.post("/api/v1/me/vehicles/", {"car_id": "x"}).status_code == 400
        theirs = VehicleFactory()
        assert api.delete(f"/api/v1/me/vehicles/{theirs.pk}/").status_code == 404
        assert api.delete(f"/api/v1/me/vehicles/{r.json()['id']}/").status_code == 204
        assert list(Vehicle.objects.all()) == [theirs]


class TestStationsAndStart:
    def test_stations_list(self, tenants, online_public, django_assert_max_num_queries):
        open_connector(tenants.a, access="private", online=True)
        api = tenants.api(tenants.driver)
        with django_assert_max_num_queries(8):
            rows = api.get("/api/v1/me/stations/").json()
        assert [row["code"] for row in rows] == [online_public.code]
        row = rows[0]
        assert row["station"] == "Street" and row["available"] is True
        assert row["price"]["per_kwh"] == "0.4500" and row["price_source"] == "public"

    def test_start_by_code_and_by_connector_id(self, tenants, online_public):
        api = tenants.api(tenants.driver)
        r = api.post("/api/v1/me/start/", {"code": online_public.code}, format="json")
        assert r.status_code == 202, r.json()
        assert r.json()["status"] == "pending" and r.json()["action"] == "RemoteStartTransaction"
        command = StationCommand.objects.get(pk=r.json()["id"])
        assert command.payload["idTag"] == AppTag.objects.get(user=tenants.driver).id_tag
        assert api.get(f"/api/v1/me/commands/{command.pk}/").json()["status"] == "pending"
        r = api.post("/api/v1/me/start/", {"connector": online_public.connector.pk}, format="json")
        assert r.status_code == 202

    def test_start_refused_says_why(self, tenants, online_public):
        private = open_connector(tenants.b, access="private", online=True)
        api = tenants.api(tenants.driver)
        for body in ({"code": private.code}, {"connector": private.connector.pk}):
            r = api.post("/api/v1/me/start/", body, format="json")
            assert r.status_code == 400
            assert r.json()["error"] == "refused"
        r = api.post("/api/v1/me/start/", {"connector": 999999}, format="json")
        assert r.json()["error"] == "refused"  # the same answer: no probing of ids
        assert api.post("/api/v1/me/start/", {}, format="json").status_code == 400
        assert not StationCommand.objects.exists()

    def test_offline_is_a_conflict(self, tenants, online_public):
        station = online_public.connector.station
        station.online = False
        station.save(update_fields=["online"])
        r = tenants.api(tenants.driver).post(
            "/api/v1/me/start/", {"code": online_public.code}, format="json"
        )
        assert r.status_code == 409 and r.json()["error"] == "offline"

    def test_another_drivers_command_is_404(self, tenants, online_public):
        tenants.api(UserFactory()).post(
            "/api/v1/me/start/", {"code": online_public.code}, format="json"
        )
        command = StationCommand.objects.get()
        assert (
            tenants.api(tenants.driver).get(f"/api/v1/me/commands/{command.pk}/").status_code == 404
        )


class TestSessions:
    def test_list_detail_stop_and_csv(self, tenants, online_public):
        station = online_public.connector.station
        done = make_session(station, tenants.driver, energy_wh=10_000, minutes=60)
        running = make_session(station, tenants.driver, connector_id=2, running=True)
        theirs = make_session(station, UserFactory(), running=True)
        api = tenants.api(tenants.driver)
        rows = api.get("/api/v1/me/sessions/").json()["results"]
        assert {row["id"] for row in rows} == {done.pk, running.pk}
        detail = api.get(f"/api/v1/me/sessions/{done.pk}/").json()
        assert detail["price"]["total"] == "6.00" and detail["price"]["currency"] == "CHF"
        assert detail["duration_seconds"] == 3600 and detail["energy_wh"] == 10_000
        assert api.get(f"/api/v1/me/sessions/{theirs.pk}/").status_code == 404
        assert api.post(f"/api/v1/me/sessions/{theirs.pk}/stop/").status_code == 404
        r = api.post(f"/api/v1/me/sessions/{done.pk}/stop/")
        assert r.status_code == 400 and r.json()["error"] == "not_yours"
        r = api.post(f"/api/v1/me/sessions/{running.pk}/stop/")
        assert r.status_code == 202 and r.json()["action"] == "RemoteStopTransaction"
        assert StationCommand.objects.get().payload == {"transactionId": running.pk}

        r = api.get("/api/v1/me/sessions.csv")
        assert r.status_code == 200 and r["Content-Type"] == "text/csv"
        table = list(csv.DictReader(io.StringIO(r.content.decode())))
        assert {int(row["session_id"]) for row in table} == {done.pk, running.pk}
        finished = next(row for row in table if int(row["session_id"]) == done.pk)
        assert (finished["price"], finished["kwh"], finished["currency"]) == (
            "6.00",
            "10.000",
            "CHF",
        )

    def test_csv_by_token(self, tenants):
        station = StationFactory(organization=tenants.a)
        make_session(station, tenants.driver)
        token = Token.objects.create(user=tenants.driver)
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
        r = client.get("/api/v1/me/sessions.csv")
        assert r.status_code == 200 and r.content.startswith(b"session_id,station")
