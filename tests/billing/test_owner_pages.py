"""The owner's "Access & prices" pages: roles, bad input, cross-tenant ids."""

from __future__ import annotations

from datetime import date, time
from decimal import Decimal

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from billing.models import (
    AccessRule,
    ConnectorAccess,
    RfidCard,
    SpecialUser,
    Tariff,
    UserGroup,
    UserGroupMember,
)
from billing.owner_services import expiry_date
from stations.models import ConfigurationKey, Station, StationCommand
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


@pytest.fixture
def world(tenants):
    """A's station with two connectors, a tariff, a special user, a group and a card; the
    same kinds of object in B (whose ids A's owner must never reach)."""
    station = StationFactory(organization=tenants.a, charge_point_id="CP-A")
    tariff = TariffFactory(organization=tenants.a, name="Public")
    access = ConnectorAccessFactory(connector=station.connectors.get(connector_id=1), tariff=tariff)
    AccessRule.objects.create(
        connector_access=access,
        weekdays="12345",
        start_time=time(7),
        end_time=time(18),
        access="limited",
    )
    group = UserGroupFactory(organization=tenants.a, name="Staff", tariff=tariff)
    special = SpecialUserFactory(organization=tenants.a, user=tenants.driver)
    card = RfidCardFactory(organization=tenants.a, uid="AAAA0001")
    b_station = StationFactory(organization=tenants.b, charge_point_id="CP-B")
    b = {
        "station": b_station,
        "connector": b_station.connectors.first(),
        "tariff": TariffFactory(organization=tenants.b, name="B price"),
        "group": UserGroupFactory(organization=tenants.b),
        "special": SpecialUserFactory(organization=tenants.b),
        "card": RfidCardFactory(organization=tenants.b, uid="BBBB0001"),
    }
    return {
        "station": station,
        "connector": station.connectors.get(connector_id=1),
        "connector2": station.connectors.get(connector_id=2),
        "tariff": tariff,
        "group": group,
        "special": special,
        "card": card,
        "b": b,
    }


def pages(world) -> list[str]:
    return [
        "/o/alpha/access/",
        f"/o/alpha/access/stations/{world['station'].pk}/",
        f"/o/alpha/access/connectors/{world['connector'].pk}/",
        f"/o/alpha/access/connectors/{world['connector2'].pk}/",
        "/o/alpha/access/tariffs/",
        f"/o/alpha/access/tariffs/{world['tariff'].pk}/",
        "/o/alpha/access/special-users/",
        "/o/alpha/access/groups/",
        f"/o/alpha/access/groups/{world['group'].pk}/",
        "/o/alpha/access/cards/",
    ]


