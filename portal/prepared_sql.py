"""Queries of the OCPP hot path, turned into SQL once and then run as plain SQL.

Building a query costs the ORM far more than the database spends answering it: a one-row
UPDATE of a station took 1.2 ms of CPU through ``QuerySet.update`` against 0.07 ms for the
same round trip as plain SQL (SQLite, both measured on the same machine, session 11,
docs/BENCHMARKS.md). A reconnecting station runs the same dozen queries as every other one,
so a reconnect storm spent a large part of its CPU building the same SQL over and over.

Two shapes are covered, each built per database vendor on first use and cached:

* ``IdQuery``: a queryset (a read, or an update whose new values are constants or
  expressions) whose only varying parameters are integer keys. It is compiled by Django
  itself (twice, with two sets of stand-ins where the keys go, to find them), so the SQL is
  exactly what the ORM would run (``Greatest`` is ``MAX`` on SQLite, joins and quoting are
  Django's).
* ``update_rows`` / ``update_returning``: ``UPDATE <table> SET <fields> = %s … WHERE
  <field> = %s … [RETURNING <fields>]``, values prepared by their model fields as
  ``QuerySet.update`` does. PostgreSQL and SQLite (3.35+) both have RETURNING.
* ``insert_returning_pk``: new instances of one model in one ``INSERT … RETURNING`` (what
  ``bulk_create`` does for them, without building its query: a command row written for every
  booting station cost 2.5 % of an ASGI process's CPU in a reconnect storm through
  ``bulk_create``, docs/BENCHMARKS.md, session 14).

``IdQuery`` rows come back as the database gives them (a boolean is ``0``/``1`` on SQLite):
callers convert what they read. ``update_returning`` converts JSON and booleans.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from django.db import connection, models
from django.db.models import sql

# Two sets of stand-ins for the integer keys while Django compiles an ``IdQuery`` (see
# ``IdQuery._compile``): small enough for any integer column.
_MARKERS = (tuple(30_011 + i for i in range(8)), tuple(31_013 + i for i in range(8)))


class IdQuery:
    """A queryset built by ``build(*keys)`` (integer keys), compiled once per vendor.

    ``update``: the new values of an UPDATE (constants, ``None`` or expressions such as
    ``F``, ``Case``, ``Greatest``: anything without a parameter of its own per call)."""

    def __init__(
        self,
        build: Callable[..., models.QuerySet],
        *,
        keys: int = 1,
        update: dict[str, Any] | None = None,
    ) -> None:
        self.build, self.keys, self.update = build, keys, update
        self._compiled: dict[str, tuple[str, tuple, tuple[tuple[int, int], ...]]] = {}

    def _sql(self) -> tuple[str, tuple, tuple[tuple[int, int], ...]]:
        found = self._compiled.get(connection.vendor)
        if found is None:
            found = self._compiled[connection.vendor] = self._compile()
        return found

    def _compile(self) -> tuple[str, tuple, tuple[tuple[int, int], ...]]:
        # Compiled twice, with two sets of stand-ins for the keys: a parameter that differs
        # between the two as the stand-ins do is a key. Stand-ins fit every integer column
        # (Django compiles a lookup whose value a column cannot hold as always false), and
        # the two compilations must agree on everything else, or the keys shape the query
        # (then it cannot be prepared this way).
        first, second = (self._as_sql(markers) for markers in _MARKERS)
        if first[0] != second[0] or len(first[1]) != len(second[1]):
            raise ValueError(f"the keys change the query's text: {first[0]}")
        slots = []
        for position, (a, b) in enumerate(zip(first[1], second[1], strict=True)):
            if a == b:
                continue
            key = _MARKERS[0].index(a) if a in _MARKERS[0] else None
            if key is None or b != _MARKERS[1][key]:
                raise ValueError(f"parameter {position} depends on the keys: {first[0]}")
            slots.append((position, key))
        if {key for _, key in slots} != set(range(self.keys)):
            raise ValueError(f"every key must be a parameter of the query: {first[0]}")
        return first[0], tuple(first[1]), tuple(slots)

    def _as_sql(self, markers: tuple[int, ...]) -> tuple[str, list]:
        queryset = self.build(*markers[: self.keys])
        if self.update is None:
            query = queryset.query
        else:  # as QuerySet.update builds it
            query = queryset.query.chain(sql.UpdateQuery)
            query.add_update_values(self.update)
            query.annotations = {}
        text, params = query.get_compiler(connection=connection).as_sql()
        return text, list(params)

    def _statement(self, keys: Sequence[int]) -> tuple[str, list]:
        if len(keys) != self.keys:
            raise TypeError(f"{self.keys} keys expected, {len(keys)} given")
        text, params, slots = self._sql()
        values = list(params)
        for position, key in slots:
            values[position] = int(keys[key])
        return text, values

    def rows(self, *keys: int) -> list[tuple]:
        with connection.cursor() as cursor:
            cursor.execute(*self._statement(keys))
            return cursor.fetchall()

    def first(self, *keys: int) -> tuple | None:
        rows = self.rows(*keys)
        return rows[0] if rows else None

    def execute(self, *keys: int) -> int:
        """Run an update; the number of rows it changed."""
        with connection.cursor() as cursor:
            cursor.execute(*self._statement(keys))
            return cursor.rowcount


_UPDATES: dict[tuple, str] = {}


def update_rows(
    model: type[models.Model],
    values: dict[str, Any],
    where: dict[str, Any],
    *,
    extra: str = "",
    extra_params: Sequence[Any] = (),
) -> int:
    """UPDATE the rows of ``model`` matching ``where`` (equality; ``None`` means IS NULL) and
    ``extra`` (SQL, with ``extra_params``); the number of rows changed."""
    with connection.cursor() as cursor:
        cursor.execute(*_update_statement(model, values, where, (), extra, extra_params))
        return cursor.rowcount


def update_returning(
    model: type[models.Model],
    values: dict[str, Any],
    where: dict[str, Any],
    returning: tuple[str, ...],
    *,
    extra: str = "",
    extra_params: Sequence[Any] = (),
) -> tuple | None:
    """As ``update_rows``, and read the ``returning`` fields of the (first) row changed in
    the same statement, as the model gives them (``returning_values``); None if none."""
    with connection.cursor() as cursor:
        cursor.execute(*_update_statement(model, values, where, returning, extra, extra_params))
        row = cursor.fetchone()
    return None if row is None else returning_values(model, returning, row)


def _update_statement(
    model: type[models.Model],
    values: dict[str, Any],
    where: dict[str, Any],
    returning: tuple[str, ...],
    extra: str,
    extra_params: Sequence[Any],
) -> tuple[str, list]:
    meta = model._meta
    key = (
        meta.label,
        connection.vendor,
        tuple(values),
        tuple((name, value is None) for name, value in where.items()),
        returning,
        extra,
    )
    text = _UPDATES.get(key)
    if text is None:
        text = _UPDATES[key] = _update_sql(meta, values, where, returning, extra)
    params = [meta.get_field(n).get_db_prep_save(v, connection) for n, v in values.items()]
    for name, value in where.items():
        if value is not None:
            params.append(meta.get_field(name).get_db_prep_value(value, connection))
    params.extend(extra_params)
    return text, params


def _update_sql(
    meta: Any, values: dict[str, Any], where: dict[str, Any], returning: tuple[str, ...], extra: str
) -> str:
    quote = connection.ops.quote_name

    def column(name: str) -> str:
        return quote(meta.get_field(name).column)

    conditions = [
        f"{column(name)} IS NULL" if value is None else f"{column(name)} = %s"
        for name, value in where.items()
    ]
    if extra:
        conditions.append(f"({extra})")
    text = (
        f"UPDATE {quote(meta.db_table)} SET {', '.join(f'{column(n)} = %s' for n in values)}"
        f" WHERE {' AND '.join(conditions) or '1 = 1'}"
    )
    if returning:
        text += f" RETURNING {', '.join(column(n) for n in returning)}"
    return text


def returning_values(model: type[models.Model], names: tuple[str, ...], row: tuple) -> tuple:
    """A RETURNING row as the model's fields give it (JSON decoded, booleans as bool)."""
    meta = model._meta
    out = []
    for name, value in zip(names, row, strict=True):
        field = meta.get_field(name)
        if isinstance(field, models.JSONField):
            value = field.from_db_value(value, None, connection)
        elif isinstance(field, models.BooleanField) and value is not None:
            value = bool(value)
        out.append(value)
    return tuple(out)


