"""Pages and API: tenant scoping (404 for other tenants), roles, query counts."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.urls import reverse

from stations.credentials import station_password_matches
from stations.models import ChargingSession, Station, StationCommand
from tests.stations.factories import StationFactory

pytestmark = pytest.mark.django_db


def make_session(station, started="2026-01-01T00:00:00Z", key="k", energy_wh=0):
    return ChargingSession.objects.create(
        station=station,
        connector_id=1,
        id_tag="AA",
        meter_start=0,
        energy_wh=energy_wh,
        started_at=started,
        station_started_at=started,
        idempotency_key=key,
    )


def test_owner_registers_station_and_sees_password_once(tenants):
    client = tenants.client(tenants.owner_a)
    response = client.post(
        reverse("stations_add", kwargs={"org": "alpha"}),
        {"charge_point_id": "NEW-1", "name": "Hall", "connectors": 2},
    )
    assert response.status_code == 200
    password = response.context["credentials"].password
    assert "ws://localhost:8000/ocpp/NEW-1" in response.content.decode()
    station = Station.objects.get(charge_point_id="NEW-1")
    assert station.connectors.count() == 2 and password not in station.password_hash
    assert station_password_matches(password, station.password_hash)
    assert password not in station.password_hash
    detail = client.get(reverse("stations_detail", kwargs={"org": "alpha", "pk": station.pk}))
    assert password not in detail.content.decode()


def test_duplicate_identity_refused(tenants, station):
    client = tenants.client(tenants.owner_b)
    response = client.post(
        reverse("stations_add", kwargs={"org": "beta"}),
        {"charge_point_id": "alpha-1", "connectors": 1},
    )
    assert response.status_code == 400


def test_cross_tenant_pages_are_404(tenants, station):
    client = tenants.client(tenants.owner_b)
    for name in ("stations_detail", "stations_command", "stations_password"):
        url = reverse(name, kwargs={"org": "beta", "pk": station.pk})
        assert client.get(url).status_code == 404
        if name != "stations_detail":
            assert client.post(url, {"action": "Reset"}).status_code == 404
    assert client.get(reverse("stations_list", kwargs={"org": "alpha"})).status_code == 404


def test_viewer_reads_but_cannot_change(tenants, station):
    client = tenants.client(tenants.viewer_a)
    assert (
        client.get(
            reverse("stations_detail", kwargs={"org": "alpha", "pk": station.pk})
        ).status_code
        == 200
    )
    url = reverse("stations_command", kwargs={"org": "alpha", "pk": station.pk})
    assert client.post(url, {"action": "Reset"}).status_code == 403
    assert client.get(reverse("stations_add", kwargs={"org": "alpha"})).status_code == 403
    assert not StationCommand.objects.exists()


def test_manager_command_offline_recorded(tenants, station):
    client = tenants.client(tenants.manager_a)
    url = reverse("stations_command", kwargs={"org": "alpha", "pk": station.pk})
    assert client.post(url, {"action": "Reset", "type": "Hard"}).status_code == 302
    assert StationCommand.objects.get().status == "offline"


def test_list_page_query_count(tenants, django_assert_max_num_queries):
    for _ in range(5):
        StationFactory(organization=tenants.a)
    client = tenants.client(tenants.owner_a)
    with django_assert_max_num_queries(10):
        response = client.get(reverse("stations_list", kwargs={"org": "alpha"}))
    assert response.status_code == 200 and response.content.decode().count('id="station-') == 5


def test_dashboard_panel(tenants, station):
    response = tenants.client(tenants.owner_a).get(
        reverse("org_dashboard", kwargs={"org": "alpha"})
    )
    assert 'id="stations-panel"' in response.content.decode()


def test_dashboard_counts_todays_energy_in_kwh_from_local_midnight(tenants, station):
    """ "Today" begins at midnight in the portal's time zone (Europe/Zurich), not UTC: at
    00:59 in Zurich (23:59 UTC) a session from 00:10 local is today's, one from 23:30 local
    the evening before is not (from midnight UTC both were)."""
    from datetime import UTC, datetime
    from unittest import mock

    from stations import selectors

    make_session(station, datetime(2026, 1, 9, 22, 30, tzinfo=UTC), "yesterday", 5_000)
    make_session(station, datetime(2026, 1, 9, 23, 10, tzinfo=UTC), "today", 12_345)
    now = datetime(2026, 1, 9, 23, 59, tzinfo=UTC)
    with mock.patch("django.utils.timezone.now", return_value=now):
        figures = selectors.dashboard_figures(tenants.a)
        page = tenants.client(tenants.owner_a).get(
            reverse("org_dashboard", kwargs={"org": "alpha"})
        )
    assert figures["energy_today_kwh"] == Decimal("12.345")
    assert "12.3&nbsp;kWh today" in page.content.decode()


def test_station_page_lists_sessions_in_kwh(tenants, station):
    make_session(station, energy_wh=22_100)
    page = tenants.client(tenants.owner_a).get(
        reverse("stations_detail", kwargs={"org": "alpha", "pk": station.pk})
    )
    assert "22.10&nbsp;kWh" in page.content.decode()


def test_unknown_identity_shown_only_to_the_owner_who_registers_it(tenants):
    from stations.models import UnknownChargePoint

    UnknownChargePoint.objects.create(identity="WHO-AM-I", attempts=3)
    UnknownChargePoint.objects.create(identity="SOMEONE-ELSES", attempts=1)
    client = tenants.client(tenants.owner_b)
    # No page lists unknown identities to owners: they belong to no tenant.
    assert (
        "SOMEONE-ELSES"
        not in client.get(reverse("stations_list", kwargs={"org": "beta"})).content.decode()
    )
    response = client.post(
        reverse("stations_add", kwargs={"org": "beta"}),
        {"charge_point_id": "who-am-i", "name": "Found it", "connectors": 1},
    )
    html = response.content.decode()
    assert response.status_code == 200, html
    assert 'id="earlier-attempts"' in html and "3 times" in html
    assert "SOMEONE-ELSES" not in html


API = "/api/v1/organizations/{org}/"


def test_api_create_station_returns_credentials_once(tenants):
    api = tenants.api(tenants.owner_a)
    response = api.post(
        API.format(org="alpha") + "stations/",
        {"charge_point_id": "API-1", "connectors": 3},
        format="json",
    )
    assert response.status_code == 201
    assert response.data["url"].endswith("/ocpp/API-1") and len(response.data["password"]) >= 20
    pk = response.data["station"]["id"]
    detail = api.get(API.format(org="alpha") + f"stations/{pk}/")
    assert "password" not in detail.data and len(detail.data["connectors"]) == 3
    rotated = api.post(API.format(org="alpha") + f"stations/{pk}/rotate-password/")
    assert rotated.status_code == 200 and rotated.data["password"] != response.data["password"]


def test_api_cross_tenant_404_everywhere(tenants, station):
    session = make_session(station)
    command = StationCommand.objects.create(station=station, action="Reset", payload={})
    api = tenants.api(tenants.owner_b)
    base = API.format(org="beta")
    for path in (f"stations/{station.pk}/", f"sessions/{session.pk}/", f"commands/{command.pk}/"):
        assert api.get(base + path).status_code == 404
    assert api.patch(base + f"stations/{station.pk}/", {"name": "x"}).status_code == 404
    assert api.delete(base + f"stations/{station.pk}/").status_code == 404
    assert api.post(base + f"stations/{station.pk}/rotate-password/").status_code == 404
    response = api.post(
        base + "commands/",
        {"station": station.pk, "action": "Reset", "payload": {"type": "Soft"}},
        format="json",
    )
    assert response.status_code == 404
    for path in ("stations/", "sessions/", "commands/"):
        assert api.get(base + path).data["results"] == []
        assert api.get(API.format(org="alpha") + path).status_code == 404


def test_api_roles(tenants, station):
    viewer = tenants.api(tenants.viewer_a)
    base = API.format(org="alpha")
    assert viewer.get(base + "stations/").status_code == 200
    assert (
        viewer.post(
            base + "commands/",
            {"station": station.pk, "action": "Reset", "payload": {"type": "Soft"}},
            format="json",
        ).status_code
        == 403
    )
    manager = tenants.api(tenants.manager_a)
    assert manager.delete(base + f"stations/{station.pk}/").status_code == 403
    response = manager.post(
        base + "commands/",
        {"station": station.pk, "action": "Reset", "payload": {"type": "Bad"}},
        format="json",
    )
    assert response.status_code == 400 and response.data["error"] == "invalid_payload"
    response = manager.post(
        base + "commands/",
        {"station": station.pk, "action": "Reset", "payload": {"type": "Soft"}},
        format="json",
    )
    assert response.status_code == 201 and response.data["status"] == "offline"


def test_api_list_query_counts(tenants, django_assert_max_num_queries):
    for _ in range(5):
        station = StationFactory(organization=tenants.a)
        make_session(station)
        StationCommand.objects.create(
            station=station, action="Reset", payload={}, requested_by=tenants.owner_a
        )
    api = tenants.api(tenants.owner_a)
    for path, expected in (("stations/", 5), ("sessions/", 5), ("commands/", 5)):
        with django_assert_max_num_queries(5):
            response = api.get(API.format(org="alpha") + path)
        assert response.data["count"] == expected


def test_demo_seed_idempotent(db):
    from portal.demo import seed
    from stations.demo import DEMO_STATIONS

    seed()
    seed()
    assert Station.objects.filter(charge_point_id__startswith="DEMO-CP-").count() == len(
        DEMO_STATIONS
    )


def test_station_page_shows_the_power_of_running_sessions(tenants, station):
    session = make_session(station)
    ChargingSession.objects.filter(pk=session.pk).update(status="active", power_w=7360.0)
    connector_id = ChargingSession.objects.get(pk=session.pk).connector_id
    html = (
        tenants.client(tenants.owner_a)
        .get(reverse("stations_detail", kwargs={"org": "alpha", "pk": station.pk}))
        .content.decode()
    )
    assert f'<span id="power-{station.pk}-{connector_id}">7.4 kW</span>' in html


def test_station_page_shows_the_authentication_mode(tenants, station):
    url = reverse("stations_detail", kwargs={"org": "alpha", "pk": station.pk})
    client = tenants.client(tenants.owner_a)
    assert "This portal: RFID, app, QR code, CarID" in client.get(url).content.decode()
    station.auth_mode, station.third_party_url = "ocpp_third_party", "wss://other.example/ocpp"
    station.save()
    html = client.get(url).content.decode()
    assert "managed by another backend" in html and "wss://other.example/ocpp" in html


@pytest.mark.parametrize("identity", ["a/b", "with space", "50%", "a:b"])
def test_a_bad_identity_is_refused_with_the_rule_not_a_500(tenants, identity):
    """Found by schemathesis: the rule's message has a '%' that Django formats."""
    api = tenants.api(tenants.owner_a)
    response = api.post(
        API.format(org="alpha") + "stations/", {"charge_point_id": identity}, format="json"
    )
    assert response.status_code == 400
    assert "1 to 48 characters without spaces or any of / % ? # :" in str(response.data)
    page = tenants.client(tenants.owner_a).post(
        "/o/alpha/stations/add/", {"charge_point_id": identity}
    )
    assert page.status_code in (200, 400) and "1 to 48 characters" in page.content.decode()
