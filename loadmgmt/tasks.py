"""Recompute triggers and periodic work of live load management.

* ``recompute_soon(org)``: debounced — a burst of events gives one recompute. With a broker
  (Redis) a Celery task is scheduled a moment later; on the embedded default the organization
  is marked due and the in-process beat (``loadmgmt-due``, every second) runs it.
* ``recompute_locked(org)``: one recompute per organization at a time (a cache lock, Redis in
  production, and on PostgreSQL an advisory lock held for the whole recompute: see
  ``_advisory_try_lock``); an event that arrives while one runs marks the organization dirty
  and the running one goes again at once, so the change is never lost and waits for no timer.
* ``loadmgmt_cycle``: every ``LOADMGMT_CYCLE_SECONDS`` every organization with groups is
  recomputed (leases renewed, stale meters noticed) even without events.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING

from celery import shared_task
from django.conf import settings
from django.core.cache import cache
from django.db import DatabaseError, close_old_connections, connection
from django.utils import timezone

from loadmgmt import conf

if TYPE_CHECKING:
    from loadmgmt.recompute import Report

log = logging.getLogger(__name__)
# The recompute lock is short and renewed while its holder runs: a worker killed mid-recompute
# (SIGKILL, out of memory, machine lost) blocks its organization for at most LOCK_SECONDS.
# It must outlast one renewal interval plus a stalled Redis call, and the holder renews it
# every LOCK_RENEW_SECONDS, also while it waits for acknowledgements (LOADMGMT_ACK_WAIT_SECONDS).
LOCK_SECONDS = 15
LOCK_RENEW_SECONDS = 5
DIRTY_SECONDS = 120
SCHEDULED_SECONDS = 30
_due: set[int] = set()
_due_lock = threading.Lock()


def _lock_key(organization_id: int) -> str:
    return f"loadmgmt:lock:{organization_id}"


def _scheduled_key(organization_id: int) -> str:
    return f"loadmgmt:scheduled:{organization_id}"


def eager() -> bool:
    """Celery runs tasks in the caller (the embedded default, tests): no broker, no timers."""
    return bool(getattr(settings, "CELERY_TASK_ALWAYS_EAGER", False))


def _dirty_key(organization_id: int) -> str:
    return f"loadmgmt:dirty:{organization_id}"


def recompute_soon(organization_id: int) -> None:
    """Ask for a recompute of the organization (cheap: called on the OCPP path)."""
    if eager():
        with _due_lock:
            _due.add(organization_id)
        return
    # "Something changed": a recompute running now sees it and runs once more.
    if _mark_dirty_and_claim_schedule(organization_id):
        _schedule_task(organization_id)


def _mark_dirty_and_claim_schedule(organization_id: int) -> bool:
    """``cache.set`` of the dirty mark and ``cache.add`` of the scheduled mark; with Redis in
    one round trip (this runs on the OCPP path for every station event: a reconnect storm
    sends several per station). True if no recompute was scheduled yet."""
    dirty, scheduled = _dirty_key(organization_id), _scheduled_key(organization_id)
    redis_cache = getattr(cache, "_cache", None)
    if not hasattr(redis_cache, "get_client"):  # not Redis (tests without services)
        cache.set(dirty, 1, timeout=DIRTY_SECONDS)
        return cache.add(scheduled, 1, timeout=SCHEDULED_SECONDS)
    # Django's RedisCache stores integers as they are (no pickling), so cache.get reads
    # these; the keys carry the cache's prefix and version as cache.set would give them.
    pipe = redis_cache.get_client(write=True).pipeline(transaction=False)
    pipe.set(cache.make_and_validate_key(dirty), 1, ex=DIRTY_SECONDS)
    pipe.set(cache.make_and_validate_key(scheduled), 1, ex=SCHEDULED_SECONDS, nx=True)
    return bool(pipe.execute()[1])


def _schedule(organization_id: int) -> None:
    if cache.add(_scheduled_key(organization_id), 1, timeout=SCHEDULED_SECONDS):
        _schedule_task(organization_id)


def _schedule_task(organization_id: int) -> None:
    # Events until the worker picks the task up are merged into it (the key stays set until
    # then). A countdown would cost up to the worker's timer precision for nothing but a
    # wider merge window, so only a configured debounce uses one.
    debounce = conf.debounce_seconds()
    loadmgmt_recompute.apply_async(
        (organization_id,), countdown=debounce if debounce >= 0.1 else None
    )


MAX_RERUNS = 5
# First key of the recompute's PostgreSQL advisory locks ("LM"); the second is the organization.
ADVISORY_LOCK_CLASS = 0x4C4D


def _advisory_try_lock(organization_id: int) -> bool:
    """On PostgreSQL, the recompute's real mutual exclusion; True elsewhere (SQLite: the
    embedded default runs one process).

    The cache lock alone is not enough: a Redis restart empties it while a recompute is
    running, and a second worker thread or process then plans from the same rows at the same
    time. Each one's ``IncreaseGate`` counts the stations at what it saw when it started, so
    one of them lets an increase through into room the other has just given away (found
    reading this code while tracing an overload in the Redis-restart fault test,
    docs/RESILIENCE.md; not itself seen in a run). The advisory
    lock lives in the database session of the thread that plans: it ends when the session
    ends (a killed worker, a PostgreSQL restart), and without that session the holder can
    send nothing either, since every setpoint is a command row written through it."""
    if connection.vendor != "postgresql":
        return True
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_try_advisory_lock(%s, %s)", [ADVISORY_LOCK_CLASS, organization_id]
        )
        return bool(cursor.fetchone()[0])


def _advisory_unlock(organization_id: int) -> None:
    if connection.vendor != "postgresql":
        return
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_advisory_unlock(%s, %s)", [ADVISORY_LOCK_CLASS, organization_id]
            )
    except DatabaseError:
        # The session is broken (the database restarted): closing it ends the lock as well.
        log.warning("could not release the advisory lock of organization %s", organization_id)
        connection.close()


class _LockRenewer(threading.Thread):
    """Extends the recompute lock every LOCK_RENEW_SECONDS while its holder runs; dies with
    the holder's process, so a killed worker's lock lapses after LOCK_SECONDS."""

    def __init__(self, key: str, token: str) -> None:
        super().__init__(name=f"lock-renew {key}", daemon=True)
        self.key, self.token = key, token
        self._stopped = threading.Event()

    def run(self) -> None:
        while not self._stopped.wait(LOCK_RENEW_SECONDS):
            try:
                # Not atomic with the get, but only this token's holder ever renews, and a
                # lock that lapsed meanwhile (a stalled process) is not taken back.
                if cache.get(self.key) != self.token or not cache.touch(self.key, LOCK_SECONDS):
                    return
            except Exception:  # Redis away: the next renewal tries again, the lock may lapse
                log.warning("could not renew %s", self.key, exc_info=True)

    def stop(self) -> None:
        self._stopped.set()


def recompute_locked(organization_id: int, *, scheduled: bool = False):
    """Recompute unless another worker is at it; the one holding the lock runs again while
    changes keep coming (up to MAX_RERUNS times, then the next trigger or cycle takes over),
    so an event during a recompute waits for no timer.

    ``scheduled``: called by the task ``recompute_soon`` scheduled, whose mark
    (``_scheduled_key``) stays set while it runs: the events meanwhile only mark the
    organization dirty, and this run goes again for them. (Cleared at the start, every event
    during a recompute scheduled a task that found the lock taken and did nothing: 60 of
    the 198 tasks of a 2,000-station reconnect storm, docs/BENCHMARKS.md.) The mark is
    cleared when the run ends, before the last look at the dirty mark, so that a later
    event schedules the next task itself."""
    from loadmgmt.recompute import recompute

    token = uuid.uuid4().hex
    lock = _lock_key(organization_id)
    if not cache.add(lock, token, timeout=LOCK_SECONDS):
        return _held_elsewhere(organization_id, scheduled)
    try:
        advisory = _advisory_try_lock(organization_id)
    except BaseException:
        cache.delete(lock)
        _scheduled_clear(organization_id, scheduled)
        raise
    if not advisory:  # the cache lost the holder's lock (a Redis restart): it still runs
        cache.delete(lock)
        cache.set(_dirty_key(organization_id), 1, timeout=DIRTY_SECONDS)
        return _held_elsewhere(organization_id, scheduled)
    report = None
    renewer = _LockRenewer(lock, token)
    renewer.start()
    try:
        for _ in range(1 + MAX_RERUNS):
            cache.delete(_dirty_key(organization_id))
            started = time.monotonic()
            report = recompute(organization_id)
            if eager() or not cache.get(_dirty_key(organization_id)):
                break
            rest = rerun_rest(time.monotonic() - started, report)
            if rest:
                time.sleep(rest)
    finally:
        renewer.stop()
        _advisory_unlock(organization_id)
        if cache.get(lock) == token:
            cache.delete(lock)
        _scheduled_clear(organization_id, scheduled)
    # A change that came after the last look (and found the lock held, or the scheduled
    # mark set): run for it.
    if not eager() and cache.get(_dirty_key(organization_id)):
        _schedule(organization_id)
    return report


def rerun_rest(took: float, report: Report | None) -> float:
    """Seconds to rest before a rerun, after a recompute that took ``took`` seconds.

    As long as the recompute took, not counting its wait for the decreases' answers, once
    that is more than ``LOADMGMT_RERUN_PACE_FROM_SECONDS``; at most half a cycle. Measured on
    the clock, not as the thread's CPU: in a reconnect storm a recompute of a few hundred
    stations took 70 ms of CPU but 0.6 s on the clock (the worker's threads share one
    interpreter lock, and PostgreSQL and the ASGI processes the same cores), so a rest as
    long as its CPU barely spaced the reruns, and the organization was recomputed again
    and again for as long as the storm lasted, each time reading all its stations. Resting as
    long as it took, a recompute keeps at most about half of its thread's time, and the
    storm's events are merged into fewer recomputes (a quarter fewer in a 2,000-station storm,
    the worker's CPU 25-30 % less; docs/BENCHMARKS.md, session 14). Small organizations
    (milliseconds) rerun without a pause."""
    waited = report.steps.get("send_up", 0.0) / 1000 if report is not None else 0.0
    busy = took - waited
    if busy <= conf.rerun_pace_from_seconds():
        return 0.0
    return min(busy, conf.cycle_seconds() / 2)


def _scheduled_clear(organization_id: int, scheduled: bool) -> None:
    if scheduled:
        cache.delete(_scheduled_key(organization_id))


def _held_elsewhere(organization_id: int, scheduled: bool = False) -> None:
    """Another worker is at it: it sees the dirty mark (or, embedded, the due set) and runs
    again for the change that brought this one here."""
    _scheduled_clear(organization_id, scheduled)
    if eager():
        with _due_lock:
            _due.add(organization_id)
    return None


@shared_task
def loadmgmt_recompute(organization_id: int) -> int:
    report = recompute_locked(organization_id, scheduled=True)
    return report.stations if report else 0


@shared_task
def loadmgmt_live_push(organization_id: int) -> None:
    """The merged push of a burst of recomputes (see ``live.publish``)."""
    from loadmgmt.live import publish_latest
    from portal.models import Organization

    organization = Organization.objects.filter(pk=organization_id).first()
    if organization is not None:
        publish_latest(organization)


@shared_task
def loadmgmt_due() -> int:
    """Embedded default: run the organizations marked due (no-op with a broker)."""
    with _due_lock:
        due = sorted(_due)
        _due.clear()
    for organization_id in due:
        try:
            recompute_locked(organization_id)
        except Exception:
            log.exception("load recompute of organization %s failed", organization_id)
        finally:
            close_old_connections()
    return len(due)


@shared_task
def loadmgmt_cycle() -> int:
    from loadmgmt.models import LoadGroup

    organizations = sorted(set(LoadGroup.objects.values_list("organization_id", flat=True)))
    for organization_id in organizations:
        try:
            recompute_locked(organization_id)
        except Exception:
            log.exception("load recompute of organization %s failed", organization_id)
    return len(organizations)


@shared_task
def loadmgmt_purge() -> int:
    """Chart samples and meter readings older than LOADMGMT_SAMPLES_KEEP_HOURS."""
    from loadmgmt.models import NodeLoadSample
    from loadmgmt.services import meter_readings_purge

    before = timezone.now() - timedelta(hours=conf.samples_keep_hours())
    deleted, _ = NodeLoadSample.objects.filter(time__lt=before).delete()
    return deleted + meter_readings_purge(before=before)
