"""Who made a change: one middleware for portal pages, the REST API and Django admin.

It only remembers the request (a context variable, so concurrent requests in one process
never see each other's); ``AuditEntryManager.log_create`` reads the user from it when an
entry is written. Reading late matters for the API: a token-authenticated request is still
anonymous when it passes the middleware (DRF authenticates inside the view and then sets
``request.user`` on the Django request).

Why not django-auditlog's own ``AuditlogMiddleware``: it takes the user as the request
enters (token users would be lost) and connects a ``pre_save`` receiver per request, keyed
by ``time.time()``, which is process-wide state for what is per-request data.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponseBase

_current_request: ContextVar[HttpRequest | None] = ContextVar("audit_request", default=None)


class AuditActorMiddleware:
    sync_capable = True
    async_capable = True  # no thread hop on the ASGI path

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self.__acall__(request)
        token = _current_request.set(request)
        try:
            return self.get_response(request)
        finally:
            _current_request.reset(token)

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        token = _current_request.set(request)
        try:
            response: Awaitable[HttpResponseBase] = self.get_response(request)
            return await response
        finally:
            _current_request.reset(token)


def request_details() -> dict[str, Any]:
    """The acting user and address of the request being handled; empty outside requests
    (Celery, OCPP, management commands: the entry is then by "system")."""
    request = _current_request.get()
    if request is None:
        return {}
    user = getattr(request, "user", None)
    actor = user if user is not None and user.is_authenticated else None
    return {
        "actor": actor,
        "actor_email": getattr(actor, "email", None),
        "remote_addr": _ip(request.META.get("REMOTE_ADDR")),
    }


def _ip(value: str | None) -> str | None:
    try:
        return str(ipaddress.ip_address(value or ""))
    except ValueError:
        return None
