from django.contrib import admin

from billing.models import (
    AccessRule,
    AppTag,
    BillingProfile,
    ConnectorAccess,
    Invoice,
    InvoiceLine,
    PlatformSettings,
    RfidCard,
    SpecialUser,
    Tariff,
    UserGroup,
    UserGroupMember,
    Vehicle,
)


@admin.register(RfidCard)
class RfidCardAdmin(admin.ModelAdmin):
    list_display = ["uid", "label", "organization", "user", "blocked", "expires_at"]
    list_filter = ["blocked", "organization"]
    search_fields = ["uid", "label", "user__username", "organization__name"]
    raw_id_fields = ["user"]


@admin.register(Vehicle)
class VehicleAdmin(admin.ModelAdmin):
    list_display = ["car_id", "label", "user", "created_at"]
    search_fields = ["car_id", "label", "user__username"]
    raw_id_fields = ["user"]


@admin.register(AppTag)
class AppTagAdmin(admin.ModelAdmin):
    list_display = ["id_tag", "user"]
    search_fields = ["id_tag", "user__username"]
    raw_id_fields = ["user"]


@admin.register(Tariff)
class TariffAdmin(admin.ModelAdmin):
    list_display = ["name", "organization", "per_kwh", "per_hour", "currency", "vat_percent"]
    list_filter = ["currency", "organization"]
    search_fields = ["name", "organization__name"]


class AccessRuleInline(admin.TabularInline):
    model = AccessRule
    extra = 0


@admin.register(ConnectorAccess)
class ConnectorAccessAdmin(admin.ModelAdmin):
    list_display = ["connector", "access", "tariff"]
    list_filter = ["access"]
    search_fields = ["connector__station__charge_point_id", "connector__station__name"]
    inlines = [AccessRuleInline]
    raw_id_fields = ["connector"]


@admin.register(AccessRule)
class AccessRuleAdmin(admin.ModelAdmin):
    list_display = ["connector_access", "weekdays", "start_time", "end_time", "access"]
    list_filter = ["access"]
    search_fields = ["connector_access__connector__station__charge_point_id"]


@admin.register(SpecialUser)
class SpecialUserAdmin(admin.ModelAdmin):
    list_display = ["user", "organization", "tariff", "note"]
    list_filter = ["organization"]
    search_fields = ["user__username", "organization__name", "note"]
    raw_id_fields = ["user"]


class UserGroupMemberInline(admin.TabularInline):
    model = UserGroupMember
    extra = 0
    raw_id_fields = ["user"]


@admin.register(UserGroup)
class UserGroupAdmin(admin.ModelAdmin):
    list_display = ["name", "organization", "tariff"]
    list_filter = ["organization"]
    search_fields = ["name", "organization__name"]
    inlines = [UserGroupMemberInline]


@admin.register(UserGroupMember)
class UserGroupMemberAdmin(admin.ModelAdmin):
    list_display = ["user", "group", "added_at"]
    search_fields = ["user__username", "group__name"]
    raw_id_fields = ["user"]


@admin.register(BillingProfile)
class BillingProfileAdmin(admin.ModelAdmin):
    list_display = ["legal_name", "organization", "vat_id"]
    search_fields = ["legal_name", "organization__name", "vat_id"]


@admin.register(PlatformSettings)
class PlatformSettingsAdmin(admin.ModelAdmin):
    list_display = ["commission_percent"]
    search_fields = ["commission_percent"]

    def has_add_permission(self, request) -> bool:
        return not PlatformSettings.objects.exists()


class InvoiceLineInline(admin.TabularInline):
    model = InvoiceLine
    extra = 0
    raw_id_fields = ["session"]


@admin.register(Invoice)
class InvoiceAdmin(admin.ModelAdmin):
    list_display = ["number", "organization", "user", "year", "month", "total", "currency"]
    list_filter = ["organization", "year", "currency"]
    search_fields = ["number", "user__username", "organization__name"]
    inlines = [InvoiceLineInline]
    raw_id_fields = ["user"]


@admin.register(InvoiceLine)
class InvoiceLineAdmin(admin.ModelAdmin):
    list_display = ["invoice", "description", "energy_kwh", "total"]
    search_fields = ["description", "invoice__number"]
    raw_id_fields = ["session", "invoice"]
