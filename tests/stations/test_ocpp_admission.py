"""Admission control: a process busy bringing stations up refuses new handshakes with 503 and
a spread Retry-After, before any database work, and serves the connected stations meanwhile."""

from __future__ import annotations

import pytest

from stations import admission, dbcalls
from tests.stations.factories import STATION_PASSWORD
from tests.stations.helpers import BOOT
from tests.stations.helpers import Station as FakeStation

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("ocpp_settings")]


async def _refused(cp: FakeStation) -> dict:
    await cp.send_input({"type": "websocket.connect"})
    start = await cp.receive_output(3)
    body = await cp.receive_output(3)
    return {"status": start["status"], "headers": dict(start["headers"]), "body": body["body"]}


async def test_too_many_handshakes_at_once_get_503_with_retry_after(station, settings, monkeypatch):
    settings.OCPP_ADMISSION_MAX_CONNECTING = 3
    settings.OCPP_ADMISSION_RETRY_AFTER = "7-9"
    connected = FakeStation("/ocpp/ALPHA-1", password=STATION_PASSWORD)
    assert (await connected.handshake())[0]
    monkeypatch.setattr(admission.gate, "connecting", 3)  # three others are mid-handshake
    queries = []
    monkeypatch.setattr(
        "stations.services.station_for_handshake", lambda identity: queries.append(identity)
    )
    refused = await _refused(FakeStation("/ocpp/ALPHA-1", password=STATION_PASSWORD))
    assert refused["status"] == 503
    assert 7 <= int(refused["headers"][b"retry-after"]) <= 9
    assert b"try again later" in refused["body"] and queries == []
    # The station already connected is served as before.
    result = await connected.call("BootNotification", BOOT)
    assert result[2]["status"] == "Accepted"
    await connected.disconnect()


async def test_a_long_database_backlog_refuses_new_handshakes_until_it_drains(
    station, settings, monkeypatch
):
    settings.OCPP_ADMISSION_MAX_DB_BACKLOG = 50
    monkeypatch.setattr(dbcalls, "backlog", lambda: 51)
    refused = await _refused(FakeStation("/ocpp/ALPHA-1", password=STATION_PASSWORD))
    assert refused["status"] == 503 and b"retry-after" in refused["headers"]
    monkeypatch.setattr(dbcalls, "backlog", lambda: 50)
    cp = FakeStation("/ocpp/ALPHA-1", password=STATION_PASSWORD)
    assert (await cp.handshake())[0]
    assert admission.gate.connecting == 0  # counted while connecting only
    await cp.disconnect()


async def test_no_limit_when_set_to_zero(station, settings, monkeypatch):
    settings.OCPP_ADMISSION_MAX_CONNECTING = 0
    settings.OCPP_ADMISSION_MAX_DB_BACKLOG = 0
    monkeypatch.setattr(admission.gate, "connecting", 10_000)
    monkeypatch.setattr(dbcalls, "backlog", lambda: 10_000)
    cp = FakeStation("/ocpp/ALPHA-1", password=STATION_PASSWORD)
    assert (await cp.handshake())[0]
    await cp.disconnect()
