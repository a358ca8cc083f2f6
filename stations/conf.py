"""Settings of the stations app, each read once here with its default.

Nothing else in ``stations`` reads ``django.conf.settings`` for these names.
"""

from __future__ import annotations

import os
from functools import cache
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

from stations.credentials import AttemptLimits


# Read once per name: these are read on every frame and database call of every station
# (getattr on Django's settings raises and catches AttributeError for an unset name, then
# reads the environment: 1.9 % of an ASGI process's CPU in a reconnect storm). A changed
# setting (tests: override_settings, pytest-django's ``settings``) forgets what was read.
@cache
def _get(name: str, default: Any) -> Any:
    value = getattr(settings, name, None)
    if value is not None:
        return value
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    return type(default)(raw) if not isinstance(default, str) else raw


def authorize_policy_path() -> str:
    """Dotted path of the authorization policy (see stations/authorization.py)."""
    return _get("OCPP_AUTHORIZE_POLICY", "billing.authorization.authorize")


def heartbeat_interval() -> int:
    """Seconds; sent in BootNotification.conf and used for offline detection."""
    return int(_get("OCPP_HEARTBEAT_INTERVAL", 300))


def offline_grace() -> int:
    """Seconds added to two heartbeat intervals before a silent station counts as offline."""
    return int(_get("OCPP_OFFLINE_GRACE", 60))


def call_timeout() -> float:
    """Seconds to wait for a station's answer to one of our CALLs."""
    return float(_get("OCPP_CALL_TIMEOUT", 30.0))


def command_lost_after() -> float:
    """A command sent this long ago without a recorded outcome was lost with the process that
    held the connection: the call time-out, the minute a recorded answer is retried while the
    database is away (stations/consumers.py), and a grace."""
    return float(_get("OCPP_COMMAND_LOST_AFTER", call_timeout() + 60.0 + 30.0))


def max_frame_bytes() -> int:
    """Frames above this size close the connection (1009). OCPP messages are a few kB."""
    return int(_get("OCPP_MAX_FRAME_BYTES", 65536))


def boot_wait() -> float:
    """Seconds after connecting within which a BootNotification is expected; a station that
    sends something else (or nothing) was booted before and is resumed (state refreshed)."""
    return float(_get("OCPP_BOOT_WAIT", 5.0))


def meter_batch_delay() -> float:
    """Seconds a MeterValues that finds no write in progress waits for others to be written
    with (0: none; those that arrive during a write are written together after it anyway)."""
    return float(_get("OCPP_METER_BATCH_DELAY", 0.0))


def meter_batches_in_flight() -> int:
    """MeterValues batches one process writes at once (at least 1)."""
    return max(1, int(_get("OCPP_METER_BATCHES_IN_FLIGHT", 2)))


def meter_batch_size() -> int:
    return int(_get("OCPP_METER_BATCH_SIZE", 500))


def last_seen_write_every() -> float:
    """Seconds between two writes of ``Station.last_seen`` for one connection."""
    # Offline detection works in heartbeat intervals (minutes); a minute of precision is
    # plenty and saves two UPDATEs per station per quarter minute under load.
    return float(_get("OCPP_LAST_SEEN_EVERY", 60.0))


def command_unclaimed_after() -> int:
    """Seconds after which a command no connection picked up is recorded as ``offline``."""
    return int(_get("OCPP_COMMAND_UNCLAIMED_AFTER", 60))


def db_threads() -> int:
    """Threads (each with its own database connection) for the OCPP path's queries on
    PostgreSQL; 1 = Channels' single database thread (always so on SQLite)."""
    return int(_get("OCPP_DB_THREADS", 8))


def group_check_seconds() -> float:
    """How often each process checks whether Redis lost the channel groups (stations/groups.py)."""
    return float(_get("OCPP_GROUP_CHECK_SECONDS", 2.0))


def group_refresh_seconds() -> float:
    """Each station connection joins its channel group again this often, against
    channels_redis's group expiry (a day)."""
    return float(_get("OCPP_GROUP_REFRESH_SECONDS", 3600.0))


