"""A driver's own API under ``/api/v1/me/...``: cards, vehicles, the connectors open to them,
their sessions (priced, CSV), app start and stop, and the result of those commands.

Every queryset is the driver's own (``billing.selectors``): another driver's card, vehicle,
session or command is 404.
"""

from __future__ import annotations

from django.http import HttpResponse
from django.urls import path
from django.utils import timezone
from django.utils.translation import gettext as _
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.generics import get_object_or_404  # a bad pk is 404, not 500
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.routers import SimpleRouter
from rest_framework.views import APIView

from billing import driver_services, selectors
from billing.models import RfidCard, Vehicle
from portal.errors import DomainError
from stations.models import ChargingSession, Connector

# --- Serializers ----------------------------------------------------------------------------


class MyCardOut(serializers.Serializer):
    id = serializers.IntegerField()
    uid = serializers.CharField()
    label = serializers.CharField()
    blocked = serializers.BooleanField()
    expires_at = serializers.DateTimeField(allow_null=True)
    issued_by = serializers.CharField(
        source="organization.name",
        allow_null=True,
        default=None,
        help_text="The organization that issued the card; null for a card you added.",
    )
    created_at = serializers.DateTimeField()


class MyCardIn(serializers.Serializer):
    uid = serializers.CharField(max_length=60, help_text="Hex digits; `:`, `-`, spaces ignored.")
    label = serializers.CharField(max_length=80, required=False, allow_blank=True, default="")


class MyCardChangeIn(serializers.Serializer):
    blocked = serializers.BooleanField(required=False)
    expires_at = serializers.DateTimeField(required=False, allow_null=True)


class MyVehicleOut(serializers.Serializer):
    id = serializers.IntegerField()
    car_id = serializers.CharField()
    label = serializers.CharField()
    created_at = serializers.DateTimeField()


class MyVehicleIn(serializers.Serializer):
    car_id = serializers.CharField(max_length=60)
    label = serializers.CharField(max_length=80, required=False, allow_blank=True, default="")


class MyTariffOut(serializers.Serializer):
    per_kwh = serializers.DecimalField(max_digits=8, decimal_places=4)
    per_hour = serializers.DecimalField(max_digits=8, decimal_places=4)
    currency = serializers.CharField()
    vat_percent = serializers.DecimalField(max_digits=5, decimal_places=2)


class MyOpenConnectorOut(serializers.Serializer):
    code = serializers.CharField(help_text="The connector's short code (QR label: /c/<code>/).")
    connector = serializers.IntegerField(source="connector.pk", help_text="Its id for me/start.")
    station = serializers.CharField(source="station.label")
    station_online = serializers.BooleanField(source="station.online")
    connector_id = serializers.IntegerField(source="connector.connector_id")
    status = serializers.CharField(source="connector.status")
    available = serializers.BooleanField()
    access = serializers.CharField(source="price.access")
    price = MyTariffOut(source="price.tariff")
    price_source = serializers.CharField(source="price.source")


class MyPriceOut(serializers.Serializer):
    total = serializers.DecimalField(max_digits=12, decimal_places=2)
    currency = serializers.CharField()
    vat_percent = serializers.DecimalField(max_digits=5, decimal_places=2)
    vat_amount = serializers.DecimalField(max_digits=12, decimal_places=2)
    net_amount = serializers.DecimalField(max_digits=12, decimal_places=2)
    energy_kwh = serializers.DecimalField(max_digits=12, decimal_places=3)
    connected_hours = serializers.DecimalField(max_digits=12, decimal_places=4)
    source = serializers.CharField()


class MySessionOut(serializers.Serializer):
    id = serializers.IntegerField(source="session.pk")
    station = serializers.CharField(source="session.station.label")
    connector_id = serializers.IntegerField(source="session.connector_id")
    status = serializers.CharField(source="session.status")
    started_at = serializers.DateTimeField(source="session.started_at")
    stopped_at = serializers.DateTimeField(source="session.stopped_at", allow_null=True)
    energy_wh = serializers.IntegerField(source="session.energy_wh")
    power_w = serializers.FloatField(source="session.power_w", allow_null=True)
    duration_seconds = serializers.SerializerMethodField()
    price = MyPriceOut(source="price.price")

    def get_duration_seconds(self, row: selectors.SessionRow) -> int:
        return int(row.duration.total_seconds())


class MyStartIn(serializers.Serializer):
    code = serializers.CharField(required=False, help_text="The connector's code (QR label).")
    connector = serializers.IntegerField(required=False, help_text="The connector's id.")

    def validate(self, data: dict) -> dict:
        if bool(data.get("code")) == ("connector" in data):
            raise serializers.ValidationError(_("Give either code or connector."))
        return data


class MyCommandOut(serializers.Serializer):
    id = serializers.IntegerField()
    action = serializers.CharField()
    station = serializers.CharField(source="station.label")
    status = serializers.CharField(
        help_text="pending, accepted, rejected, not_supported, error, timed_out or offline."
    )
    error = serializers.CharField()
    created_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)


# --- Views ----------------------------------------------------------------------------------


class CardViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Your RFID cards: add by UID, block (lost card), set an expiry, remove."""

    serializer_class = MyCardOut

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return RfidCard.objects.none()
        return selectors.driver_cards(self.request.user)

    @extend_schema(request=MyCardIn, responses={201: MyCardOut})
    def create(self, request: Request) -> Response:
        data = MyCardIn(data=request.data)
        data.is_valid(raise_exception=True)
        card = driver_services.card_add(user=request.user, **data.validated_data)
        return Response(MyCardOut(card).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=MyCardChangeIn, responses=MyCardOut)
    def partial_update(self, request: Request, pk: str) -> Response:
        card = self.get_object()
        data = MyCardChangeIn(data=request.data)
        data.is_valid(raise_exception=True)
        if "blocked" in data.validated_data:
            card = driver_services.card_block(
                user=request.user, card=card, blocked=data.validated_data["blocked"]
            )
        if "expires_at" in data.validated_data:
            card = driver_services.card_expiry_set(
                user=request.user, card=card, expires_at=data.validated_data["expires_at"]
            )
        return Response(MyCardOut(card).data)

    @extend_schema(responses={204: None})
    def destroy(self, request: Request, pk: str) -> Response:
        driver_services.card_remove(user=request.user, card=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


class VehicleViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Your vehicles for CarID (only at stations with auto car detection on)."""

    serializer_class = MyVehicleOut

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Vehicle.objects.none()
        return selectors.driver_vehicles(self.request.user)

    @extend_schema(request=MyVehicleIn, responses={201: MyVehicleOut})
    def create(self, request: Request) -> Response:
        data = MyVehicleIn(data=request.data)
        data.is_valid(raise_exception=True)
        vehicle = driver_services.vehicle_add(user=request.user, **data.validated_data)
        return Response(MyVehicleOut(vehicle).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses={204: None})
    def destroy(self, request: Request, pk: str) -> Response:
        driver_services.vehicle_remove(user=request.user, vehicle=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


class StationsView(APIView):
    """Connectors open to you now, with live availability and the price you would pay."""

    @extend_schema(responses=MyOpenConnectorOut(many=True))
    def get(self, request: Request) -> Response:
        found = selectors.connectors_open_to(request.user)
        return Response(MyOpenConnectorOut(found, many=True).data)


class SessionViewSet(viewsets.GenericViewSet):
    """Your charging sessions with energy, duration and cost (a running one: so far)."""

    serializer_class = MySessionOut

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return ChargingSession.objects.none()
        return selectors.driver_sessions(self.request.user)

    @extend_schema(responses=MySessionOut(many=True))
    def list(self, request: Request) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(
            MySessionOut(selectors.session_rows(page), many=True).data
        )

    @extend_schema(responses=MySessionOut)
    def retrieve(self, request: Request, pk: str) -> Response:
        session = get_object_or_404(self.get_queryset(), pk=pk)
        return Response(MySessionOut(selectors.session_rows([session])[0]).data)

    @extend_schema(request=None, responses={202: MyCommandOut})
    @action(detail=True, methods=["post"])
    def stop(self, request: Request, pk: str) -> Response:
        """Stop your running session (RemoteStopTransaction); poll me/commands/<id>/."""
        session = get_object_or_404(self.get_queryset(), pk=pk)
        command = driver_services.driver_charging_stop(user=request.user, session=session)
        return Response(MyCommandOut(command).data, status=status.HTTP_202_ACCEPTED)


class SessionsCsvView(APIView):
    """Your sessions as CSV: session_id, station, connector, started, stopped, kwh, duration,
    price, currency, vat_percent, vat (decimal strings)."""

    @extend_schema(responses={(200, "text/csv"): OpenApiTypes.STR})
    def get(self, request: Request) -> HttpResponse:
        rows = selectors.session_rows(selectors.driver_sessions(request.user))
        response = HttpResponse(selectors.sessions_csv(rows), content_type="text/csv")
        response["Content-Disposition"] = 'attachment; filename="charging-sessions.csv"'
        return response


class StartView(APIView):
    """Start charging at a connector (RemoteStartTransaction with your app tag); the answer
    is the command: poll me/commands/<id>/ for the station's answer."""

    @extend_schema(request=MyStartIn, responses={202: MyCommandOut})
    def post(self, request: Request) -> Response:
        data = MyStartIn(data=request.data)
        data.is_valid(raise_exception=True)
        if data.validated_data.get("code"):
            connector = selectors.connector_access_by_code(data.validated_data["code"]).connector
        else:
            connector = (
                Connector.objects.select_related("station", "access__tariff")
                .filter(pk=data.validated_data["connector"])
                .first()
            )
            if connector is None:  # the same answer as a connector that is not open to you
                raise DomainError(_("You may not charge at this connector."), code="refused")
        command = driver_services.driver_charging_start(
            user=request.user, connector=connector, now=timezone.now()
        )
        return Response(MyCommandOut(command).data, status=status.HTTP_202_ACCEPTED)


class CommandView(APIView):
    """The result of one of your start or stop commands."""

    @extend_schema(responses=MyCommandOut)
    def get(self, request: Request, pk: int) -> Response:
        return Response(MyCommandOut(selectors.driver_command(request.user, pk)).data)


router = SimpleRouter()
router.register("me/cards", CardViewSet, basename="me-card")
router.register("me/vehicles", VehicleViewSet, basename="me-vehicle")
router.register("me/sessions", SessionViewSet, basename="me-session")

org_urlpatterns: list = []
urlpatterns = [
    path("me/sessions.csv", SessionsCsvView.as_view(), name="me-sessions-csv"),
    path("me/stations/", StationsView.as_view(), name="me-stations"),
    path("me/start/", StartView.as_view(), name="me-start"),
    path("me/commands/<int:pk>/", CommandView.as_view(), name="me-command"),
    *router.urls,
]
