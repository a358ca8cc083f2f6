"""The audit trail's entry: django-auditlog's log entry plus the organization it belongs to.

django-auditlog writes every entry through ``AuditEntryManager.log_create`` (this model is
``AUDITLOG_LOGENTRY_MODEL``), which stamps the organization of the changed object, so owners
read exactly their own through ``TenantQuerySet.for_tenant`` like every other tenant row.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from auditlog.models import AbstractLogEntry, LogEntryManager
from django.core.exceptions import FieldDoesNotExist
from django.db import models
from django.utils.translation import gettext_lazy as _

from portal.querysets import TenantQuerySet


class AuditEntryManager(LogEntryManager.from_queryset(TenantQuerySet)):  # type: ignore[misc]
    def log_create(self, instance: models.Model, force_log: bool = False, **kwargs: Any):
        from audit.middleware import request_details
        from audit.registration import owner_and_label

        for key, value in request_details().items():
            kwargs.setdefault(key, value)
        organization_id, label = owner_and_label(instance)
        kwargs.setdefault("organization_id", organization_id)
        # A short name (a tariff's name, not its str() with prices) that stays readable
        # after the object is deleted.
        kwargs.setdefault("object_repr", label)
        if kwargs.get("changes"):
            kwargs["changes"] = _without_equal_numbers(type(instance), kwargs["changes"])
            if not kwargs["changes"] and not force_log:
                return None
        return super().log_create(instance, force_log=force_log, **kwargs)


def _without_equal_numbers(model: type[models.Model], changes: dict[str, Any]) -> dict[str, Any]:
    """auditlog compares values as strings: a form's ``0.3`` against the stored ``0.3000``
    would be a change. Decimals are compared as numbers and written with the field's
    places, so a save that changes nothing writes no entry."""
    kept = {}
    for name, values in changes.items():
        try:
            field = model._meta.get_field(name)
        except FieldDoesNotExist:
            field = None
        if isinstance(field, models.DecimalField) and len(values) == 2:
            old, new = (_decimal(value, field.decimal_places) for value in values)
            if old == new and old is not None:
                continue
            values = [
                str(value) if value is not None else raw
                for value, raw in zip((old, new), values, strict=True)
            ]
        kept[name] = values
    return kept


def _decimal(value: object, places: int) -> Decimal | None:
    try:
        return Decimal(str(value)).quantize(Decimal(1).scaleb(-places))
    except (InvalidOperation, ValueError):
        return None


class AuditEntry(AbstractLogEntry):
    # No database constraint and no cascade: the trail outlives what it describes (a deleted
    # organization's entries stay for the platform admin), and entries written while an
    # organization's rows are being cascade-deleted must not block that deletion.
    organization = models.ForeignKey(
        "portal.Organization",
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
        verbose_name=_("organization"),
    )

    objects = AuditEntryManager()
    tenant_path = "organization"

    class Meta(AbstractLogEntry.Meta):
        verbose_name = _("audit entry")
        verbose_name_plural = _("audit trail")
        indexes = [models.Index(fields=["organization", "-timestamp"], name="audit_org_time")]
