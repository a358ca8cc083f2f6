"""The audit trail: who changed what through pages, the API and Django admin; deletions;
station traffic stays out; owners read exactly their own organization's entries."""

from __future__ import annotations

from datetime import time
from decimal import Decimal

import pytest
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from audit.models import AuditEntry
from billing.models import RfidCard, Tariff
from loadmgmt.models import StationLimits
from portal.models import Membership, Role
from stations.models import Station
from tests.billing.factories import TariffFactory
from tests.factories import InvitationFactory, MembershipFactory, UserFactory
from tests.stations.factories import StationFactory

pytestmark = pytest.mark.django_db

API = "/api/v1/organizations"


def entries_for(model, **filters):
    return AuditEntry.objects.filter(
        content_type=ContentType.objects.get_for_model(model), **filters
    ).order_by("id")


def updates(model, pk):
    return entries_for(model, object_id=pk, action=AuditEntry.Action.UPDATE)


@pytest.fixture
def standard(tenants):
    return TariffFactory(organization=tenants.a, name="Standard", per_kwh=Decimal("0.45"))


def tariff_form(tariff, **changes):
    values = {
        "name": tariff.name,
        "per_kwh": str(tariff.per_kwh),
        "per_hour": str(tariff.per_hour),
        "currency": tariff.currency,
        "vat_percent": str(tariff.vat_percent),
    }
    return {**values, **changes}


