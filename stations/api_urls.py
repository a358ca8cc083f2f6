from __future__ import annotations

from rest_framework.routers import SimpleRouter

from stations import api

router = SimpleRouter()
router.register("stations", api.StationViewSet, basename="station")
router.register("sessions", api.SessionViewSet, basename="session")
router.register("commands", api.CommandViewSet, basename="command")

org_urlpatterns = router.urls
