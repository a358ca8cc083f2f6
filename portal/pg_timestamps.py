"""PostgreSQL ``timestamptz`` values read by psycopg's C loader instead of Django's Python one.

Django registers its own loader for ``timestamptz`` on every psycopg 3 connection: a Python
subclass of psycopg's pure-Python loader that sets Django's time zone on each value. psycopg
would otherwise use its C loader, but a subclass defined outside psycopg has no C version.
Parsing one value costs 2.6 µs that way and 0.15 µs in C (this machine). The
load-management recompute reads about ten timestamps per connector, for thousands of
connectors, many times a second in a reconnect storm: Django's loader was a fifth of the
Celery worker's CPU there (docs/BENCHMARKS.md, session 12).

The C loader is used only where it gives exactly what Django's gives. That holds when:
- Django's connection time zone is UTC (``USE_TZ`` and no per-database ``TIME_ZONE``), so
  Django sets every value's tzinfo to ``datetime.timezone.utc``;
- the session's ``TimeZone`` is UTC (Django sets it when it connects), so PostgreSQL writes
  ``+00`` and the C loader returns ``datetime.timezone.utc`` itself.

Elsewhere, or without psycopg's C implementation, Django's loader stays.

The class carries Django's ``timezone`` attribute. Django's ``create_cursor`` compares it with
the connection's zone, and registers its own loader again on every cursor where they differ.
"""

from __future__ import annotations

import datetime
from typing import Any

from django.db.backends.signals import connection_created

UTC = datetime.UTC


def _c_loader() -> type | None:
    """psycopg's C loader for ``timestamptz`` text, or None (pure-Python psycopg)."""
    import psycopg
    from psycopg.postgres import types
    from psycopg.pq import Format

    # psycopg_c or psycopg_binary; the pure-Python implementation's loaders live in psycopg.
    loader = psycopg.adapters.get_loader(types["timestamptz"].oid, Format.TEXT)
    return loader if loader is not None and loader.__module__.startswith("psycopg_") else None


def _fast_loader_class(c_loader: type) -> type:
    from psycopg.adapt import Loader

    class UtcTimestamptzLoader(Loader):
        """The C loader behind Django's interface (its ``timezone`` attribute). psycopg's
        C classes cannot be subclassed: each instance holds one and hands values to it."""

        timezone = UTC

        def __init__(self, oid: int, context: Any = None) -> None:
            super().__init__(oid, context)
            self._loader = c_loader(oid, context)

        def load(self, data: Any) -> datetime.datetime:
            return self._loader.load(data)

    return UtcTimestamptzLoader


_loader_class: type | None = None


def loader_class() -> type | None:
    """The loader installed on suitable connections (None without psycopg's C loader)."""
    global _loader_class
    if _loader_class is None:
        c_loader = _c_loader()
        if c_loader is None:
            return None
        _loader_class = _fast_loader_class(c_loader)
    return _loader_class


def install(sender: Any, connection: Any, **_kwargs: Any) -> None:
    """``connection_created`` receiver: use the C loader on this connection if it gives what
    Django's would (see the module's docstring)."""
    if connection.vendor != "postgresql" or not hasattr(connection.connection, "adapters"):
        return  # SQLite, or psycopg2
    if connection.timezone is not UTC or connection.timezone_name != "UTC":
        return
    cls = loader_class()
    if cls is not None:
        connection.connection.adapters.register_loader("timestamptz", cls)


def connect() -> None:
    connection_created.connect(install, dispatch_uid="portal.pg_timestamps")
