"""The one narrow entry point from the OCPP side to whoever reacts to station changes.

Load management must hear when a car arrives or leaves, a station goes online or offline,
boots, or reports its load-shedding inputs. ``stations`` never imports ``loadmgmt``: the
receiver is a dotted path (``OCPP_EVENT_HOOK``, default ``loadmgmt.hooks.station_event``)
resolved on first use; if that module does not exist nothing is called. The receiver is a
plain synchronous function ``(StationEvent) -> None`` called after the change commits; it
must be quick (queue work, do not do it) because it runs on the OCPP path.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from importlib.util import find_spec
from typing import Any

from django.db import transaction
from django.utils.module_loading import import_string

from stations import conf

log = logging.getLogger(__name__)

BOOT = "boot"
ONLINE = "online"
OFFLINE = "offline"
STATUS = "status"
SESSION_STARTED = "session_started"
SESSION_STOPPED = "session_stopped"
INPUTS = "inputs"


@dataclass(frozen=True)
class StationEvent:
    kind: str
    station_id: int
    organization_id: int | None = None
    connector_id: int | None = None
    data: dict[str, Any] = field(default_factory=dict)


def _noop(event: StationEvent) -> None:
    return None


@cache
def _receiver() -> Callable[[StationEvent], None]:
    path = conf.event_hook_path()
    module = path.rpartition(".")[0]
    if not path or find_spec(module.partition(".")[0]) is None or find_spec(module) is None:
        return _noop
    return import_string(path)


def _deliver(event: StationEvent) -> None:
    try:
        _receiver()(event)
    except Exception:  # a receiver's bug must never break the station's conversation
        log.exception("station event receiver failed for %s", event)


def station_event_emit(kind: str, station_id: int, **kwargs: Any) -> None:
    """Deliver after the current transaction commits (at once outside a transaction)."""
    event = StationEvent(kind, station_id, **kwargs)
    transaction.on_commit(lambda: _deliver(event))


def reset_receiver_cache() -> None:
    """For tests that switch ``OCPP_EVENT_HOOK``."""
    _receiver.cache_clear()
