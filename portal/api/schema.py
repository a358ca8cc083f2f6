"""The OpenAPI schema's shared part: the error responses every operation can give (the Swagger
UI page is in schema_views.py: drf-spectacular's views import this module through the settings).

Every API error has one shape, ``{"error": <code>, "detail": <text or field errors>}``
(portal/api/errors.py). ``AutoSchema`` documents it for the statuses an operation can
actually answer, read from the view: 400 for writes and for operations with query
parameters, 401/403 where a permission other than AllowAny applies, 404 where the path names
an object or an organization, 429 where a throttle applies. Responses a view declares itself
(``extend_schema(responses=...)``) win; one declared without a body gets the error body.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.openapi import AutoSchema as BaseAutoSchema
from rest_framework import serializers
from rest_framework.permissions import AllowAny

WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}

ERROR_DESCRIPTIONS = {
    "400": "Invalid input or refused: `error` is a code, `detail` says why (for invalid "
    "input an object of field name to messages).",
    "401": "Missing or wrong credentials.",
    "403": "Not allowed: your role in the organization is too low, or (with a "
    "session login) the CSRF token is missing.",
    "404": "No such object, or not in an organization you are a member of.",
    "429": "Too many requests: wait for the seconds in the Retry-After header.",
}


class ErrorSerializer(serializers.Serializer):
    """The body of every error response (portal/api/errors.py)."""

    error = serializers.CharField(help_text="A short code, e.g. `invalid`, `not_found`.")
    detail = serializers.JSONField(
        help_text="A message, or for invalid input an object of field name to messages."
    )

    class Meta:
        ref_name = "Error"


class AutoSchema(BaseAutoSchema):
    def get_operation(self, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        operation = super().get_operation(*args, **kwargs)
        if operation is None:
            return None
        body = {
            "application/json": {"schema": self.resolve_serializer(ErrorSerializer, "response").ref}
        }
        responses = operation.setdefault("responses", {})
        for status in self._error_statuses(operation):
            responses.setdefault(status, {"description": ERROR_DESCRIPTIONS[status]})
        for status, response in responses.items():
            if status in ERROR_DESCRIPTIONS:
                response.setdefault("content", body)
                if not response.get("description"):
                    response["description"] = ERROR_DESCRIPTIONS[status]
        return operation

    def _error_statuses(self, operation: dict[str, Any]) -> list[str]:
        statuses = []
        has_query = any(p.get("in") == "query" for p in operation.get("parameters", []))
        if self.method in WRITE_METHODS or has_query:
            statuses.append("400")
        permissions = self.view.get_permissions()
        if any(not isinstance(p, AllowAny) for p in permissions):
            statuses += ["401", "403"]
        if "{" in self.path:
            statuses.append("404")
        if self.view.get_throttles():
            statuses.append("429")
        return statuses
