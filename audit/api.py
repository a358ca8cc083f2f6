"""Read-only API of the audit trail: ``/api/v1/organizations/<org>/audit/`` (owners and
managers), newest first, filters ``?type=app_label.model`` and ``?actor=<user id>|system``."""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, serializers
from rest_framework.request import Request
from rest_framework.response import Response

from audit import selectors
from audit.models import AuditEntry
from portal.api.base import OrgScopedViewSet
from portal.models import Role


class ChangeOut(serializers.Serializer):
    field = serializers.CharField()
    old = serializers.CharField()
    new = serializers.CharField()


class EntryOut(serializers.Serializer):
    id = serializers.IntegerField()
    timestamp = serializers.DateTimeField()
    actor = serializers.CharField(help_text='Account name, or "system" for changes without a user.')
    object_type = serializers.CharField(help_text="e.g. Tariff")
    object_type_key = serializers.CharField(help_text="app_label.model, the `type` filter")
    object_label = serializers.CharField()
    object_id = serializers.IntegerField(allow_null=True)
    action = serializers.ChoiceField(choices=["created", "changed", "deleted", "read"])
    changes = ChangeOut(many=True)


FILTERS = [
    OpenApiParameter("type", OpenApiTypes.STR, description="app_label.model, e.g. billing.tariff"),
    OpenApiParameter("actor", OpenApiTypes.STR, description='a user id, or "system"'),
]


@extend_schema_view(list=extend_schema(parameters=FILTERS), retrieve=extend_schema())
class AuditViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, OrgScopedViewSet):
    model = AuditEntry
    read_role = Role.MANAGER
    serializer_class = EntryOut

    def scope(self, queryset: Any) -> Any:
        params = self.request.query_params
        return selectors.filter_entries(
            queryset, object_type=params.get("type", ""), actor=params.get("actor", "")
        )

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(
            self.get_serializer(selectors.present(page), many=True).data
        )

    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return Response(self.get_serializer(selectors.present([self.get_object()])[0]).data)