class TestRoles:
    @pytest.mark.parametrize("who", ["owner_a", "manager_a", "viewer_a"])
    def test_every_page_renders_for_every_member(self, tenants, world, who):
        client = tenants.client(getattr(tenants, who))
        for url in pages(world):
            response = client.get(url)
            assert response.status_code == 200, url
            content = response.content.decode()
            if who == "viewer_a":  # read-only: no change forms, a note says why
                assert 'id="read-only-note"' in content, url
                assert 'name="action" value="delete"' not in content, url
            else:
                assert 'id="read-only-note"' not in content, url

    def test_overview_shows_stations_connectors_and_links(self, tenants, world):
        content = tenants.client(tenants.viewer_a).get("/o/alpha/access/").content.decode()
        assert "CP-A" in content
        assert "Public (0.45/kWh" in content
        assert "12345 07:00–18:00: limited" in content
        assert f"/o/alpha/access/connectors/{world['connector2'].pk}/" in content
        # the never-edited connector is private and has no label yet
        assert "after the first edit" in content

    def test_overview_query_count_does_not_grow_with_stations(
        self, tenants, world, django_assert_max_num_queries
    ):
        for _ in range(3):
            StationFactory(organization=tenants.a)
        client = tenants.client(tenants.owner_a)
        with django_assert_max_num_queries(12):
            assert client.get("/o/alpha/access/").status_code == 200

    def test_viewer_posts_are_refused(self, tenants, world):
        client = tenants.client(tenants.viewer_a)
        posts = [
            ("/o/alpha/access/tariffs/", {"name": "X", "per_kwh": "1", "per_hour": "0"}),
            (f"/o/alpha/access/tariffs/{world['tariff'].pk}/", {"action": "delete"}),
            (f"/o/alpha/access/stations/{world['station'].pk}/", {"auth_mode": "none"}),
            (f"/o/alpha/access/connectors/{world['connector'].pk}/", {"access": "public"}),
            ("/o/alpha/access/special-users/", {"account_name": "bob"}),
            (f"/o/alpha/access/special-users/{world['special'].pk}/", {"action": "remove"}),
            ("/o/alpha/access/groups/", {"name": "New"}),
            (f"/o/alpha/access/groups/{world['group'].pk}/", {"action": "delete"}),
            ("/o/alpha/access/cards/", {"uid": "CAFE0001"}),
            (f"/o/alpha/access/cards/{world['card'].pk}/", {"action": "delete"}),
        ]
        for url, data in posts:
            assert client.post(url, data).status_code == 403, url
        assert Tariff.objects.filter(organization=tenants.a).count() == 1
        assert UserGroup.objects.filter(organization=tenants.a).count() == 1
        assert RfidCard.objects.filter(organization=tenants.a).count() == 1
        assert SpecialUser.objects.filter(organization=tenants.a).count() == 1
        assert Station.objects.get(pk=world["station"].pk).auth_mode == "backend"

    def test_other_tenants_objects_are_404(self, tenants, world):
        b = world["b"]
        client = tenants.client(tenants.owner_a)
        for url in [
            f"/o/alpha/access/stations/{b['station'].pk}/",
            f"/o/alpha/access/connectors/{b['connector'].pk}/",
            f"/o/alpha/access/tariffs/{b['tariff'].pk}/",
            f"/o/alpha/access/groups/{b['group'].pk}/",
        ]:
            assert client.get(url).status_code == 404, url
            assert client.post(url, {"action": "delete"}).status_code == 404, url
        for url in [
            f"/o/alpha/access/special-users/{b['special'].pk}/",
            f"/o/alpha/access/cards/{b['card'].pk}/",
        ]:
            assert client.post(url, {"action": "remove"}).status_code == 404, url
            assert client.post(url, {"action": "delete"}).status_code == 404, url
        # and the other way round: B's owner under beta with A's ids
        client_b = tenants.client(tenants.owner_b)
        assert client_b.get(f"/o/beta/access/tariffs/{world['tariff'].pk}/").status_code == 404
        r = client_b.post(f"/o/beta/access/cards/{world['card'].pk}/", {"action": "delete"})
        assert r.status_code == 404
        assert Tariff.objects.filter(pk=b["tariff"].pk).exists()
        assert RfidCard.objects.filter(pk=world["card"].pk).exists()
        assert RfidCard.objects.filter(pk=b["card"].pk).exists()

    def test_a_tariff_of_another_tenant_cannot_be_chosen(self, tenants, world):
        client = tenants.client(tenants.owner_a)
        r = client.post(
            f"/o/alpha/access/connectors/{world['connector'].pk}/",
            {"action": "set", "access": "public", "tariff": world["b"]["tariff"].pk},
        )
        assert r.status_code == 400
        assert world["connector"].access.tariff == world["tariff"]


