from django.contrib import admin

from billing.models import RfidCard


@admin.register(RfidCard)
class RfidCardAdmin(admin.ModelAdmin):
    list_display = ["uid", "label", "organization", "user", "blocked", "expires_at"]
    list_filter = ["blocked", "organization"]
    search_fields = ["uid", "label", "user__username", "organization__name"]
    raw_id_fields = ["user"]
