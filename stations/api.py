"""REST API of the stations app: stations, sessions, commands (tenant in the URL)."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.response import Response

from portal.api.base import OrgScopedViewSet
from portal.models import Role
from stations import commands, services
from stations.models import ChargingSession, Connector, Station, StationCommand


class ConnectorOut(serializers.ModelSerializer):
    class Meta:
        model = Connector
        fields = ["connector_id", "status", "error_code", "info", "updated_at"]


class StationOut(serializers.ModelSerializer):
    connectors = ConnectorOut(many=True, read_only=True)
    ocpp_url = serializers.SerializerMethodField()

    class Meta:
        model = Station
        fields = [
            "id",
            "charge_point_id",
            "name",
            "enabled",
            "online",
            "last_seen",
            "registration_status",
            "vendor",
            "model",
            "serial_number",
            "firmware_version",
            "heartbeat_interval",
            "status",
            "error_code",
            "connectors",
            "ocpp_url",
            "password_set_at",
            "created_at",
        ]

    def get_ocpp_url(self, obj: Station) -> str:
        return services.station_url(obj)


class StationCreateIn(serializers.Serializer):
    charge_point_id = serializers.CharField(max_length=48)
    name = serializers.CharField(max_length=120, required=False, default="")
    connectors = serializers.IntegerField(min_value=1, max_value=99, default=1)


class StationUpdateIn(serializers.Serializer):
    name = serializers.CharField(max_length=120, required=False)
    enabled = serializers.BooleanField(required=False)


class CredentialsOut(serializers.Serializer):
    station = StationOut()
    url = serializers.CharField()
    username = serializers.CharField()
    password = serializers.CharField(help_text="Shown once; only its hash is stored.")


class StationViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, OrgScopedViewSet):
    model = Station
    serializer_class = StationOut
    write_roles = {"destroy": Role.OWNER, "rotate_password": Role.OWNER}

    def scope(self, queryset):
        return queryset.prefetch_related("connectors").order_by("charge_point_id")

    @extend_schema(request=StationCreateIn, responses={201: CredentialsOut})
    def create(self, request, *args, **kwargs):
        data = StationCreateIn(data=request.data)
        data.is_valid(raise_exception=True)
        credentials = services.station_register(
            organization=self.organization, **data.validated_data
        )
        return Response(CredentialsOut(credentials).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=StationUpdateIn, responses=StationOut)
    def partial_update(self, request, *args, **kwargs):
        data = StationUpdateIn(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        station = services.station_update(station=self.get_object(), **data.validated_data)
        return Response(StationOut(station).data)

    def destroy(self, request, *args, **kwargs):
        services.station_delete(station=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=None, responses=CredentialsOut)
    @action(detail=True, methods=["post"], url_path="rotate-password")
    def rotate_password(self, request, *args, **kwargs):
        credentials = services.station_rotate_password(station=self.get_object())
        return Response(CredentialsOut(credentials).data)


class SessionOut(serializers.ModelSerializer):
    transaction_id = serializers.IntegerField(source="pk", read_only=True)
    charge_point_id = serializers.CharField(source="station.charge_point_id", read_only=True)

    class Meta:
        model = ChargingSession
        fields = [
            "transaction_id",
            "station",
            "charge_point_id",
            "connector_id",
            "id_tag",
            "auth_status",
            "status",
            "meter_start",
            "meter_stop",
            "energy_wh",
            "power_w",
            "started_at",
            "stopped_at",
            "station_started_at",
            "station_stopped_at",
            "start_received_at",
            "stop_received_at",
            "stop_reason",
        ]


class SessionViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, OrgScopedViewSet):
    model = ChargingSession
    serializer_class = SessionOut

    def scope(self, queryset):
        queryset = queryset.select_related("station")
        station = self.request.query_params.get("station")
        if station and station.isdigit():
            queryset = queryset.filter(station_id=int(station))
        return queryset


class CommandOut(serializers.ModelSerializer):
    requested_by = serializers.CharField(
        source="requested_by.username", default=None, read_only=True
    )

    class Meta:
        model = StationCommand
        fields = [
            "id",
            "station",
            "action",
            "payload",
            "status",
            "response",
            "error",
            "requested_by",
            "created_at",
            "sent_at",
            "finished_at",
        ]


class CommandIn(serializers.Serializer):
    station = serializers.IntegerField()
    action = serializers.ChoiceField(choices=commands.SUPPORTED_ACTIONS)
    payload = serializers.JSONField(default=dict)


class CommandViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, OrgScopedViewSet):
    model = StationCommand
    serializer_class = CommandOut

    def scope(self, queryset):
        return queryset.select_related("requested_by")

    @extend_schema(request=CommandIn, responses={201: CommandOut})
    def create(self, request, *args, **kwargs):
        data = CommandIn(data=request.data)
        data.is_valid(raise_exception=True)
        station = get_object_or_404(
            Station.objects.for_tenant(self.organization), pk=data.validated_data["station"]
        )
        command = commands.command_send(
            station=station,
            action=data.validated_data["action"],
            payload=data.validated_data["payload"],
            requested_by=request.user,
        )
        return Response(CommandOut(command).data, status=status.HTTP_201_CREATED)
