from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class AuditConfig(AppConfig):
    name = "audit"
    verbose_name = _("Audit trail")

    def ready(self) -> None:
        # Registration lives here, not in the other apps' models: they stay unaware of the
        # audit trail (the import arrows keep pointing from audit to them).
        from audit.registration import register_audited_models

        register_audited_models()
