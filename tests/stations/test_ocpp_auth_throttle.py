"""Failed station passwords are throttled at the handshake: per identity and per address,
counted in the cache, refused with 429 without checking the password while blocked."""

from __future__ import annotations

import logging
import os

import pytest
from django.core.cache import caches
from django.test import override_settings

from stations import credentials
from tests.stations.factories import STATION_PASSWORD
from tests.stations.helpers import Station as FakeStation


def asgi_test(test):
    """Handshakes through the real ASGI application (the Redis test at the end needs neither
    the database nor the OCPP settings)."""
    return pytest.mark.django_db(transaction=True)(pytest.mark.usefixtures("ocpp_settings")(test))


LIMITS = {
    "OCPP_AUTH_MAX_FAILURES": 3,
    "OCPP_AUTH_MAX_FAILURES_PER_IP": 5,
    "OCPP_AUTH_WINDOW": 60,
    "OCPP_AUTH_BLOCK": 60,
}


@pytest.fixture
def limits(settings):
    for name, value in LIMITS.items():
        setattr(settings, name, value)


def station_from(address: str, cp_id: str = "ALPHA-1", password: str | None = "wrong"):
    cp = FakeStation(f"/ocpp/{cp_id}", password=password)
    cp.scope["client"] = (address, 40000)
    return cp


async def handshake(address: str, cp_id: str = "ALPHA-1", password: str | None = "wrong"):
    cp = station_from(address, cp_id, password)
    result = await cp.handshake()
    if result[0]:
        await cp.disconnect()
    return result, cp


@pytest.fixture
def clock(monkeypatch):
    """The blocks' end times use time.time(); the cache's own expiry is left alone, so a
    test moves both by shortening the block instead of waiting."""
    now = [1_000_000.0]
    monkeypatch.setattr(credentials.time, "time", lambda: now[0])
    return now


@asgi_test
async def test_identity_blocked_after_max_failures_even_with_the_right_password(
    station, limits, caplog
):
    for _ in range(3):
        assert (await handshake("10.0.0.1"))[0] == (False, 401)
    caplog.set_level(logging.WARNING, logger="stations.credentials")
    # Blocked now: refused without looking at the password, from any address.
    (result, cp) = await handshake("10.9.9.9", password=STATION_PASSWORD)
    assert result == (False, 429)
    assert b"Too many failed" in cp.denial_body
    assert (await handshake("10.0.0.1", password="wrong"))[0] == (False, 429)


@asgi_test
async def test_block_logs_one_warning_and_carries_retry_after(station, limits, caplog, clock):
    caplog.set_level(logging.WARNING, logger="stations.credentials")
    for _ in range(3):
        await handshake("10.0.0.1")
    for _ in range(4):
        await handshake("10.0.0.1")
    warnings = [r for r in caplog.records if r.name == "stations.credentials"]
    assert len(warnings) == 1
    assert "ALPHA-1" in warnings[0].getMessage()
    clock[0] += 20
    cp = station_from("10.0.0.1")
    await cp.send_input({"type": "websocket.connect"})
    start = await cp.receive_output(3)
    assert start["status"] == 429
    assert (b"retry-after", b"40") in start["headers"]


@asgi_test
async def test_right_password_works_again_when_the_block_lifts(station, limits, clock):
    for _ in range(3):
        await handshake("10.0.0.1")
    assert (await handshake("10.0.0.1", password=STATION_PASSWORD))[0] == (False, 429)
    clock[0] += 61
    assert (await handshake("10.0.0.1", password=STATION_PASSWORD))[0] == (True, "ocpp1.6")


@asgi_test
async def test_success_resets_the_identity_count(station, limits):
    for _ in range(2):
        assert (await handshake("10.0.0.1"))[0] == (False, 401)
    assert (await handshake("10.0.0.1", password=STATION_PASSWORD))[0][0] is True
    # Two more failures would have been the third and fourth without the reset.
    for _ in range(2):
        assert (await handshake("10.0.0.1"))[0] == (False, 401)
    assert (await handshake("10.0.0.1", password=STATION_PASSWORD))[0][0] is True


@asgi_test
async def test_address_blocked_across_identities(tenants, limits):
    from asgiref.sync import sync_to_async

    from tests.stations.factories import StationFactory

    for n in range(6):
        await sync_to_async(StationFactory)(organization=tenants.a, charge_point_id=f"S-{n}")
    # One failure for each of five identities: no identity reaches its limit of 3, the
    # address reaches its limit of 5.
    for n in range(5):
        assert (await handshake("192.0.2.5", f"S-{n}"))[0] == (False, 401)
    assert (await handshake("192.0.2.5", "S-5", STATION_PASSWORD))[0] == (False, 429)
    # Another address is not affected, nor the identities.
    assert (await handshake("192.0.2.6", "S-5", STATION_PASSWORD))[0][0] is True
    assert (await handshake("192.0.2.6", "S-0", STATION_PASSWORD))[0][0] is True


@asgi_test
async def test_ipv6_counts_per_64(tenants, limits):
    from asgiref.sync import sync_to_async

    from tests.stations.factories import StationFactory

    for n in range(6):
        await sync_to_async(StationFactory)(organization=tenants.a, charge_point_id=f"S-{n}")
    for n in range(5):
        assert (await handshake(f"2001:db8:1:2::{n + 1}", f"S-{n}"))[0] == (False, 401)
    assert (await handshake("2001:db8:1:2::ff", "S-5", STATION_PASSWORD))[0] == (False, 429)
    assert (await handshake("2001:db8:1:3::1", "S-5", STATION_PASSWORD))[0][0] is True


@asgi_test
async def test_default_limits_are_on(station):
    """Without test settings: the defaults from stations/conf.py block after 10 failures."""
    for _ in range(10):
        assert (await handshake("10.0.0.1"))[0] == (False, 401)
    assert (await handshake("10.0.0.1", password=STATION_PASSWORD))[0] == (False, 429)


@pytest.mark.services
def test_counts_are_shared_through_redis():
    """Two cache clients (as two ASGI processes would have) on the real Redis see one count."""
    from django.conf import settings

    prefix = f"test-ocpp-auth-{os.getpid()}"
    redis = {
        "BACKEND": "portal.redis_cache.RedisCache",  # as in production
        "LOCATION": settings.REDIS_URL,
        "KEY_PREFIX": prefix,
    }
    limits = credentials.AttemptLimits(
        max_failures=4, max_failures_per_address=100, window=30, block=30
    )
    with override_settings(CACHES={"default": redis, "other": redis}):
        first, second = caches["default"], caches["other"]
        assert first is not second
        try:
            for _ in range(2):
                credentials.attempt_failed("REDIS-1", "10.1.1.1", limits)
            # The second "process" counts on from the first one's failures.
            credentials.cache = second  # the module's handle, as another process holds it
            assert credentials.attempt_state("REDIS-1", "10.1.1.1").identity_failures == 2
            for _ in range(2):
                credentials.attempt_failed("REDIS-1", "10.1.1.1", limits)
            credentials.cache = first
            state = credentials.attempt_state("REDIS-1", "10.1.1.1")
            assert state.blocked == credentials.IDENTITY and 0 < state.retry_after <= 30
        finally:
            from django.core.cache import cache as default_proxy

            credentials.cache = default_proxy
            for c in (first, second):
                c.delete_many(
                    [
                        *credentials._keys(credentials.IDENTITY, "REDIS-1"),
                        *credentials._keys(credentials.ADDRESS, "10.1.1.1"),
                    ]
                )