_INSERTS: dict[tuple[str, str], tuple[str, str, tuple]] = {}


def insert_returning_pk(objs: Sequence[models.Model]) -> None:
    """INSERT new instances of one model (with an auto-increment primary key) in one
    statement and set their primary keys, as ``bulk_create`` does: every concrete field but
    the key, each value as its field prepares it for saving (``pre_save``, then
    ``get_db_prep_save``: ``auto_now_add``, JSON, foreign keys as their ids)."""
    if not objs:
        return
    model = type(objs[0])
    meta = model._meta
    key = (meta.label, connection.vendor)
    found = _INSERTS.get(key)
    if found is None:
        quote = connection.ops.quote_name
        fields = tuple(f for f in meta.concrete_fields if not f.primary_key)
        head = (
            f"INSERT INTO {quote(meta.db_table)} "
            f"({', '.join(quote(f.column) for f in fields)}) VALUES "
        )
        row = f"({', '.join(['%s'] * len(fields))})"
        found = _INSERTS[key] = (head, row, fields)
    head, row, fields = found
    returning = connection.ops.quote_name(meta.pk.column)
    # As many rows per statement as the database takes parameters (SQLite: 999 in older
    # builds; PostgreSQL's protocol: 65,535).
    size = max(1, min(connection.ops.bulk_batch_size(fields, objs), 65_535 // len(fields)))
    with connection.cursor() as cursor:
        for start in range(0, len(objs), size):
            batch = objs[start : start + size]
            params = [
                field.get_db_prep_save(field.pre_save(obj, True), connection)
                for obj in batch
                for field in fields
            ]
            # Rows come back in the order of VALUES on PostgreSQL and SQLite, which
            # bulk_create relies on as well.
            cursor.execute(f"{head}{', '.join([row] * len(batch))} RETURNING {returning}", params)
            for obj, (pk,) in zip(batch, cursor.fetchall(), strict=True):
                obj.pk = pk
                obj._state.adding = False
                obj._state.db = connection.alias
