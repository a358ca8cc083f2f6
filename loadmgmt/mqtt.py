"""Meter readings over MQTT: one topic per meter, the same JSON as the REST endpoint.

``MeterSubscriber`` connects to ``settings.MQTT_URL`` (default ``mqtt://127.0.0.1:1883``;
``mqtts://`` for TLS, ``mqtt://user:password@host:port`` for a login), subscribes to every
meter's topic, and refreshes the subscriptions periodically (meters added, removed, or whose
topic changed). A bad payload or an unknown topic is logged and skipped: the subscriber lives
on. Run it with ``manage.py meters_mqtt`` (one process per deployment is enough).
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from django.conf import settings
from django.db import close_old_connections, connections
from django.utils import timezone

from loadmgmt.meters import ReadingError, parse_reading, reading_store
from loadmgmt.models import Meter, MeterReading

log = logging.getLogger(__name__)

DEFAULT_URL = "mqtt://127.0.0.1:1883"
SUBSCRIBE_BATCH = 200


def broker_url() -> str:
    return getattr(settings, "MQTT_URL", None) or os.environ.get("MQTT_URL") or DEFAULT_URL


@dataclass(frozen=True)
class Broker:
    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None


def parse_broker_url(url: str) -> Broker:
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
        raise ValueError(f"MQTT_URL must start with mqtt:// or mqtts://, not {url!r}")
    tls = parts.scheme in ("mqtts", "ssl")
    return Broker(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or (8883 if tls else 1883),
        tls=tls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


def handle_message(topic: str, payload: bytes, topics: dict[str, int]) -> MeterReading | None:
    """Parse and store one message; ``None`` (and a log line) for anything refused."""
    meter_id = topics.get(topic)
    if meter_id is None:
        log.warning("mqtt: message on %s, which no meter uses: skipped", topic)
        return None
    try:
        reading = parse_reading(payload, now=timezone.now())
    except ReadingError as exc:
        log.warning("mqtt: bad reading on %s: %s", topic, exc)
        return None
    meter = Meter.objects.select_related("node").filter(pk=meter_id).first()
    if meter is None or meter.mqtt_topic != topic:
        log.warning("mqtt: the meter of %s is gone or moved: skipped", topic)
        return None
    return reading_store(meter, reading)


class MeterSubscriber:
    """Subscribes to every meter's topic and stores what arrives."""

    def __init__(self, url: str | None = None, *, client_id: str | None = None) -> None:
        self.broker = parse_broker_url(url or broker_url())
        self.topics: dict[str, int] = {}
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id or f"chargeportal-meters-{uuid.uuid4().hex[:8]}",
        )
        if self.broker.username:
            self.client.username_pw_set(self.broker.username, self.broker.password)
        if self.broker.tls:
            self.client.tls_set()
        self.client.reconnect_delay_set(min_delay=1, max_delay=30)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.on_disconnect = self._on_disconnect

    # -- topics ------------------------------------------------------------------------------

    @staticmethod
    def load_topics() -> dict[str, int]:
        close_old_connections()
        try:
            return dict(Meter.objects.values_list("mqtt_topic", "id"))
        finally:
            close_old_connections()

    def _subscribe(self, topics: list[str]) -> None:
        for i in range(0, len(topics), SUBSCRIBE_BATCH):
            batch = topics[i : i + SUBSCRIBE_BATCH]
            self.client.subscribe([(t, 0) for t in batch])

    def refresh(self) -> tuple[int, int]:
        """Follow the meters' table: subscribe to new topics, drop removed ones."""
        new = self.load_topics()
        with self.lock:
            added = sorted(set(new) - set(self.topics))
            removed = sorted(set(self.topics) - set(new))
            self.topics = new
        if self.client.is_connected():
            if added:
                self._subscribe(added)
            if removed:
                self.client.unsubscribe(removed)
        if added or removed:
            log.info("mqtt: %d topics (+%d, -%d)", len(new), len(added), len(removed))
        return len(added), len(removed)

    # -- callbacks (paho's network thread) ----------------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("mqtt: connection refused by %s: %s", self.broker.host, reason_code)
            return
        with self.lock:
            topics = sorted(self.topics)
        log.info(
            "mqtt: connected to %s:%s, %d topics", self.broker.host, self.broker.port, len(topics)
        )
        if topics:
            self._subscribe(topics)
        else:
            self.subscribed.set()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        self.subscribed.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        # This is paho's thread: close its database connection (kept for CONN_MAX_AGE).
        connections.close_all()
        if reason_code.is_failure:
            log.warning("mqtt: disconnected (%s); reconnecting", reason_code)

    def _on_message(self, client, userdata, message) -> None:
        close_old_connections()
        try:
            with self.lock:
                topics = self.topics
            handle_message(message.topic, message.payload, topics)
        except Exception:  # the subscriber lives on, whatever one message does
            log.exception("mqtt: failed to store the message on %s", message.topic)
        finally:
            close_old_connections()

    # -- running -----------------------------------------------------------------------------

    def start(self) -> None:
        """Connect and run the network loop in a background thread."""
        self.refresh()
        self.client.connect_async(self.broker.host, self.broker.port, keepalive=30)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def run_forever(self, refresh_every: float = 30.0, stop: threading.Event | None = None) -> None:
        stop = stop or threading.Event()
        self.start()
        try:
            while not stop.wait(refresh_every):
                try:
                    self.refresh()
                except Exception:
                    log.exception("mqtt: refreshing the topics failed; retrying later")
        finally:
            self.stop()
