"""/healthz on the embedded default, on real PostgreSQL + Redis, and with Redis unreachable."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.test import override_settings

pytestmark = pytest.mark.django_db


def test_healthz_reports_every_part(client):
    r = client.get("/healthz")
    assert r.status_code == 200, r.json()
    body = r.json()
    assert body["ok"] is True
    assert set(body["parts"]) == {"database", "channel_layer", "broker"}
    assert all(part["ok"] for part in body["parts"].values())


@pytest.mark.services
def test_healthz_against_real_postgresql_and_redis(client):
    r = client.get("/healthz")
    body = r.json()
    assert r.status_code == 200, body
    assert body["parts"]["database"]["engine"] == "postgresql"
    assert body["parts"]["channel_layer"]["backend"] == "BatchReceiveRedisChannelLayer"
    assert body["parts"]["broker"]["needed"] is True


@pytest.mark.services
def test_healthz_fails_when_redis_is_unreachable(client):
    dead = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    layers = {
        "default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [dead]}}
    }
    from channels.layers import channel_layers

    from portal.celery import app

    old_broker = app.conf.broker_url
    app.conf.broker_url = dead
    try:
        with override_settings(REDIS_URL=dead, CHANNEL_LAYERS=layers):
            channel_layers.backends.clear()
            r = client.get("/healthz")
    finally:
        app.conf.broker_url = old_broker
        channel_layers.backends.clear()
    body = r.json()
    assert r.status_code == 503, body
    assert body["ok"] is False
    assert body["parts"]["database"]["ok"] is True
    assert body["parts"]["channel_layer"]["ok"] is False
    assert body["parts"]["broker"]["ok"] is False


def test_healthz_fails_when_the_database_is_broken(client, monkeypatch):
    from portal import health

    def broken():
        raise RuntimeError("database down")

    monkeypatch.setitem(health.CHECKS, "database", broken)
    r = client.get("/healthz")
    assert r.status_code == 503
    assert r.json()["parts"]["database"] == {
        "ok": False,
        "detail": "RuntimeError: database down",
        "ms": r.json()["parts"]["database"]["ms"],
    }


def test_topology_follows_redis_url():
    """Without REDIS_URL: in-memory layer and periodic work in-process; with it: Redis."""
    backend = settings.CHANNEL_LAYERS["default"]["BACKEND"]
    if settings.REDIS_URL:
        assert backend.endswith("RedisChannelLayer")
        assert settings.PERIODIC_IN_PROCESS is False
    else:
        assert backend.endswith("InMemoryChannelLayer")
        assert settings.PERIODIC_IN_PROCESS is True
