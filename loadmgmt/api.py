"""REST API of load management.

Organization-scoped (``/api/v1/organizations/<org>/...``): ``load-nodes``, ``load-groups``,
``meters``, ``station-limits``; viewers read, managers change, owners create and delete
meters and rotate their tokens (the token is in the answer once).

Top level: ``POST /api/v1/meters/<id>/readings`` with the meter's own token
(``Authorization: Bearer <token>`` or ``X-Meter-Token``), no user.
"""

from __future__ import annotations

from typing import Any

from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.views import APIView

from loadmgmt import conf, services
from loadmgmt.meters import ReadingError, bearer_token, parse_reading, reading_store
from loadmgmt.models import (
    FailureAction,
    LoadGroup,
    LoadGroupMember,
    Meter,
    PhaseRotation,
    SheddingInputs,
    ShedSignal,
    StationLimits,
    TreeNode,
)
from portal.api.base import OrgScopedViewSet
from portal.models import Role
from stations.models import Station

# --- nodes --------------------------------------------------------------------------------


class NodeOut(serializers.ModelSerializer):
    meter = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True)  # none yet
    stale = serializers.SerializerMethodField()

    class Meta:
        model = TreeNode
        fields = [
            "id",
            "name",
            "parent",
            "limit_l1",
            "limit_l2",
            "limit_l3",
            "safety_margin",
            "fallback_limit",
            "shed_signal",
            "shed_since",
            "shed_source",
            "meter",
            "stale",
        ]

    def get_stale(self, obj: TreeNode) -> bool:
        from loadmgmt.selectors import node_is_stale

        return node_is_stale(obj, now=timezone.now())


