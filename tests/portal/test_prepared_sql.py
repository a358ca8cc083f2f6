"""Hot-path queries built once (portal/prepared_sql.py): the same rows and the same changes as
the ORM, on SQLite and (with DATABASE_URL) PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.db.models import Case, F, When
from django.db.models.functions import Coalesce, Greatest

from portal.prepared_sql import IdQuery, insert_returning_pk, update_returning, update_rows
from stations.models import Connector, Station, StationCommand
from tests.stations.factories import StationFactory

pytestmark = pytest.mark.django_db

WHEN = datetime(2026, 12, 6, 14, 0, tzinfo=UTC)


@pytest.fixture
def stations(tenants):
    one = StationFactory(organization=tenants.a, charge_point_id="PREP-1", online=True)
    two = StationFactory(organization=tenants.a, charge_point_id="PREP-2", connectors=1)
    other = StationFactory(organization=tenants.b, charge_point_id="PREP-3", connectors=3)
    return one, two, other


def test_a_read_gives_the_rows_the_orm_gives_for_any_keys(stations):
    one, two, other = stations

    def build(organization_id, station_id):
        return (
            Connector.objects.filter(
                station__organization_id=organization_id, station_id__gte=station_id
            )
            .exclude(connector_id=station_id)  # a key used twice would be fine too
            .values_list("station__charge_point_id", "connector_id", "station__online")
        )

    query = IdQuery(build, keys=2)
    for organization_id, station_id in (
        (one.organization_id, one.pk),
        (one.organization_id, two.pk),
        (other.organization_id, 0),
        (other.organization_id, other.pk + 1),
    ):
        expected = list(build(organization_id, station_id))
        rows = [(cp, c, bool(on)) for cp, c, on in query.rows(organization_id, station_id)]
        assert rows == expected
    assert query.first(one.organization_id, one.pk)[0] == "PREP-1"
    assert query.first(0, 0) is None


def test_the_sql_is_built_once_per_database(stations, django_assert_num_queries):
    one, _two, _other = stations
    built = []

    def build(station_id):
        built.append(station_id)
        return Connector.objects.filter(station_id=station_id).values_list("connector_id")

    query = IdQuery(build)
    for _ in range(3):
        with django_assert_num_queries(1):
            assert query.rows(one.pk) == [(1,), (2,)]
    assert len(built) == 2  # compiled twice, once: see IdQuery._compile


def test_a_key_that_is_not_a_parameter_is_refused(stations):
    query = IdQuery(lambda station_id: Connector.objects.all().values_list("pk"))
    with pytest.raises(ValueError, match="every key must be a parameter"):
        query.rows(1)
    # A key that shapes the query (here: a slice) cannot be a parameter either.
    query = IdQuery(lambda n: Connector.objects.filter(connector_id=n)[: n % 7])
    with pytest.raises(ValueError, match=r"change the query's text|depends on the keys"):
        query.rows(1)
    with pytest.raises(TypeError):
        IdQuery(lambda a: Connector.objects.filter(pk=a)).rows(1, 2)


def test_an_update_with_expressions_changes_what_the_orm_update_would(stations):
    """The expressions are compiled by Django for the database at hand (GREATEST on
    PostgreSQL, MAX on SQLite); only the key varies."""
    one, two, _other = stations
    Connector.objects.filter(station=one, connector_id=1).update(info="5", vendor_error_code="9")
    Connector.objects.filter(station=one, connector_id=2).update(info="7")
    Connector.objects.filter(station=two).update(info="3", vendor_error_code="4")
    larger = Case(
        When(vendor_error_code="", then=F("info")),
        default=Greatest(Coalesce("info", "vendor_error_code"), "vendor_error_code"),
    )
    query = IdQuery(
        lambda station_id: Connector.objects.filter(station_id=station_id),
        update={"info": larger, "error_code": "Reset"},
    )
    untouched = list(Connector.objects.filter(station=two).values_list("info", "error_code"))
    assert query.execute(one.pk) == 2
    assert list(Connector.objects.filter(station=one).values_list("info", "error_code")) == [
        ("9", "Reset"),
        ("7", "Reset"),
    ]
    assert list(Connector.objects.filter(station=two).values_list("info", "error_code")) == (
        untouched
    )


def test_update_rows_prepares_values_and_matches_null(stations):
    one, two, _other = stations
    values = {"last_seen": WHEN, "channel_name": "chan", "online": False}
    assert update_rows(Station, values, {"id": one.pk, "channel_name": "nope"}) == 0
    assert update_rows(Station, values, {"id": one.pk}) == 1
    one.refresh_from_db()
    assert (one.last_seen, one.channel_name, one.online) == (WHEN, "chan", False)
    # None in the condition is IS NULL; None as a value is NULL.
    assert update_rows(Connector, {"status_at": WHEN}, {"station": two.pk, "status_at": None}) == 1
    assert update_rows(Connector, {"status_at": None}, {"station": two.pk}) == 1
    assert Connector.objects.get(station=two).status_at is None


def test_update_returning_reads_the_row_as_the_model_gives_it(stations):
    one, _two, _other = stations
    command = StationCommand.objects.create(station=one, action="Reset", payload={"type": "Soft"})
    row = update_returning(
        StationCommand,
        {"sent_at": WHEN},
        {"id": command.pk, "sent_at": None},
        ("action", "payload", "station"),
    )
    assert row == ("Reset", {"type": "Soft"}, one.pk)
    # Claimed already: nothing matches.
    claimed_again = update_returning(
        StationCommand, {"sent_at": WHEN}, {"id": command.pk, "sent_at": None}, ("action",)
    )
    assert claimed_again is None
    assert update_returning(Station, {"last_seen": WHEN}, {"id": one.pk}, ("online",)) == (True,)
    assert update_returning(
        StationCommand,
        {"status": "accepted"},
        {"id": command.pk},
        ("status",),
        extra="action = %s",
        extra_params=("Reset",),
    ) == ("accepted",)


def test_insert_returning_pk_stores_what_bulk_create_would(stations, django_assert_num_queries):
    """Defaults, JSON, a nullable JSON left as SQL NULL, foreign keys; primary keys set in
    order; one statement."""
    one, two, _ = stations
    payload = {"connectorId": 1, "csChargingProfiles": {"stackLevel": 1, "limits": [6.0, 0]}}
    objs = [
        StationCommand(station=one, action="SetChargingProfile", payload=payload),
        StationCommand(station=two, action="Reset", payload={"type": "Soft"}, status="offline"),
        StationCommand(station=one, action="ClearCache", sent_at=WHEN),
    ]
    with django_assert_num_queries(1):
        insert_returning_pk(objs)
    assert all(o.pk is not None and not o._state.adding for o in objs)
    assert objs[0].pk < objs[1].pk < objs[2].pk
    stored = {c.pk: c for c in StationCommand.objects.filter(pk__in=[o.pk for o in objs])}
    for obj in objs:
        row = stored[obj.pk]
        assert (row.station_id, row.action, row.payload, row.status, row.sent_at) == (
            obj.station_id,
            obj.action,
            obj.payload,
            obj.status,
            obj.sent_at,
        )
        assert row.created_at == obj.created_at
    assert StationCommand.objects.filter(pk=objs[0].pk, response__isnull=True).exists()
    assert stored[objs[1].pk].station_id == two.pk and stored[objs[1].pk].status == "offline"


def test_insert_returning_pk_splits_what_the_database_cannot_take_at_once(
    stations, monkeypatch, django_assert_num_queries
):
    from django.db import connection

    one, *_ = stations
    monkeypatch.setattr(connection.ops, "bulk_batch_size", lambda fields, objs: 2)
    objs = [StationCommand(station=one, action="ClearCache", payload={"n": n}) for n in range(5)]
    with django_assert_num_queries(3):
        insert_returning_pk(objs)
    assert [StationCommand.objects.get(pk=o.pk).payload for o in objs] == [
        {"n": n} for n in range(5)
    ]
    insert_returning_pk([])  # nothing to do
