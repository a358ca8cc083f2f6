"""A driver's pages (``/me/...``), the public QR page of a connector (``/c/<code>/``) and the
owner's QR label download (organization-scoped)."""

from __future__ import annotations

from django.urls import path

from billing import driver_views as views

org_urlpatterns = [
    path(
        "access/labels/<int:pk>/",
        views.ConnectorLabelView.as_view(),
        name="billing_connector_label",
    ),
]

urlpatterns = [
    path("me/charging/", views.DriverChargingView.as_view(), name="billing_driver"),
    path("me/cards/", views.CardsView.as_view(), name="billing_driver_cards"),
    path("me/cards/<int:pk>/", views.CardChangeView.as_view(), name="billing_driver_card"),
    path("me/vehicles/", views.VehiclesView.as_view(), name="billing_driver_vehicles"),
    path(
        "me/vehicles/<int:pk>/remove/",
        views.VehicleRemoveView.as_view(),
        name="billing_driver_vehicle_remove",
    ),
    path("me/stations/", views.StationsView.as_view(), name="billing_driver_stations"),
    path("me/sessions/", views.SessionsView.as_view(), name="billing_driver_sessions"),
    path("me/sessions.csv", views.SessionsCsvView.as_view(), name="billing_driver_sessions_csv"),
    path("me/sessions/<int:pk>/stop/", views.StopView.as_view(), name="billing_driver_stop"),
    path("me/start/", views.StartView.as_view(), name="billing_driver_start"),
    path("me/commands/<int:pk>/", views.CommandView.as_view(), name="billing_driver_command"),
    path("c/<str:code>/", views.QrView.as_view(), name="billing_qr"),
]
