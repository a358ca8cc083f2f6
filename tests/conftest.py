"""Shared fixtures: two tenants with every role, a driver, and API clients per person.

Tenant A ("alpha"): owner, manager, viewer. Tenant B ("beta"): owner. Plus a driver with no
organization. Every endpoint test should also assert that B's owner gets 404 on A's objects.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest
from django.test import Client
from rest_framework.test import APIClient

from portal.models import Organization, Role, User
from tests.factories import MembershipFactory, OrganizationFactory, UserFactory


def pytest_configure(config):
    from django.conf import settings

    # Fast hashing in tests; argon2 stays the production hasher (tested explicitly).
    settings.PASSWORD_HASHERS = [
        "django.contrib.auth.hashers.MD5PasswordHasher",
        "django.contrib.auth.hashers.Argon2PasswordHasher",
    ]
    # Per-run isolation on a shared Redis: our own channel-layer prefix, and a local cache
    # (clearing a Redis cache would flush the whole database).
    if settings.REDIS_URL:
        settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"] = f"test{os.getpid()}"
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    settings.WHITENOISE_USE_FINDERS = True
    settings.WHITENOISE_AUTOREFRESH = True
    settings.CELERY_TASK_ALWAYS_EAGER = True
    # In-process tests keep the OCPP path on Channels' single database thread: pool threads'
    # connections would outlive the test database. The pool runs in tests/e2e (subprocesses).
    settings.OCPP_DB_THREADS = 1


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup):
    """pytest-django's, and before the test database is dropped, close the connection that
    asgiref's thread for ``database_sync_to_async`` opened in async tests: nothing else
    closes it, and PostgreSQL refuses to drop a database still in use ("is being accessed by
    other users": a warning at the end of every run, the database left behind)."""
    yield
    from asgiref.sync import SyncToAsync
    from django.db import connections

    SyncToAsync.single_thread_executor.submit(connections.close_all).result(timeout=30)


@pytest.fixture(autouse=True)
def _clean_cache():
    from django.core.cache import cache

    from portal import live

    cache.clear()
    live._watched_memo.clear()  # the process's memo of the cache's "watched" marks
    yield


@pytest.fixture
def group_sends(monkeypatch):
    """``sent = group_sends()``: from then on, the groups the current channel layer sends to,
    in order (the sends still go out). Called in the test, after the fixtures that choose
    the layer."""

    def start() -> list[str]:
        from channels.layers import get_channel_layer

        layer = get_channel_layer()
        sent: list[str] = []
        real_group_send = layer.group_send

        async def recorded(group, message):
            sent.append(group)
            await real_group_send(group, message)

        monkeypatch.setattr(layer, "group_send", recorded)
        return sent

    return start


def _skip_or_fail(reason: str, required: bool) -> None:
    if required:
        pytest.fail(f"{reason} (required in CI)", pytrace=False)
    pytest.skip(reason)


def _services_missing() -> str | None:
    from django.conf import settings

    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        return "needs PostgreSQL: set DATABASE_URL"
    if not settings.REDIS_URL:
        return "needs Redis: set REDIS_URL"
    return None


@pytest.fixture(autouse=True)
def _real_services_gate(request):
    """Tests marked ``services`` run only on PostgreSQL + Redis; skipped (with the reason)
    elsewhere, and a failure instead of a skip when REQUIRE_REAL_SERVICES=1 (CI)."""
    if request.node.get_closest_marker("services"):
        missing = _services_missing()
        if missing:
            _skip_or_fail(missing, real_services_expected())
    yield


@dataclass
class Tenants:
    a: Organization
    b: Organization
    owner_a: User
    manager_a: User
    viewer_a: User
    owner_b: User
    driver: User

    def client(self, user: User | None) -> Client:
        client = Client()
        if user is not None:
            client.force_login(user)
        return client

    def api(self, user: User | None) -> APIClient:
        client = APIClient()
        if user is not None:
            client.force_authenticate(user)
        return client


@pytest.fixture
def tenants(db) -> Tenants:
    a = OrganizationFactory(name="Alpha Energy", slug="alpha")
    b = OrganizationFactory(name="Beta Parking", slug="beta")
    owner_a = MembershipFactory(organization=a, role=Role.OWNER, user__username="anna").user
    manager_a = MembershipFactory(organization=a, role=Role.MANAGER, user__username="max").user
    viewer_a = MembershipFactory(organization=a, role=Role.VIEWER, user__username="vic").user
    owner_b = MembershipFactory(organization=b, role=Role.OWNER, user__username="bob").user
    driver = UserFactory(username="dora")
    return Tenants(a, b, owner_a, manager_a, viewer_a, owner_b, driver)


def real_services_expected() -> bool:
    """CI sets REQUIRE_REAL_SERVICES=1: tests marked ``services`` must then run, not skip."""
    return os.environ.get("REQUIRE_REAL_SERVICES") == "1"
