"""Reads of the audit trail, organization first; and its presentation for people.

Entries store values as auditlog writes them (strings: a foreign key's id, ``"None"``, a
choice's value). ``present`` turns a page of entries into rows an owner reads: field labels,
choice labels, names instead of ids (one query per related model and page, not per entry),
times in the current time zone.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime

from django.apps import apps
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import FieldDoesNotExist
from django.db import models
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.formats import localize
from django.utils.translation import gettext as _

from audit.models import AuditEntry
from audit.registration import AUDITED
from portal.models import Organization, User

SYSTEM = "system"
ACTIONS = {
    AuditEntry.Action.CREATE: "created",
    AuditEntry.Action.UPDATE: "changed",
    AuditEntry.Action.DELETE: "deleted",
    AuditEntry.Action.ACCESS: "read",
}


def audit_entries(
    organization: Organization, *, object_type: str = "", actor: str = ""
) -> QuerySet[AuditEntry]:
    """The organization's entries, newest first.

    ``object_type`` is ``app_label.model`` (e.g. ``billing.tariff``); ``actor`` a user id, or
    ``"system"`` for changes without a user (Celery, OCPP, management commands). Unknown
    filter values match nothing rather than everything.
    """
    return filter_entries(
        AuditEntry.objects.for_tenant(organization), object_type=object_type, actor=actor
    )


def filter_entries(
    entries: QuerySet[AuditEntry], *, object_type: str = "", actor: str = ""
) -> QuerySet[AuditEntry]:
    """``audit_entries``' filters and order on an already tenant-scoped queryset."""
    if object_type:
        app_label, _dot, model = object_type.partition(".")
        entries = entries.filter(content_type__app_label=app_label, content_type__model=model)
    if actor == SYSTEM:
        # Not the entries of users deleted since (their actor is gone, their e-mail kept).
        entries = entries.filter(actor__isnull=True, actor_email__isnull=True)
    elif actor:
        entries = entries.filter(actor_id=int(actor)) if _is_id(actor) else entries.none()
    return entries.select_related("content_type", "actor").order_by("-timestamp", "-id")


def _is_id(value: str) -> bool:
    # ASCII digits within a bigint: "²" is a digit to str.isdigit(), and 25 digits would be a
    # database error (500) rather than no match.
    return value.isascii() and value.isdigit() and len(value) <= 18


def object_type_choices() -> list[tuple[str, str]]:
    """(``app_label.model``, "Tariff") for every followed model, by label."""
    models_ = [apps.get_model(spec.model) for spec in AUDITED]
    types = ContentType.objects.get_for_models(*models_)  # one query, then cached
    choices = [(f"{ct.app_label}.{ct.model}", _type_label(model)) for model, ct in types.items()]
    return sorted(choices, key=lambda choice: choice[1])


def actor_choices(organization: Organization) -> list[tuple[str, str]]:
    """The people who appear in the organization's trail, plus "system"."""
    ids = AuditEntry.objects.for_tenant(organization).filter(actor__isnull=False).values("actor_id")
    people = User.objects.filter(pk__in=ids).order_by("username").values_list("pk", "username")
    return [(str(pk), name) for pk, name in people] + [(SYSTEM, _("system"))]


@dataclass(frozen=True)
class Change:
    field: str
    old: str
    new: str


@dataclass(frozen=True)
class Row:
    id: int
    timestamp: datetime
    actor: str
    object_type: str
    object_type_key: str
    object_label: str
    object_id: int | None
    action: str
    changes: list[Change]


def _type_label(model: type[models.Model]) -> str:
    name = str(model._meta.verbose_name)
    return name[:1].upper() + name[1:]


