from django.contrib import admin

from loadmgmt.models import (
    ConnectorSetpoint,
    LoadGroup,
    LoadGroupMember,
    Meter,
    MeterReading,
    NodeLoadSample,
    StationInputs,
    StationLimits,
    TreeNode,
)


@admin.register(StationLimits)
class StationLimitsAdmin(admin.ModelAdmin):
    list_display = [
        "station",
        "min_current",
        "max_current",
        "installer_max",
        "phase_rotation",
        "can_switch_phases",
        "fail_safe_current",
        "shedding_inputs",
        "priority",
    ]
    list_filter = ["phase_rotation", "can_switch_phases", "shedding_inputs"]
    search_fields = [
        "station__charge_point_id",
        "station__name",
        "station__organization__name",
        "station__organization__slug",
    ]
    raw_id_fields = ["station"]


class ChildNodeInline(admin.TabularInline):
    model = TreeNode
    fk_name = "parent"
    fields = ["name", "limit_l1", "limit_l2", "limit_l3"]
    extra = 0
    show_change_link = True


@admin.register(TreeNode)
class TreeNodeAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "organization",
        "parent",
        "limit_l1",
        "limit_l2",
        "limit_l3",
        "safety_margin",
        "fallback_limit",
        "shed_signal",
        "shed_since",
    ]
    list_filter = ["shed_signal", "organization"]
    search_fields = ["name", "organization__name", "organization__slug"]
    raw_id_fields = ["parent"]
    inlines = [ChildNodeInline]


class MemberInline(admin.TabularInline):
    model = LoadGroupMember
    raw_id_fields = ["station"]
    extra = 0


@admin.register(LoadGroup)
class LoadGroupAdmin(admin.ModelAdmin):
    list_display = ["name", "organization", "node", "max_current", "failure_action"]
    list_filter = ["failure_action", "organization"]
    search_fields = ["name", "organization__name", "organization__slug"]
    raw_id_fields = ["node"]
    inlines = [MemberInline]


@admin.register(LoadGroupMember)
class LoadGroupMemberAdmin(admin.ModelAdmin):
    list_display = ["station", "group"]
    list_filter = ["group__organization"]
    search_fields = ["station__charge_point_id", "group__name", "group__organization__name"]
    raw_id_fields = ["station", "group"]


@admin.register(Meter)
class MeterAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "node",
        "mqtt_topic",
        "stale_after",
        "last_current_l1",
        "last_current_l2",
        "last_current_l3",
        "last_power_w",
        "last_reading_at",
    ]
    list_filter = ["node__organization"]
    search_fields = ["name", "mqtt_topic", "node__name", "node__organization__name"]
    raw_id_fields = ["node"]
    readonly_fields = ["token_set_at"]


@admin.register(MeterReading)
class MeterReadingAdmin(admin.ModelAdmin):
    list_display = ["meter", "time", "l1", "l2", "l3", "power_w"]
    list_filter = ["meter__node__organization"]
    search_fields = ["meter__name", "meter__mqtt_topic", "meter__node__organization__name"]
    raw_id_fields = ["meter"]
    date_hierarchy = "time"
    list_select_related = ["meter"]


@admin.register(ConnectorSetpoint)
class ConnectorSetpointAdmin(admin.ModelAdmin):
    list_display = [
        "station",
        "connector_id",
        "target_current",
        "target_phases",
        "decision",
        "accepted_current",
        "accepted_valid_to",
        "unresponsive_since",
        "unresponsive_status",
    ]
    list_filter = ["decision", "station__organization"]
    search_fields = ["station__charge_point_id", "station__name", "reason"]
    raw_id_fields = ["station", "sent_command"]


@admin.register(StationInputs)
class StationInputsAdmin(admin.ModelAdmin):
    list_display = ["station", "in1", "in2", "since", "reported_at"]
    list_filter = ["in1", "in2"]
    search_fields = ["station__charge_point_id", "station__name"]
    raw_id_fields = ["station"]


@admin.register(NodeLoadSample)
class NodeLoadSampleAdmin(admin.ModelAdmin):
    list_display = ["organization", "node_key", "time", "planned", "limit"]
    list_filter = ["organization"]
    search_fields = ["node_key", "organization__name"]
    date_hierarchy = "time"
