"""The owner's access-and-prices API: CRUD, roles, bad input, cross-tenant 404s."""

from __future__ import annotations

from datetime import time

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from billing.models import AccessRule, ConnectorAccess, RfidCard, SpecialUser, Tariff, UserGroup
from stations.models import ConfigurationKey, Station
from tests.billing.factories import (
    ConnectorAccessFactory,
    SpecialUserFactory,
    TariffFactory,
    UserGroupFactory,
    UserGroupMemberFactory,
)
from tests.stations.factories import RfidCardFactory, StationFactory
from tests.stations.helpers import answering_backend

pytestmark = pytest.mark.django_db
BASE = "/api/v1/organizations/alpha"


@pytest.fixture
def world(tenants):
    station = StationFactory(organization=tenants.a, charge_point_id="CP-A")
    tariff = TariffFactory(organization=tenants.a, name="Public")
    b_station = StationFactory(organization=tenants.b)
    return {
        "station": station,
        "connector": station.connectors.get(connector_id=1),
        "tariff": tariff,
        "group": UserGroupFactory(organization=tenants.a, name="Staff"),
        "special": SpecialUserFactory(organization=tenants.a, user=tenants.driver),
        "card": RfidCardFactory(organization=tenants.a, uid="AAAA0001"),
        "b_station": b_station,
        "b_connector": b_station.connectors.first(),
        "b_tariff": TariffFactory(organization=tenants.b),
        "b_group": UserGroupFactory(organization=tenants.b),
        "b_special": SpecialUserFactory(organization=tenants.b),
        "b_card": RfidCardFactory(organization=tenants.b, uid="BBBB0001"),
    }


class TestTariffs:
    def test_crud(self, tenants, world):
        api = tenants.api(tenants.manager_a)
        r = api.post(
            f"{BASE}/tariffs/",
            {"name": "Night", "per_kwh": "0.25", "per_hour": "0.5", "vat_percent": "8.1"},
            format="json",
        )
        assert r.status_code == 201, r.json()
        night = r.json()
        assert (night["per_kwh"], night["currency"]) == ("0.2500", "CHF")
        r = api.patch(f"{BASE}/tariffs/{night['id']}/", {"per_kwh": "0.3"}, format="json")
        assert r.status_code == 200 and r.json()["per_kwh"] == "0.3000"
        names = [t["name"] for t in api.get(f"{BASE}/tariffs/").json()["results"]]
        assert names == ["Night", "Public"]
        assert api.delete(f"{BASE}/tariffs/{night['id']}/").status_code == 204

    def test_bad_input(self, tenants, world):
        api = tenants.api(tenants.owner_a)
        base = {"name": "X", "per_kwh": "0.2", "per_hour": "0", "vat_percent": "8.1"}
        r = api.post(f"{BASE}/tariffs/", {**base, "per_kwh": "-0.2"}, format="json")
        assert r.status_code == 400
        assert r.json() == {
            "error": "invalid",
            "detail": {"per_kwh": ["The price per kWh cannot be negative."]},
        }
        r = api.post(f"{BASE}/tariffs/", {**base, "per_hour": "1000"}, format="json")
        assert r.json()["detail"]["per_hour"] == ["The price per hour cannot be above 100.00."]
        r = api.post(f"{BASE}/tariffs/", {**base, "currency": "USD"}, format="json")
        assert r.status_code == 400 and "currency" in r.json()["detail"]
        r = api.post(f"{BASE}/tariffs/", {**base, "name": "PUBLIC"}, format="json")
        assert r.json()["detail"]["name"] == ["A price named 'PUBLIC' already exists."]
        assert Tariff.objects.filter(organization=tenants.a).count() == 1

    def test_delete_in_use_is_a_conflict(self, tenants, world):
        ConnectorAccessFactory(connector=world["connector"], tariff=world["tariff"])
        r = tenants.api(tenants.owner_a).delete(f"{BASE}/tariffs/{world['tariff'].pk}/")
        assert r.status_code == 409
        assert r.json()["error"] == "tariff_in_use"
        assert "still used by connector" in r.json()["detail"]