def present(entries: list[AuditEntry]) -> list[Row]:
    """Rows for a page of entries (with ``content_type`` and ``actor`` selected)."""
    names = _related_names(entries)
    rows = []
    for entry in entries:
        model = entry.content_type.model_class()
        changes = []
        for field_name, values in (entry.changes_dict or {}).items():
            old, new = [*values, "", ""][:2] if isinstance(values, list) else ("", "")
            label, old, new = _show_field(model, field_name, old, new, names)
            changes.append(Change(field=label, old=old, new=new))
        rows.append(
            Row(
                id=entry.pk,
                timestamp=entry.timestamp,
                actor=_actor_name(entry),
                object_type=_type_label(model) if model else entry.content_type.model,
                object_type_key=f"{entry.content_type.app_label}.{entry.content_type.model}",
                object_label=entry.object_repr,
                object_id=entry.object_id,
                action=ACTIONS.get(entry.action, str(entry.action)),
                changes=changes,
            )
        )
    return rows


def _actor_name(entry: AuditEntry) -> str:
    if entry.actor is not None:
        return entry.actor.username
    if entry.actor_email:
        return _("deleted user")
    return SYSTEM


def _field(model: type[models.Model] | None, name: str) -> models.Field | None:
    if model is None:
        return None
    try:
        return model._meta.get_field(name)
    except FieldDoesNotExist:
        return None


# What a related row's str() reads, fetched with it.
_NAME_NEEDS = {
    "stations.connector": ("station",),
    "billing.connectoraccess": ("connector__station",),
}


def _related_names(entries: list[AuditEntry]) -> dict[type[models.Model], dict[str, str]]:
    """Names of the rows the page's foreign-key values point to: one query per model."""
    wanted: dict[type[models.Model], set[str]] = defaultdict(set)
    for entry in entries:
        model = entry.content_type.model_class()
        for field_name, values in (entry.changes_dict or {}).items():
            field = _field(model, field_name)
            if (
                field is None
                or not field.is_relation
                or not (field.many_to_one or field.one_to_one)
            ):
                continue
            for value in values if isinstance(values, list) else []:
                if _is_id(str(value)):
                    wanted[field.related_model].add(str(value))
    names: dict[type[models.Model], dict[str, str]] = {}
    for related, ids in wanted.items():
        rows = related._base_manager.filter(pk__in=[int(pk) for pk in ids]).select_related(
            *_NAME_NEEDS.get(related._meta.label_lower, ())
        )
        names[related] = {str(row.pk): _row_name(row) for row in rows}
    return names


def _row_name(row: models.Model) -> str:
    if isinstance(row, User):
        return row.username
    name = getattr(row, "name", None)
    return name if isinstance(name, str) and name else str(row)


def _show_field(
    model: type[models.Model] | None,
    field_name: str,
    old: object,
    new: object,
    names: dict[type[models.Model], dict[str, str]],
) -> tuple[str, str, str]:
    field = _field(model, field_name)
    if field is None:
        return field_name, _show_plain(old), _show_plain(new)
    label = str(getattr(field, "verbose_name", field_name))
    label = label[:1].upper() + label[1:]
    return label, _show_value(field, old, names), _show_value(field, new, names)


def _show_plain(value: object) -> str:
    return "—" if value in (None, "", "None") else str(value)


def _show_value(
    field: models.Field, value: object, names: dict[type[models.Model], dict[str, str]]
) -> str:
    if value in (None, "", "None"):
        return "—"
    text = str(value)
    if field.is_relation and field.related_model is not None:
        found = names.get(field.related_model, {}).get(text)
        return found if found is not None else _("#%(id)s (deleted)") % {"id": text}
    if field.choices:
        return str(dict(field.flatchoices).get(text, text))
    if isinstance(field, models.BooleanField):
        return _("yes") if text == "True" else _("no") if text == "False" else text
    if isinstance(field, models.DateTimeField):
        parsed = parse_datetime(text)
        if parsed is not None:
            if timezone.is_naive(parsed):
                parsed = timezone.make_aware(parsed, UTC)
            return localize(timezone.localtime(parsed))
    return text
