"""HTTP requests leave no database connection behind in a served process (portal/asgi.py,
``_close_request_connections``).

Under ASGI each request's synchronous part runs in a thread that ends with the request.
Before the fix every API or /healthz request left its PostgreSQL connection open until a
garbage collection found it, and about 50 requests to one process exhausted PostgreSQL's 100
connections: from then on every request of every process failed (found in session 19). Only a
served process shows it (the test clients run requests in threads of their own)."""

from __future__ import annotations

import urllib.request

import psycopg
from django.db import connection
from rest_framework.authtoken.models import Token

from tests.factories import UserFactory

REQUESTS = 40


def _backends() -> int:
    """Connections to the test database, counted from a connection of its own."""
    db = connection.settings_dict
    with psycopg.connect(
        host=db["HOST"] or "127.0.0.1",
        port=db["PORT"] or 5432,
        user=db["USER"] or "postgres",
        dbname=db["NAME"],
        autocommit=True,
    ) as counter:
        (count,) = counter.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()"
        ).fetchone()
    return count


def test_requests_to_a_served_process_close_their_database_connections(portal_processes):
    (portal,) = portal_processes(1)
    token = Token.objects.create(user=UserFactory())
    connection.close()  # the test's own connection does not count
    before = _backends()
    for _ in range(REQUESTS):
        request = urllib.request.Request(
            portal.url + "/api/v1/me/", headers={"Authorization": f"Token {token.key}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
        with urllib.request.urlopen(portal.url + "/healthz", timeout=10) as response:
            assert response.status == 200
    # Without the fix: one connection more per request (80), or PostgreSQL refusing them.
    assert _backends() - before <= 2
