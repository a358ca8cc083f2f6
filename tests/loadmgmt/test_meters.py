"""Meter readings: the payload parser, REST ingestion with the per-meter token, staleness, and
MQTT (the handler, and an integration test against the real Mosquitto)."""

from __future__ import annotations

import json
import socket
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from loadmgmt import selectors, services
from loadmgmt.meters import ReadingError, bearer_token, parse_reading
from loadmgmt.models import Meter, MeterReading
from loadmgmt.mqtt import Broker, MeterSubscriber, handle_message, parse_broker_url
from tests.conftest import _skip_or_fail, real_services_expected
from tests.loadmgmt.factories import METER_TOKEN, MeterFactory, TreeNodeFactory

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


# --- the parser (no database) -------------------------------------------------------------


class TestParse:
    def test_full_reading(self):
        r = parse_reading(
            b'{"time": "2026-05-01T11:59:58Z", "current": [41, 35.5, 0], "power_w": -1200}',
            now=NOW,
        )
        assert r.current == (41.0, 35.5, 0.0)
        assert r.power_w == -1200.0
        assert r.time == NOW - timedelta(seconds=2)

    def test_time_defaults_to_now_and_unknown_keys_are_ignored(self):
        r = parse_reading({"current": [1, 2, 3], "meter": "x"}, now=NOW)
        assert r.time == NOW and r.power_w is None

    @pytest.mark.parametrize(
        ("payload", "message"),
        [
            (b"not json", "The reading is not valid JSON."),
            (b"[1, 2, 3]", 'The reading must be a JSON object such as {"current": [10, 9, 11]}.'),
            ({}, '"current" is missing: a list of 3 numbers, A on L1, L2, L3.'),
            ({"current": [1, 2]}, '"current" must be a list of 3 numbers, A on L1, L2, L3.'),
            ({"current": "1,2,3"}, '"current" must be a list of 3 numbers, A on L1, L2, L3.'),
            ({"current": [1, "2", 3]}, '"current" on L2 is not a number.'),
            ({"current": [1, 2, True]}, '"current" on L3 is not a number.'),
            ({"current": [-0.5, 2, 3]}, '"current" on L1 is negative (-0.5 A).'),
            ({"current": [1, 2, 10001]}, '"current" on L3 (10001 A) is above 10,000 A.'),
            ({"current": [1, 2, 3], "power_w": "high"}, '"power_w" is not a number.'),
            ({"current": [1, 2, 3], "power_w": 2e7}, '"power_w" is beyond ±10,000,000 W.'),
            (
                {"current": [1, 2, 3], "time": "yesterday"},
                '"time" is not an ISO 8601 time such as 2026-05-01T12:00:00Z.',
            ),
            (
                {"current": [1, 2, 3], "time": 1714564800},
                '"time" must be an ISO 8601 string such as 2026-05-01T12:00:00Z.',
            ),
            (
                {"current": [1, 2, 3], "time": "2026-05-01T12:00:00"},
                '"time" needs a UTC offset, e.g. 2026-05-01T12:00:00Z.',
            ),
            (
                {"current": [1, 2, 3], "time": "2026-05-01T13:00:00+00:00"},
                '"time" is 3600 s in the future: check the meter\'s clock.',
            ),
            (b"{" + b" " * 5000 + b"}", "The reading is larger than 4096 bytes."),
        ],
    )
    def test_refused_with_message(self, payload, message):
        with pytest.raises(ReadingError) as exc:
            parse_reading(payload, now=NOW)
        assert str(exc.value) == message

    def test_nan_is_refused(self):
        with pytest.raises(ReadingError, match="L1 is not a number"):
            parse_reading(b'{"current": [NaN, 1, 1]}', now=NOW)

    def test_small_clock_skew_is_accepted(self):
        r = parse_reading({"current": [1, 2, 3], "time": "2026-05-01T12:04:00Z"}, now=NOW)
        assert r.time > NOW

    def test_bearer_token(self):
        assert bearer_token({"Authorization": "Bearer abc"}) == "abc"
        assert bearer_token({"Authorization": "bearer  abc "}) == "abc"
        assert bearer_token({"X-Meter-Token": "xyz"}) == "xyz"
        assert bearer_token({"Authorization": "Token abc"}) is None
        assert bearer_token({}) is None

    def test_broker_url(self):
        assert parse_broker_url("mqtt://127.0.0.1:1883") == Broker("127.0.0.1", 1883)
        assert parse_broker_url("mqtts://u:p%40ss@broker.example") == Broker(
            "broker.example", 8883, True, "u", "p@ss"
        )
        with pytest.raises(ValueError, match="mqtt://"):
            parse_broker_url("http://x")


# --- REST ---------------------------------------------------------------------------------


def post(client, meter_id: int, body, **headers):
    return client.post(
        f"/api/v1/meters/{meter_id}/readings",
        data=json.dumps(body) if not isinstance(body, bytes) else body,
        content_type="application/json",
        **headers,
    )