class TestWhoChangedWhat:
    def test_a_price_change_on_the_owner_page_is_logged_with_user_and_old_and_new(
        self, tenants, standard
    ):
        owner = tenants.client(tenants.owner_a)
        r = owner.post(
            f"/o/alpha/access/tariffs/{standard.pk}/", tariff_form(standard, per_kwh="0.5")
        )
        assert r.status_code == 302
        (entry,) = updates(Tariff, standard.pk)
        assert entry.actor == tenants.owner_a
        assert entry.organization_id == tenants.a.pk
        # Only the price: the form's "8.1" against the stored "8.10" is no change.
        assert entry.changes_dict == {"per_kwh": ["0.4500", "0.5000"]}

        page = owner.get("/o/alpha/audit/").content.decode()
        assert "Tariff 'Standard'" in page
        assert "Price per kWh: 0.4500 → 0.5000" in page
        assert "anna" in page

    def test_saving_an_unchanged_form_writes_nothing(self, tenants, standard):
        owner = tenants.client(tenants.owner_a)
        r = owner.post(f"/o/alpha/access/tariffs/{standard.pk}/", tariff_form(standard))
        assert r.status_code == 302
        assert not updates(Tariff, standard.pk).exists()

    def test_a_limit_change_through_the_api_is_logged_with_the_token_user(self, tenants):
        station = StationFactory(organization=tenants.a)
        token = Token.objects.create(user=tenants.manager_a)
        api = APIClient()
        api.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
        url = f"{API}/alpha/station-limits/{station.pk}/"
        assert api.patch(url, {"max_current": 16}, format="json").status_code == 200
        assert api.patch(url, {"max_current": 10}, format="json").status_code == 200
        limits = StationLimits.objects.get(station=station)
        created = entries_for(StationLimits, object_id=limits.pk, action=AuditEntry.Action.CREATE)
        assert [e.actor for e in created] == [tenants.manager_a]
        (entry,) = updates(StationLimits, limits.pk)
        assert entry.actor == tenants.manager_a
        assert entry.changes_dict == {"max_current": ["16", "10"]}

        r = api.get(f"{API}/alpha/audit/", {"type": "loadmgmt.stationlimits"})
        assert r.status_code == 200
        newest = r.json()["results"][0]
        assert (newest["actor"], newest["action"], newest["object_type"]) == (
            "max",
            "changed",
            "Station limits",
        )
        assert newest["changes"] == [{"field": "Max current (A)", "old": "16", "new": "10"}]

    def test_a_change_in_django_admin_is_logged_with_the_admin(self, tenants, standard):
        admin = UserFactory(username="root", is_staff=True, is_superuser=True)
        client = tenants.client(admin)
        created = standard.created_at.astimezone()
        r = client.post(
            f"/admin/billing/tariff/{standard.pk}/change/",
            {
                **tariff_form(standard, per_hour="2"),
                "organization": tenants.a.pk,
                "created_at_0": created.strftime("%Y-%m-%d"),
                "created_at_1": created.strftime("%H:%M:%S"),
            },
        )
        assert r.status_code == 302, r.content.decode()[:2000]
        (entry,) = updates(Tariff, standard.pk)
        assert entry.actor == admin
        assert entry.changes_dict == {"per_hour": ["0.0000", "2.0000"]}
        # The owner sees the platform admin's change in his trail.
        assert "root" in tenants.client(tenants.owner_a).get("/o/alpha/audit/").content.decode()

    def test_django_admin_lists_every_organizations_entries(self, tenants, standard):
        admin = UserFactory(username="root", is_staff=True, is_superuser=True)
        TariffFactory(organization=tenants.b, name="BetaOnly")
        page = tenants.client(admin).get("/admin/audit/auditentry/")
        assert page.status_code == 200
        assert "Standard" in page.content.decode() and "BetaOnly" in page.content.decode()

    def test_a_member_added_and_a_role_changed(self, tenants):
        invitation = InvitationFactory(organization=tenants.a, email=tenants.driver.email)
        dora = tenants.client(tenants.driver)
        assert dora.post(f"/invitations/{invitation.token}/").status_code == 302
        membership = Membership.objects.get(organization=tenants.a, user=tenants.driver)
        (joined,) = entries_for(Membership, object_id=membership.pk)
        assert (joined.action, joined.actor, joined.organization_id) == (
            AuditEntry.Action.CREATE,
            tenants.driver,
            tenants.a.pk,
        )
        assert joined.changes_dict["role"] == ["None", "viewer"]

        owner = tenants.client(tenants.owner_a)
        r = owner.post(f"/o/alpha/members/{membership.pk}/", {"role": Role.MANAGER})
        assert r.status_code == 302
        (changed,) = updates(Membership, membership.pk)
        assert (changed.actor, changed.changes_dict) == (
            tenants.owner_a,
            {"role": ["viewer", "manager"]},
        )
        page = owner.get("/o/alpha/audit/", {"type": "portal.membership"}).content.decode()
        assert "Role: Viewer → Manager" in page
        assert "Role: — → Viewer" in page

    def test_a_deleted_tariff_stays_in_the_trail_with_its_name(self, tenants, standard):
        owner = tenants.client(tenants.owner_a)
        r = owner.post(f"/o/alpha/access/tariffs/{standard.pk}/", {"action": "delete"})
        assert r.status_code == 302
        assert not Tariff.objects.filter(pk=standard.pk).exists()
        (deleted,) = entries_for(Tariff, object_id=standard.pk, action=AuditEntry.Action.DELETE)
        assert (deleted.object_repr, deleted.actor, deleted.organization_id) == (
            "Standard",
            tenants.owner_a,
            tenants.a.pk,
        )
        rows = tenants.api(tenants.owner_a).get(f"{API}/alpha/audit/").json()["results"]
        assert rows[0]["action"] == "deleted"
        assert rows[0]["object_label"] == "Standard"
        assert {"field": "Price per kWh", "old": "0.4500", "new": "—"} in rows[0]["changes"]

    def test_changes_without_a_user_are_by_system(self, tenants, standard):
        from billing import owner_services

        owner_services.tariff_update(
            tariff=standard, **{**tariff_form(standard), "per_kwh": Decimal("0.6")}
        )
        (entry,) = updates(Tariff, standard.pk)
        assert entry.actor is None
        row = tenants.api(tenants.owner_a).get(f"{API}/alpha/audit/").json()["results"][0]
        assert row["actor"] == "system"

    def test_secrets_are_masked(self, tenants):
        station = StationFactory(organization=tenants.a)
        station.third_party_url = "wss://relay:s3cret@backend.example/ocpp"
        station.password_hash = "argon2$new-hash"
        station.save(update_fields=["third_party_url", "password_hash"])
        (entry,) = updates(Station, station.pk)
        assert "s3cret" not in str(entry.changes)
        assert "new-hash" not in str(entry.changes)
        assert entry.changes_dict["third_party_url"][1] == "wss://relay:••••@backend.example/ocpp"

    def test_a_drivers_own_card_belongs_to_no_organization(self, tenants):
        card = RfidCard.objects.create(uid="CAFE0001", user=tenants.driver)
        (entry,) = entries_for(RfidCard, object_id=card.pk)
        assert entry.organization_id is None

    def test_deleting_an_organization_keeps_its_trail_for_the_admin(self, tenants, standard):
        from billing.models import AccessRule, ConnectorAccess
        from stations.models import Connector
        from tests.loadmgmt.factories import MeterFactory, TreeNodeFactory

        station = StationFactory(organization=tenants.a, name="Garage", connectors=1)
        access = ConnectorAccess.objects.create(
            connector=Connector.objects.get(station=station), access="public", tariff=None
        )
        AccessRule.objects.create(
            connector_access=access, start_time=time(22), end_time=time(6), access="private"
        )
        MeterFactory(node=TreeNodeFactory(organization=tenants.a, name="House"))
        r = tenants.client(tenants.owner_a).post(
            "/o/alpha/delete/", {"confirm_name": "Alpha Energy"}
        )
        assert r.status_code == 302
        deleted = AuditEntry.objects.filter(action=AuditEntry.Action.DELETE)
        labels = set(deleted.values_list("object_repr", flat=True))
        assert {"Alpha Energy", "Standard", "Garage", "House"} <= labels
        assert set(deleted.values_list("organization_id", flat=True)) == {tenants.a.pk}
        assert set(deleted.values_list("actor", flat=True)) == {tenants.owner_a.pk}
        assert entries_for(AccessRule, action=AuditEntry.Action.DELETE).count() == 1

    def test_an_audited_create_reads_no_reverse_relation(self, tenants):
        from loadmgmt.models import Meter, TreeNode

        ContentType.objects.get_for_model(TreeNode)  # cached per process
        with CaptureQueriesContext(connection) as queries:
            node = TreeNode.objects.create(
                organization=tenants.a, name="N", limit_l1=1, limit_l2=1, limit_l3=1
            )
        assert len(queries) == 2, [q["sql"] for q in queries]  # the row and its entry
        Meter.objects.create(node_id=node.pk, name="M", mqtt_topic="t/m", token_hash="x")
        # Nothing cached "no meter" on the instance while the entry was written.
        assert node.meter.name == "M"


