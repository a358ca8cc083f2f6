"""The owner's "Access & prices" pages, under ``/o/<org>/access/``."""

from __future__ import annotations

from django.urls import path

from billing import owner_views as views

org_urlpatterns = [
    path("access/", views.AccessOverviewView.as_view(), name="billing_access"),
    path(
        "access/stations/<int:pk>/",
        views.StationAccessView.as_view(),
        name="billing_station_access",
    ),
    path(
        "access/connectors/<int:pk>/",
        views.ConnectorAccessView.as_view(),
        name="billing_connector_access",
    ),
    path("access/tariffs/", views.TariffListView.as_view(), name="billing_tariffs"),
    path("access/tariffs/<int:pk>/", views.TariffEditView.as_view(), name="billing_tariff"),
    path("access/special-users/", views.SpecialUsersView.as_view(), name="billing_special_users"),
    path(
        "access/special-users/<int:pk>/",
        views.SpecialUserView.as_view(),
        name="billing_special_user",
    ),
    path("access/groups/", views.GroupsView.as_view(), name="billing_groups"),
    path("access/groups/<int:pk>/", views.GroupView.as_view(), name="billing_group"),
    path("access/cards/", views.CardsView.as_view(), name="billing_cards"),
    path("access/cards/<int:pk>/", views.CardView.as_view(), name="billing_card"),
]
urlpatterns: list = []