AUTH = {"HTTP_AUTHORIZATION": f"Bearer {METER_TOKEN}"}


@pytest.mark.django_db
class TestRest:
    def test_reading_is_stored_and_kept_latest(
        self, client, monkeypatch, django_capture_on_commit_callbacks
    ):
        calls = []
        monkeypatch.setattr(services, "meter_read", lambda org, node: calls.append((org, node)))
        meter = MeterFactory()
        with django_capture_on_commit_callbacks(execute=True):
            r = post(client, meter.pk, {"current": [41.5, 35, 38], "power_w": 26500}, **AUTH)
        assert r.status_code == 201, r.json()
        assert r.json()["current"] == [41.5, 35.0, 38.0]
        meter.refresh_from_db()
        assert meter.last_current == (41.5, 35.0, 38.0)
        assert meter.last_power_w == 26500
        assert MeterReading.objects.filter(meter=meter).count() == 1
        assert calls == [(meter.node.organization_id, meter.node_id)]

    def test_readings_are_throttled_per_meter_and_address_not_by_the_api_default(
        self, client, settings
    ):
        from django.core.cache import cache

        cache.clear()
        settings.LOADMGMT_METER_READINGS_RATE = "3/min"
        meter, other = MeterFactory(), MeterFactory()
        codes = [
            post(client, meter.pk, {"current": [1, 2, 3]}, **AUTH).status_code for _ in range(4)
        ]
        assert codes == [201, 201, 201, 429]
        # Another meter, or the same meter from another address, is not held up.
        assert post(client, other.pk, {"current": [1, 2, 3]}, **AUTH).status_code == 201
        elsewhere = {**AUTH, "REMOTE_ADDR": "192.0.2.7"}
        assert post(client, meter.pk, {"current": [1, 2, 3]}, **elsewhere).status_code == 201
        cache.clear()

    def test_x_meter_token_header(self, client):
        meter = MeterFactory()
        r = post(client, meter.pk, {"current": [1, 2, 3]}, HTTP_X_METER_TOKEN=METER_TOKEN)
        assert r.status_code == 201

    def test_late_reading_joins_the_series_but_not_the_latest(self, client):
        meter = MeterFactory()
        now = timezone.now()
        t1 = (now - timedelta(seconds=1)).isoformat()
        t0 = (now - timedelta(seconds=10)).isoformat()
        assert (
            post(client, meter.pk, {"current": [10, 10, 10], "time": t1}, **AUTH).status_code == 201
        )
        assert (
            post(client, meter.pk, {"current": [99, 99, 99], "time": t0}, **AUTH).status_code == 201
        )
        meter.refresh_from_db()
        assert meter.last_current == (10.0, 10.0, 10.0)
        assert MeterReading.objects.filter(meter=meter).count() == 2

    def test_wrong_or_missing_token_is_401(self, client):
        meter = MeterFactory()
        r = post(client, meter.pk, {"current": [1, 2, 3]}, HTTP_AUTHORIZATION="Bearer wrong")
        assert r.status_code == 401
        assert r.json()["error"] == "invalid_token"
        assert r["WWW-Authenticate"] == 'Bearer realm="meter"'
        assert post(client, meter.pk, {"current": [1, 2, 3]}).status_code == 401
        other = MeterFactory()  # the token of another meter does not open this one
        services.meter_rotate_token(meter=other)
        assert not MeterReading.objects.exists()

    def test_rotated_token_stops_working(self, client):
        meter = MeterFactory()
        new = services.meter_rotate_token(meter=meter)
        assert post(client, meter.pk, {"current": [1, 2, 3]}, **AUTH).status_code == 401
        r = post(client, meter.pk, {"current": [1, 2, 3]}, HTTP_AUTHORIZATION=f"Bearer {new}")
        assert r.status_code == 201

    def test_unknown_meter_is_404(self, client):
        assert post(client, 999999, {"current": [1, 2, 3]}, **AUTH).status_code == 404

    def test_bad_reading_is_400_with_message(self, client):
        meter = MeterFactory()
        r = post(client, meter.pk, {"current": [1, -2, 3]}, **AUTH)
        assert r.status_code == 400
        assert r.json() == {
            "error": "invalid_reading",
            "detail": '"current" on L2 is negative (-2 A).',
        }
        r = post(client, meter.pk, b"{oops", **AUTH)
        assert r.status_code == 400
        future = (timezone.now() + timedelta(hours=1)).isoformat()
        r = post(client, meter.pk, {"current": [1, 2, 3], "time": future}, **AUTH)
        assert r.status_code == 400 and "in the future" in r.json()["detail"]
        assert not MeterReading.objects.exists()

    def test_no_session_or_csrf_needed(self, tenants):
        meter = MeterFactory()
        from django.test import Client

        client = Client(enforce_csrf_checks=True)
        client.force_login(tenants.owner_b)  # a logged-in user is irrelevant
        assert post(client, meter.pk, {"current": [1, 2, 3]}, **AUTH).status_code == 201


