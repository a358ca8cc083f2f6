"""Live station state in a real browser: a station connects over a real websocket to the real
server, and the owner's stations list and station page change without a reload."""

from __future__ import annotations

import base64
import json
import os
import re

from playwright.sync_api import expect
from websockets.sync.client import connect

from tests.stations.factories import STATION_PASSWORD, StationFactory


def ocpp(ws, action: str, payload: dict, unique_id: str) -> dict:
    ws.send(json.dumps([2, unique_id, action, payload]))
    while True:
        message = json.loads(ws.recv(timeout=5))
        if message[0] == 3 and message[1] == unique_id:
            return message[2]


def test_station_comes_online_and_charges_live(page, login, tenants, portal_server):
    station = StationFactory(organization=tenants.a, charge_point_id="LIVE-1", connectors=2)
    login(page, tenants.owner_a)
    page.goto("/o/alpha/stations/")
    row = page.locator(f"#station-{station.pk}")
    expect(row).to_contain_text("offline")
    expect(page.locator("#live-status")).to_have_class(re.compile(r"\bon\b"))
    page.evaluate("window.__notReloaded = true")

    token = base64.b64encode(f"LIVE-1:{STATION_PASSWORD}".encode()).decode()
    url = portal_server.replace("http://", "ws://") + "/ocpp/LIVE-1"
    with connect(
        url, subprotocols=["ocpp1.6"], additional_headers={"Authorization": f"Basic {token}"}
    ) as ws:
        assert ws.subprotocol == "ocpp1.6"
        boot = ocpp(
            ws,
            "BootNotification",
            {"chargePointVendor": "Acme", "chargePointModel": "Live 22"},
            "b1",
        )
        assert boot["status"] == "Accepted"
        expect(row).to_contain_text("online")
        expect(row).to_contain_text("Acme Live 22")
        ocpp(
            ws,
            "StatusNotification",
            {"connectorId": 1, "errorCode": "NoError", "status": "Charging"},
            "s1",
        )
        expect(row).to_contain_text("1: Charging")
        assert page.evaluate("window.__notReloaded") is True

        page.goto(f"/o/alpha/stations/{station.pk}/")
        expect(page.locator(f"#station-{station.pk}-status")).to_contain_text("online")
        ocpp(
            ws,
            "StatusNotification",
            {"connectorId": 2, "errorCode": "NoError", "status": "Faulted"},
            "s2",
        )
        expect(page.locator("body")).to_contain_text("Faulted")
        if os.environ.get("SCREENSHOT_DIR"):  # docs: SCREENSHOT_DIR=docs/img ./run test ...
            page.screenshot(
                path=f"{os.environ['SCREENSHOT_DIR']}/screenshot-station.png", full_page=True
            )
    # The socket closed: the station goes offline on the open page.
    expect(page.locator(f"#station-{station.pk}-status")).to_contain_text("offline")
