from __future__ import annotations

from importlib import import_module
from importlib.util import find_spec

from django.contrib import admin
from django.urls import include, path

from portal import views
from portal.health import healthz

org_patterns = [
    path("", views.DashboardView.as_view(), name="org_dashboard"),
    path("settings/", views.OrganizationSettingsView.as_view(), name="org_settings"),
    path("delete/", views.OrganizationDeleteView.as_view(), name="org_delete"),
    path("members/", views.MembersView.as_view(), name="org_members"),
    path("members/<int:pk>/", views.MemberChangeView.as_view(), name="org_member_change"),
    path(
        "invitations/<int:pk>/revoke/",
        views.InvitationRevokeView.as_view(),
        name="org_invitation_revoke",
    ),
]

# Each app contributes its organization pages (``<app>.urls.org_urlpatterns``) and its
# top-level pages (``<app>.urls.urlpatterns``).
app_patterns = []
for app in ("stations", "billing", "loadmgmt", "audit"):
    if find_spec(f"{app}.urls") is None:
        continue
    module = import_module(f"{app}.urls")
    org_patterns += getattr(module, "org_urlpatterns", [])
    app_patterns += getattr(module, "urlpatterns", [])

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", healthz, name="healthz"),
    path("favicon.ico", views.favicon, name="favicon"),
    path("admin/", admin.site.urls),
    path("accounts/", include("allauth.urls")),
    path("i18n/", include("django.conf.urls.i18n")),
    path("me/", views.DriverHomeView.as_view(), name="driver_home"),
    path("me/token/", views.ApiTokenView.as_view(), name="api_token_manage"),
    path("organizations/new/", views.OrganizationCreateView.as_view(), name="org_create"),
    path("invitations/<str:token>/", views.invitation_accept, name="invitation_accept"),
    path("o/<slug:org>/", include(org_patterns)),
    path("api/v1/", include("portal.api.urls")),
    *app_patterns,
]

# A URL under /api/ that matches no route answers in the API's JSON error shape.
handler404 = "portal.api.errors.page_not_found"