class TestStationTrafficStaysOut:
    def test_liveness_saves_read_nothing_and_write_nothing(self, tenants):
        station = StationFactory(organization=tenants.a)
        before = AuditEntry.objects.count()
        with CaptureQueriesContext(connection) as queries:
            station.save(update_fields=["last_seen", "status", "online"])
        # The UPDATE only: no read of the old row, no entry.
        assert len(queries) == 1, [q["sql"] for q in queries]
        assert AuditEntry.objects.count() == before

    def test_a_configuration_save_is_logged(self, tenants):
        station = StationFactory(organization=tenants.a, name="Garage")
        station.name = "Carport"
        station.save(update_fields=["name", "last_seen"])
        (entry,) = updates(Station, station.pk)
        assert entry.changes_dict == {"name": ["Garage", "Carport"]}


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("ocpp_settings")
class TestOcpp:
    async def test_boot_heartbeat_status_and_meter_values_write_no_entries_and_no_audit_sql(
        self, tenants, monkeypatch
    ):
        from asgiref.sync import sync_to_async
        from django.db.backends import utils

        from tests.stations.factories import STATION_PASSWORD
        from tests.stations.helpers import BOOT
        from tests.stations.helpers import Station as FakeStation

        station = await sync_to_async(StationFactory)(
            organization=tenants.a, charge_point_id="ALPHA-1", connectors=2
        )
        before = await AuditEntry.objects.acount()
        statements: list[str] = []
        original = utils.CursorWrapper._execute

        def recording(self, sql, params, *ignored):
            statements.append(sql)
            return original(self, sql, params, *ignored)

        # On the class: every thread's connection, the OCPP consumer's database thread too.
        monkeypatch.setattr(utils.CursorWrapper, "_execute", recording)

        cp = FakeStation("/ocpp/ALPHA-1", password=STATION_PASSWORD)
        assert (await cp.handshake())[0]
        await cp.call("BootNotification", BOOT)
        await cp.call("Heartbeat", {})
        statements.clear()
        for connector in (0, 1, 2):
            await cp.call(
                "StatusNotification",
                {"connectorId": connector, "errorCode": "NoError", "status": "Available"},
            )
        status_sql = list(statements)
        await cp.call(
            "MeterValues",
            {
                "connectorId": 1,
                "meterValue": [
                    {
                        "timestamp": "2026-01-01T10:00:00Z",
                        "sampledValue": [
                            {"value": "1000", "measurand": "Energy.Active.Import.Register"}
                        ],
                    }
                ],
            },
        )
        await cp.call("Heartbeat", {})
        await cp.disconnect()

        assert status_sql, "the recorder saw the StatusNotifications' queries"
        assert not [sql for sql in statements if "audit_auditentry" in sql]
        assert await AuditEntry.objects.acount() == before
        # The station did answer and store the traffic (the test is not vacuous).
        await station.arefresh_from_db()
        assert station.vendor == "Acme" and station.status == "Available"


