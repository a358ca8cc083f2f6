"""The Celery worker keeps its database connections between tasks, and drops the ones a
request handler would drop (portal/celery.py, settings.CELERY_DB_REUSE_MAX)."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from celery.fixups.django import DjangoWorkerFixup
from django.db import connection

from portal.celery import _database_connections_checked, app

pytestmark = pytest.mark.django_db(transaction=True)


def _task(*, eager: bool) -> SimpleNamespace:
    return SimpleNamespace(request=SimpleNamespace(is_eager=eager))


def _around_a_task() -> None:
    """What a worker runs around each task: Celery's fix-up, then ours (both on
    task_prerun and task_postrun)."""
    fixup = DjangoWorkerFixup(app)
    task = _task(eager=False)
    for _ in ("prerun", "postrun"):
        fixup.close_database()
        _database_connections_checked(sender=task)


def _backend() -> object:
    connection.ensure_connection()
    return connection.connection


@pytest.fixture
def closes(monkeypatch) -> list[str]:
    """The connection's closes, counted (SQLite's in-memory test database ignores them),
    with connections kept for a minute as in production (``conn_max_age=60``)."""
    monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", 60)
    connection.close_at = time.monotonic() + 60
    seen: list[str] = []
    real = connection.close

    def close() -> None:
        seen.append(connection.alias)
        real()

    monkeypatch.setattr(connection, "close", close)
    return seen


def test_a_connection_lasts_from_task_to_task(closes):
    # Closed around every task, each recompute started a PostgreSQL backend of its own.
    before = _backend()
    for _ in range(3):
        _around_a_task()
        assert _backend() is before
    assert closes == []


def test_a_connection_past_its_age_is_replaced(closes):
    _backend()
    connection.close_at = time.monotonic() - 1  # CONN_MAX_AGE ran out
    _database_connections_checked(sender=_task(eager=False))
    assert closes == ["default"]


def test_a_broken_connection_is_replaced(closes, monkeypatch):
    """After an error the connection is kept only if it still answers (a PostgreSQL
    restart leaves it broken: the next task gets a new one)."""
    _backend()
    connection.errors_occurred = True
    monkeypatch.setattr(connection, "is_usable", lambda: False)
    _database_connections_checked(sender=_task(eager=False))
    assert closes == ["default"]


def test_an_eager_task_leaves_the_callers_connection_alone(closes):
    _backend()
    connection.close_at = time.monotonic() - 1
    _database_connections_checked(sender=_task(eager=True))
    assert closes == []


def test_frequent_periodic_tasks_are_not_logged_each_run(caplog):
    """loadmgmt_due runs every second, the cycle every 10 s: their receipt, success and
    sending are not logged at INFO; an hourly task's are, and a frequent task's failure is."""
    import logging

    from celery.app.trace import LOG_FAILURE, LOG_RECEIVED, LOG_SUCCESS, info

    def context(name: str, uuid: str) -> dict:
        return {
            "id": uuid,
            "name": name,
            "return_value": "0",
            "runtime": 0.001,
            "args": "()",
            "kwargs": "{}",
            "description": "raised unexpected",
            "exc": "boom",
        }

    due, hourly = "loadmgmt.tasks.loadmgmt_due", "billing.tasks.billing_invoices_issue_last_month"
    cycle = "loadmgmt.tasks.loadmgmt_cycle"
    received = logging.getLogger("celery.worker.strategy")
    beat = logging.getLogger("celery.beat")
    with caplog.at_level(logging.INFO):
        for name, uuid in ((due, "d"), (cycle, "c"), (hourly, "h")):
            received.info(LOG_RECEIVED, context(name, uuid), extra={"data": context(name, uuid)})
            info(LOG_SUCCESS, context(name, uuid))
            beat.info("Scheduler: Sending due task %s (%s)", "entry-" + uuid, name)
        failure = context(due, "f")  # Celery logs a failure at ERROR, with the same data
        logging.getLogger("celery.app.trace").error(LOG_FAILURE, failure, extra={"data": failure})
    logged = [r.getMessage() for r in caplog.records]
    for quiet in ("loadmgmt_due[d]", "entry-d", "loadmgmt_cycle[c]", "entry-c"):
        assert not [m for m in logged if quiet in m]
    assert any("last_month[h] received" in m for m in logged)
    assert any("last_month[h] succeeded" in m for m in logged)
    assert any("Sending due task entry-h" in m for m in logged)
    assert any("loadmgmt_due[f] raised unexpected" in m for m in logged)
