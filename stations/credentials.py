"""Station passwords (OCPP security profile 1 ``AuthorizationKey``): hashing and checking.

The portal generates every station password (``secrets.token_urlsafe``, 160 bits or more), so
guessing one from its hash is hopeless whatever the hash: a salted SHA-256 is enough, like an
API token. A deliberately slow password hash (Argon2 needs ~100 MB and tens of milliseconds
per check) would instead make every reconnect storm of a large fleet a CPU and memory storm,
and would have to leave the event loop.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import ipaddress
import logging
import math
import secrets
import time

from django.core.cache import cache

PREFIX = "sha256"

log = logging.getLogger(__name__)


def station_password_hash(password: str) -> str:
    salt = secrets.token_hex(8)
    digest = hashlib.sha256(f"{salt}:{password}".encode()).hexdigest()
    return f"{PREFIX}${salt}${digest}"


def station_password_matches(password: str, stored: str) -> bool:
    """Constant-time comparison; False for an empty or unknown stored value."""
    if not stored:
        return False
    scheme, _, rest = stored.partition("$")
    salt, _, digest = rest.partition("$")
    if scheme != PREFIX or not digest:
        return False
    candidate = hashlib.sha256(f"{salt}:{password}".encode()).hexdigest()
    return hmac.compare_digest(candidate, digest)


# --- Failed attempts: refuse guessing before the password is even looked at -------------------
#
# Counted in the cache (Redis in production, so every ASGI process sees the same counts):
# per charge point identity and, separately, per source address (an IPv6 address counts with
# its /64, which one client usually owns whole). ``max_failures`` failures within ``window``
# seconds start a block of ``block`` seconds during which every handshake for that identity or
# from that address is refused without checking the password and without counting, so a
# station retrying with a stale password does not prolong its own block; when the block lifts
# counting starts afresh. A successful handshake clears the identity's count, not the
# address's: otherwise one station with a valid password could reset the count between the
# guesses it makes for its neighbours behind the same address.
#
# The price of per-identity blocking: whoever knows an identity can keep that station out by
# guessing wrong often enough. The identity is printed on the station, so this trades a
# lock-out that an operator sees (a warning in the log, the station offline) for guessing that
# nobody sees; the limits are settings (stations/conf.py).

IDENTITY = "identity"
ADDRESS = "address"


@dataclasses.dataclass(frozen=True)
class AttemptLimits:
    max_failures: int  # per identity within the window
    max_failures_per_address: int
    window: int  # seconds
    block: int  # seconds


@dataclasses.dataclass(frozen=True)
class AttemptState:
    blocked: str | None  # IDENTITY or ADDRESS while blocked
    retry_after: int  # seconds until the block lifts (0 when not blocked)
    identity_failures: int  # failures counted for the identity in the current window


def _address_key(address: str) -> str:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address or "-"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{ip}/64", strict=False).network_address) + "/64"
    return str(ip)


def _keys(kind: str, value: str) -> tuple[str, str]:
    """(failure counter, block) cache keys; hashed because identities are arbitrary text."""
    digest = hashlib.sha256(value.encode()).hexdigest()[:32]
    return f"ocpp-auth:{kind}:fail:{digest}", f"ocpp-auth:{kind}:block:{digest}"


def attempt_state(charge_point_id: str, address: str) -> AttemptState:
    """Whether a handshake for this identity from this address is blocked (one cache read)."""
    id_fail, id_block = _keys(IDENTITY, charge_point_id)
    _ip_fail, ip_block = _keys(ADDRESS, _address_key(address))
    found = cache.get_many([id_fail, id_block, ip_block])
    now = time.time()
    for kind, key in ((IDENTITY, id_block), (ADDRESS, ip_block)):
        until = found.get(key)
        if until is not None and until > now:
            return AttemptState(kind, max(1, math.ceil(until - now)), found.get(id_fail, 0))
    return AttemptState(None, 0, found.get(id_fail, 0))


def _count_failure(kind: str, value: str, limit: int, limits: AttemptLimits) -> None:
    fail_key, block_key = _keys(kind, value)
    # add + incr: atomic on Redis across processes; the window runs from the first failure
    # (incr keeps the expiry).
    cache.add(fail_key, 0, timeout=limits.window)
    try:
        failures = cache.incr(fail_key)
    except ValueError:  # expired between add and incr
        cache.set(fail_key, 1, timeout=limits.window)
        failures = 1
    if failures < limit:
        return
    # Only the process whose add() wins logs: one warning per block, however many processes.
    if cache.add(block_key, time.time() + limits.block, timeout=limits.block):
        cache.delete(fail_key)
        log.warning(
            "OCPP handshake: %s failed password attempts for %s %s within %s s; refusing it "
            "for %s s",
            failures,
            kind,
            value,
            limits.window,
            limits.block,
        )


def attempt_failed(charge_point_id: str, address: str, limits: AttemptLimits) -> None:
    """Count a wrong or missing password for the identity and for the source address."""
    _count_failure(IDENTITY, charge_point_id, limits.max_failures, limits)
    _count_failure(ADDRESS, _address_key(address), limits.max_failures_per_address, limits)


def attempt_succeeded(charge_point_id: str, state: AttemptState) -> None:
    """A right password clears the identity's count (written only if there was one)."""
    if state.identity_failures:
        cache.delete(_keys(IDENTITY, charge_point_id)[0])
