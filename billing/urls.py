"""Pages of access and prices: the owner's (organization-scoped), the driver's (``/me/...``),
QR label pages (``/c/<code>``), invoices and reports."""

from __future__ import annotations

from billing import urls_driver, urls_owner, urls_reports

org_urlpatterns = [
    *urls_owner.org_urlpatterns,
    *urls_driver.org_urlpatterns,
    *urls_reports.org_urlpatterns,
]
urlpatterns = [*urls_driver.urlpatterns, *urls_reports.urlpatterns]
