from __future__ import annotations

from django.urls import path
from rest_framework.routers import SimpleRouter

from loadmgmt import api

router = SimpleRouter()
router.register("load-nodes", api.NodeViewSet, basename="load-node")
router.register("load-groups", api.GroupViewSet, basename="load-group")
router.register("meters", api.MeterViewSet, basename="meter")
router.register("station-limits", api.StationLimitsViewSet, basename="station-limits")

org_urlpatterns = router.urls
urlpatterns = [
    path(
        "meters/<int:meter_id>/readings",
        api.MeterReadingView.as_view(),
        name="api-meter-readings",
    ),
]
