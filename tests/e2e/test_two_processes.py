"""Two ASGI processes sharing PostgreSQL and Redis: a station connected to one process obeys
a command sent through the API of the other, and the result is visible on both."""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.request

from rest_framework.authtoken.models import Token
from websockets.sync.client import connect

from tests.stations.factories import STATION_PASSWORD, StationFactory


class ChargePoint:
    """A minimal real OCPP 1.6J client: answers the central system's calls in a thread."""

    def __init__(self, url: str, identity: str) -> None:
        token = base64.b64encode(f"{identity}:{STATION_PASSWORD}".encode()).decode()
        self.ws = connect(
            f"{url}/ocpp/{identity}",
            subprotocols=["ocpp1.6"],
            additional_headers={"Authorization": f"Basic {token}"},
        )
        self.received: list[list] = []
        self.answers: dict[str, dict] = {}
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        try:
            for raw in self.ws:
                message = json.loads(raw)
                if message[0] == 2:
                    self.received.append(message)
                    # Every call this test sends (RemoteStart, Reset, TriggerMessage) is
                    # answered with an Accepted status.
                    self.ws.send(json.dumps([3, message[1], {"status": "Accepted"}]))
                elif message[0] in (3, 4):
                    self.answers[message[1]] = message
        except Exception:  # closed
            return

    def call(self, unique_id: str, action: str, payload: dict) -> list:
        self.ws.send(json.dumps([2, unique_id, action, payload]))
        deadline = time.monotonic() + 10
        while unique_id not in self.answers:
            assert time.monotonic() < deadline, f"no answer to {action}"
            time.sleep(0.02)
        return self.answers[unique_id]

    def close(self) -> None:
        self.ws.__exit__(None, None, None)


def api(portal, token: str, method: str, path: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(
        portal.url + path,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read() or b"null")


def wait_for(predicate, timeout: float = 10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not reached in time")


def test_command_from_one_process_reaches_a_station_on_the_other(portal_processes, tenants):
    a, b = portal_processes(2)
    station = StationFactory(organization=tenants.a, charge_point_id="TWO-PROC-1", connectors=1)
    token = Token.objects.create(user=tenants.owner_a).key

    cp = ChargePoint(a.ws_url, "TWO-PROC-1")
    try:
        boot = cp.call(
            "b1", "BootNotification", {"chargePointVendor": "Acme", "chargePointModel": "Two"}
        )
        assert boot[2]["status"] == "Accepted"
        wait_for(
            lambda: api(b, token, "GET", f"/api/v1/organizations/alpha/stations/{station.pk}/")[
                "online"
            ]
        )

        command = api(
            b,
            token,
            "POST",
            "/api/v1/organizations/alpha/commands/",
            {
                "station": station.pk,
                "action": "RemoteStartTransaction",
                "payload": {"connectorId": 1, "idTag": "CAFE0001"},
            },
        )
        assert command["status"] == "pending"
        done = wait_for(
            lambda: (lambda c: c if c["status"] != "pending" else None)(
                api(b, token, "GET", f"/api/v1/organizations/alpha/commands/{command['id']}/")
            )
        )
        assert done["status"] == "accepted", done
        assert [m[2] for m in cp.received if m[2] == "RemoteStartTransaction"] == [
            "RemoteStartTransaction"
        ]
        start = next(m for m in cp.received if m[2] == "RemoteStartTransaction")
        assert start[3] == {"connectorId": 1, "idTag": "CAFE0001"}
        # Both processes read the same result.
        seen_on_a = api(a, token, "GET", f"/api/v1/organizations/alpha/commands/{command['id']}/")
        assert seen_on_a["status"] == "accepted"
    finally:
        cp.close()


def test_reconnect_to_another_process_replaces_the_first_socket(portal_processes, tenants):
    a, b = portal_processes(2)
    station = StationFactory(organization=tenants.a, charge_point_id="TWO-PROC-2", connectors=1)
    token = Token.objects.create(user=tenants.owner_a).key
    first = ChargePoint(a.ws_url, "TWO-PROC-2")
    first.call("b1", "BootNotification", {"chargePointVendor": "Acme", "chargePointModel": "X"})
    second = ChargePoint(b.ws_url, "TWO-PROC-2")
    try:
        second.call(
            "b2", "BootNotification", {"chargePointVendor": "Acme", "chargePointModel": "X"}
        )
        first.reader.join(10)
        assert not first.reader.is_alive(), "the older socket on process A was not closed"
        command = api(
            a,
            token,
            "POST",
            "/api/v1/organizations/alpha/commands/",
            {"station": station.pk, "action": "Reset", "payload": {"type": "Soft"}},
        )
        done = wait_for(
            lambda: (lambda c: c if c["status"] != "pending" else None)(
                api(a, token, "GET", f"/api/v1/organizations/alpha/commands/{command['id']}/")
            )
        )
        assert done["status"] == "accepted"
        assert any(m[2] == "Reset" for m in second.received)
        assert not any(m[2] == "Reset" for m in first.received)
        online = api(a, token, "GET", f"/api/v1/organizations/alpha/stations/{station.pk}/")
        assert online["online"] is True
    finally:
        first.close()
        second.close()