class TestStationAuthentication:
    def url(self, world) -> str:
        return f"/o/alpha/access/stations/{world['station'].pk}/"

    def post(self, tenants, world, **data):
        values = {
            "auth_mode": "backend",
            "third_party_url": "",
            "time_zone": "Europe/Zurich",
            **data,
        }
        return tenants.client(tenants.manager_a).post(self.url(world), values, follow=True)

    def test_switch_to_none_stores_configuration_and_sends_it(self, tenants, world):
        r = self.post(tenants, world, auth_mode="none")
        assert r.status_code == 200
        station = Station.objects.get(pk=world["station"].pk)
        assert station.auth_mode == "none"
        key = ConfigurationKey.objects.get(station=station, key="FreeVendActive")
        assert key.value == "true"
        command = StationCommand.objects.get(station=station, action="ChangeConfiguration")
        assert command.payload == {"key": "FreeVendActive", "value": "true"}
        content = r.content.decode()
        assert "1 configuration change(s) sent" in content
        assert "FreeVendActive" in content  # the result table shows the key

    def test_third_party_needs_a_ws_url(self, tenants, world):
        r = self.post(
            tenants, world, auth_mode="ocpp_third_party", third_party_url="http://other.example/"
        )
        assert r.status_code == 400
        assert "starting with ws:// or wss://" in r.content.decode()
        r = self.post(tenants, world, auth_mode="ocpp_third_party", third_party_url="")
        assert r.status_code == 400
        assert "Enter the other backend" in r.content.decode()
        station = Station.objects.get(pk=world["station"].pk)
        assert station.auth_mode == "backend" and station.third_party_url == ""

    def test_third_party_with_wss_is_shown_as_managed_elsewhere(self, tenants, world):
        # The URL must answer (reachability check): a small ocpp1.6 server in the test.
        with answering_backend() as url:
            r = self.post(tenants, world, auth_mode="ocpp_third_party", third_party_url=url + "/")
        assert r.status_code == 200
        station = Station.objects.get(pk=world["station"].pk)
        assert station.third_party_url == url + "/"
        assert "managed by another backend" in r.content.decode()
        overview = tenants.client(tenants.viewer_a).get("/o/alpha/access/").content.decode()
        assert "managed by another backend" in overview

    def test_time_zone_and_car_detection(self, tenants, world):
        r = self.post(tenants, world, time_zone="Europe/Berlin", auto_car_detection="on")
        assert r.status_code == 200
        station = Station.objects.get(pk=world["station"].pk)
        assert (station.time_zone, station.auto_car_detection) == ("Europe/Berlin", True)
        r = self.post(tenants, world, time_zone="Mars/Olympus")
        assert r.status_code == 400

    def test_saving_unchanged_mode_sends_nothing(self, tenants, world):
        self.post(tenants, world)
        assert not StationCommand.objects.filter(station=world["station"]).exists()


class TestConnectorAccess:
    def test_first_edit_creates_the_row(self, tenants, world):
        connector = world["connector2"]
        assert not ConnectorAccess.objects.filter(connector=connector).exists()
        url = f"/o/alpha/access/connectors/{connector.pk}/"
        r = tenants.client(tenants.owner_a).post(
            url, {"action": "set", "access": "limited", "tariff": world["tariff"].pk}
        )
        assert r.status_code == 302
        row = ConnectorAccess.objects.get(connector=connector)
        assert (row.access, row.tariff) == ("limited", world["tariff"])
        content = tenants.client(tenants.owner_a).get(url).content.decode()
        assert f"/c/{row.code}" in content
        assert "time zone (Europe/Zurich)" in content

    def test_rules_add_over_midnight_and_remove(self, tenants, world):
        connector = world["connector2"]
        url = f"/o/alpha/access/connectors/{connector.pk}/"
        client = tenants.client(tenants.manager_a)
        r = client.post(
            url,
            {
                "action": "add_rule",
                "weekdays": ["6", "7"],
                "start_time": "22:00",
                "end_time": "06:00",
                "access": "public",
            },
        )
        assert r.status_code == 302
        rule = AccessRule.objects.get(connector_access__connector=connector)
        assert (rule.weekdays, rule.start_time, rule.end_time) == ("67", time(22), time(6))
        r = client.post(url, {"action": "remove_rule", "rule": rule.pk})
        assert r.status_code == 302
        assert not AccessRule.objects.filter(pk=rule.pk).exists()

    def test_bad_rules_are_refused(self, tenants, world):
        url = f"/o/alpha/access/connectors/{world['connector'].pk}/"
        client = tenants.client(tenants.manager_a)
        base = {"action": "add_rule", "start_time": "07:00", "end_time": "07:00"}
        r = client.post(url, {**base, "access": "public"})
        content = r.content.decode()
        assert r.status_code == 400
        assert "Choose at least one weekday." in content
        r = client.post(url, {**base, "weekdays": ["1"], "access": "public"})
        assert r.status_code == 400
        assert "start and end are the same time" in r.content.decode()
        assert (
            AccessRule.objects.filter(connector_access__connector=world["connector"]).count() == 1
        )

    def test_a_rule_of_another_connector_cannot_be_removed_here(self, tenants, world):
        rule = AccessRule.objects.get(connector_access__connector=world["connector"])
        url = f"/o/alpha/access/connectors/{world['connector2'].pk}/"
        r = tenants.client(tenants.owner_a).post(url, {"action": "remove_rule", "rule": rule.pk})
        assert r.status_code == 404
        assert AccessRule.objects.filter(pk=rule.pk).exists()