def admission_max_connecting() -> int:
    """Handshakes one process works on at once; more are refused with 503 (0: no limit)."""
    return int(_get("OCPP_ADMISSION_MAX_CONNECTING", 200))


def admission_max_db_backlog() -> int:
    """Queued OCPP database calls in one process above which new handshakes are refused with
    503: the stations already connected are served first (0: no limit)."""
    return int(_get("OCPP_ADMISSION_MAX_DB_BACKLOG", 300))


def admission_max_queue_seconds() -> float:
    """A handshake that waited longer than this between the load balancer (its
    ``X-Request-Start``) and the process is refused with 503 (0: no limit)."""
    return float(_get("OCPP_ADMISSION_MAX_QUEUE_SECONDS", 5))


def admission_retry_after() -> tuple[int, int]:
    """Range of the Retry-After (seconds) sent with a 503 while few stations wait, spread to
    smooth the retries."""
    low, _, high = str(_get("OCPP_ADMISSION_RETRY_AFTER", "5-30")).partition("-")
    return int(low), int(high or low)


def admission_retry_after_max() -> int:
    """Longest Retry-After (s) when many stations wait: the range grows up to it so that they
    come back about as fast as the process completes handshakes."""
    return int(_get("OCPP_ADMISSION_RETRY_AFTER_MAX", 180))


def public_ws_base() -> str:
    """Base of the OCPP URL shown to owners: ``OCPP_PUBLIC_URL`` or derived from SITE_URL."""
    explicit = _get("OCPP_PUBLIC_URL", "")
    if explicit:
        return explicit.rstrip("/")
    site = getattr(settings, "SITE_URL", "http://localhost:8000").rstrip("/")
    if site.startswith("https://"):
        return "wss://" + site[len("https://") :] + "/ocpp"
    if site.startswith("http://"):
        return "ws://" + site[len("http://") :] + "/ocpp"
    return site + "/ocpp"


VENDOR_ID = "org.chargeportal"
SUBPROTOCOL = "ocpp1.6"


def free_vend_key() -> str:
    """Vendor key that makes a station charge without identification (authentication mode
    ``none``); ``-`` sends nothing."""
    value = _get("OCPP_FREE_VEND_KEY", "FreeVendActive")
    return "" if value == "-" else value


def backend_url_key() -> str:
    """Vendor key for the central system URL, sent in mode ``ocpp_third_party``; empty (the
    default) sends nothing: once accepted the station leaves this portal."""
    return _get("OCPP_BACKEND_URL_KEY", "")


def relay_open_timeout() -> float:
    """Seconds to open the connection to a third-party backend when a relayed station
    connects; no answer by then closes the station's connection with 1013."""
    return float(_get("OCPP_RELAY_OPEN_TIMEOUT", 10.0))


def relay_check_timeout() -> float:
    """Seconds the reachability check waits when an owner saves a third-party URL."""
    return float(_get("OCPP_RELAY_CHECK_TIMEOUT", 5.0))


def event_hook_path() -> str:
    """Dotted path of the receiver of station events (see stations/events.py)."""
    return _get("OCPP_EVENT_HOOK", "loadmgmt.hooks.station_event")


def auth_attempt_limits() -> AttemptLimits:
    """Failed station passwords (stations/credentials.py): after ``OCPP_AUTH_MAX_FAILURES``
    wrong or missing passwords for one identity, or ``OCPP_AUTH_MAX_FAILURES_PER_IP`` from one
    address, within ``OCPP_AUTH_WINDOW`` seconds, handshakes are refused (429) for
    ``OCPP_AUTH_BLOCK`` seconds. The per-address limit is higher because many stations of a
    site often share one address."""
    return AttemptLimits(
        max_failures=int(_get("OCPP_AUTH_MAX_FAILURES", 10)),
        max_failures_per_address=int(_get("OCPP_AUTH_MAX_FAILURES_PER_IP", 100)),
        window=int(_get("OCPP_AUTH_WINDOW", 300)),
        block=int(_get("OCPP_AUTH_BLOCK", 300)),
    )


@receiver(setting_changed)
def _setting_changed(**_kwargs: Any) -> None:
    _get.cache_clear()
