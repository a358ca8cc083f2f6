"""Pages of invoices and reports: the owner's under ``/o/<org>/``, a driver's under ``/me/``."""

from __future__ import annotations

from django.urls import path

from billing import reports_views as views


def _file(route: str, kind: str, fmt: str, name: str):
    return path(route, views.ReportFileView.as_view(kind=kind, fmt=fmt), name=name)


org_urlpatterns = [
    path("reports/", views.ReportsView.as_view(), name="billing_reports"),
    _file("reports/stations.csv", "stations", "csv", "billing_report_stations_csv"),
    _file("reports/stations.pdf", "stations", "pdf", "billing_report_stations_pdf"),
    _file("reports/users.csv", "users", "csv", "billing_report_users_csv"),
    _file("reports/users.pdf", "users", "pdf", "billing_report_users_pdf"),
    _file("reports/payout.pdf", "payout", "pdf", "billing_report_payout_pdf"),
    path("invoices/", views.InvoiceListView.as_view(), name="billing_invoices"),
    path("invoices/<int:pk>.pdf", views.InvoicePdfView.as_view(), name="billing_invoice_pdf"),
    path("billing-profile/", views.BillingProfileView.as_view(), name="billing_profile"),
]
urlpatterns = [
    path("me/invoices/", views.MyInvoicesView.as_view(), name="billing_my_invoices"),
    path(
        "me/invoices/<int:pk>.pdf", views.MyInvoicePdfView.as_view(), name="billing_my_invoice_pdf"
    ),
]