class TestTariffs:
    def post(self, tenants, **data):
        values = {"name": "Night", "per_kwh": "0.30", "per_hour": "1", "currency": "EUR"}
        values.setdefault("vat_percent", "19")
        return tenants.client(tenants.owner_a).post("/o/alpha/access/tariffs/", {**values, **data})

    def test_create(self, tenants, world):
        assert self.post(tenants).status_code == 302
        night = Tariff.objects.get(organization=tenants.a, name="Night")
        assert (night.per_kwh, night.currency, night.vat_percent) == (
            Decimal("0.3"),
            "EUR",
            Decimal("19"),
        )

    @pytest.mark.parametrize(
        ("data", "message"),
        [
            ({"per_kwh": "-0.10"}, "The price per kWh cannot be negative."),
            ({"per_hour": "-1"}, "The price per hour cannot be negative."),
            ({"per_kwh": "11"}, "The price per kWh cannot be above 10.00."),
            ({"vat_percent": "51"}, "The VAT rate cannot be above 50."),
            ({"name": "public"}, "A price named &#x27;public&#x27; already exists."),
            ({"per_kwh": "abc"}, "Enter a number."),
        ],
    )
    def test_bad_prices_are_refused_with_a_readable_message(self, tenants, world, data, message):
        r = self.post(tenants, **data)
        assert r.status_code == 400
        assert message in r.content.decode()
        assert Tariff.objects.filter(organization=tenants.a).count() == 1

    def test_edit(self, tenants, world):
        url = f"/o/alpha/access/tariffs/{world['tariff'].pk}/"
        data = {"name": "Public", "per_kwh": "0.55", "per_hour": "0", "currency": "CHF"}
        r = tenants.client(tenants.manager_a).post(url, {**data, "vat_percent": "8.1"})
        assert r.status_code == 302
        world["tariff"].refresh_from_db()
        assert world["tariff"].per_kwh == Decimal("0.55")
        r = tenants.client(tenants.manager_a).post(
            url, {**data, "per_kwh": "-1", "vat_percent": "8"}
        )
        assert r.status_code == 400
        world["tariff"].refresh_from_db()
        assert world["tariff"].per_kwh == Decimal("0.55")

    def test_delete_refused_while_in_use(self, tenants, world):
        url = f"/o/alpha/access/tariffs/{world['tariff'].pk}/"
        client = tenants.client(tenants.owner_a)
        r = client.post(url, {"action": "delete"}, follow=True)
        content = r.content.decode()
        assert f"is still used by connector {world['station'].name} #1" in content
        assert "group Staff" in content
        assert Tariff.objects.filter(pk=world["tariff"].pk).exists()
        unused = TariffFactory(organization=tenants.a, name="Unused")
        r = client.post(f"/o/alpha/access/tariffs/{unused.pk}/", {"action": "delete"})
        assert r.status_code == 302
        assert not Tariff.objects.filter(pk=unused.pk).exists()


