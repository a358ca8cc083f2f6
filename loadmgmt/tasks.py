"""Recompute triggers and periodic work of live load management.

* ``recompute_soon(org, part)``: debounced — a burst of events gives one recompute. With a
  broker (Redis) a Celery task is scheduled a moment later; on the embedded default the
  organization is marked due and the in-process beat (``loadmgmt-due``, every second) runs it.
  ``part`` names the group or node the event concerns: the recompute then covers only the
  trees of the parts marked since the last one (``recompute.scope_resolve``), not the whole
  organization.
* ``recompute_locked(org)``: one recompute per organization at a time (a cache lock, Redis in
  production, and on PostgreSQL an advisory lock held for the whole recompute: see
  ``_advisory_try_lock``); an event that arrives while one runs marks the organization dirty
  and the running one goes again at once, so the change is never lost and waits for no timer.
* ``loadmgmt_cycle``: every ``LOADMGMT_CYCLE_SECONDS`` every organization with groups is
  recomputed whole (leases renewed, stale meters noticed, chart samples taken) even without
  events.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterable
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
# What a recompute covers, as marked by the events: the engine ids of the groups and nodes
# they concern ("g12", "n3"), or WHOLE for the whole organization (configuration changes, the
# cycle, a caller that names nothing).
WHOLE = "*"
WHOLE_ORGANIZATION = frozenset({WHOLE})
# Embedded default: organization → the parts marked due.
_due: dict[int, set[str]] = {}
_due_lock = threading.Lock()


def _lock_key(organization_id: int) -> str:
    return f"loadmgmt:lock:{organization_id}"


def _scheduled_key(organization_id: int) -> str:
    return f"loadmgmt:scheduled:{organization_id}"


def eager() -> bool:
    """Celery runs tasks in the caller (the embedded default, tests): no broker, no timers."""
    return bool(getattr(settings, "CELERY_TASK_ALWAYS_EAGER", False))


def _dirty_key(organization_id: int) -> str:
    # A set of parts (a new name: before session 15 the mark was a plain value, and a set
    # command on a key left over from an older version would fail).
    return f"loadmgmt:dirty-parts:{organization_id}"


def recompute_soon(organization_id: int, part: str = WHOLE) -> None:
    """Ask for a recompute of the organization (cheap: called on the OCPP path). ``part``:
    the engine id of the group or node the change concerns (its tree is recomputed), or
    ``WHOLE``."""
    recompute_soon_many([(organization_id, part)])


def recompute_soon_many(marks: Iterable[tuple[int, str]]) -> None:
    """``recompute_soon`` for several (organization, part) at once: with Redis, one round
    trip for all of them."""
    by_organization: dict[int, set[str]] = {}
    for organization_id, part in marks:
        by_organization.setdefault(organization_id, set()).add(part)
    if eager():
        with _due_lock:
            for organization_id, parts in by_organization.items():
                _due.setdefault(organization_id, set()).update(parts)
        return
    # "Something changed": a recompute running now sees it and runs once more.
    for organization_id in _mark_dirty_and_claim_schedule(by_organization):
        _schedule_task(organization_id)


def _redis():
    """The Redis client behind the cache, or None (tests without services use locmem)."""
    redis_cache = getattr(cache, "_cache", None)
    return redis_cache.get_client(write=True) if hasattr(redis_cache, "get_client") else None


def _mark_dirty_and_claim_schedule(by_organization: dict[int, set[str]]) -> list[int]:
    """Add the parts to each organization's dirty set and ``cache.add`` its scheduled mark;
    with Redis in one round trip (this runs on the OCPP path for every station event: a
    reconnect storm sends several per station). Returns the organizations that had no
    recompute scheduled yet."""
    client = _redis()
    if client is None:
        claimed = []
        for organization_id, parts in by_organization.items():
            _dirty_mark(organization_id, parts)
            if cache.add(_scheduled_key(organization_id), 1, timeout=SCHEDULED_SECONDS):
                claimed.append(organization_id)
        return claimed
    pipe = client.pipeline(transaction=False)
    for organization_id, parts in by_organization.items():
        _pipe_mark(pipe, organization_id, parts)
        # Django's RedisCache stores integers as they are (no pickling), so cache.add and
        # cache.delete work on this key too; the keys carry the cache's prefix and version
        # as cache.set would give them.
        pipe.set(
            cache.make_and_validate_key(_scheduled_key(organization_id)),
            1,
            ex=SCHEDULED_SECONDS,
            nx=True,
        )
    replies = pipe.execute()
    return [
        organization_id
        for organization_id, claimed in zip(by_organization, replies[2::3], strict=True)
        if claimed
    ]


def _dirty_mark(organization_id: int, parts: Iterable[str]) -> None:
    parts = set(parts)
    client = _redis()
    if client is None:
        # Not atomic: only tests without services and single-process set-ups come here.
        key = _dirty_key(organization_id)
        cache.set(key, (cache.get(key) or set()) | parts, timeout=DIRTY_SECONDS)
        return
    pipe = client.pipeline(transaction=False)
    _pipe_mark(pipe, organization_id, parts)
    pipe.execute()


def _pipe_mark(pipe, organization_id: int, parts: Iterable[str]) -> None:
    """Queue on a Redis pipeline: add the parts to the organization's dirty set (two
    replies)."""
    key = cache.make_and_validate_key(_dirty_key(organization_id))
    pipe.sadd(key, *parts)
    pipe.expire(key, DIRTY_SECONDS)


def _dirty_take(organization_id: int) -> set[str]:
    """The parts marked since the last take, unmarked in the same step (a mark added after
    it waits for the next take)."""
    client = _redis()
    if client is None:
        key = _dirty_key(organization_id)
        parts = cache.get(key) or set()
        cache.delete(key)
        return set(parts)
    key = cache.make_and_validate_key(_dirty_key(organization_id))
    pipe = client.pipeline(transaction=True)
    pipe.smembers(key)
    pipe.delete(key)
    members = pipe.execute()[0]
    return {m.decode() if isinstance(m, bytes) else m for m in members}


def dirty(organization_id: int) -> bool:
    """Whether a change is marked that no recompute has taken yet."""
    client = _redis()
    if client is None:
        return bool(cache.get(_dirty_key(organization_id)))
    return bool(client.exists(cache.make_and_validate_key(_dirty_key(organization_id))))


def _schedule(organization_id: int, gather: float = 0.0) -> None:
    if cache.add(_scheduled_key(organization_id), 1, timeout=SCHEDULED_SECONDS):
        _schedule_task(organization_id, gather)


def _schedule_task(organization_id: int, gather: float = 0.0) -> None:
    # Events until the worker picks the task up are merged into it (the key stays set until
    # then). A countdown would cost up to the worker's timer precision for nothing but a
    # wider merge window, so only a configured debounce uses one, and a task that carries
    # on from one that ended with changes still coming (``gather``, see rerun_rest).
    countdown = max(conf.debounce_seconds(), gather)
    loadmgmt_recompute.apply_async(
        (organization_id,), countdown=countdown if countdown >= 0.1 else None
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


def recompute_locked(
    organization_id: int,
    *,
    scheduled: bool = False,
    parts: Iterable[str] | None = WHOLE_ORGANIZATION,
    reruns: int = MAX_RERUNS,
):
    """Recompute unless another worker is at it; the one holding the lock runs again while
    changes keep coming (up to MAX_RERUNS times, then the next trigger or cycle takes over),
    so an event during a recompute waits for no timer.

    ``parts``: what to recompute besides the parts marked dirty (each run takes the marks
    made before it): the whole organization by default; ``None`` for the task that
    ``recompute_soon`` scheduled, which recomputes what its events marked (and nothing when
    another holder took the marks meanwhile and recomputed them).

    ``reruns``: at most this many runs again for changes that came meanwhile; what is still
    marked then goes to a task (the cycle, which goes through every organization in turn,
    runs each once and does not wait for any of them).

    ``scheduled``: called by the task ``recompute_soon`` scheduled, whose mark
    (``_scheduled_key``) stays set while it runs: the events meanwhile only mark the
    organization dirty, and this run goes again for them. (Cleared at the start, every event
    during a recompute scheduled a task that found the lock taken and did nothing: 60 of
    the 198 tasks of a 2,000-station reconnect storm, docs/BENCHMARKS.md.) The mark is
    cleared when the run ends, before the last look at the dirty mark, so that a later
    event schedules the next task itself."""
    from loadmgmt.recompute import recompute

    asked = set(parts or ())
    token = uuid.uuid4().hex
    lock = _lock_key(organization_id)
    if not cache.add(lock, token, timeout=LOCK_SECONDS):
        return _held_elsewhere(organization_id, scheduled, asked)
    try:
        advisory = _advisory_try_lock(organization_id)
    except BaseException:
        cache.delete(lock)
        _scheduled_clear(organization_id, scheduled)
        raise
    if not advisory:  # the cache lost the holder's lock (a Redis restart): it still runs
        cache.delete(lock)
        # Marked, not scheduled: a task now would find the holder still at it, and the next
        # one again, for as long as it runs; the holder looks at the marks when it is done.
        _dirty_mark(organization_id, asked or {WHOLE})
        return _held_elsewhere(organization_id, scheduled)
    report = None
    renewer = _LockRenewer(lock, token)
    renewer.start()
    try:
        for run in range(1 + reruns):
            taken = _dirty_take(organization_id) | (asked if run == 0 else set())
            if not taken:
                break
            started = time.monotonic()
            report = recompute(organization_id, parts=taken)
            if eager() or run == reruns or not dirty(organization_id):
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
    # mark set): run for it, after gathering more as a rerun would (changes keep coming).
    if not eager() and dirty(organization_id):
        _schedule(organization_id, conf.rerun_gather_seconds())
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
    the worker's CPU 25-30 % less; docs/BENCHMARKS.md, session 14). Any rerun rests at least
    ``LOADMGMT_RERUN_GATHER_SECONDS``: since recomputes cover only the trees of their events
    (session 15) a recompute is short, and without it the events of a storm were planned
    one or two at a time, each paying the recompute's fixed part."""
    waited = report.steps.get("send_up", 0.0) / 1000 if report is not None else 0.0
    busy = took - waited
    paced = busy if busy > conf.rerun_pace_from_seconds() else 0.0
    return min(max(paced, conf.rerun_gather_seconds()), conf.cycle_seconds() / 2)


def _scheduled_clear(organization_id: int, scheduled: bool) -> None:
    if scheduled:
        cache.delete(_scheduled_key(organization_id))


def _held_elsewhere(
    organization_id: int, scheduled: bool = False, parts: set[str] | None = None
) -> None:
    """Another worker is at it: it sees the dirty marks (or, embedded, the due set) and runs
    again for the change that brought this one here. ``parts`` asked by this caller besides
    the events' own marks (the cycle's whole organization) are marked for it, and a task is
    scheduled unless one is already: the holder may be past its last look at the marks."""
    _scheduled_clear(organization_id, scheduled)
    if eager():
        with _due_lock:
            _due.setdefault(organization_id, set()).update(parts or {WHOLE})
        return None
    if parts:
        _dirty_mark(organization_id, parts)
        _schedule(organization_id)
    return None


@shared_task
def loadmgmt_recompute(organization_id: int) -> int:
    report = recompute_locked(organization_id, scheduled=True, parts=None)
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
        due = sorted(_due.items())
        _due.clear()
    for organization_id, parts in due:
        try:
            recompute_locked(organization_id, parts=parts)
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
            recompute_locked(organization_id, reruns=0)
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
