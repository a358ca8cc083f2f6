"""``manage.py meters_mqtt``: subscribe to every meter's MQTT topic and store the readings."""

from __future__ import annotations

import signal
import threading

from django.core.management.base import BaseCommand

from loadmgmt.mqtt import MeterSubscriber, broker_url


class Command(BaseCommand):
    help = "Subscribe to every meter's MQTT topic (settings.MQTT_URL) and store the readings."

    def add_arguments(self, parser):
        parser.add_argument("--url", default=None, help="Broker URL (default: settings.MQTT_URL)")
        parser.add_argument(
            "--refresh",
            type=float,
            default=30.0,
            help="Seconds between reloads of the meters' topics (default 30).",
        )

    def handle(self, *args, url=None, refresh=30.0, **options):
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        subscriber = MeterSubscriber(url)
        self.stdout.write(f"meters_mqtt: {url or broker_url()}, refreshing every {refresh:g} s")
        subscriber.run_forever(refresh_every=refresh, stop=stop)
        self.stdout.write("meters_mqtt: stopped")
