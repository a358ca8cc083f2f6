from __future__ import annotations

from django.urls import path

from loadmgmt import views

org_urlpatterns = [
    path("load/", views.OverviewView.as_view(), name="loadmgmt_overview"),
    path("load/chart/", views.ChartView.as_view(), name="loadmgmt_chart"),
    path("load/nodes/add/", views.NodeEditView.as_view(), name="loadmgmt_node_add"),
    path("load/nodes/<int:pk>/", views.NodeEditView.as_view(), name="loadmgmt_node"),
    path(
        "load/nodes/<int:pk>/delete/", views.NodeDeleteView.as_view(), name="loadmgmt_node_delete"
    ),
    path(
        "load/nodes/<int:node>/meter/add/",
        views.MeterAddView.as_view(),
        name="loadmgmt_meter_add",
    ),
    path("load/groups/add/", views.GroupEditView.as_view(), name="loadmgmt_group_add"),
    path("load/groups/<int:pk>/", views.GroupEditView.as_view(), name="loadmgmt_group"),
    path(
        "load/groups/<int:pk>/delete/",
        views.GroupDeleteView.as_view(),
        name="loadmgmt_group_delete",
    ),
    path("load/meters/<int:pk>/", views.MeterEditView.as_view(), name="loadmgmt_meter"),
    path(
        "load/meters/<int:pk>/token/", views.MeterTokenView.as_view(), name="loadmgmt_meter_token"
    ),
    path(
        "load/meters/<int:pk>/delete/",
        views.MeterDeleteView.as_view(),
        name="loadmgmt_meter_delete",
    ),
    path(
        "load/stations/<int:pk>/",
        views.StationLimitsView.as_view(),
        name="loadmgmt_station_limits",
    ),
]
urlpatterns: list = []
