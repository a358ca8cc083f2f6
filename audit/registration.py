"""Which models the audit trail follows, which of their fields, and how an entry finds its
organization.

Only what owners and the platform admin change is followed. Fields a station or a meter
updates by itself (liveness, status, readings) are left out so OCPP and meter traffic never
writes entries; stations are followed by an explicit list of configuration fields, so a
liveness field added later stays out by default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from auditlog.receivers import log_update
from auditlog.registry import auditlog
from django.apps import apps
from django.core.exceptions import ObjectDoesNotExist
from django.db import models
from django.db.models.signals import pre_delete, pre_save

HIDDEN = "••••"


@dataclass(frozen=True)
class Audited:
    model: str
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    mask: list[str] = field(default_factory=list)


AUDITED: tuple[Audited, ...] = (
    Audited("billing.Tariff", exclude=["created_at"]),
    Audited("billing.ConnectorAccess"),
    Audited("billing.AccessRule"),
    Audited("billing.SpecialUser", exclude=["created_at"]),
    Audited("billing.UserGroup", exclude=["created_at"]),
    Audited("billing.UserGroupMember", exclude=["added_at"]),
    Audited("billing.RfidCard", exclude=["created_at"]),
    Audited("billing.BillingProfile"),
    Audited("billing.PlatformSettings"),
    Audited(
        "stations.Station",
        include=[
            "organization",
            "charge_point_id",
            "name",
            "enabled",
            "password_hash",
            "auth_mode",
            "third_party_url",
            "auto_car_detection",
            "modbus_tcp",
            "display_source",
            "time_zone",
        ],
        # That the password changed is the fact to keep; neither hash nor a URL's password.
        mask=["password_hash", "third_party_url"],
    ),
    Audited("loadmgmt.StationLimits", exclude=["updated_at"]),
    Audited("loadmgmt.TreeNode", exclude=["created_at", "updated_at", "shed_since", "shed_source"]),
    Audited("loadmgmt.LoadGroup", exclude=["created_at", "updated_at"]),
    Audited("loadmgmt.LoadGroupMember"),
    Audited(
        "loadmgmt.Meter",
        exclude=[
            "last_current_l1",
            "last_current_l2",
            "last_current_l3",
            "last_power_w",
            "last_reading_at",
            "created_at",
            "token_set_at",
        ],
        mask=["token_hash"],
    ),
    Audited("portal.Membership", exclude=["created_at"]),
    Audited("portal.Invitation", exclude=["created_at", "token"]),
    Audited("portal.Organization", exclude=["created_at"]),
)

# model -> names (and attnames) of the fields the trail follows.
_TRACKED: dict[type[models.Model], frozenset[str]] = {}


def hide(value: str) -> str:
    """Masking for secrets: a ws:// URL keeps everything but its password; anything else
    (a password hash, a token hash) is only shown as changed."""
    if value in ("", "None"):
        return value
    parts = urlsplit(value)
    if parts.scheme in ("ws", "wss"):
        if parts.password is None:
            return value
        netloc = f"{parts.username}:{HIDDEN}@{parts.netloc.rpartition('@')[2]}"
        return urlunsplit(parts._replace(netloc=netloc))
    return HIDDEN


def register_audited_models() -> None:
    for spec in AUDITED:
        model = apps.get_model(spec.model)
        if auditlog.contains(model):
            continue
        tracked = _TRACKED[model] = _tracked_fields(model, spec)
        # Always an explicit list of concrete fields: on create and delete auditlog otherwise
        # diffs every field of ``_meta.get_fields()``, reverse relations included, and reading
        # a reverse one-to-one (``node.meter``) costs a query and caches "none" on the instance.
        auditlog.register(
            model,
            include_fields=[f.name for f in model._meta.concrete_fields if f.name in tracked],
            exclude_fields=list(spec.exclude),
            mask_fields=list(spec.mask),
            mask_callable="audit.registration.hide" if spec.mask else None,
        )
        # auditlog's update receiver reads the old row before every save(); ours skips that
        # read (and the entry) when save(update_fields=...) touches no followed field, e.g. a
        # station's BootNotification storing its vendor, firmware and last_seen.
        pre_save.disconnect(sender=model, dispatch_uid=auditlog._dispatch_uid(pre_save, log_update))
        pre_save.connect(_log_update, sender=model, dispatch_uid=("audit.update", spec.model))
        pre_delete.connect(
            _remember_before_delete, sender=model, dispatch_uid=("audit.delete", spec.model)
        )


def _tracked_fields(model: type[models.Model], spec: Audited) -> frozenset[str]:
    names: set[str] = set()
    for f in model._meta.concrete_fields:
        if spec.include and f.name not in spec.include:
            continue
        if f.name in spec.exclude:
            continue
        names.update({f.name, f.attname})
    return frozenset(names)


def _log_update(sender: type[models.Model], instance: models.Model, **kwargs) -> None:
    update_fields = kwargs.get("update_fields")
    if update_fields is not None and not _TRACKED[sender].intersection(update_fields):
        return
    log_update(sender, instance, **kwargs)


def _remember_before_delete(sender: type[models.Model], instance: models.Model, **kwargs) -> None:
    # In a cascade (an organization deleted with everything it owns) a row's parents may be
    # gone by the time its post_delete entry is written; Django sends every pre_delete before
    # deleting anything, so the organization and the name are read here.
    instance._audit_before_delete = (organization_id_of(instance), label_of(instance))


def owner_and_label(instance: models.Model) -> tuple[int | None, str]:
    """The organization id and the short name an entry about ``instance`` is stored with."""
    remembered = getattr(instance, "_audit_before_delete", None)
    if remembered is not None:
        return remembered
    try:
        return organization_id_of(instance), label_of(instance)
    except ObjectDoesNotExist:
        return getattr(instance, "organization_id", None), f"#{instance.pk}"


def organization_id_of(instance: models.Model) -> int | None:
    """The organization a row belongs to, by the model's ``tenant_path`` (the same lookup
    ``TenantQuerySet.for_tenant`` filters on); None for platform rows (PlatformSettings) and
    for a driver's own RFID cards."""
    from portal.models import Organization

    if isinstance(instance, Organization):
        return instance.pk
    path = getattr(type(instance), "tenant_path", "organization").split("__")
    obj: object = instance
    for hop in path[:-1]:
        obj = getattr(obj, hop, None)
        if obj is None:
            return None
    return getattr(obj, f"{path[-1]}_id", None)


def label_of(instance: models.Model) -> str:
    name = getattr(instance, "name", None)
    if isinstance(name, str) and name:
        return name
    return str(instance)
