"""Live fragments of stations are rendered only while a browser watches the organization:
rendering them is the most expensive part of the OCPP path, and mostly nobody looks."""

from __future__ import annotations

import pytest
from channels.testing import WebsocketCommunicator
from django.utils import timezone

from portal.asgi import application
from portal.live import watching
from stations import services
from tests.stations.factories import STATION_PASSWORD
from tests.stations.helpers import BOOT
from tests.stations.helpers import Station as FakeStation


@pytest.mark.django_db
def test_services_render_fragments_only_for_a_watched_organization(tenants, station):
    org = station.organization_id
    assert services.connection_open(station.pk, "chan-1", "10.0.0.1", org) == {}
    now = timezone.now()
    assert (
        services.status_notification(station.pk, 1, "Available", "NoError", "", "", None, now, org)
        == {}
    )
    _status, _interval, fragments = services.boot(station.pk, {}, now)
    assert fragments == {}
    watching(org)
    fragments = services.connection_open(station.pk, "chan-1", "10.0.0.1", org)
    assert f"station-{station.pk}" in fragments and f"station-{station.pk}-status" in fragments
    fragments = services.status_notification(
        station.pk, 1, "Charging", "NoError", "", "", None, now, org
    )
    assert "Charging" in fragments[f"station-{station.pk}"]
    # The other organization is still nobody's: its stations render nothing.
    from tests.stations.factories import StationFactory

    other = StationFactory(organization=tenants.b, charge_point_id="BETA-1")
    assert services.connection_open(other.pk, "chan-2", "10.0.0.2", other.organization_id) == {}


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("ocpp_settings")
async def test_a_watching_browser_gets_the_station_fragments_as_the_station_talks(tenants, station):
    browser = WebsocketCommunicator(
        application,
        "/ws/live/?org=alpha",
        headers=[(b"host", b"localhost"), (b"origin", b"http://localhost")],
    )
    browser.scope["user"] = tenants.viewer_a
    assert (await browser.connect())[0]
    assert (await browser.receive_json_from())["event"] == "live.hello"
    cp = FakeStation("/ocpp/ALPHA-1", password=STATION_PASSWORD)
    assert (await cp.handshake())[0]
    await cp.call("BootNotification", BOOT)
    await cp.call(
        "StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Preparing"}
    )
    seen = {}
    for _ in range(10):
        message = await browser.receive_json_from(timeout=3)
        seen.update(message["fragments"])
        if "Preparing" in seen.get(f"station-{station.pk}", ""):
            break
    assert "Preparing" in seen[f"station-{station.pk}"]
    await cp.disconnect()
    await browser.disconnect()


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("ocpp_settings")
async def test_no_browser_watching_no_group_send_to_the_organization(tenants, station, group_sends):
    """Only browsers are in an organization's group: while none watches, a station that
    connects, boots and reports its status sends its organization nothing (each group send
    costs Redis commands even to nobody)."""
    from portal.live import org_group

    sent = group_sends()
    cp = FakeStation("/ocpp/ALPHA-1", password=STATION_PASSWORD)
    assert (await cp.handshake())[0]
    await cp.call("BootNotification", BOOT)
    await cp.call(
        "StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Preparing"}
    )
    await cp.disconnect()
    assert sent, "the station's own group is still used (replacement)"
    assert org_group(station.organization_id) not in sent


@pytest.mark.django_db
def test_sync_station_events_go_only_to_a_watched_organization(tenants, station, monkeypatch):
    from portal.live import org_group
    from stations import live as station_live

    sent: list[str] = []
    monkeypatch.setattr(station_live, "push", lambda group, *a, **k: sent.append(group))
    station_live.station_event(station, "station.changed")
    assert sent == []
    watching(station.organization_id)
    station_live.station_event(station, "station.changed")
    assert sent == [org_group(station.organization_id)]
