"""The one narrow entry point from the OCPP side to whoever reacts to station changes.

Load management must hear when a car arrives or leaves, a station goes online or offline,
boots, or reports its load-shedding inputs. ``stations`` never imports ``loadmgmt``: the
receiver is a dotted path (``OCPP_EVENT_HOOK``, default ``loadmgmt.hooks.station_event``)
resolved on first use; if that module does not exist nothing is called. The receiver is a
plain synchronous function ``(StationEvent) -> None`` called after the change commits; it
must be quick (queue work, do not do it) because it runs on the OCPP path. Events that come
together (a stopping process's connections, closed at once) go to the receiver's ``many``
attribute, ``(list[StationEvent]) -> None``, where it has one, else one by one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib.util import find_spec
from typing import Any

from django.db import transaction
from django.utils.module_loading import import_string

from stations import conf

log = logging.getLogger(__name__)

# An accepted BootNotification. The receiver runs before the boot is answered, and once it
# is, the station's connection sends the station's pending commands, load-management
# profiles made by the receiver included (stations.commands.commands_pending): they need
# no other notification (commands_send_bulk(notify=False)).
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


def station_events_emit(kind: str, station_ids: Sequence[int], **kwargs: Any) -> None:
    """The same event of several stations, delivered together after the current transaction
    commits (see the module's docstring)."""
    batch = [StationEvent(kind, station_id, **kwargs) for station_id in station_ids]
    if batch:
        transaction.on_commit(lambda: _deliver_many(batch))


def _deliver_many(batch: list[StationEvent]) -> None:
    many = getattr(_receiver(), "many", None)
    if many is None:
        for event in batch:
            _deliver(event)
        return
    try:
        many(batch)
    except Exception:  # as _deliver: never break the stations' conversations
        log.exception("station event receiver failed for %d %s events", len(batch), batch[0].kind)


def reset_receiver_cache() -> None:
    """For tests that switch ``OCPP_EVENT_HOOK``."""
    _receiver.cache_clear()
