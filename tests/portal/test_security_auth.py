"""Login, sign-up and password-reset throttling (django-allauth's rate limits, counted in the
cache) with the configured values, and the page a refused visitor sees."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.core import mail

from tests.factories import PASSWORD, UserFactory

pytestmark = pytest.mark.django_db


def limit(action: str, per: str) -> int:
    """The count of the configured rate for ``action`` counted per ``per`` (ip or key)."""
    rates = [r.strip() for r in settings.ACCOUNT_RATE_LIMITS[action].split(",")]
    return min(int(r.split("/")[0]) for r in rates if r.endswith("/" + per))


def assert_refused_page(r) -> None:
    assert r.status_code == 429
    html = r.content.decode()
    assert "Too many attempts" in html and "please wait a few minutes" in html
    assert "Content-Security-Policy" in r.headers


def test_signup_is_limited_per_address(client):
    for n in range(limit("signup", "ip")):
        # Invalid forms count as well: the limit is on attempts, not on accounts made.
        r = client.post("/accounts/signup/", {"email": f"n{n}@example.test"})
        assert r.status_code == 200
    assert_refused_page(client.post("/accounts/signup/", {"email": "late@example.test"}))
    # Another address may still sign up.
    r = client.post("/accounts/signup/", {"email": "x@example.test"}, REMOTE_ADDR="192.0.2.1")
    assert r.status_code == 200


def test_login_posts_are_limited_per_address(client):
    users = [UserFactory() for _ in range(3)]
    for n in range(limit("login", "ip")):
        client.post("/accounts/login/", {"login": users[n % 3].email, "password": "x"})
    r = client.post("/accounts/login/", {"login": users[0].email, "password": PASSWORD})
    assert_refused_page(r)
    assert "_auth_user_id" not in client.session


def test_failed_logins_are_limited_per_address_across_accounts(client):
    """Spraying one password over many accounts: each account is below its own limit."""
    for n in range(limit("login_failed", "ip")):
        client.post("/accounts/login/", {"login": f"u{n}@example.test", "password": "x"})
    user = UserFactory()
    r = client.post("/accounts/login/", {"login": user.email, "password": PASSWORD})
    assert b"Too many failed login attempts" in r.content
    assert "_auth_user_id" not in client.session


def test_password_reset_mails_are_limited_per_address(client):
    user = UserFactory()
    for _ in range(limit("reset_password", "key")):
        assert client.post("/accounts/password/reset/", {"email": user.email}).status_code == 302
    sent = len(mail.outbox)
    assert_refused_page(client.post("/accounts/password/reset/", {"email": user.email}))
    assert len(mail.outbox) == sent  # no further mail to the victim's inbox
    # Another e-mail address is not affected.
    other = UserFactory()
    assert client.post("/accounts/password/reset/", {"email": other.email}).status_code == 302


def test_password_reset_is_limited_per_client_address(client):
    for n in range(limit("reset_password", "ip")):
        client.post("/accounts/password/reset/", {"email": f"r{n}@example.test"})
    assert_refused_page(client.post("/accounts/password/reset/", {"email": "z@example.test"}))


@pytest.fixture
def redis_cache(settings):
    """The production cache (Redis) under a key prefix of its own, removed afterwards (the
    test settings use a local-memory cache; flushing the shared Redis is not an option)."""
    import os

    import redis
    from django.core.cache import caches

    prefix = f"test-sec-{os.getpid()}"
    settings.CACHES = {
        "default": {
            "BACKEND": "portal.redis_cache.RedisCache",  # as in production
            "LOCATION": settings.REDIS_URL,
            "KEY_PREFIX": prefix,
        }
    }
    assert "RedisCache" in type(caches["default"]).__name__
    yield
    client = redis.Redis.from_url(settings.REDIS_URL)
    keys = list(client.scan_iter(f"{prefix}:*"))
    if keys:
        client.delete(*keys)


@pytest.mark.services
def test_limits_count_in_redis(client, redis_cache):
    """allauth's counters (cache.add as a lock, lists of timestamps) and DRF's work on the
    production cache too, where every process shares them."""
    user = UserFactory()
    for _ in range(limit("reset_password", "key")):
        assert client.post("/accounts/password/reset/", {"email": user.email}).status_code == 302
    assert_refused_page(client.post("/accounts/password/reset/", {"email": user.email}))

    from rest_framework.test import APIClient

    api = APIClient()
    count = int(settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["token"].split("/")[0])
    for _ in range(count):
        api.post("/api/v1/auth/token/", {"email": user.email, "password": "wrong"})
    assert (
        api.post("/api/v1/auth/token/", {"email": user.email, "password": "x"}).status_code == 429
    )
