from __future__ import annotations

from django.urls import path

from audit import views

org_urlpatterns = [
    path("audit/", views.AuditTrailView.as_view(), name="audit_trail"),
]
urlpatterns: list = []