class TestTenancy:
    @pytest.fixture
    def both(self, tenants, standard):
        alpha = tenants.client(tenants.owner_a)
        alpha.post(f"/o/alpha/access/tariffs/{standard.pk}/", tariff_form(standard, per_kwh="0.5"))
        secret = TariffFactory(organization=tenants.b, name="BetaSecret")
        beta = tenants.client(tenants.owner_b)
        beta.post(f"/o/beta/access/tariffs/{secret.pk}/", tariff_form(secret, per_kwh="0.7"))
        return updates(Tariff, standard.pk).get(), updates(Tariff, secret.pk).get()

    def test_beta_sees_none_of_alphas_entries(self, tenants, both):
        alpha_entry, beta_entry = both
        beta = tenants.client(tenants.owner_b)
        assert beta.get("/o/alpha/audit/").status_code == 404
        page = beta.get("/o/beta/audit/").content.decode()
        assert "BetaSecret" in page and "Standard" not in page

        api = tenants.api(tenants.owner_b)
        assert api.get(f"{API}/alpha/audit/").status_code == 404
        assert api.get(f"{API}/beta/audit/{alpha_entry.pk}/").status_code == 404
        ids = [row["id"] for row in api.get(f"{API}/beta/audit/").json()["results"]]
        assert beta_entry.pk in ids and alpha_entry.pk not in ids
        assert api.get(f"{API}/beta/audit/{beta_entry.pk}/").status_code == 200

    def test_a_driver_and_a_viewer_cannot_read_it(self, tenants, both):
        for user, status in ((tenants.driver, 404), (tenants.viewer_a, 403)):
            assert tenants.client(user).get("/o/alpha/audit/").status_code == status
            assert tenants.api(user).get(f"{API}/alpha/audit/").status_code == status
        assert tenants.client(tenants.manager_a).get("/o/alpha/audit/").status_code == 200

    def test_the_api_has_no_write_methods(self, tenants, both):
        alpha_entry, _beta_entry = both
        api = tenants.api(tenants.owner_a)
        assert api.post(f"{API}/alpha/audit/", {}, format="json").status_code == 405
        assert api.delete(f"{API}/alpha/audit/{alpha_entry.pk}/").status_code == 405
        assert AuditEntry.objects.filter(pk=alpha_entry.pk).exists()


