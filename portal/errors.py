"""Domain errors: raised by services, turned into JSON by the API and into messages by pages."""

from __future__ import annotations


class DomainError(Exception):
    """A rule of the domain refused the operation. ``code`` is stable and machine-readable."""

    code = "domain_error"
    status = 400

    def __init__(self, detail: str, *, code: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if code:
            self.code = code


class Conflict(DomainError):
    """The operation contradicts the current state (e.g. removing the last owner)."""

    code = "conflict"
    status = 409


class NotAllowed(DomainError):
    code = "not_allowed"
    status = 403
