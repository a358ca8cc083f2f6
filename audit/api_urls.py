from __future__ import annotations

from rest_framework.routers import SimpleRouter

from audit import api

router = SimpleRouter()
router.register("audit", api.AuditViewSet, basename="audit-entry")

org_urlpatterns = router.urls
urlpatterns: list = []