class TestConnectorAccess:
    def test_list_shows_unedited_connectors_as_private(self, tenants, world):
        r = tenants.api(tenants.viewer_a).get(f"{BASE}/connector-access/")
        assert r.status_code == 200
        rows = r.json()["results"]
        assert [(x["charge_point_id"], x["connector_id"], x["access"]) for x in rows] == [
            ("CP-A", 1, "private"),
            ("CP-A", 2, "private"),
        ]
        assert rows[0]["access_id"] is None and rows[0]["rules"] == []

    def test_update_with_rules(self, tenants, world):
        api = tenants.api(tenants.manager_a)
        url = f"{BASE}/connector-access/{world['connector'].pk}/"
        body = {
            "access": "public",
            "tariff": world["tariff"].pk,
            "rules": [
                {
                    "weekdays": "12345",
                    "start_time": "07:00",
                    "end_time": "18:00",
                    "access": "limited",
                },
                {"weekdays": "7", "start_time": "22:00", "end_time": "06:00", "access": "private"},
            ],
        }
        r = api.put(url, body, format="json")
        assert r.status_code == 200, r.json()
        data = r.json()
        row = ConnectorAccess.objects.get(connector=world["connector"])
        assert (data["access"], data["tariff"], data["access_id"], data["code"]) == (
            "public",
            world["tariff"].pk,
            row.pk,
            row.code,
        )
        assert [(x["weekdays"], x["start_time"]) for x in data["rules"]] == [
            ("12345", "07:00:00"),
            ("7", "22:00:00"),
        ]
        # PATCH without rules keeps them; with an empty list clears them
        r = api.patch(url, {"access": "limited"}, format="json")
        assert r.json()["access"] == "limited" and len(r.json()["rules"]) == 2
        assert r.json()["tariff"] == world["tariff"].pk
        r = api.patch(url, {"rules": []}, format="json")
        assert r.json()["rules"] == []

    def test_bad_rule_changes_nothing(self, tenants, world):
        row = ConnectorAccessFactory(connector=world["connector"], access="public")
        AccessRule.objects.create(
            connector_access=row,
            weekdays="1",
            start_time=time(8),
            end_time=time(9),
            access="limited",
        )
        r = tenants.api(tenants.owner_a).put(
            f"{BASE}/connector-access/{world['connector'].pk}/",
            {
                "access": "private",
                "rules": [
                    {
                        "weekdays": "189",
                        "start_time": "07:00",
                        "end_time": "08:00",
                        "access": "public",
                    }
                ],
            },
            format="json",
        )
        assert r.status_code == 400
        assert "Rule 1: weekdays" in r.json()["detail"]["rules"][0]
        row.refresh_from_db()
        assert row.access == "public" and row.rules.count() == 1

    def test_foreign_tariff_and_connector(self, tenants, world):
        api = tenants.api(tenants.owner_a)
        r = api.put(
            f"{BASE}/connector-access/{world['connector'].pk}/",
            {"access": "public", "tariff": world["b_tariff"].pk},
            format="json",
        )
        assert r.status_code == 400
        assert r.json()["detail"] == {"tariff": ["Unknown price."]}
        r = api.put(
            f"{BASE}/connector-access/{world['b_connector'].pk}/",
            {"access": "public"},
            format="json",
        )
        assert r.status_code == 404
        assert not ConnectorAccess.objects.filter(connector=world["b_connector"]).exists()


class TestStationAccess:
    def test_switch_mode_stores_configuration(self, tenants, world):
        api = tenants.api(tenants.manager_a)
        url = f"{BASE}/station-access/{world['station'].pk}/"
        r = api.patch(url, {"auth_mode": "none"}, format="json")
        assert r.status_code == 200, r.json()
        assert r.json()["configuration"][0]["key"] == "FreeVendActive"
        assert ConfigurationKey.objects.get(station=world["station"]).value == "true"

    def test_http_url_is_refused(self, tenants, world):
        r = tenants.api(tenants.owner_a).patch(
            f"{BASE}/station-access/{world['station'].pk}/",
            {"auth_mode": "ocpp_third_party", "third_party_url": "http://x.example/"},
            format="json",
        )
        assert r.status_code == 400
        assert "ws://" in r.json()["detail"]
        assert Station.objects.get(pk=world["station"].pk).auth_mode == "backend"

    def test_wss_url_is_managed_elsewhere(self, tenants, world):
        # The URL must answer (reachability check): a small ocpp1.6 server in the test.
        with answering_backend() as url:
            r = tenants.api(tenants.owner_a).patch(
                f"{BASE}/station-access/{world['station'].pk}/",
                {"auth_mode": "ocpp_third_party", "third_party_url": url},
                format="json",
            )
        assert r.status_code == 200
        assert r.json()["managed_elsewhere"] is True

    def test_viewer_and_outsider(self, tenants, world):
        url = f"{BASE}/station-access/{world['station'].pk}/"
        assert tenants.api(tenants.viewer_a).get(url).status_code == 200
        r = tenants.api(tenants.viewer_a).patch(url, {"auth_mode": "none"}, format="json")
        assert r.status_code == 403
        r = tenants.api(tenants.owner_a).get(f"{BASE}/station-access/{world['b_station'].pk}/")
        assert r.status_code == 404