class TenantNodeField(serializers.PrimaryKeyRelatedField):
    """A node id of the organization in the URL (another tenant's id: 'does not exist')."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(queryset=TreeNode.objects.all(), **kwargs)  # the model, for the schema

    def get_queryset(self):
        return TreeNode.objects.for_tenant(self.context["organization"])


class NodeIn(serializers.Serializer):
    name = serializers.CharField(max_length=120)
    parent = TenantNodeField(allow_null=True, required=False)
    limit_l1 = serializers.IntegerField(min_value=1)
    limit_l2 = serializers.IntegerField(min_value=1, required=False)
    limit_l3 = serializers.IntegerField(min_value=1, required=False)
    safety_margin = serializers.IntegerField(min_value=0, required=False)
    fallback_limit = serializers.IntegerField(min_value=0, allow_null=True, required=False)
    shed_signal = serializers.ChoiceField(choices=ShedSignal.choices, required=False)


class WriteMixin:
    def read_input(self, serializer: type[serializers.Serializer], *, partial: bool) -> dict:
        data = serializer(
            data=self.request.data, partial=partial, context={"organization": self.organization}
        )
        data.is_valid(raise_exception=True)
        return dict(data.validated_data)


class NodeViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, WriteMixin, OrgScopedViewSet):
    model = TreeNode
    serializer_class = NodeOut

    def scope(self, queryset):
        return queryset.select_related("meter").order_by("name")

    @extend_schema(request=NodeIn, responses={201: NodeOut})
    def create(self, request, *args, **kwargs):
        node = services.node_create(
            organization=self.organization,
            shed_source="API",
            **self.read_input(NodeIn, partial=False),
        )
        return Response(NodeOut(node).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=NodeIn, responses=NodeOut)
    def update(self, request, *args, **kwargs):
        partial = kwargs.get("partial", False)
        node = services.node_update(
            node=self.get_object(), shed_source="API", **self.read_input(NodeIn, partial=partial)
        )
        return Response(NodeOut(node).data)

    @extend_schema(request=NodeIn, responses=NodeOut)
    def partial_update(self, request, *args, **kwargs):
        return self.update(request, *args, partial=True, **kwargs)

    def destroy(self, request, *args, **kwargs):
        services.node_delete(node=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- groups -------------------------------------------------------------------------------


class GroupOut(serializers.ModelSerializer):
    stations = serializers.SerializerMethodField()

    class Meta:
        model = LoadGroup
        fields = ["id", "name", "max_current", "failure_action", "node", "stations"]

    def get_stations(self, obj: LoadGroup) -> list[int]:
        return sorted(m.station_id for m in obj.members.all())


class TenantStationField(serializers.PrimaryKeyRelatedField):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(queryset=Station.objects.all(), **kwargs)

    def get_queryset(self):
        return Station.objects.for_tenant(self.context["organization"])


class GroupIn(serializers.Serializer):
    name = serializers.CharField(max_length=120)
    max_current = serializers.IntegerField(min_value=1)
    failure_action = serializers.ChoiceField(choices=FailureAction.choices, required=False)
    node = TenantNodeField(allow_null=True, required=False)
    stations = TenantStationField(many=True, required=False)


class GroupViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, WriteMixin, OrgScopedViewSet):
    model = LoadGroup
    serializer_class = GroupOut

    def scope(self, queryset):
        return queryset.prefetch_related("members").order_by("name")

    @extend_schema(request=GroupIn, responses={201: GroupOut})
    def create(self, request, *args, **kwargs):
        group = services.group_create(
            organization=self.organization, **self.read_input(GroupIn, partial=False)
        )
        return Response(GroupOut(group).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=GroupIn, responses=GroupOut)
    def update(self, request, *args, **kwargs):
        group = self.get_object()  # another tenant's id: 404 before the body is read
        data = self.read_input(GroupIn, partial=kwargs.get("partial", False))
        group = services.group_update(group=group, **data)
        return Response(GroupOut(group).data)

    @extend_schema(request=GroupIn, responses=GroupOut)
    def partial_update(self, request, *args, **kwargs):
        return self.update(request, *args, partial=True, **kwargs)

    def destroy(self, request, *args, **kwargs):
        services.group_delete(group=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- meters -------------------------------------------------------------------------------


class MeterOut(serializers.ModelSerializer):
    last_current = serializers.SerializerMethodField()
    stale = serializers.SerializerMethodField()
    readings_url = serializers.SerializerMethodField()

    class Meta:
        model = Meter
        fields = [
            "id",
            "name",
            "node",
            "mqtt_topic",
            "stale_after",
            "token_set_at",
            "last_current",
            "last_power_w",
            "last_reading_at",
            "stale",
            "readings_url",
        ]

    def get_last_current(self, obj: Meter) -> list[float] | None:
        current = obj.last_current
        return list(current) if current else None

    def get_stale(self, obj: Meter) -> bool:
        return obj.is_stale(timezone.now())

    def get_readings_url(self, obj: Meter) -> str:
        return f"/api/v1/meters/{obj.pk}/readings"


class MeterWithTokenOut(MeterOut):
    token = serializers.SerializerMethodField(help_text="Shown once; only its hash is stored.")

    class Meta(MeterOut.Meta):
        fields = [*MeterOut.Meta.fields, "token"]

    def get_token(self, obj: Meter) -> str:
        return self.context["token"]


class MeterIn(serializers.Serializer):
    node = TenantNodeField()
    name = serializers.CharField(max_length=120)
    mqtt_topic = serializers.CharField(max_length=200, required=False, allow_blank=True)
    stale_after = serializers.IntegerField(required=False)


class MeterUpdateIn(serializers.Serializer):
    name = serializers.CharField(max_length=120, required=False)
    mqtt_topic = serializers.CharField(max_length=200, required=False)
    stale_after = serializers.IntegerField(required=False)


class MeterViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, WriteMixin, OrgScopedViewSet):
    model = Meter
    serializer_class = MeterOut
    write_roles = {"create": Role.OWNER, "destroy": Role.OWNER, "rotate_token": Role.OWNER}

    def scope(self, queryset):
        return queryset.select_related("node").order_by("name")

    @extend_schema(request=MeterIn, responses={201: MeterWithTokenOut})
    def create(self, request, *args, **kwargs):
        meter, token = services.meter_create(**self.read_input(MeterIn, partial=False))
        out = MeterWithTokenOut(meter, context={"token": token})
        return Response(out.data, status=status.HTTP_201_CREATED)

    @extend_schema(request=MeterUpdateIn, responses=MeterOut)
    def partial_update(self, request, *args, **kwargs):
        meter = services.meter_update(
            meter=self.get_object(), **self.read_input(MeterUpdateIn, partial=True)
        )
        return Response(MeterOut(meter).data)

    def destroy(self, request, *args, **kwargs):
        services.meter_delete(meter=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=None, responses=MeterWithTokenOut)
    @action(detail=True, methods=["post"], url_path="rotate-token")
    def rotate_token(self, request, *args, **kwargs):
        meter = self.get_object()
        token = services.meter_rotate_token(meter=meter)
        return Response(MeterWithTokenOut(meter, context={"token": token}).data)


# --- station limits -----------------------------------------------------------------------


class StationLimitsOut(serializers.Serializer):
    station = serializers.IntegerField(source="pk")
    charge_point_id = serializers.CharField()
    max_current = serializers.IntegerField()
    min_current = serializers.IntegerField()
    installer_max = serializers.IntegerField()
    phase_rotation = serializers.CharField()
    can_switch_phases = serializers.BooleanField()
    fail_safe_current = serializers.IntegerField()
    shedding_inputs = serializers.CharField()
    priority = serializers.IntegerField()
    max_power_kw = serializers.FloatField(help_text="At 230 V on 3 phases.")
    group = serializers.IntegerField(allow_null=True)

    def to_representation(self, station: Station) -> dict[str, Any]:
        try:
            limits = station.load_limits
        except StationLimits.DoesNotExist:
            limits = StationLimits.defaults(station)
        try:
            member = station.load_group_member
        except LoadGroupMember.DoesNotExist:
            member = None
        return {
            "station": station.pk,
            "charge_point_id": station.charge_point_id,
            **{f: getattr(limits, f) for f in services.LIMIT_FIELDS},
            "max_power_kw": limits.max_power_kw,
            "group": member.group_id if member else None,
        }


class StationLimitsIn(serializers.Serializer):
    max_current = serializers.IntegerField(required=False)
    min_current = serializers.IntegerField(required=False)
    installer_max = serializers.IntegerField(required=False)
    phase_rotation = serializers.ChoiceField(choices=PhaseRotation.choices, required=False)
    can_switch_phases = serializers.BooleanField(required=False)
    fail_safe_current = serializers.IntegerField(required=False)
    shedding_inputs = serializers.ChoiceField(choices=SheddingInputs.choices, required=False)
    priority = serializers.IntegerField(required=False)


class StationLimitsViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, WriteMixin, OrgScopedViewSet
):
    """One row per station of the organization (its defaults until it is set); the id is the
    station's id. PUT/PATCH set, DELETE resets to the defaults."""

    model = Station
    serializer_class = StationLimitsOut

    def scope(self, queryset):
        return queryset.select_related("load_limits", "load_group_member").order_by(
            "charge_point_id"
        )

    @extend_schema(request=StationLimitsIn, responses=StationLimitsOut)
    def update(self, request, *args, **kwargs):
        station = self.get_object()
        services.station_limits_set(
            station=station, **self.read_input(StationLimitsIn, partial=True)
        )
        station = self.get_queryset().get(pk=station.pk)
        return Response(StationLimitsOut(station).data)

    @extend_schema(request=StationLimitsIn, responses=StationLimitsOut)
    def partial_update(self, request, *args, **kwargs):
        return self.update(request, *args, **kwargs)

    def destroy(self, request, *args, **kwargs):
        services.station_limits_reset(station=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- readings (meter token, no user) ------------------------------------------------------


class ReadingIn(serializers.Serializer):
    time = serializers.DateTimeField(required=False, help_text="ISO 8601 with offset.")
    current = serializers.ListField(
        child=serializers.FloatField(min_value=0), min_length=3, max_length=3
    )
    power_w = serializers.FloatField(required=False)


class ReadingOut(serializers.Serializer):
    meter = serializers.IntegerField()
    time = serializers.DateTimeField()
    current = serializers.ListField(child=serializers.FloatField())
    power_w = serializers.FloatField(allow_null=True)


class MeterReadingThrottle(SimpleRateThrottle):
    """Per meter and address (``LOADMGMT_METER_READINGS_RATE``, 1200/min): a meter may report
    every second or faster, which the API's general limit for requests without a user would
    refuse; a flood of wrong tokens from one address blocks only that address."""

    def get_rate(self) -> str:
        return conf.meter_readings_rate()

    def get_cache_key(self, request, view) -> str:
        return f"throttle_meter_{view.kwargs.get('meter_id')}_{self.get_ident(request)}"


class MeterReadingView(APIView):
    """A meter posts its reading with its own token (no user, no session, no CSRF)."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes = [MeterReadingThrottle]

    @extend_schema(
        request=ReadingIn,
        responses={
            201: ReadingOut,
            400: OpenApiResponse(description="Invalid reading: detail says why."),
            401: OpenApiResponse(description="Missing or wrong meter token."),
            404: OpenApiResponse(description="No such meter."),
        },
        auth=[],
    )
    def post(self, request, meter_id: int):
        meter = get_object_or_404(Meter.objects.select_related("node"), pk=meter_id)
        if not services.meter_token_matches(meter, bearer_token(request.headers)):
            return Response(
                {
                    "error": "invalid_token",
                    "detail": "Missing or wrong meter token: send Authorization: Bearer "
                    "<token> (or X-Meter-Token).",
                },
                status=status.HTTP_401_UNAUTHORIZED,
                headers={"WWW-Authenticate": 'Bearer realm="meter"'},
            )
        try:
            reading = parse_reading(request.data, now=timezone.now())
        except ReadingError as exc:
            return Response({"error": "invalid_reading", "detail": str(exc)}, status=400)
        stored = reading_store(meter, reading)
        return Response(
            {
                "meter": meter.pk,
                "time": stored.time,
                "current": [stored.l1, stored.l2, stored.l3],
                "power_w": stored.power_w,
            },
            status=status.HTTP_201_CREATED,
        )
