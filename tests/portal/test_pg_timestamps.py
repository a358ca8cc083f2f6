"""PostgreSQL timestamps read by psycopg's C loader where it gives what Django's gives
(portal/pg_timestamps.py)."""

from __future__ import annotations

import datetime

import pytest
from django.db import connection
from django.utils import timezone

from portal import pg_timestamps
from stations.models import StationCommand
from tests.stations.factories import StationFactory

pytestmark = [pytest.mark.services, pytest.mark.django_db]

UTC = datetime.UTC


def _django_loader(cursor_connection):
    """Django's own loader, as it registers it."""
    from django.db.backends.postgresql.psycopg_any import register_tzloader

    register_tzloader(UTC, cursor_connection)


def _loader_in_use():
    from psycopg.postgres import types
    from psycopg.pq import Format

    connection.ensure_connection()
    with connection.cursor() as cursor:
        return cursor.cursor.adapters.get_loader(types["timestamptz"].oid, Format.TEXT)


def test_the_connection_reads_timestamps_with_the_c_loader():
    if pg_timestamps.loader_class() is None:
        pytest.skip("psycopg without its C implementation: Django's loader stays")
    # Also what Django's create_cursor checks before it registers its own on each cursor.
    assert _loader_in_use() is pg_timestamps.loader_class()
    assert _loader_in_use().timezone is connection.timezone


SAMPLES = (
    "2026-12-06 17:00:00.123456+00",
    "2026-03-29 01:59:59.999999+00",  # Zurich's switch to summer time
    "2026-01-01 00:00:00+05:30",  # another offset: the same instant in UTC
    "1970-01-01 00:00:00+00",
    "0001-01-01 00:00:00+00",
    "9999-12-31 23:59:59.999999+00",
)


@pytest.mark.parametrize("text", SAMPLES)
def test_values_equal_djangos_and_carry_utc(text):
    connection.ensure_connection()
    sql = "SELECT %s::timestamptz"
    with connection.cursor() as cursor:
        cursor.execute(sql, [text])
        fast = cursor.fetchone()[0]
    raw = connection.connection
    saved = raw.adapters.get_loader(1184, 0)
    try:
        _django_loader(raw)
        with connection.cursor() as cursor:
            cursor.execute(sql, [text])
            django = cursor.fetchone()[0]
    finally:
        raw.adapters.register_loader("timestamptz", saved)
    assert fast == django
    assert fast.tzinfo is UTC and django.tzinfo is UTC
    assert fast.utcoffset() == datetime.timedelta(0)


def test_models_read_aware_utc_datetimes():
    station = StationFactory()
    sent = timezone.now().replace(microsecond=654321)
    command = StationCommand.objects.create(
        station=station, action="Reset", payload={"type": "Soft"}, sent_at=sent
    )
    again = StationCommand.objects.get(pk=command.pk)
    assert again.sent_at == sent and again.sent_at.tzinfo is UTC
    assert StationCommand.objects.filter(sent_at=sent).values_list("sent_at", flat=True)[0] == sent
