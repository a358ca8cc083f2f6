"""The one narrow entry point from the OCPP side to the authorization decision.

``stations`` never imports the policy's app: the policy is a dotted path
(``OCPP_AUTHORIZE_POLICY``, default ``billing.authorization.authorize``) resolved on first use.
A policy is a plain synchronous function ``(AuthorizationRequest) -> AuthorizationResult``; it
may query the database and is called from ``database_sync_to_async`` code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import cache

from django.utils.module_loading import import_string

from stations import conf

ACCEPTED = "Accepted"
BLOCKED = "Blocked"
EXPIRED = "Expired"
INVALID = "Invalid"
CONCURRENT_TX = "ConcurrentTx"


@dataclass(frozen=True)
class AuthorizationRequest:
    organization_id: int
    station_id: int
    charge_point_id: str
    connector_id: int | None  # None: Authorize.req (no connector known yet)
    id_tag: str
    time: datetime


@dataclass(frozen=True)
class AuthorizationResult:
    status: str  # OCPP 1.6 AuthorizationStatus
    expiry_date: datetime | None = None
    parent_id_tag: str | None = None
    user_id: int | None = None
    card_id: int | None = None
    # The tariff that applies, frozen as plain JSON (stored on the session as it started).
    tariff: dict | None = None
    # Why, in words, for logs and pages (never sent to the station).
    reason: str = ""

    @property
    def accepted(self) -> bool:
        return self.status == ACCEPTED

    def id_tag_info(self) -> dict:
        """As OCPP's ``idTagInfo`` (camelCase, ISO times)."""
        info: dict = {"status": self.status}
        if self.expiry_date is not None:
            info["expiryDate"] = self.expiry_date.isoformat()
        if self.parent_id_tag:
            info["parentIdTag"] = self.parent_id_tag
        return info


@cache
def _policy() -> Callable[[AuthorizationRequest], AuthorizationResult]:
    return import_string(conf.authorize_policy_path())


def authorize(request: AuthorizationRequest) -> AuthorizationResult:
    """Ask the configured policy. Every call site in stations goes through here."""
    return _policy()(request)


def reset_policy_cache() -> None:
    """For tests that switch ``OCPP_AUTHORIZE_POLICY``."""
    _policy.cache_clear()