class TestSpecialUsers:
    def test_add_by_account_name_case_insensitive(self, tenants, world):
        client = tenants.client(tenants.manager_a)
        r = client.post(
            "/o/alpha/access/special-users/",
            {"account_name": "BOB", "tariff": world["tariff"].pk, "note": "neighbour"},
        )
        assert r.status_code == 302
        special = SpecialUser.objects.get(organization=tenants.a, user=tenants.owner_b)
        assert (special.tariff, special.note) == (world["tariff"], "neighbour")

    def test_unknown_and_duplicate_account_names(self, tenants, world):
        client = tenants.client(tenants.manager_a)
        r = client.post("/o/alpha/access/special-users/", {"account_name": "ghost"})
        assert r.status_code == 400
        assert "No account named &#x27;ghost&#x27;." in r.content.decode()
        r = client.post("/o/alpha/access/special-users/", {"account_name": "dora"})
        assert r.status_code == 400
        assert "already a special user" in r.content.decode()

    def test_set_price_and_remove(self, tenants, world):
        special = world["special"]
        url = f"/o/alpha/access/special-users/{special.pk}/"
        client = tenants.client(tenants.owner_a)
        prefix = f"s{special.pk}"
        r = client.post(
            url, {"action": "save", f"{prefix}-tariff": world["tariff"].pk, f"{prefix}-note": "VIP"}
        )
        assert r.status_code == 302
        special.refresh_from_db()
        assert (special.tariff, special.note) == (world["tariff"], "VIP")
        assert client.post(url, {"action": "remove"}).status_code == 302
        assert not SpecialUser.objects.filter(pk=special.pk).exists()


class TestGroups:
    def test_create_rename_price_delete(self, tenants, world):
        client = tenants.client(tenants.manager_a)
        r = client.post("/o/alpha/access/groups/", {"name": "Tenants"})
        group = UserGroup.objects.get(organization=tenants.a, name="Tenants")
        assert r.status_code == 302 and r["Location"].endswith(f"/groups/{group.pk}/")
        r = client.post("/o/alpha/access/groups/", {"name": "staff"})
        assert r.status_code == 400
        assert "already exists" in r.content.decode()
        url = f"/o/alpha/access/groups/{group.pk}/"
        r = client.post(url, {"action": "save", "name": "Residents", "tariff": world["tariff"].pk})
        assert r.status_code == 302
        group.refresh_from_db()
        assert (group.name, group.tariff) == ("Residents", world["tariff"])
        assert client.post(url, {"action": "delete"}).status_code == 302
        assert not UserGroup.objects.filter(pk=group.pk).exists()

    def test_members_by_name(self, tenants, world):
        group = world["group"]
        url = f"/o/alpha/access/groups/{group.pk}/"
        client = tenants.client(tenants.manager_a)
        assert client.post(url, {"action": "add_member", "account_name": "Dora"}).status_code == 302
        r = client.post(url, {"action": "add_member", "account_name": "dora"}, follow=True)
        assert "already a member" in r.content.decode()
        r = client.post(url, {"action": "add_member", "account_name": "ghost"})
        assert r.status_code == 400
        assert "No account named &#x27;ghost&#x27;." in r.content.decode()
        assert list(group.memberships.values_list("user_id", flat=True)) == [tenants.driver.pk]
        r = client.post(url, {"action": "remove_member", "user": tenants.driver.pk})
        assert r.status_code == 302
        assert not group.memberships.exists()

    def test_csv_import_all_or_nothing(self, tenants, world):
        group = world["group"]
        UserGroupMemberFactory(group=group, user=tenants.owner_b)
        url = f"/o/alpha/access/groups/{group.pk}/"
        client = tenants.client(tenants.manager_a)
        bad = SimpleUploadedFile("m.csv", b"account\ndora\nghost\n", content_type="text/csv")
        r = client.post(url, {"action": "import", "file": bad})
        assert r.status_code == 400
        content = r.content.decode()
        assert "Row 3, column account: No account named &#x27;ghost&#x27;." in content
        assert "Nothing was imported" in content
        assert UserGroupMember.objects.filter(group=group).count() == 1
        good = SimpleUploadedFile("m.csv", b"dora\nbob\ndora\n", content_type="text/csv")
        r = client.post(url, {"action": "import", "file": good}, follow=True)
        assert "1 member(s) added, 2 already in the group." in r.content.decode()
        assert UserGroupMember.objects.filter(group=group).count() == 2


