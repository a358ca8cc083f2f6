"""A served process's HTTP requests reuse a few database connections and leave none behind
(portal/http_threads.py).

Under ASGI Django runs each request's synchronous part in a thread of the request's own.
Session 19 found every API or /healthz request leaving its PostgreSQL connection open until a
garbage collection: about 50 requests to one process exhausted PostgreSQL's 100 connections.
Closing it at the request's end fixed that, but then every request connected anew (6-7 ms on
the benchmark machine). Now requests borrow one of ``HTTP_THREADS`` long-lived threads whose
connections stay open. Only a served process shows any of this (the test clients run requests
in threads of their own)."""

from __future__ import annotations

import urllib.request
from concurrent.futures import ThreadPoolExecutor

import psycopg
from django.db import connection
from rest_framework.authtoken.models import Token

from tests.factories import UserFactory

REQUESTS = 40


def _database_counts() -> tuple[int, int]:
    """(connections open now, sessions ever opened) to the test database, read from a
    connection of its own (PostgreSQL's ``pg_stat_database.sessions``)."""
    db = connection.settings_dict
    with psycopg.connect(
        host=db["HOST"] or "127.0.0.1",
        port=db["PORT"] or 5432,
        user=db["USER"] or "postgres",
        dbname=db["NAME"],
        autocommit=True,
    ) as counter:
        counter.execute("SELECT pg_stat_clear_snapshot()")
        (open_now,) = counter.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()"
        ).fetchone()
        (sessions,) = counter.execute(
            "SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    return open_now, sessions - 1  # less the counter's own


def _get(url: str, token: str | None = None) -> None:
    headers = {"Authorization": f"Token {token}"} if token else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=20) as r:
        assert r.status == 200


def test_requests_reuse_their_database_connections_and_leave_none_behind(portal_processes):
    (portal,) = portal_processes(1, HTTP_THREADS="4")
    token = Token.objects.create(user=UserFactory()).key
    connection.close()  # the test's own connection does not count
    open_before, sessions_before = _database_counts()

    for _ in range(REQUESTS):  # one after the other: the same thread, the same connection
        _get(portal.url + "/api/v1/me/", token)
        _get(portal.url + "/healthz")
    open_after, sessions_after = _database_counts()
    # Before: a new connection per request (80 sessions); before session 19's fix they
    # also stayed open (80 more connections, or PostgreSQL refusing them).
    assert sessions_after - sessions_before <= 2
    assert open_after - open_before <= 2

    # More at once than the process has request threads: the extra ones get threads and
    # connections of their own, closed at their end; nothing is left beyond the pool's 4.
    with ThreadPoolExecutor(24) as clients:
        for _ in clients.map(lambda _i: _get(portal.url + "/api/v1/me/", token), range(96)):
            pass
    open_end, _sessions = _database_counts()
    assert open_end - open_before <= 4 + 2