# --- staleness ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_staleness_at_a_given_now():
    node = TreeNodeFactory()
    assert selectors.node_is_stale(node, now=NOW) is False  # no meter: never stale
    meter = MeterFactory(node=node, stale_after=60)
    node = selectors.nodes_for(node.organization).get(pk=node.pk)
    assert selectors.node_is_stale(node, now=NOW) is True  # never reported
    services.meter_reading_record(meter=meter, current=(1, 2, 3), time=NOW)
    node = selectors.nodes_for(node.organization).get(pk=node.pk)
    assert selectors.node_is_stale(node, now=NOW + timedelta(seconds=60)) is False
    assert selectors.node_is_stale(node, now=NOW + timedelta(seconds=61)) is True
    assert selectors.meter_is_stale(node.meter, now=NOW + timedelta(seconds=61)) is True
    tree = selectors.tree_for(node.organization, now=NOW + timedelta(seconds=61))
    assert tree.roots[0].stale
    assert f"the meter {meter.name} is stale" in tree.warnings[0]


@pytest.mark.django_db
def test_meter_settings_validation(tenants):
    from django.core.exceptions import ValidationError

    node = TreeNodeFactory(organization=tenants.a)
    meter, token = services.meter_create(node=node, name="M", mqtt_topic="site/house")
    assert services.meter_token_matches(meter, token) and meter.token_hash != token
    other = TreeNodeFactory(organization=tenants.a)
    with pytest.raises(ValidationError) as exc:
        services.meter_create(node=other, name="M2", mqtt_topic="site/house", stale_after=2)
    assert exc.value.message_dict == {
        "mqtt_topic": ["Another meter already uses this MQTT topic."],
        "stale_after": ["Stale after must be from 5 to 86400 seconds."],
    }
    with pytest.raises(ValidationError) as exc:
        services.meter_create(node=other, name="M2", mqtt_topic="site/#")
    assert "without + or #" in exc.value.message_dict["mqtt_topic"][0]
    with pytest.raises(ValidationError) as exc:
        services.meter_create(node=node, name="Second")
    assert exc.value.message_dict == {"node": [f"{node.name} already has a meter."]}


# --- MQTT ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_mqtt_handler_stores_good_and_skips_bad(caplog):
    meter = MeterFactory(mqtt_topic="site/a")
    topics = {"site/a": meter.pk}
    assert handle_message("site/a", b'{"current": [5, 6, 7]}', topics) is not None
    assert handle_message("site/a", b'{"current": [5, 6]}', topics) is None
    assert "bad reading on site/a" in caplog.text
    assert handle_message("site/unknown", b'{"current": [5, 6, 7]}', topics) is None
    assert "no meter uses" in caplog.text
    meter.refresh_from_db()
    assert meter.last_current == (5.0, 6.0, 7.0)
    assert MeterReading.objects.count() == 1


def _broker_reachable(host: str = "127.0.0.1", port: int = 1883) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_mqtt_subscriber_with_real_mosquitto():
    """Publish to the real broker: a bad payload is skipped, the subscriber lives on and stores
    the next good one; a meter added later is picked up by ``refresh``."""
    import paho.mqtt.client as mqtt

    if not _broker_reachable():
        _skip_or_fail("needs Mosquitto on 127.0.0.1:1883", real_services_expected())
    run = uuid.uuid4().hex[:8]
    meter = MeterFactory(mqtt_topic=f"test/{run}/house")
    subscriber = MeterSubscriber("mqtt://127.0.0.1:1883")
    subscriber.start()
    publisher = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2)
    publisher.connect("127.0.0.1", 1883)
    publisher.loop_start()
    try:
        assert subscriber.subscribed.wait(10), "no SUBACK from the broker"

        def publish(topic: str, payload: bytes) -> None:
            publisher.publish(topic, payload, qos=1).wait_for_publish(5)

        def wait_for(predicate, timeout: float = 10.0) -> bool:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if predicate():
                    return True
                time.sleep(0.05)
            return False

        publish(meter.mqtt_topic, b"garbage")
        publish(meter.mqtt_topic, b'{"current": [1, 2]}')
        publish(meter.mqtt_topic, b'{"current": [20.5, 21, 22], "power_w": 14000}')
        assert wait_for(lambda: MeterReading.objects.filter(meter=meter).exists())
        meter.refresh_from_db()
        assert meter.last_current == (20.5, 21.0, 22.0)
        assert meter.last_power_w == 14000
        assert MeterReading.objects.filter(meter=meter).count() == 1

        later = MeterFactory(mqtt_topic=f"test/{run}/board")
        subscriber.subscribed.clear()
        assert subscriber.refresh() == (1, 0)
        assert subscriber.subscribed.wait(10)
        publish(later.mqtt_topic, b'{"current": [3, 3, 3]}')
        assert wait_for(lambda: Meter.objects.get(pk=later.pk).last_reading_at is not None)
    finally:
        publisher.loop_stop()
        publisher.disconnect()
        subscriber.stop()
