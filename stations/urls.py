from __future__ import annotations

from django.urls import path

from stations import views

org_urlpatterns = [
    path("stations/", views.StationListView.as_view(), name="stations_list"),
    path("stations/add/", views.StationAddView.as_view(), name="stations_add"),
    path("stations/<int:pk>/", views.StationDetailView.as_view(), name="stations_detail"),
    path(
        "stations/<int:pk>/commands/", views.StationCommandView.as_view(), name="stations_command"
    ),
    path("stations/<int:pk>/display/", views.StationDisplayView.as_view(), name="stations_display"),
    path("stations/<int:pk>/section/", views.StationSectionView.as_view(), name="stations_section"),
    path(
        "stations/<int:pk>/advanced/",
        views.StationAdvancedView.as_view(),
        name="stations_advanced",
    ),
    path("stations/<int:pk>/delete/", views.StationDeleteView.as_view(), name="stations_delete"),
    path(
        "stations/<int:pk>/password/", views.StationPasswordView.as_view(), name="stations_password"
    ),
]
urlpatterns: list = []