class TestSpecialUsers:
    def test_add_update_remove(self, tenants, world):
        api = tenants.api(tenants.manager_a)
        r = api.post(
            f"{BASE}/special-users/",
            {"account_name": "Bob", "tariff": world["tariff"].pk, "note": "neighbour"},
            format="json",
        )
        assert r.status_code == 201, r.json()
        assert (r.json()["account_name"], r.json()["tariff"]) == ("bob", world["tariff"].pk)
        pk = r.json()["id"]
        r = api.patch(f"{BASE}/special-users/{pk}/", {"tariff": None}, format="json")
        assert r.json()["tariff"] is None and r.json()["note"] == "neighbour"
        assert api.delete(f"{BASE}/special-users/{pk}/").status_code == 204

    def test_unknown_and_duplicate(self, tenants, world):
        api = tenants.api(tenants.owner_a)
        r = api.post(f"{BASE}/special-users/", {"account_name": "ghost"}, format="json")
        assert r.status_code == 400
        assert r.json() == {"error": "unknown_account", "detail": "No account named 'ghost'."}
        r = api.post(f"{BASE}/special-users/", {"account_name": "dora"}, format="json")
        assert r.status_code == 409
        assert r.json()["error"] == "already_special"


class TestGroups:
    def test_crud_and_members(self, tenants, world):
        api = tenants.api(tenants.manager_a)
        r = api.post(f"{BASE}/groups/", {"name": "Residents"}, format="json")
        assert r.status_code == 201
        pk = r.json()["id"]
        r = api.patch(f"{BASE}/groups/{pk}/", {"tariff": world["tariff"].pk}, format="json")
        assert r.json()["tariff"] == world["tariff"].pk
        r = api.post(f"{BASE}/groups/{pk}/members/", {"account_name": "DORA"}, format="json")
        assert r.status_code == 201 and r.json()["account_name"] == "dora"
        r = api.post(f"{BASE}/groups/{pk}/members/", {"account_name": "dora"}, format="json")
        assert r.status_code == 200
        r = api.post(f"{BASE}/groups/{pk}/members/", {"account_name": "ghost"}, format="json")
        assert r.json() == {"error": "unknown_account", "detail": "No account named 'ghost'."}
        assert [m["account_name"] for m in api.get(f"{BASE}/groups/{pk}/members/").json()] == [
            "dora"
        ]
        assert api.get(f"{BASE}/groups/{pk}/").json()["member_count"] == 1
        r = api.delete(f"{BASE}/groups/{pk}/members/{tenants.driver.pk}/")
        assert r.status_code == 204
        assert api.delete(f"{BASE}/groups/{pk}/members/{tenants.driver.pk}/").status_code == 404
        r = api.post(f"{BASE}/groups/", {"name": "residents"}, format="json")
        assert r.status_code == 400
        assert api.delete(f"{BASE}/groups/{pk}/").status_code == 204

    def test_import_json_text_and_file(self, tenants, world):
        api = tenants.api(tenants.manager_a)
        url = f"{BASE}/groups/{world['group'].pk}/members/import/"
        r = api.post(url, {"csv": "account\ndora\nghost\n"}, format="json")
        assert r.status_code == 400
        assert r.json()["error"] == "invalid_csv"
        assert r.json()["errors"] == [
            {"row": 3, "column": "account", "message": "No account named 'ghost'."}
        ]
        assert not world["group"].memberships.exists()
        upload = SimpleUploadedFile("m.csv", b"dora\nbob\n", content_type="text/csv")
        r = api.post(url, {"file": upload}, format="multipart")
        assert r.status_code == 200, r.json()
        assert r.json() == {"created": 2, "unchanged": 0}
        r = api.post(url, {}, format="json")
        assert r.status_code == 400 and r.json()["error"] == "invalid_csv"

    def test_viewer_reads_only_and_outsider_404(self, tenants, world):
        UserGroupMemberFactory(group=world["group"], user=tenants.driver)
        viewer = tenants.api(tenants.viewer_a)
        pk = world["group"].pk
        assert viewer.get(f"{BASE}/groups/{pk}/members/").status_code == 200
        r = viewer.post(f"{BASE}/groups/{pk}/members/", {"account_name": "bob"}, format="json")
        assert r.status_code == 403
        assert viewer.post(f"{BASE}/groups/{pk}/members/import/", {"csv": "bob"}).status_code == 403
        assert viewer.delete(f"{BASE}/groups/{pk}/members/{tenants.driver.pk}/").status_code == 403
        assert viewer.delete(f"{BASE}/groups/{pk}/").status_code == 403
        owner = tenants.api(tenants.owner_a)
        b_pk = world["b_group"].pk
        assert owner.get(f"{BASE}/groups/{b_pk}/members/").status_code == 404
        r = owner.post(f"{BASE}/groups/{b_pk}/members/import/", {"csv": "dora"}, format="json")
        assert r.status_code == 404
        assert not world["b_group"].memberships.exists()
        assert UserGroup.objects.filter(pk=pk).exists()


