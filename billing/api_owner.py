"""The owner's access-and-prices API under ``/api/v1/organizations/<org>/``: tariffs,
connector access (with time rules), station authentication, special users, user groups
(members, CSV import) and the organization's RFID cards (CSV import).

Small input and output serializers per resource; the viewsets are tenant-scoped by
``OrgScopedViewSet`` (404 for outsiders, viewers read, managers and owners write) and call the
services in ``billing/owner_services.py`` and ``billing/imports.py``.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Count
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.routers import SimpleRouter

from billing import imports, owner_services
from billing.models import (
    Access,
    AccessRule,
    Currency,
    RfidCard,
    SpecialUser,
    Tariff,
    UserGroup,
    UserGroupMember,
)
from portal.api.base import OrgScopedViewSet
from portal.errors import DomainError
from stations.models import AuthMode, ConfigurationKey, Connector, Station

# --- shared -------------------------------------------------------------------------------


class OwnerImportIn(serializers.Serializer):
    file = serializers.FileField(required=False, help_text="The CSV file (multipart upload).")
    csv = serializers.CharField(
        required=False, trim_whitespace=False, help_text="Or the CSV text itself (JSON body)."
    )


class OwnerImportErrorRow(serializers.Serializer):
    row = serializers.IntegerField(help_text="As a spreadsheet numbers it; 0: the whole file.")
    column = serializers.CharField(allow_null=True)
    message = serializers.CharField()


class OwnerImportOut(serializers.Serializer):
    created = serializers.IntegerField()
    unchanged = serializers.IntegerField()


class OwnerImportRefusedOut(serializers.Serializer):
    error = serializers.CharField(help_text="invalid_csv, or invalid (a malformed request)")
    # A refused CSV says why in a sentence; a malformed request (neither file nor csv, a
    # non-file upload) gets the API's usual field errors: {"csv": ["..."], ...}.
    detail = serializers.JSONField(help_text="A sentence, or field errors (invalid).")
    errors = OwnerImportErrorRow(many=True, required=False, help_text="Only with invalid_csv.")


def import_data(request: Any) -> bytes | str:
    data = OwnerImportIn(data=request.data)
    data.is_valid(raise_exception=True)
    if data.validated_data.get("file") is not None:
        upload = data.validated_data["file"]
        if upload.size > imports.MAX_BYTES:
            raise DomainError("The file is larger than 1 MB.", code="invalid_csv")
        return upload.read()
    if data.validated_data.get("csv"):
        return data.validated_data["csv"]
    raise DomainError("Send the CSV as a 'file' upload or as 'csv' text.", code="invalid_csv")


def import_refused(exc: imports.CsvImportError) -> Response:
    return Response(
        {
            "error": exc.code,
            "detail": exc.detail,
            "errors": [e.as_dict() for e in exc.errors],
        },
        status=status.HTTP_400_BAD_REQUEST,
    )


IMPORT_SCHEMA = extend_schema(
    request={"multipart/form-data": OwnerImportIn, "application/json": OwnerImportIn},
    responses={200: OwnerImportOut, 400: OwnerImportRefusedOut},
)


class TariffScopedMixin:
    """Turns a tariff id from the request into the org's tariff (unknown: 400, never 404,
    and never another tenant's)."""

    organization: Any

    def tariff_from(self, value: int | None) -> Tariff | None:
        if value is None:
            return None
        tariff = Tariff.objects.for_tenant(self.organization).filter(pk=value).first()
        if tariff is None:
            raise serializers.ValidationError({"tariff": ["Unknown price."]})
        return tariff


# --- tariffs ------------------------------------------------------------------------------


class OwnerTariffOut(serializers.ModelSerializer):
    class Meta:
        model = Tariff
        fields = ["id", "name", "per_kwh", "per_hour", "currency", "vat_percent", "created_at"]


class OwnerTariffIn(serializers.Serializer):
    # Plain decimals: the service refuses negatives and maxima with the pricing core's words.
    name = serializers.CharField(max_length=80)
    per_kwh = serializers.DecimalField(max_digits=8, decimal_places=4)
    per_hour = serializers.DecimalField(max_digits=8, decimal_places=4)
    currency = serializers.ChoiceField(choices=Currency.choices, default=Currency.CHF)
    vat_percent = serializers.DecimalField(max_digits=5, decimal_places=2)


class TariffViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, OrgScopedViewSet):
    model = Tariff
    serializer_class = OwnerTariffOut

    @extend_schema(request=OwnerTariffIn, responses={201: OwnerTariffOut})
    def create(self, request, *args, **kwargs):
        data = OwnerTariffIn(data=request.data)
        data.is_valid(raise_exception=True)
        tariff = owner_services.tariff_create(organization=self.organization, **data.validated_data)
        return Response(OwnerTariffOut(tariff).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=OwnerTariffIn, responses=OwnerTariffOut)
    def update(self, request, *args, **kwargs):
        partial = kwargs.get("partial", False)
        tariff = self.get_object()
        data = OwnerTariffIn(data=request.data, partial=partial)
        data.is_valid(raise_exception=True)
        tariff = owner_services.tariff_update(tariff=tariff, **data.validated_data)
        return Response(OwnerTariffOut(tariff).data)

    @extend_schema(request=OwnerTariffIn, responses=OwnerTariffOut)
    def partial_update(self, request, *args, **kwargs):
        return self.update(request, *args, partial=True, **kwargs)

    @extend_schema(responses={204: None, 409: OpenApiTypes.OBJECT})
    def destroy(self, request, *args, **kwargs):
        owner_services.tariff_delete(tariff=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- connector access ---------------------------------------------------------------------


class OwnerRuleSerializer(serializers.ModelSerializer):
    weekdays = serializers.CharField(
        max_length=7, help_text="ISO weekdays as digits, Monday = 1: '12345' = Mon to Fri."
    )
    access = serializers.ChoiceField(choices=Access.choices)

    class Meta:
        model = AccessRule
        fields = ["id", "weekdays", "start_time", "end_time", "access"]
        read_only_fields = ["id"]


class OwnerConnectorAccessOut(serializers.Serializer):
    connector = serializers.IntegerField(source="pk", help_text="The connector's id.")
    station = serializers.IntegerField(source="station_id")
    charge_point_id = serializers.CharField(source="station.charge_point_id")
    connector_id = serializers.IntegerField(help_text="The connector's number on the station.")
    access = serializers.SerializerMethodField()
    tariff = serializers.SerializerMethodField()
    access_id = serializers.SerializerMethodField()
    code = serializers.SerializerMethodField()
    rules = serializers.SerializerMethodField()

    @staticmethod
    def _row(obj: Connector) -> Any:
        return getattr(obj, "access", None)

    @extend_schema_field(serializers.ChoiceField(choices=Access.choices))
    def get_access(self, obj: Connector) -> str:
        row = self._row(obj)
        return row.access if row else Access.PRIVATE  # no row: private

    def get_tariff(self, obj: Connector) -> int | None:
        row = self._row(obj)
        return row.tariff_id if row else None

    def get_access_id(self, obj: Connector) -> int | None:
        """The access row's id (QR label URLs use it); null until the first edit."""
        row = self._row(obj)
        return row.pk if row else None

    def get_code(self, obj: Connector) -> str | None:
        """The short code of the QR label URL ``/c/<code>``."""
        row = self._row(obj)
        return row.code if row else None

    @extend_schema_field(OwnerRuleSerializer(many=True))
    def get_rules(self, obj: Connector) -> list[dict]:
        row = self._row(obj)
        return OwnerRuleSerializer(row.rules.all(), many=True).data if row else []


class OwnerConnectorAccessIn(serializers.Serializer):
    access = serializers.ChoiceField(choices=Access.choices)
    tariff = serializers.IntegerField(allow_null=True, required=False, help_text="A price id.")
    rules = OwnerRuleSerializer(
        many=True, required=False, help_text="Replaces the time rules, in order (first wins)."
    )


class ConnectorAccessViewSet(
    TariffScopedMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, OrgScopedViewSet
):
    """Access per connector; the id is the connector's. A connector never edited is private."""

    model = Connector
    serializer_class = OwnerConnectorAccessOut

    def scope(self, queryset):
        return (
            queryset.select_related("station", "access")
            .prefetch_related("access__rules")
            .order_by("station__charge_point_id", "connector_id")
        )

    @extend_schema(request=OwnerConnectorAccessIn, responses=OwnerConnectorAccessOut)
    def update(self, request, *args, **kwargs):
        partial = kwargs.get("partial", False)
        connector = self.get_object()
        data = OwnerConnectorAccessIn(data=request.data, partial=partial)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        row = getattr(connector, "access", None)
        tariff = (
            self.tariff_from(values["tariff"])
            if "tariff" in values
            else (row.tariff if row else None)
        )
        rules = values.get("rules")
        owner_services.connector_access_set(
            connector=connector,
            access=values.get("access", row.access if row else Access.PRIVATE),
            tariff=tariff,
            rules=[dict(r) for r in rules] if rules is not None else None,
        )
        return Response(OwnerConnectorAccessOut(self.get_queryset().get(pk=connector.pk)).data)

    @extend_schema(request=OwnerConnectorAccessIn, responses=OwnerConnectorAccessOut)
    def partial_update(self, request, *args, **kwargs):
        return self.update(request, *args, partial=True, **kwargs)


# --- station authentication ---------------------------------------------------------------


class OwnerConfigurationKeyOut(serializers.ModelSerializer):
    class Meta:
        model = ConfigurationKey
        fields = ["key", "value", "applied_value", "applied_at", "last_result"]


class OwnerStationAccessOut(serializers.ModelSerializer):
    station = serializers.IntegerField(source="pk")
    configuration = OwnerConfigurationKeyOut(many=True, read_only=True)

    class Meta:
        model = Station
        fields = [
            "station",
            "charge_point_id",
            "auth_mode",
            "third_party_url",
            "managed_elsewhere",
            "auto_car_detection",
            "time_zone",
            "configuration",
        ]


class OwnerStationAccessIn(serializers.Serializer):
    auth_mode = serializers.ChoiceField(choices=AuthMode.choices)
    third_party_url = serializers.CharField(
        max_length=300, required=False, allow_blank=True, default=""
    )
    auto_car_detection = serializers.BooleanField(required=False)
    time_zone = serializers.CharField(max_length=64, required=False)


class StationAccessViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, OrgScopedViewSet):
    """How each station is unlocked. Changing it sends the configuration the mode needs; the
    result of each key is in ``configuration`` (``last_result``, ``applied_value``)."""

    model = Station
    serializer_class = OwnerStationAccessOut

    def scope(self, queryset):
        return queryset.prefetch_related("configuration").order_by("charge_point_id")

    @extend_schema(request=OwnerStationAccessIn, responses=OwnerStationAccessOut)
    def partial_update(self, request, *args, **kwargs):
        station = self.get_object()
        data = OwnerStationAccessIn(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        owner_services.station_access_settings_set(
            station=station,
            auth_mode=values.get("auth_mode", station.auth_mode),
            third_party_url=values.get("third_party_url", station.third_party_url),
            auto_car_detection=values.get("auto_car_detection", station.auto_car_detection),
            time_zone=values.get("time_zone"),
            requested_by=request.user,
        )
        return Response(OwnerStationAccessOut(self.get_queryset().get(pk=station.pk)).data)


# --- special users ------------------------------------------------------------------------


class OwnerSpecialUserOut(serializers.ModelSerializer):
    account_name = serializers.CharField(source="user.username")

    class Meta:
        model = SpecialUser
        fields = ["id", "account_name", "tariff", "note", "created_at"]


class OwnerSpecialUserIn(serializers.Serializer):
    account_name = serializers.CharField(max_length=150)
    tariff = serializers.IntegerField(
        allow_null=True, required=False, help_text="Individual price id."
    )
    note = serializers.CharField(max_length=120, required=False, allow_blank=True, default="")


class OwnerSpecialUserUpdateIn(serializers.Serializer):
    tariff = serializers.IntegerField(allow_null=True, required=False)
    note = serializers.CharField(max_length=120, required=False, allow_blank=True)


class SpecialUserViewSet(
    TariffScopedMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, OrgScopedViewSet
):
    model = SpecialUser
    serializer_class = OwnerSpecialUserOut

    def scope(self, queryset):
        return queryset.select_related("user")

    @extend_schema(request=OwnerSpecialUserIn, responses={201: OwnerSpecialUserOut})
    def create(self, request, *args, **kwargs):
        data = OwnerSpecialUserIn(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        special = owner_services.special_user_add(
            organization=self.organization,
            account_name=values["account_name"],
            tariff=self.tariff_from(values.get("tariff")),
            note=values["note"],
        )
        return Response(OwnerSpecialUserOut(special).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=OwnerSpecialUserUpdateIn, responses=OwnerSpecialUserOut)
    def partial_update(self, request, *args, **kwargs):
        special = self.get_object()
        data = OwnerSpecialUserUpdateIn(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        tariff = self.tariff_from(values["tariff"]) if "tariff" in values else special.tariff
        special = owner_services.special_user_update(
            special_user=special, tariff=tariff, note=values.get("note")
        )
        return Response(OwnerSpecialUserOut(special).data)

    def destroy(self, request, *args, **kwargs):
        owner_services.special_user_remove(special_user=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- user groups --------------------------------------------------------------------------


class OwnerGroupOut(serializers.ModelSerializer):
    member_count = serializers.IntegerField(read_only=True)

    class Meta:
        model = UserGroup
        fields = ["id", "name", "tariff", "member_count", "created_at"]


class OwnerGroupIn(serializers.Serializer):
    name = serializers.CharField(max_length=80)
    tariff = serializers.IntegerField(allow_null=True, required=False, help_text="Group price.")


class OwnerMemberOut(serializers.ModelSerializer):
    user_id = serializers.IntegerField()
    account_name = serializers.CharField(source="user.username")

    class Meta:
        model = UserGroupMember
        fields = ["user_id", "account_name", "added_at"]


class OwnerMemberIn(serializers.Serializer):
    account_name = serializers.CharField(max_length=150)


class GroupViewSet(
    TariffScopedMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, OrgScopedViewSet
):
    model = UserGroup
    serializer_class = OwnerGroupOut
    parser_classes = [JSONParser, MultiPartParser, FormParser]

    def scope(self, queryset):
        return queryset.annotate(member_count=Count("memberships")).order_by("name")

    def _out(self, group: UserGroup) -> dict:
        return OwnerGroupOut(self.get_queryset().get(pk=group.pk)).data

    @extend_schema(request=OwnerGroupIn, responses={201: OwnerGroupOut})
    def create(self, request, *args, **kwargs):
        data = OwnerGroupIn(data=request.data)
        data.is_valid(raise_exception=True)
        group = owner_services.group_create(
            organization=self.organization,
            name=data.validated_data["name"],
            tariff=self.tariff_from(data.validated_data.get("tariff")),
        )
        return Response(self._out(group), status=status.HTTP_201_CREATED)

    @extend_schema(request=OwnerGroupIn, responses=OwnerGroupOut)
    def partial_update(self, request, *args, **kwargs):
        group = self.get_object()
        data = OwnerGroupIn(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        fields: dict[str, Any] = {}
        if "name" in data.validated_data:
            fields["name"] = data.validated_data["name"]
        if "tariff" in data.validated_data:
            fields["tariff"] = self.tariff_from(data.validated_data["tariff"])
        owner_services.group_update(group=group, **fields)
        return Response(self._out(group))

    def destroy(self, request, *args, **kwargs):
        owner_services.group_delete(group=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        methods=["GET"], request=None, responses=OwnerMemberOut(many=True), summary="List members"
    )
    @extend_schema(
        methods=["POST"],
        request=OwnerMemberIn,
        responses={201: OwnerMemberOut, 200: OwnerMemberOut},
        summary="Add a member by account name (200 when already a member)",
    )
    @action(detail=True, methods=["get", "post"], url_path="members")
    def members(self, request, *args, **kwargs):
        group = self.get_object()
        if request.method == "GET":
            memberships = UserGroupMember.objects.filter(group=group).select_related("user")
            return Response(OwnerMemberOut(memberships, many=True).data)
        data = OwnerMemberIn(data=request.data)
        data.is_valid(raise_exception=True)
        membership, created = owner_services.group_member_add(
            group=group, account_name=data.validated_data["account_name"]
        )
        return Response(
            OwnerMemberOut(membership).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )

    @extend_schema(
        request=None,
        responses={204: None},
        parameters=[OpenApiParameter("user_id", int, OpenApiParameter.PATH)],
        summary="Remove a member",
    )
    @action(detail=True, methods=["delete"], url_path=r"members/(?P<user_id>\d+)")
    def member_remove(self, request, *args, **kwargs):
        group = self.get_object()
        if not owner_services.group_member_remove(group=group, user_id=int(kwargs["user_id"])):
            return Response(
                {"error": "not_found", "detail": "Not a member of this group."},
                status=status.HTTP_404_NOT_FOUND,
            )
        return Response(status=status.HTTP_204_NO_CONTENT)

    @IMPORT_SCHEMA
    @action(detail=True, methods=["post"], url_path="members/import")
    def members_import(self, request, *args, **kwargs):
        group = self.get_object()
        try:
            result = imports.group_members_import(group=group, data=import_data(request))
        except imports.CsvImportError as exc:
            return import_refused(exc)
        return Response(OwnerImportOut(result).data)


# --- cards --------------------------------------------------------------------------------


class OwnerCardOut(serializers.ModelSerializer):
    account_name = serializers.CharField(source="user.username", default=None, read_only=True)
    expires = serializers.SerializerMethodField()

    class Meta:
        model = RfidCard
        fields = ["id", "uid", "account_name", "label", "blocked", "expires", "created_at"]

    @extend_schema_field(serializers.DateField(allow_null=True))
    def get_expires(self, obj: RfidCard) -> Any:
        """The last day the card is valid (null: no expiry)."""
        return owner_services.expiry_date(obj.expires_at)


class OwnerCardIn(serializers.Serializer):
    uid = serializers.CharField(max_length=40, help_text="Hexadecimal; ':' and spaces ignored.")
    account_name = serializers.CharField(
        max_length=150, required=False, allow_blank=True, default=""
    )
    label = serializers.CharField(max_length=80, required=False, allow_blank=True, default="")
    expires = serializers.DateField(
        required=False, allow_null=True, default=None, help_text="Valid through this day."
    )


class OwnerCardUpdateIn(serializers.Serializer):
    label = serializers.CharField(max_length=80, required=False, allow_blank=True)
    blocked = serializers.BooleanField(required=False)
    expires = serializers.DateField(required=False, allow_null=True, help_text="null: no expiry")


class CardViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, OrgScopedViewSet):
    """The organization's cards (drivers' own cards, added by themselves, are not here)."""

    model = RfidCard
    serializer_class = OwnerCardOut
    parser_classes = [JSONParser, MultiPartParser, FormParser]

    def scope(self, queryset):
        return queryset.select_related("user")

    @extend_schema(request=OwnerCardIn, responses={201: OwnerCardOut})
    def create(self, request, *args, **kwargs):
        data = OwnerCardIn(data=request.data)
        data.is_valid(raise_exception=True)
        card = owner_services.card_add(organization=self.organization, **data.validated_data)
        return Response(OwnerCardOut(card).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=OwnerCardUpdateIn, responses=OwnerCardOut)
    def partial_update(self, request, *args, **kwargs):
        card = self.get_object()
        data = OwnerCardUpdateIn(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        card = owner_services.card_update(card=card, **data.validated_data)
        return Response(OwnerCardOut(card).data)

    def destroy(self, request, *args, **kwargs):
        owner_services.card_delete(card=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @IMPORT_SCHEMA
    @action(detail=False, methods=["post"], url_path="import")
    def bulk_import(self, request, *args, **kwargs):
        try:
            result = imports.cards_import(organization=self.organization, data=import_data(request))
        except imports.CsvImportError as exc:
            return import_refused(exc)
        return Response(OwnerImportOut(result).data)


router = SimpleRouter()
router.register("tariffs", TariffViewSet, basename="owner-tariff")
router.register("connector-access", ConnectorAccessViewSet, basename="owner-connector-access")
router.register("station-access", StationAccessViewSet, basename="owner-station-access")
router.register("special-users", SpecialUserViewSet, basename="owner-special-user")
router.register("groups", GroupViewSet, basename="owner-group")
router.register("cards", CardViewSet, basename="owner-card")

org_urlpatterns = router.urls
urlpatterns: list = []