class TestPage:
    def test_filters_by_type_and_person(self, tenants, standard):
        owner = tenants.client(tenants.owner_a)
        owner.post(f"/o/alpha/access/tariffs/{standard.pk}/", tariff_form(standard, per_kwh="0.5"))
        MembershipFactory(organization=tenants.a, user__username="zed")  # by "system"
        by_type = owner.get("/o/alpha/audit/", {"type": "billing.tariff"}).content.decode()
        assert "Standard" in by_type and "zed" not in by_type
        by_person = owner.get("/o/alpha/audit/", {"actor": tenants.owner_a.pk}).content.decode()
        assert "Standard" in by_person and "zed @" not in by_person
        system = owner.get("/o/alpha/audit/", {"actor": "system"}).content.decode()
        assert "zed @" in system and "0.4500 → 0.5000" not in system
        api = tenants.api(tenants.owner_a)
        rows = api.get(f"{API}/alpha/audit/", {"actor": "system"}).json()["results"]
        assert rows and {row["actor"] for row in rows} == {"system"}
        for odd in ("nobody", "²", "9" * 30):
            assert api.get(f"{API}/alpha/audit/", {"actor": odd}).json()["count"] == 0
            assert owner.get("/o/alpha/audit/", {"actor": odd}).status_code == 200
        assert api.get(f"{API}/alpha/audit/", {"type": "no.such"}).json()["count"] == 0

    def test_newest_first_paginated_with_pinned_queries(
        self, tenants, django_assert_max_num_queries
    ):
        # Names that no timestamp on the page can contain ("T04" is in 04:15's ISO time).
        for n in range(55):
            TariffFactory(organization=tenants.a, name=f"Rate-{n:02}")
        owner = tenants.client(tenants.owner_a)
        with django_assert_max_num_queries(10):
            first = owner.get("/o/alpha/audit/").content.decode()
        assert "Rate-54" in first and "Rate-04" not in first and "Page 1 of 2" in first
        second = owner.get("/o/alpha/audit/", {"page": 2}).content.decode()
        assert "Rate-04" in second and "Rate-54" not in second
        with django_assert_max_num_queries(5):
            r = tenants.api(tenants.owner_a).get(f"{API}/alpha/audit/", {"type": "billing.tariff"})
        assert r.json()["count"] == 55
        assert r.json()["results"][0]["object_label"] == "Rate-54"

    def test_nav_links_it_for_managers_only(self, tenants):
        link = 'href="/o/alpha/audit/"'
        assert link in tenants.client(tenants.manager_a).get("/o/alpha/").content.decode()
        assert link not in tenants.client(tenants.viewer_a).get("/o/alpha/").content.decode()

    def test_the_endpoint_is_in_the_openapi_schema(self, tenants):
        schema = tenants.client(tenants.owner_a).get("/api/v1/schema/").content.decode()
        assert "/api/v1/organizations/{org}/audit/" in schema


class TestCost:
    def test_an_audited_save_costs_two_queries_the_old_row_and_the_entry(self, tenants, standard):
        from auditlog.context import disable_auditlog

        from billing import owner_services

        ContentType.objects.get_for_model(Tariff)  # cached per process, as in production

        def save(per_kwh: str) -> int:
            values = {**tariff_form(standard), "per_kwh": Decimal(per_kwh)}
            with CaptureQueriesContext(connection) as queries:
                owner_services.tariff_update(tariff=standard, **values)
            return len(queries)

        with disable_auditlog():
            plain = save("0.5")
        audited = save("0.6")
        assert audited - plain == 2, (plain, audited)


@pytest.mark.django_db(transaction=True)
class TestAsgiPath:
    async def test_a_token_request_through_the_async_stack_is_attributed(self, tenants):
        from asgiref.sync import sync_to_async
        from django.test import AsyncClient

        station = await sync_to_async(StationFactory)(organization=tenants.a)
        token = await Token.objects.acreate(user=tenants.manager_a)
        r = await AsyncClient().patch(
            f"{API}/alpha/station-limits/{station.pk}/",
            {"priority": 5},
            content_type="application/json",
            headers={"Authorization": f"Token {token.key}"},
        )
        assert r.status_code == 200, r.content
        entry = await AuditEntry.objects.select_related("actor").aget(
            content_type__model="stationlimits", object_id__isnull=False
        )
        assert entry.actor == tenants.manager_a
        assert entry.remote_addr == "127.0.0.1"


class TestBulkChanges:
    """Changes made many at a time are in the trail too, one entry per row."""

    def test_stations_added_to_a_load_group(self, tenants):
        from loadmgmt import services as lm
        from loadmgmt.models import LoadGroupMember

        stations = [StationFactory(organization=tenants.a) for _ in range(3)]
        group = lm.group_create(
            organization=tenants.a, name="Car park", max_current=32, stations=stations
        )
        created = entries_for(LoadGroupMember, action=AuditEntry.Action.CREATE)
        assert created.count() == 3
        assert {e.organization_id for e in created} == {tenants.a.pk}
        assert group.members.count() == 3

    def test_cards_and_group_members_imported_from_csv(self, tenants):
        from billing.imports import cards_import, group_members_import
        from billing.models import UserGroup, UserGroupMember

        cards_import(organization=tenants.a, data="uid\n04A1B2C3\n04A1B2C4\n")
        assert entries_for(RfidCard, action=AuditEntry.Action.CREATE).count() == 2
        group = UserGroup.objects.create(organization=tenants.a, name="Staff")
        group_members_import(group=group, data=f"account\n{tenants.driver.username}\n")
        assert entries_for(UserGroupMember, action=AuditEntry.Action.CREATE).count() == 1