class TestCards:
    def test_crud(self, tenants, world):
        api = tenants.api(tenants.manager_a)
        r = api.post(
            f"{BASE}/cards/",
            {"uid": "de:ad:be:ef", "account_name": "dora", "expires": "2026-12-31"},
            format="json",
        )
        assert r.status_code == 201, r.json()
        card = r.json()
        assert (card["uid"], card["account_name"], card["expires"]) == (
            "DEADBEEF",
            "dora",
            "2026-12-31",
        )
        r = api.patch(
            f"{BASE}/cards/{card['id']}/", {"blocked": True, "expires": None}, format="json"
        )
        assert (r.json()["blocked"], r.json()["expires"]) == (True, None)
        assert [c["uid"] for c in api.get(f"{BASE}/cards/").json()["results"]] == [
            "AAAA0001",
            "DEADBEEF",
        ]
        assert api.delete(f"{BASE}/cards/{card['id']}/").status_code == 204

    def test_bad_uids(self, tenants, world):
        api = tenants.api(tenants.owner_a)
        r = api.post(f"{BASE}/cards/", {"uid": "12"}, format="json")
        assert r.status_code == 400
        assert "is not a valid UID" in r.json()["detail"]["uid"][0]
        r = api.post(f"{BASE}/cards/", {"uid": "bbbb0001"}, format="json")
        assert r.status_code == 400
        assert r.json()["detail"] == {"uid": ["This card is already registered."]}

    def test_import(self, tenants, world):
        api = tenants.api(tenants.owner_a)
        r = api.post(f"{BASE}/cards/import/", {"csv": "uid,account\nCAFE0001,dora\nzz,\n"})
        assert r.status_code == 400
        assert r.json()["errors"][0]["row"] == 3 and r.json()["errors"][0]["column"] == "uid"
        assert not RfidCard.objects.filter(uid="CAFE0001").exists()
        upload = SimpleUploadedFile("c.csv", b"uid\nCAFE0001\nCAFE0002\n", content_type="text/csv")
        r = api.post(f"{BASE}/cards/import/", {"file": upload}, format="multipart")
        assert r.json() == {"created": 2, "unchanged": 0}
        assert RfidCard.objects.filter(organization=tenants.a).count() == 3

    def test_roles_and_tenants(self, tenants, world):
        viewer = tenants.api(tenants.viewer_a)
        assert viewer.get(f"{BASE}/cards/").status_code == 200
        assert viewer.post(f"{BASE}/cards/", {"uid": "CAFE0009"}).status_code == 403
        assert viewer.delete(f"{BASE}/cards/{world['card'].pk}/").status_code == 403
        owner = tenants.api(tenants.owner_a)
        for kind, key in [
            ("cards", "b_card"),
            ("tariffs", "b_tariff"),
            ("special-users", "b_special"),
            ("groups", "b_group"),
            ("connector-access", "b_connector"),
            ("station-access", "b_station"),
        ]:
            url = f"{BASE}/{kind}/{world[key].pk}/"
            assert owner.get(url).status_code == 404, url
            assert owner.patch(url, {}, format="json").status_code == 404, url
            if not kind.endswith("-access"):  # those two cannot be deleted at all (405)
                assert owner.delete(url).status_code == 404, url
        assert RfidCard.objects.filter(pk=world["b_card"].pk).exists()
        assert SpecialUser.objects.filter(pk=world["b_special"].pk).exists()
        # only A's cards are listed, never B's or drivers' own
        RfidCardFactory(organization=None, user=tenants.driver, uid="DDDD0001")
        uids = [c["uid"] for c in owner.get(f"{BASE}/cards/").json()["results"]]
        assert uids == ["AAAA0001"]


def test_list_query_counts_do_not_grow(tenants, world, django_assert_max_num_queries):
    for n in range(3):
        station = StationFactory(organization=tenants.a)
        for connector in station.connectors.all():
            row = ConnectorAccessFactory(connector=connector, tariff=world["tariff"])
            AccessRule.objects.create(
                connector_access=row,
                weekdays="67",
                start_time=time(8),
                end_time=time(12),
                access="public",
            )
        RfidCardFactory(organization=tenants.a, user=tenants.driver, uid=f"CAFE100{n}")
    api = tenants.api(tenants.viewer_a)
    for url in ("connector-access", "cards", "groups", "special-users", "station-access"):
        with django_assert_max_num_queries(8):
            assert api.get(f"{BASE}/{url}/").status_code == 200, url
