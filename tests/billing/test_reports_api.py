"""API of invoices and reports: roles, tenant isolation, a driver's own invoices."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from billing import invoices
from billing.models import Invoice, PlatformSettings
from tests.billing.session_factories import free_session, make_session
from tests.factories import UserFactory
from tests.stations.factories import StationFactory

pytestmark = pytest.mark.django_db

MARCH = datetime(2025, 3, 10, 9, 0, tzinfo=UTC)
ORG = "/api/v1/organizations/alpha"
QUERY = "from=2025-03-01&to=2025-03-31"


@pytest.fixture
def station(tenants):
    return StationFactory(organization=tenants.a, name="Garage")


@pytest.fixture
def issued(tenants, station):
    make_session(station, driver=tenants.driver, started_at=MARCH, energy_wh=10_000)
    make_session(station, driver=UserFactory(username="otto"), started_at=MARCH)
    free_session(station, driver=tenants.viewer_a, started_at=MARCH)
    result = invoices.invoices_issue(
        organization=tenants.a, year=2025, month=3, now=datetime(2025, 4, 2, tzinfo=UTC)
    )
    return {invoice.user.username: invoice for invoice in result}


def test_list_and_retrieve_invoices(tenants, issued):
    api = tenants.api(tenants.viewer_a)
    response = api.get(f"{ORG}/invoices/")
    assert response.status_code == 200
    assert {i["account_name"] for i in response.data["results"]} == {"dora", "otto"}
    dora = issued["dora"]
    detail = api.get(f"{ORG}/invoices/{dora.pk}/").data
    assert detail["number"] == dora.number and detail["total"] == "5.00"
    assert detail["vat_amount"] == "0.37" and detail["net_amount"] == "4.63"
    assert detail["organization"] == "alpha" and len(detail["lines"]) == 1
    pdf = api.get(f"{ORG}/invoices/{dora.pk}/pdf/")
    assert pdf.status_code == 200 and pdf["Content-Type"] == "application/pdf"
    assert pdf.content.startswith(b"%PDF")


def test_manager_issues_a_month_viewer_may_not(tenants, station):
    make_session(station, driver=tenants.driver, started_at=MARCH)
    body = {"year": 2025, "month": 3}
    assert tenants.api(tenants.viewer_a).post(f"{ORG}/invoices/issue/", body).status_code == 403
    assert not Invoice.objects.exists()
    response = tenants.api(tenants.manager_a).post(f"{ORG}/invoices/issue/", body)
    assert response.status_code == 201
    [invoice] = response.data["issued"]
    assert (invoice["number"], invoice["account_name"], invoice["total"]) == (1, "dora", "5.00")
    again = tenants.api(tenants.owner_a).post(f"{ORG}/invoices/issue/", body)
    assert again.status_code == 201 and again.data["issued"] == []


def test_issue_refuses_bad_input(tenants):
    api = tenants.api(tenants.owner_a)
    response = api.post(f"{ORG}/invoices/issue/", {"year": 2025, "month": 13})
    assert response.status_code == 400 and response.data["error"] == "invalid"
    assert "month" in response.data["detail"]
    response = api.post(f"{ORG}/invoices/issue/", {"year": 2999, "month": 1})
    assert response.status_code == 400
    assert response.data["error"] == "month_not_over"


def test_revenue_report(tenants, issued):
    response = tenants.api(tenants.viewer_a).get(f"{ORG}/reports/revenue/?{QUERY}")
    assert response.status_code == 200
    data = response.data
    assert (data["from"], data["to"]) == ("2025-03-01", "2025-03-31")
    [total] = data["totals"]
    assert (total["sessions"], total["revenue"], total["free_sessions"]) == (3, "10.00", 1)
    assert total["notional_value"] == "5.00"
    users = {row["label"]: row for row in data["by_user"]}
    assert users["dora"]["revenue"] == "5.00" and users["vic"]["notional_value"] == "5.00"
    assert [row["label"] for row in data["by_station"]] == ["Garage"]
    assert [row["key"] for row in data["by_month"]] == ["2025-03"]
    assert {row["label"] for row in data["by_connector"]} == {"Garage #1"}


def test_revenue_report_bad_period(tenants):
    response = tenants.api(tenants.owner_a).get(
        f"{ORG}/reports/revenue/?from=2025-04-01&to=2025-03-01"
    )
    assert response.status_code == 400
    assert response.data == {
        "error": "invalid_period",
        "detail": "The period ends before it starts.",
    }


def test_payout(tenants, issued):
    PlatformSettings.objects.create(commission_percent=Decimal("10"))
    response = tenants.api(tenants.viewer_a).get(f"{ORG}/reports/payout/?{QUERY}")
    assert response.status_code == 200
    assert response.data["commission_percent"] == "10.00"
    assert response.data["lines"] == [
        {
            "currency": "CHF",
            "revenue": "10.00",
            "commission_percent": "10.00",
            "commission": "1.00",
            "payout": "9.00",
        }
    ]


@pytest.mark.parametrize(
    "path",
    ["invoices/", "invoices/{pk}/", "invoices/{pk}/pdf/", "reports/revenue/", "reports/payout/"],
)
def test_other_owner_gets_404(tenants, issued, path):
    url = f"{ORG}/{path.format(pk=issued['dora'].pk)}"
    assert tenants.api(tenants.owner_b).get(url).status_code == 404
    # And A's invoice id under B's own organization does not exist either.
    if "{pk}" in path:
        beta = f"/api/v1/organizations/beta/{path.format(pk=issued['dora'].pk)}"
        assert tenants.api(tenants.owner_b).get(beta).status_code == 404


def test_other_owner_cannot_issue(tenants, station):
    make_session(station, driver=tenants.driver, started_at=MARCH)
    response = tenants.api(tenants.owner_b).post(
        f"{ORG}/invoices/issue/", {"year": 2025, "month": 3}
    )
    assert response.status_code == 404 and not Invoice.objects.exists()


def test_driver_sees_own_invoices_only(tenants, issued):
    api = tenants.api(tenants.driver)
    response = api.get("/api/v1/me/invoices/")
    assert response.status_code == 200
    assert [i["id"] for i in response.data["results"]] == [issued["dora"].pk]
    assert api.get(f"/api/v1/me/invoices/{issued['dora'].pk}/").status_code == 200
    pdf = api.get(f"/api/v1/me/invoices/{issued['dora'].pk}/pdf/")
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    otto = issued["otto"].pk
    assert api.get(f"/api/v1/me/invoices/{otto}/").status_code == 404
    assert api.get(f"/api/v1/me/invoices/{otto}/pdf/").status_code == 404
    # Being the organization's owner does not make A's drivers' invoices "mine".
    assert tenants.api(tenants.owner_a).get(f"/api/v1/me/invoices/{otto}/").status_code == 404


def test_anonymous_gets_nothing(tenants, issued):
    response = tenants.api(None).get("/api/v1/me/invoices/")
    assert response.status_code in (401, 403)


def test_invoice_list_query_count(tenants, station, django_assert_max_num_queries):
    for _i in range(6):
        make_session(station, driver=UserFactory(), started_at=MARCH)
    invoices.invoices_issue(
        organization=tenants.a, year=2025, month=3, now=datetime(2025, 4, 2, tzinfo=UTC)
    )
    api = tenants.api(tenants.owner_a)
    with django_assert_max_num_queries(6):
        response = api.get(f"{ORG}/invoices/")
    assert response.data["count"] == 6


def test_schema_of_these_endpoints_builds():
    """Only this module's routes: the schema of the whole API is tested elsewhere."""
    from django.urls import include, path
    from drf_spectacular.generators import SchemaGenerator

    from billing import api_reports

    patterns = [
        path("api/v1/organizations/<slug:org>/", include(api_reports.org_urlpatterns)),
        path("api/v1/", include(api_reports.urlpatterns)),
    ]
    schema = SchemaGenerator(patterns=patterns).get_schema(request=None, public=True)
    paths = schema["paths"]
    assert "/api/v1/organizations/{org}/reports/payout/" in paths
    assert "/api/v1/organizations/{org}/invoices/issue/" in paths
    assert "/api/v1/me/invoices/{id}/pdf/" in paths
