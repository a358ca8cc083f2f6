"""Identity tokens (RFID cards) for now; tariffs and invoices come with the access issue."""

from __future__ import annotations

from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from portal.querysets import TenantQuerySet

uid_validator = RegexValidator(
    r"^[0-9A-F]{4,20}$", _("4 to 20 hexadecimal digits (the card's UID).")
)


def normalize_uid(value: str) -> str:
    """Upper-case hex without separators: ``de:ad:be:ef`` → ``DEADBEEF``."""
    return "".join(ch for ch in (value or "").strip().upper() if ch not in ": -")


class RfidCard(models.Model):
    """An RFID card registered by an organization. ``uid`` is what stations send as idTag."""

    organization = models.ForeignKey(
        "portal.Organization", on_delete=models.CASCADE, related_name="rfid_cards"
    )
    uid = models.CharField(_("UID"), max_length=20, unique=True, validators=[uid_validator])
    user = models.ForeignKey(
        "portal.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="rfid_cards"
    )
    label = models.CharField(_("label"), max_length=80, blank=True)
    blocked = models.BooleanField(_("blocked"), default=False)
    expires_at = models.DateTimeField(_("expires"), null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    objects = TenantQuerySet.as_manager()
    tenant_path = "organization"

    class Meta:
        ordering = ["uid"]

    def __str__(self) -> str:
        return f"{self.uid} ({self.label})" if self.label else self.uid

    def save(self, *args, **kwargs) -> None:
        self.uid = normalize_uid(self.uid)
        super().save(*args, **kwargs)
