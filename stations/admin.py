from django.contrib import admin

from stations.models import (
    ChargingSession,
    ConfigurationKey,
    Connector,
    MeterSample,
    Station,
    StationCommand,
    UnknownChargePoint,
)


class ConnectorInline(admin.TabularInline):
    model = Connector
    extra = 0
    fields = ["connector_id", "status", "error_code", "info", "updated_at"]
    readonly_fields = ["updated_at"]


@admin.register(Station)
class StationAdmin(admin.ModelAdmin):
    list_display = [
        "charge_point_id",
        "name",
        "organization",
        "online",
        "registration_status",
        "vendor",
        "model",
        "firmware_version",
        "last_seen",
    ]
    list_filter = ["online", "registration_status", "enabled", "organization"]
    search_fields = ["charge_point_id", "name", "serial_number", "organization__name"]
    readonly_fields = [
        "password_hash",
        "password_set_at",
        "channel_name",
        "last_seen",
        "connected_at",
        "last_boot_at",
    ]
    inlines = [ConnectorInline]


@admin.register(Connector)
class ConnectorAdmin(admin.ModelAdmin):
    list_display = ["station", "connector_id", "status", "error_code", "updated_at"]
    list_filter = ["status", "error_code"]
    search_fields = ["station__charge_point_id", "station__name"]
    list_select_related = ["station"]


@admin.register(ChargingSession)
class ChargingSessionAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "station",
        "connector_id",
        "id_tag",
        "auth_status",
        "status",
        "started_at",
        "stopped_at",
        "energy_wh",
        "stop_reason",
    ]
    list_filter = ["status", "auth_status", "stop_reason"]
    search_fields = ["=id", "id_tag", "station__charge_point_id"]
    list_select_related = ["station"]
    date_hierarchy = "started_at"


@admin.register(MeterSample)
class MeterSampleAdmin(admin.ModelAdmin):
    list_display = [
        "time",
        "station",
        "connector_id",
        "session",
        "energy_wh",
        "power_w",
        "current_l1",
        "current_l2",
        "current_l3",
        "soc",
    ]
    list_filter = ["context"]
    search_fields = ["station__charge_point_id", "=session__id"]
    raw_id_fields = ["station", "session"]
    list_select_related = ["station"]


@admin.register(StationCommand)
class StationCommandAdmin(admin.ModelAdmin):
    list_display = ["created_at", "station", "action", "status", "requested_by", "finished_at"]
    list_filter = ["status", "action"]
    search_fields = ["station__charge_point_id", "action", "error"]
    list_select_related = ["station", "requested_by"]
    raw_id_fields = ["station", "requested_by"]


@admin.register(ConfigurationKey)
class ConfigurationKeyAdmin(admin.ModelAdmin):
    list_display = ["station", "key", "value", "applied_value", "last_result", "applied_at"]
    list_filter = ["last_result"]
    search_fields = ["station__charge_point_id", "key"]


@admin.register(UnknownChargePoint)
class UnknownChargePointAdmin(admin.ModelAdmin):
    list_display = ["identity", "first_seen", "last_seen", "attempts", "remote_addr"]
    search_fields = ["identity", "remote_addr"]
