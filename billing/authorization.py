"""The authorization policy for now: the owning organization's registered RFID cards.

Called by stations through ``stations.authorization.authorize`` (the dotted path in
``OCPP_AUTHORIZE_POLICY``). The access-and-pricing issue replaces this policy; the call sites
stay. One indexed query per decision.
"""

from __future__ import annotations

from billing.models import RfidCard, normalize_uid
from stations.authorization import (
    ACCEPTED,
    BLOCKED,
    EXPIRED,
    INVALID,
    AuthorizationRequest,
    AuthorizationResult,
)


def authorize(request: AuthorizationRequest) -> AuthorizationResult:
    uid = normalize_uid(request.id_tag)
    card = (
        RfidCard.objects.filter(uid=uid, organization_id=request.organization_id)
        .only("id", "user_id", "blocked", "expires_at")
        .first()
    )
    if card is None:
        # Unknown, or another organization's card: indistinguishable on purpose.
        return AuthorizationResult(status=INVALID)
    if card.blocked:
        return AuthorizationResult(status=BLOCKED, card_id=card.id, user_id=card.user_id)
    if card.expires_at is not None and card.expires_at <= request.time:
        return AuthorizationResult(
            status=EXPIRED, expiry_date=card.expires_at, card_id=card.id, user_id=card.user_id
        )
    return AuthorizationResult(
        status=ACCEPTED, expiry_date=card.expires_at, card_id=card.id, user_id=card.user_id
    )
