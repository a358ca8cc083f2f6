from __future__ import annotations

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView
from rest_framework.routers import SimpleRouter

from portal.api import views
from portal.api.schema_views import SwaggerView

org_router = SimpleRouter()
org_router.register("members", views.MemberViewSet, basename="member")
org_router.register("invitations", views.InvitationViewSet, basename="invitation")


def app_routes(kind: str) -> list:
    """Each app contributes its organization-scoped API routes
    (``<app>.api_urls.org_urlpatterns``) and its top-level ones, e.g. a driver's own data
    under ``me/`` (``<app>.api_urls.urlpatterns``)."""
    from importlib import import_module
    from importlib.util import find_spec

    routes = []
    for app in ("stations", "billing", "loadmgmt", "audit"):
        if find_spec(f"{app}.api_urls") is None:
            continue
        routes += getattr(import_module(f"{app}.api_urls"), kind, [])
    return routes


urlpatterns = [
    *app_routes("urlpatterns"),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", SwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("me/", views.MeView.as_view(), name="api-me"),
    path("auth/token/", views.TokenView.as_view(), name="api-token"),
    path("organizations/", views.OrganizationListView.as_view(), name="api-organizations"),
    path(
        "organizations/<slug:org>/",
        views.OrganizationDetailView.as_view(),
        name="api-organization",
    ),
    path("organizations/<slug:org>/", include(org_router.urls + app_routes("org_urlpatterns"))),
    path(
        "invitations/<str:token>/accept/",
        views.InvitationAcceptView.as_view(),
        name="api-invitation-accept",
    ),
]
