"""Load-management configuration: services (every validation message), pages, API, roles,
tenant isolation, and the mapping onto the engine's inputs."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from loadmgmt import selectors, services
from loadmgmt.engine import model as engine
from loadmgmt.models import LoadGroupMember, StationLimits, TreeNode, power_kw
from portal.errors import Conflict
from tests.loadmgmt.factories import (
    LoadGroupFactory,
    LoadGroupMemberFactory,
    MeterFactory,
    TreeNodeFactory,
)
from tests.stations.factories import StationFactory

pytestmark = pytest.mark.django_db


def messages(exc: pytest.ExceptionInfo) -> dict[str, list[str]]:
    return exc.value.message_dict


# --- station limits -----------------------------------------------------------------------


class TestStationLimits:
    def test_defaults_until_set(self, tenants):
        station = StationFactory(organization=tenants.a)
        limits = services.station_limits_get(station=station)
        assert limits.pk is None
        assert (limits.min_current, limits.max_current, limits.installer_max) == (6, 32, 32)
        assert limits.fail_safe_current == 0

    def test_set_and_power(self, tenants):
        station = StationFactory(organization=tenants.a)
        limits = services.station_limits_set(
            station=station, max_current=16, installer_max=20, phase_rotation="L2-L3-L1"
        )
        assert StationLimits.objects.get(station=station).max_current == 16
        assert limits.max_power_kw == 11
        assert power_kw(32) == 22
        assert power_kw(16) == 11
        assert power_kw(32, 1) == 7.3

    def test_min_above_max(self, tenants):
        station = StationFactory(organization=tenants.a)
        with pytest.raises(ValidationError) as exc:
            services.station_limits_set(station=station, min_current=20, max_current=16)
        assert messages(exc) == {
            "min_current": ["The min current (20 A) is above the max current (16 A)."]
        }

    def test_max_above_installer_max(self, tenants):
        station = StationFactory(organization=tenants.a)
        with pytest.raises(ValidationError) as exc:
            services.station_limits_set(station=station, max_current=32, installer_max=16)
        assert messages(exc)["max_current"] == [
            "The max current (32 A) is above the installer's max (16 A), which nothing may "
            "override."
        ]

    @pytest.mark.parametrize(
        ("field", "value", "message"),
        [
            ("max_current", 33, "The max current must be a whole number of ampere from 6 to 32 A."),
            ("max_current", 5, "The max current must be a whole number of ampere from 6 to 32 A."),
            ("min_current", 4, "The min current must be a whole number of ampere from 6 to 32 A."),
            (
                "installer_max",
                40,
                "The installer's max must be a whole number of ampere from 6 to 32 A.",
            ),
            (
                "fail_safe_current",
                3,
                "The fail-safe current must be 0 A or from 6 A to the installer's max (32 A).",
            ),
            ("phase_rotation", "L1-L3-L2", "Choose L1-L2-L3, L2-L3-L1 or L3-L1-L2."),
            ("shedding_inputs", "in1", "Choose none, IN1+IN2 or IN2 only."),
            ("priority", 10, "The priority must be from 0 to 9."),
        ],
    )
    def test_refused_with_message(self, tenants, field, value, message):
        station = StationFactory(organization=tenants.a)
        with pytest.raises(ValidationError) as exc:
            services.station_limits_set(station=station, **{field: value})
        assert messages(exc)[field] == [message]
        assert not StationLimits.objects.filter(station=station).exists()

    def test_fail_safe_above_installer_max(self, tenants):
        station = StationFactory(organization=tenants.a)
        with pytest.raises(ValidationError) as exc:
            services.station_limits_set(
                station=station, installer_max=16, max_current=16, fail_safe_current=20
            )
        assert "installer's max (16 A)" in messages(exc)["fail_safe_current"][0]
        services.station_limits_set(station=station, fail_safe_current=0)

    def test_config_change_calls_the_recompute_hook(
        self, tenants, monkeypatch, django_capture_on_commit_callbacks
    ):
        calls = []
        monkeypatch.setattr(services, "tree_changed", lambda org, node: calls.append((org, node)))
        station = StationFactory(organization=tenants.a)
        with django_capture_on_commit_callbacks(execute=True):
            services.station_limits_set(station=station, max_current=20)
        assert calls == [(tenants.a.pk, None)]


# --- groups -------------------------------------------------------------------------------


class TestGroups:
    def test_station_in_two_groups_is_refused(self, tenants):
        station = StationFactory(organization=tenants.a, charge_point_id="DEMO-CP-001")
        services.group_create(
            organization=tenants.a, name="Car park", max_current=32, stations=[station]
        )
        with pytest.raises(ValidationError) as exc:
            services.group_create(
                organization=tenants.a, name="Garage", max_current=32, stations=[station]
            )
        assert messages(exc) == {"stations": ["DEMO-CP-001 is already in group Car park."]}
        assert LoadGroupMember.objects.get(station=station).group.name == "Car park"
        assert not tenants.a.load_groups.filter(name="Garage").exists()

    def test_database_refuses_a_second_membership(self, tenants):
        from django.db import IntegrityError, transaction

        member = LoadGroupMemberFactory(group__organization=tenants.a)
        other = LoadGroupFactory(organization=tenants.a)
        with pytest.raises(IntegrityError), transaction.atomic():
            LoadGroupMember.objects.create(group=other, station=member.station)

    def test_members_replaced_and_no_size_cap(self, tenants):
        stations = [StationFactory(organization=tenants.a, connectors=1) for _ in range(205)]
        group = services.group_create(
            organization=tenants.a, name="Big", max_current=400, stations=stations
        )
        assert group.members.count() == 205
        services.group_update(group=group, stations=stations[:3])
        assert sorted(group.members.values_list("station_id", flat=True)) == sorted(
            s.pk for s in stations[:3]
        )

    def test_group_validation(self, tenants):
        with pytest.raises(ValidationError) as exc:
            services.group_create(organization=tenants.a, name=" ", max_current=3)
        assert messages(exc) == {
            "name": ["Enter a name."],
            "max_current": [
                "The max current must be a whole number of ampere from 6 to 100,000 A."
            ],
        }
        services.group_create(organization=tenants.a, name="A", max_current=32)
        with pytest.raises(ValidationError) as exc:
            services.group_create(organization=tenants.a, name="a", max_current=32)
        assert messages(exc) == {"name": ["There is already a group named a."]}

    def test_foreign_station_or_node_refused(self, tenants):
        foreign_station = StationFactory(organization=tenants.b)
        with pytest.raises(ValidationError) as exc:
            services.group_create(
                organization=tenants.a, name="G", max_current=32, stations=[foreign_station]
            )
        assert messages(exc) == {"stations": ["Choose stations of this organization."]}
        foreign_node = TreeNodeFactory(organization=tenants.b)
        with pytest.raises(ValidationError) as exc:
            services.group_create(
                organization=tenants.a, name="G", max_current=32, node=foreign_node
            )
        assert messages(exc) == {"node": ["Choose a node of this organization."]}


# --- the tree -----------------------------------------------------------------------------


class TestTree:
    def test_loop_is_refused(self, tenants):
        house = services.node_create(organization=tenants.a, name="House", limit_l1=63)
        board = services.node_create(
            organization=tenants.a, name="Board", limit_l1=40, parent=house
        )
        sub = services.node_create(organization=tenants.a, name="Sub", limit_l1=20, parent=board)
        with pytest.raises(ValidationError) as exc:
            services.node_update(node=house, parent=sub)
        assert messages(exc) == {
            "parent": ["Sub is below House: putting House under it would make a loop in the tree."]
        }
        with pytest.raises(ValidationError) as exc:
            services.node_update(node=house, parent=house)
        assert messages(exc) == {"parent": ["House cannot be its own parent."]}
        house.refresh_from_db()
        assert house.parent_id is None

    def test_child_over_parent_is_allowed_but_flagged(self, tenants):
        house = services.node_create(organization=tenants.a, name="House", limit_l1=63)
        services.node_create(
            organization=tenants.a,
            name="Board",
            parent=house,
            limit_l1=40,
            limit_l2=80,
            limit_l3=40,
        )
        group = services.group_create(
            organization=tenants.a,
            name="Car park",
            max_current=50,
            node=TreeNode.objects.get(name="Board"),
        )
        stations = [StationFactory(organization=tenants.a) for _ in range(3)]
        for s in stations:
            services.station_limits_set(station=s, fail_safe_current=20)
        services.group_update(group=group, stations=stations)
        tree = selectors.tree_for(tenants.a, now=timezone.now())
        assert tree.warnings == [
            "Board: the limit on L2 (80 A) exceeds House's (63 A); House's limit applies.",
            "group Car park: the limit on L1 (50 A) exceeds Board's (40 A); Board's limit applies.",
            "group Car park: the limit on L3 (50 A) exceeds Board's (40 A); Board's limit applies.",
            "group Car park: the stations' fail-safe currents add up to 60 A, above its 50 A: "
            "offline stations alone could overload it.",
        ]
        board_view = tree.roots[0].children[0]
        assert board_view.node.name == "Board"
        assert [g.group.name for g in board_view.groups] == ["Car park"]

    def test_node_validation_messages(self, tenants):
        with pytest.raises(ValidationError) as exc:
            services.node_create(
                organization=tenants.a,
                name="",
                limit_l1=0,
            )
        assert messages(exc)["name"] == ["Enter a name."]
        assert messages(exc)["limit_l1"] == [
            "The limit must be a whole number of ampere from 1 to 100,000 A."
        ]
        with pytest.raises(ValidationError) as exc:
            services.node_create(
                organization=tenants.a, name="N", limit_l1=32, safety_margin=32, fallback_limit=40
            )
        assert messages(exc) == {
            "safety_margin": [
                "The safety margin must be from 0 A to below the smallest limit (32 A)."
            ],
            "fallback_limit": ["The fallback limit must be from 0 A to the node's limit (32 A)."],
        }
        services.node_create(organization=tenants.a, name="N", limit_l1=32)
        with pytest.raises(ValidationError) as exc:
            services.node_create(organization=tenants.a, name="n", limit_l1=32)
        assert messages(exc) == {"name": ["There is already a node named n."]}

    def test_parent_of_another_tenant_refused(self, tenants):
        foreign = TreeNodeFactory(organization=tenants.b)
        with pytest.raises(ValidationError) as exc:
            services.node_create(organization=tenants.a, name="N", limit_l1=32, parent=foreign)
        assert messages(exc) == {"parent": ["Choose a node of this organization."]}

    def test_delete_refused_while_not_empty(self, tenants):
        house = services.node_create(organization=tenants.a, name="House", limit_l1=63)
        services.node_create(organization=tenants.a, name="Board", limit_l1=40, parent=house)
        services.group_create(organization=tenants.a, name="G", max_current=32, node=house)
        with pytest.raises(Conflict) as exc:
            services.node_delete(node=house)
        assert exc.value.detail == "House still has Board, G below it: move or delete them first."

    def test_shedding_signal_since(self, tenants):
        node = services.node_create(organization=tenants.a, name="House", limit_l1=63)
        assert node.shed_since is None
        services.node_set_shedding(node=node, signal="to_zero", source="grid operator")
        since = node.shed_since
        assert since is not None and node.shed_source == "grid operator"
        services.node_update(node=node, name="House connection", shed_signal="to_zero")
        assert node.shed_since == since  # unchanged signal: same start
        services.node_set_shedding(node=node, signal="none")
        assert node.shed_since is None and node.shed_source == ""

    def test_organization_deletion_removes_the_whole_tree(self, tenants):
        house = services.node_create(organization=tenants.a, name="House", limit_l1=63)
        board = services.node_create(
            organization=tenants.a, name="Board", limit_l1=40, parent=house
        )
        MeterFactory(node=house)
        LoadGroupMemberFactory(group=LoadGroupFactory(organization=tenants.a, node=board))
        tenants.a.delete()
        assert not TreeNode.objects.exists()

    def test_engine_inputs(self, tenants):
        now = timezone.now()
        house = services.node_create(
            organization=tenants.a, name="House", limit_l1=63, safety_margin=3, fallback_limit=32
        )
        meter = MeterFactory(node=house, stale_after=30)
        services.meter_reading_record(meter=meter, current=(40.0, 30.0, 20.0), time=now)
        group = services.group_create(organization=tenants.a, name="G", max_current=32, node=house)
        station = StationFactory(organization=tenants.a)
        services.group_update(group=group, stations=[station])
        services.station_limits_set(
            station=station, phase_rotation="L3-L1-L2", can_switch_phases=True, fail_safe_current=6
        )
        nodes = {n.id: n for n in selectors.engine_nodes(tenants.a, now=now)}
        assert nodes[f"n{house.pk}"].budget(now.timestamp(), (0.0, 0.0, 0.0)) == (
            20.0,
            30.0,
            40.0,
        )
        assert nodes[f"g{group.pk}"].parent == f"n{house.pk}"
        kwargs = selectors.engine_station_settings(tenants.a)[station.pk]
        st = engine.Station(str(station.pk), **kwargs)
        assert st.rotation is engine.PhaseRotation.L3_L1_L2
        assert st.parent == f"g{group.pk}" and st.fail_safe_current == 6
        stale = now.timestamp() + 31
        assert nodes[f"n{house.pk}"].budget(stale, (0.0, 0.0, 0.0)) == (32.0, 32.0, 32.0)


# --- pages --------------------------------------------------------------------------------


class TestPages:
    def test_overview_shows_tree_limits_warnings_and_meters(self, tenants):
        house = services.node_create(organization=tenants.a, name="House", limit_l1=63)
        services.node_create(organization=tenants.a, name="Board", limit_l1=80, parent=house)
        MeterFactory(node=house, name="House meter")
        station = StationFactory(organization=tenants.a, charge_point_id="DEMO-CP-001")
        services.group_create(
            organization=tenants.a, name="Car park", max_current=32, node=house, stations=[station]
        )
        r = tenants.client(tenants.viewer_a).get("/o/alpha/load/")
        assert r.status_code == 200
        html = r.content.decode()
        for text in (
            "House",
            "Board",
            "Car park",
            "DEMO-CP-001",
            "6–32 A (22 kW)",
            "House meter",
            "no reading yet",
            "stale",
            "Board: the limit on L1 (80 A) exceeds House&#x27;s (63 A)",
        ):
            assert text in html, text
        assert "Add node" not in html  # viewers read

    def test_overview_query_count(self, tenants, django_assert_max_num_queries):
        house = TreeNodeFactory(organization=tenants.a)
        for _ in range(5):
            node = TreeNodeFactory(organization=tenants.a, parent=house)
            MeterFactory(node=node)
            group = LoadGroupFactory(organization=tenants.a, node=node)
            for _ in range(3):
                LoadGroupMemberFactory(group=group)
        client = tenants.client(tenants.viewer_a)
        with django_assert_max_num_queries(15):
            assert client.get("/o/alpha/load/").status_code == 200

    def test_manager_creates_node_and_group_with_stations(self, tenants):
        client = tenants.client(tenants.manager_a)
        station = StationFactory(organization=tenants.a)
        r = client.post(
            "/o/alpha/load/nodes/add/",
            {
                "name": "House",
                "limit_l1": 63,
                "limit_l2": 63,
                "limit_l3": 63,
                "safety_margin": 0,
                "shed_signal": "none",
            },
        )
        assert r.status_code == 302
        house = TreeNode.objects.get(organization=tenants.a, name="House")
        r = client.post(
            "/o/alpha/load/groups/add/",
            {
                "name": "Car park",
                "max_current": 32,
                "failure_action": "fail_safe",
                "node": house.pk,
                "stations": [station.pk],
            },
        )
        assert r.status_code == 302
        assert LoadGroupMember.objects.get(station=station).group.node == house

    def test_station_in_another_group_message_on_the_page(self, tenants):
        station = StationFactory(organization=tenants.a, charge_point_id="DEMO-CP-001")
        services.group_create(
            organization=tenants.a, name="Car park", max_current=32, stations=[station]
        )
        client = tenants.client(tenants.manager_a)
        page = client.get("/o/alpha/load/groups/add/").content.decode()
        assert f"DEMO-CP-001 · {station.name} (in group Car park)" in page
        r = client.post(
            "/o/alpha/load/groups/add/",
            {
                "name": "Garage",
                "max_current": 32,
                "failure_action": "stop",
                "stations": [station.pk],
            },
        )
        assert r.status_code == 400
        assert "DEMO-CP-001 is already in group Car park." in r.content.decode()

    def test_loop_message_on_the_page(self, tenants):
        house = services.node_create(organization=tenants.a, name="House", limit_l1=63)
        board = services.node_create(
            organization=tenants.a, name="Board", limit_l1=40, parent=house
        )
        r = tenants.client(tenants.manager_a).post(
            f"/o/alpha/load/nodes/{house.pk}/",
            {
                "name": "House",
                "parent": board.pk,
                "limit_l1": 63,
                "limit_l2": 63,
                "limit_l3": 63,
                "safety_margin": 0,
                "shed_signal": "none",
            },
        )
        assert r.status_code == 400
        assert "would make a loop in the tree" in r.content.decode()

    def test_station_limits_page_shows_power_and_refuses_min_above_max(self, tenants):
        station = StationFactory(organization=tenants.a)
        client = tenants.client(tenants.manager_a)
        r = client.get(f"/o/alpha/load/stations/{station.pk}/")
        assert r.status_code == 200
        assert '<span id="power-3">22</span> kW' in r.content.decode()
        data = {
            "max_current": 16,
            "min_current": 20,
            "installer_max": 32,
            "phase_rotation": "L1-L2-L3",
            "fail_safe_current": 0,
            "shedding_inputs": "in2",
            "priority": 0,
        }
        r = client.post(f"/o/alpha/load/stations/{station.pk}/", data)
        assert r.status_code == 400
        html = r.content.decode()
        assert "The min current (20 A) is above the max current (16 A)." in html
        assert '<span id="power-3">11</span> kW' in html
        data["min_current"] = 6
        assert client.post(f"/o/alpha/load/stations/{station.pk}/", data).status_code == 302
        assert StationLimits.objects.get(station=station).shedding_inputs == "in2"

    def test_viewer_cannot_change(self, tenants):
        station = StationFactory(organization=tenants.a)
        node = TreeNodeFactory(organization=tenants.a)
        client = tenants.client(tenants.viewer_a)
        assert client.get(f"/o/alpha/load/stations/{station.pk}/").status_code == 200
        assert client.post(f"/o/alpha/load/stations/{station.pk}/", {}).status_code == 403
        assert client.post("/o/alpha/load/nodes/add/", {}).status_code == 403
        assert client.post(f"/o/alpha/load/nodes/{node.pk}/delete/").status_code == 403
        assert TreeNode.objects.filter(pk=node.pk).exists()

    def test_other_tenants_objects_are_404(self, tenants):
        station = StationFactory(organization=tenants.a)
        node = TreeNodeFactory(organization=tenants.a)
        group = LoadGroupFactory(organization=tenants.a)
        meter = MeterFactory(node=node)
        client = tenants.client(tenants.owner_b)
        for url in (
            f"/o/beta/load/stations/{station.pk}/",
            f"/o/beta/load/nodes/{node.pk}/",
            f"/o/beta/load/groups/{group.pk}/",
            f"/o/beta/load/meters/{meter.pk}/",
            f"/o/beta/load/nodes/{node.pk}/meter/add/",
        ):
            assert client.get(url).status_code == 404, url
            assert client.post(url, {}).status_code == 404, url
        assert client.post(f"/o/beta/load/nodes/{node.pk}/delete/").status_code == 404
        assert client.post(f"/o/beta/load/meters/{meter.pk}/token/").status_code == 404
        assert TreeNode.objects.filter(pk=node.pk).exists()

    def test_group_under_another_tenants_node_is_refused_on_the_page(self, tenants):
        foreign = TreeNodeFactory(organization=tenants.b)
        r = tenants.client(tenants.manager_a).post(
            "/o/alpha/load/groups/add/",
            {"name": "G", "max_current": 32, "failure_action": "stop", "node": foreign.pk},
        )
        assert r.status_code == 400
        assert not tenants.a.load_groups.exists()

    def test_owner_adds_meter_and_sees_token_once(self, tenants):
        node = TreeNodeFactory(organization=tenants.a)
        url = f"/o/alpha/load/nodes/{node.pk}/meter/add/"
        assert tenants.client(tenants.manager_a).get(url).status_code == 403
        client = tenants.client(tenants.owner_a)
        r = client.post(url, {"name": "House meter", "mqtt_topic": "", "stale_after": 60})
        assert r.status_code == 200
        html = r.content.decode()
        assert "Authorization: Bearer " in html
        meter = node.meter
        token = html.split("Authorization: Bearer ")[1].split("<")[0]
        assert services.meter_token_matches(meter, token)
        assert meter.mqtt_topic.startswith("chargeportal/meters/")
        assert token not in client.get("/o/alpha/load/").content.decode()
        r = client.post(f"/o/alpha/load/meters/{meter.pk}/token/")
        new = r.content.decode().split("Authorization: Bearer ")[1].split("<")[0]
        meter.refresh_from_db()
        assert new != token
        assert not services.meter_token_matches(meter, token)
        assert services.meter_token_matches(meter, new)


# --- API ----------------------------------------------------------------------------------

API = "/api/v1/organizations"


class TestApi:
    def test_crud_and_roles(self, tenants):
        api = tenants.api(tenants.manager_a)
        r = api.post(f"{API}/alpha/load-nodes/", {"name": "House", "limit_l1": 63}, format="json")
        assert r.status_code == 201, r.json()
        house = r.json()
        assert (house["limit_l2"], house["limit_l3"], house["stale"]) == (63, 63, False)
        station = StationFactory(organization=tenants.a)
        r = api.post(
            f"{API}/alpha/load-groups/",
            {"name": "G", "max_current": 32, "node": house["id"], "stations": [station.pk]},
            format="json",
        )
        assert r.status_code == 201, r.json()
        assert r.json()["stations"] == [station.pk]
        r = api.patch(
            f"{API}/alpha/station-limits/{station.pk}/",
            {"max_current": 16, "can_switch_phases": True},
            format="json",
        )
        assert r.status_code == 200, r.json()
        assert r.json()["max_power_kw"] == 11
        assert r.json()["group"] == r.json()["group"] is not None
        viewer = tenants.api(tenants.viewer_a)
        assert viewer.get(f"{API}/alpha/load-nodes/").json()["count"] == 1
        assert viewer.get(f"{API}/alpha/station-limits/").status_code == 200
        assert (
            viewer.patch(
                f"{API}/alpha/load-nodes/{house['id']}/", {"name": "X"}, format="json"
            ).status_code
            == 403
        )
        assert (
            viewer.post(
                f"{API}/alpha/load-groups/", {"name": "X", "max_current": 32}, format="json"
            ).status_code
            == 403
        )
        # Meters: owners create (the token once), managers edit.
        assert (
            api.post(
                f"{API}/alpha/meters/", {"node": house["id"], "name": "M"}, format="json"
            ).status_code
            == 403
        )
        owner = tenants.api(tenants.owner_a)
        r = owner.post(f"{API}/alpha/meters/", {"node": house["id"], "name": "M"}, format="json")
        assert r.status_code == 201, r.json()
        assert r.json()["token"] and r.json()["stale"] is True
        meter_id = r.json()["id"]
        assert "token" not in owner.get(f"{API}/alpha/meters/{meter_id}/").json()
        r = api.patch(f"{API}/alpha/meters/{meter_id}/", {"stale_after": 120}, format="json")
        assert r.status_code == 200 and r.json()["stale_after"] == 120
        r = owner.post(f"{API}/alpha/meters/{meter_id}/rotate-token/")
        assert r.status_code == 200 and r.json()["token"]

    def test_validation_errors(self, tenants):
        api = tenants.api(tenants.manager_a)
        station = StationFactory(organization=tenants.a, charge_point_id="DEMO-CP-001")
        r = api.patch(
            f"{API}/alpha/station-limits/{station.pk}/",
            {"min_current": 20, "max_current": 16},
            format="json",
        )
        assert r.status_code == 400
        assert r.json() == {
            "error": "invalid",
            "detail": {"min_current": ["The min current (20 A) is above the max current (16 A)."]},
        }
        api.post(
            f"{API}/alpha/load-groups/",
            {"name": "A", "max_current": 32, "stations": [station.pk]},
            format="json",
        )
        r = api.post(
            f"{API}/alpha/load-groups/",
            {"name": "B", "max_current": 32, "stations": [station.pk]},
            format="json",
        )
        assert r.status_code == 400
        assert r.json()["detail"] == {"stations": ["DEMO-CP-001 is already in group A."]}
        a = api.post(f"{API}/alpha/load-nodes/", {"name": "A", "limit_l1": 63}, format="json")
        b = api.post(
            f"{API}/alpha/load-nodes/",
            {"name": "B", "limit_l1": 80, "parent": a.json()["id"]},
            format="json",
        )
        assert b.status_code == 201  # over its parent: allowed (flagged on the page)
        r = api.patch(
            f"{API}/alpha/load-nodes/{a.json()['id']}/", {"parent": b.json()["id"]}, format="json"
        )
        assert r.status_code == 400
        assert r.json()["detail"] == {
            "parent": ["B is below A: putting A under it would make a loop in the tree."]
        }
        r = api.delete(f"{API}/alpha/load-nodes/{a.json()['id']}/")
        assert r.status_code == 409
        assert r.json()["error"] == "node_not_empty"

    def test_other_tenant(self, tenants):
        node = TreeNodeFactory(organization=tenants.a)
        group = LoadGroupFactory(organization=tenants.a)
        meter = MeterFactory(node=node)
        station = StationFactory(organization=tenants.a)
        api = tenants.api(tenants.owner_b)
        for url in (
            f"load-nodes/{node.pk}/",
            f"load-groups/{group.pk}/",
            f"meters/{meter.pk}/",
            f"station-limits/{station.pk}/",
        ):
            assert api.get(f"{API}/beta/{url}").status_code == 404, url
            assert api.patch(f"{API}/beta/{url}", {}, format="json").status_code == 404, url
            assert api.delete(f"{API}/beta/{url}").status_code == 404, url
        assert api.get(f"{API}/beta/load-nodes/").json()["count"] == 0
        # A's node as parent or group node, or A's station as member, under B: refused.
        r = api.post(
            f"{API}/beta/load-groups/",
            {"name": "G", "max_current": 32, "node": node.pk},
            format="json",
        )
        assert r.status_code == 400 and "node" in r.json()["detail"]
        r = api.post(
            f"{API}/beta/load-groups/",
            {"name": "G", "max_current": 32, "stations": [station.pk]},
            format="json",
        )
        assert r.status_code == 400 and "stations" in r.json()["detail"]
        r = api.post(f"{API}/beta/meters/", {"node": node.pk, "name": "M"}, format="json")
        assert r.status_code == 400 and "node" in r.json()["detail"]
        assert not LoadGroupMember.objects.exists()

    def test_list_query_counts(self, tenants, django_assert_max_num_queries):
        for _ in range(5):
            node = TreeNodeFactory(organization=tenants.a)
            MeterFactory(node=node)
            LoadGroupMemberFactory(group=LoadGroupFactory(organization=tenants.a, node=node))
        api = tenants.api(tenants.viewer_a)
        for url, limit in (
            ("load-nodes/", 6),
            ("load-groups/", 6),
            ("meters/", 6),
            ("station-limits/", 6),
        ):
            with django_assert_max_num_queries(limit):
                assert api.get(f"{API}/alpha/{url}").status_code == 200


def test_admin_lists_every_model(admin_client, tenants):
    MeterFactory(node=TreeNodeFactory(organization=tenants.a))
    for name in (
        "treenode",
        "loadgroup",
        "loadgroupmember",
        "stationlimits",
        "meter",
        "meterreading",
    ):
        assert admin_client.get(f"/admin/loadmgmt/{name}/", {"q": "Alpha"}).status_code == 200


def test_dashboard_panel_once_configured(tenants):
    client = tenants.client(tenants.viewer_a)
    assert "loadmgmt-panel" not in client.get("/o/alpha/").content.decode()
    node = TreeNodeFactory(organization=tenants.a)
    MeterFactory(node=node)
    LoadGroupMemberFactory(group=LoadGroupFactory(organization=tenants.a, node=node))
    html = client.get("/o/alpha/").content.decode()
    assert 'id="loadmgmt-panel"' in html
    assert "stations in 1 group · 1 node · 1 meter · " in html  # singular where one
    assert "1 stale" in html
    MeterFactory(node=TreeNodeFactory(organization=tenants.a))
    assert "1 group · 2 nodes · 2 meters" in client.get("/o/alpha/").content.decode()


def test_meter_edit_page(tenants):
    meter = MeterFactory(node=TreeNodeFactory(organization=tenants.a), name="House meter")
    client = tenants.client(tenants.manager_a)
    assert "House meter" in client.get(f"/o/alpha/load/meters/{meter.pk}/").content.decode()
    r = client.post(
        f"/o/alpha/load/meters/{meter.pk}/",
        {"name": "House meter", "mqtt_topic": "a/+", "stale_after": 60},
    )
    assert r.status_code == 400
    assert "without + or #" in r.content.decode()
    r = client.post(
        f"/o/alpha/load/meters/{meter.pk}/",
        {"name": "House meter", "mqtt_topic": "site/house", "stale_after": 90},
    )
    assert r.status_code == 302
    meter.refresh_from_db()
    assert (meter.mqtt_topic, meter.stale_after) == ("site/house", 90)
    assert client.post(f"/o/alpha/load/meters/{meter.pk}/delete/").status_code == 403