class TestCards:
    def test_add_with_driver_and_expiry(self, tenants, world):
        client = tenants.client(tenants.manager_a)
        r = client.post(
            "/o/alpha/access/cards/",
            {
                "uid": "de:ad:be:ef",
                "account_name": "dora",
                "label": "Dora",
                "expires": "2026-06-30",
            },
        )
        assert r.status_code == 302
        card = RfidCard.objects.get(uid="DEADBEEF")
        assert (card.organization, card.user, card.label) == (tenants.a, tenants.driver, "Dora")
        assert expiry_date(card.expires_at) == date(2026, 6, 30)

    @pytest.mark.parametrize(
        ("uid", "message"),
        [
            ("XYZ", "&#x27;XYZ&#x27; is not a valid UID: 4 to 20 hexadecimal digits"),
            ("bbbb0001", "This card is already registered."),  # B's card: whose is not said
            ("aaaa0001", "This card is already registered."),
        ],
    )
    def test_malformed_and_taken_uids(self, tenants, world, uid, message):
        r = tenants.client(tenants.owner_a).post("/o/alpha/access/cards/", {"uid": uid})
        assert r.status_code == 400
        content = r.content.decode()
        assert message in content
        assert "Beta" not in content and "bob" not in content
        assert RfidCard.objects.count() == 2

    def test_unknown_driver(self, tenants, world):
        r = tenants.client(tenants.owner_a).post(
            "/o/alpha/access/cards/", {"uid": "CAFE0001", "account_name": "ghost"}
        )
        assert r.status_code == 400
        assert "No account named &#x27;ghost&#x27;." in r.content.decode()

    def test_block_unblock_expiry_delete(self, tenants, world):
        card = world["card"]
        url = f"/o/alpha/access/cards/{card.pk}/"
        client = tenants.client(tenants.manager_a)
        assert client.post(url, {"action": "block"}).status_code == 302
        card.refresh_from_db()
        assert card.blocked
        content = client.get("/o/alpha/access/cards/").content.decode()
        assert "blocked" in content
        client.post(url, {"action": "unblock"})
        card.refresh_from_db()
        assert not card.blocked
        prefix = f"c{card.pk}"
        r = client.post(
            url, {"action": "save", f"{prefix}-label": "Spare", f"{prefix}-expires": "2027-01-31"}
        )
        assert r.status_code == 302
        card.refresh_from_db()
        assert (card.label, expiry_date(card.expires_at)) == ("Spare", date(2027, 1, 31))
        client.post(url, {"action": "save", f"{prefix}-label": "Spare", f"{prefix}-expires": ""})
        card.refresh_from_db()
        assert card.expires_at is None
        assert client.post(url, {"action": "delete"}).status_code == 302
        assert not RfidCard.objects.filter(pk=card.pk).exists()

    def test_csv_import(self, tenants, world):
        client = tenants.client(tenants.manager_a)
        bad = SimpleUploadedFile(
            "cards.csv", b"uid,account\nCAFE0001,dora\nBBBB0001,\nnope,\n", content_type="text/csv"
        )
        r = client.post("/o/alpha/access/cards/", {"action": "import", "file": bad})
        assert r.status_code == 400
        content = r.content.decode()
        assert "Row 3, column uid: This card is already registered." in content
        assert "Row 4, column uid: &#x27;nope&#x27; is not a valid UID" in content
        assert not RfidCard.objects.filter(uid="CAFE0001").exists()
        good = SimpleUploadedFile(
            "cards.csv", b"uid;account;label\nCAFE0001;dora;Dora\nCAFE0002;;Pool\n"
        )
        r = client.post("/o/alpha/access/cards/", {"action": "import", "file": good}, follow=True)
        assert "2 card(s) imported." in r.content.decode()
        assert RfidCard.objects.get(uid="CAFE0001").user == tenants.driver
