"""Every bad input gets the OCPP 1.6 CALLERROR and the connection lives on."""

from __future__ import annotations

import pytest

from tests.stations.factories import STATION_PASSWORD
from tests.stations.helpers import Station as FakeStation

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("ocpp_settings")]

CASES = [
    ('[2, "a1", "Heartbeat", {', "a1", "FormationViolation"),
    ("not json at all", "-1", "FormationViolation"),
    ('{"a": 1}', "-1", "ProtocolError"),
    ('[7, "a2", "Heartbeat", {}]', "a2", "ProtocolError"),
    ('[2, "a3", "Heartbeat"]', "a3", "ProtocolError"),
    ('[2, "a4", "FlyToTheMoon", {}]', "a4", "NotImplemented"),  # OCPP-J 1.6 table 7
    ('[2, "a5", "SignCertificate", {"csr": "x"}]', "a5", "NotSupported"),
    ('[2, "a6", "Authorize", {"idTag": 5}]', "a6", "TypeConstraintViolation"),
    ('[2, "a7", "Authorize", {"idTag": "123456789012345678901"}]', "a7", "TypeConstraintViolation"),
    ('[2, "a8", "Authorize", {}]', "a8", "OccurenceConstraintViolation"),
    (
        '[2, "a9", "StatusNotification", {"connectorId": 1, "errorCode": "NoError", '
        '"status": "Sleeping"}]',
        "a9",
        "PropertyConstraintViolation",
    ),
    ('[2, "a10", "Heartbeat", {"extra": 1}]', "a10", "FormationViolation"),
    (
        '[2, "a11", "StartTransaction", {"connectorId": 1, "idTag": "X", "meterStart": 0, '
        '"timestamp": "yesterday"}]',
        "a11",
        "PropertyConstraintViolation",
    ),
    (
        '[2, "a12", "MeterValues", {"connectorId": 1, "meterValue": [{"timestamp": '
        '"2026-01-01T00:00:00Z", "sampledValue": [{"value": "lots"}]}]}]',
        "a12",
        "PropertyConstraintViolation",
    ),
]


async def test_bad_inputs_get_callerrors_and_connection_lives(station):
    cp = FakeStation("/ocpp/ALPHA-1", password=STATION_PASSWORD)
    assert (await cp.handshake())[0]
    for frame, unique_id, code in CASES:
        answer = await cp.raw(frame)
        assert answer[0] == 4 and answer[1] == unique_id and answer[2] == code, (frame, answer)
    assert (await cp.call("Heartbeat", {}))[0] == 3  # still alive
    await cp.disconnect()


async def test_frame_over_limit_closes_with_reason(station, settings):
    settings.OCPP_MAX_FRAME_BYTES = 1000
    cp = FakeStation("/ocpp/ALPHA-1", password=STATION_PASSWORD)
    assert (await cp.handshake())[0]
    await cp.send_to(
        text_data='[2, "big", "DataTransfer", {"vendorId": "x", "data": "' + "x" * 2000 + '"}]'
    )
    close = await cp.receive_output(2)
    assert close["type"] == "websocket.close" and close["code"] == 1009
    assert "1000 bytes" in close["reason"]


async def test_binary_frame_closes(station):
    cp = FakeStation("/ocpp/ALPHA-1", password=STATION_PASSWORD)
    assert (await cp.handshake())[0]
    await cp.send_to(bytes_data=b"\x00\x01")
    close = await cp.receive_output(2)
    assert close["type"] == "websocket.close" and close["code"] == 1003
