"""API of access and prices: organization-scoped routes for owners, ``me/`` routes for drivers."""

from __future__ import annotations

from billing import api_driver, api_owner, api_reports

org_urlpatterns = [
    *api_owner.org_urlpatterns,
    *api_driver.org_urlpatterns,
    *api_reports.org_urlpatterns,
]
urlpatterns = [*api_driver.urlpatterns, *api_reports.urlpatterns]
