"""Station passwords (OCPP security profile 1 ``AuthorizationKey``): hashing and checking.

The portal generates every station password (``secrets.token_urlsafe``, 160 bits or more), so
guessing one from its hash is hopeless whatever the hash: a salted SHA-256 is enough, like an
API token. A deliberately slow password hash (Argon2 needs ~100 MB and tens of milliseconds
per check) would instead make every reconnect storm of a large fleet a CPU and memory storm,
and would have to leave the event loop.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

PREFIX = "sha256"


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
