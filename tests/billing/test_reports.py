"""Owners' reports: revenue by station, connector, user and month; the value of free charging;
CSV and PDF; the payout statement with the platform commission; the report pages and the
billing profile page."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing import reports
from billing.models import BillingProfile, PlatformSettings
from billing.services import session_price
from portal.errors import DomainError
from tests.billing.session_factories import free_session, make_session, pdf_text, tariff
from tests.factories import UserFactory
from tests.stations.factories import StationFactory

pytestmark = pytest.mark.django_db

D = Decimal
MARCH = reports.Period(date(2025, 3, 1), date(2025, 3, 31))
QUERY = "from=2025-03-01&to=2025-03-31"


def at(day: int, hour: int = 10, month: int = 3) -> datetime:
    return datetime(2025, month, day, hour, tzinfo=UTC)


@pytest.fixture
def data(tenants):
    """Two stations of A; dora pays at both, otto charges free at one (value 0.50 CHF/kWh)."""
    garage = StationFactory(organization=tenants.a, name="Garage")
    depot = StationFactory(organization=tenants.a, name="Depot")
    otto = UserFactory(username="otto")
    sessions = [
        make_session(garage, driver=tenants.driver, started_at=at(2), energy_wh=10_000),
        make_session(garage, driver=tenants.driver, started_at=at(3), connector_id=2),
        make_session(depot, driver=tenants.driver, started_at=at(4), energy_wh=20_000),
        free_session(garage, driver=otto, started_at=at(5), energy_wh=8_000),
        make_session(depot, driver=None, started_at=at(6), price=tariff(currency="EUR")),
        # Outside the period or not finished: not counted.
        make_session(garage, driver=tenants.driver, started_at=at(2, month=4)),
        make_session(garage, driver=tenants.driver, started_at=at(7), status="active"),
    ]
    # Another owner's session never shows up in A's report.
    make_session(StationFactory(organization=tenants.b), driver=otto, started_at=at(2))
    return garage, depot, otto, sessions


def rows_by_label(rows):
    return {(r.label, r.currency): r.totals for r in rows}


def test_revenue_by_station_connector_user_and_month(tenants, data):
    report = reports.revenue_report(tenants.a, MARCH)
    stations = rows_by_label(report.by_station)
    assert stations[("Garage", "CHF")].sessions == 3
    assert stations[("Garage", "CHF")].revenue == D("10.00")  # 5.00 + 5.00 + free
    assert stations[("Depot", "CHF")].revenue == D("10.00")
    assert stations[("Depot", "EUR")].revenue == D("5.00")
    connectors = rows_by_label(report.by_connector)
    assert connectors[("Garage #1", "CHF")].sessions == 2
    assert connectors[("Garage #2", "CHF")].revenue == D("5.00")
    users = rows_by_label(report.by_user)
    assert users[("dora", "CHF")].revenue == D("20.00")
    assert users[("otto", "CHF")].revenue == D("0")
    assert users[("(no account)", "EUR")].sessions == 1
    [march_chf, march_eur] = report.by_month
    assert (march_chf.label, march_chf.currency, march_chf.totals.sessions) == ("2025-03", "CHF", 4)
    assert march_eur.currency == "EUR"
    totals = rows_by_label(report.totals)
    assert totals[("Total", "CHF")].revenue == D("20.00")
    assert totals[("Total", "CHF")].energy_kwh == D("48")


def test_free_sessions_count_with_their_notional_value(tenants, data):
    report = reports.revenue_report(tenants.a, MARCH)
    otto = rows_by_label(report.by_user)[("otto", "CHF")]
    # 8 kWh at the notional 0.50 CHF/kWh = 4.00 CHF that the owner gave away.
    assert (otto.sessions, otto.free_sessions, otto.revenue, otto.notional) == (
        1,
        1,
        D("0"),
        D("4.00"),
    )
    assert rows_by_label(report.totals)[("Total", "CHF")].notional == D("4.00")


def test_report_figures_come_from_the_session_price(tenants, data):
    *_rest, sessions = data
    report = reports.revenue_report(tenants.a, MARCH)
    counted = sessions[:4]  # the finished ones in March
    vat = sum(session_price(s).price.vat_amount for s in counted)
    chf = rows_by_label(report.totals)[("Total", "CHF")]
    assert chf.vat == vat and chf.net == chf.revenue - vat


def test_period_days_are_in_the_portal_time_zone(tenants):
    station = StationFactory(organization=tenants.a)
    # March 31st 23:30 Zurich (21:30 UTC) is in March; April 1st 00:30 Zurich is not.
    make_session(
        station, driver=tenants.driver, started_at=datetime(2025, 3, 31, 21, 30, tzinfo=UTC)
    )
    make_session(
        station, driver=tenants.driver, started_at=datetime(2025, 3, 31, 22, 30, tzinfo=UTC)
    )
    report = reports.revenue_report(tenants.a, MARCH)
    assert report.totals[0].totals.sessions == 1


def test_period_validation():
    with pytest.raises(DomainError, match="ends before it starts"):
        reports.Period(date(2025, 3, 2), date(2025, 3, 1))
    with pytest.raises(DomainError, match="too long"):
        reports.Period(date(2020, 1, 1), date(2025, 1, 1))
    with pytest.raises(DomainError, match="from: '2025-3-x' is not a date"):
        reports.Period.parse("2025-3-x", None, date(2025, 3, 15))
    default = reports.Period.parse(None, None, date(2025, 3, 15))
    assert (default.start, default.end) == (date(2025, 3, 1), date(2025, 3, 15))


# --- CSV and PDF ---------------------------------------------------------------------------


def read_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_stations_csv_columns_and_rows(tenants, data):
    text = reports.stations_csv(reports.revenue_report(tenants.a, MARCH))
    assert text.splitlines()[0] == (
        "period_from,period_to,station,connector,currency,sessions,energy_kwh,hours,revenue,"
        "vat,net,free_sessions,notional_value"
    )
    rows = read_csv(text)
    garage = next(r for r in rows if r["station"] == "Garage" and r["connector"] == "")
    assert garage["revenue"] == "10.00" and garage["notional_value"] == "4.00"
    assert garage["free_sessions"] == "1" and garage["period_from"] == "2025-03-01"
    connector = next(r for r in rows if r["station"] == "Garage" and r["connector"] == "2")
    assert connector["sessions"] == "1"


def test_users_csv_columns_and_rows(tenants, data):
    text = reports.users_csv(reports.revenue_report(tenants.a, MARCH))
    assert text.splitlines()[0] == (
        "period_from,period_to,account_name,currency,sessions,energy_kwh,hours,revenue,vat,"
        "net,free_sessions,notional_value"
    )
    rows = {(r["account_name"], r["currency"]): r for r in read_csv(text)}
    assert rows[("dora", "CHF")]["revenue"] == "20.00"
    assert rows[("otto", "CHF")]["notional_value"] == "4.00"
    assert "@" not in text  # account names only: owners never learn drivers' e-mails here


def test_pdfs_render_with_both_fonts(tenants, data):
    garage, *_ = data
    garage.name = "Łódź Dworzec"
    garage.save()
    report = reports.revenue_report(tenants.a, MARCH)
    for core_font in (False, True):
        for render in (reports.stations_pdf, reports.users_pdf):
            assert render(report, core_font=core_font).startswith(b"%PDF")
    text = pdf_text(reports.stations_pdf(report, core_font=True))
    assert "Lódz Dworzec" in text and "Free value" in text and "4.00" in text


# --- payout --------------------------------------------------------------------------------


def test_payout_arithmetic_with_commission(tenants, data):
    PlatformSettings.objects.create(commission_percent=D("7.5"))
    statement = reports.payout_statement(tenants.a, MARCH)
    lines = {line.currency: line for line in statement.lines}
    # CHF 20.00 × 7.5 % = 1.50; payout 18.50. EUR 5.00 × 7.5 % = 0.375 → 0.38 (half up).
    assert (lines["CHF"].revenue, lines["CHF"].commission, lines["CHF"].payout) == (
        D("20.00"),
        D("1.50"),
        D("18.50"),
    )
    assert (lines["EUR"].commission, lines["EUR"].payout) == (D("0.38"), D("4.62"))
    assert statement.percent_display == "7.5"
    text = pdf_text(reports.payout_pdf(statement, core_font=True))
    assert "7.5%" in text and "18.50" in text and "1.50" in text


def test_payout_without_commission_pays_everything(tenants, data):
    [chf, _eur] = reports.payout_statement(tenants.a, MARCH).lines
    assert chf.commission == D("0.00") and chf.payout == chf.revenue


@given(
    revenue=st.decimals(min_value=0, max_value=100_000, places=2),
    percent=st.decimals(min_value=0, max_value=100, places=2),
)
def test_property_payout_plus_commission_is_revenue(revenue, percent):
    line = reports.payout_line(revenue, "CHF", percent)
    assert line.payout + line.commission == revenue
    assert line.commission == line.commission.quantize(D("0.01"))
    assert abs(line.commission - revenue * percent / 100) <= D("0.005")
    assert D(0) <= line.commission <= revenue


# --- pages ---------------------------------------------------------------------------------


def test_viewer_reads_the_report_page(tenants, data):
    client = tenants.client(tenants.viewer_a)
    page = client.get(f"/o/alpha/reports/?{QUERY}")
    assert page.status_code == 200
    html = page.content.decode()
    for section in ("by-station", "by-connector", "by-user", "by-month", "payout"):
        assert f'id="{section}"' in html
    assert "Garage" in html and "otto" in html and "20.00" in html and "4.00" in html


def test_report_page_htmx_returns_the_fragment(tenants, data):
    client = tenants.client(tenants.owner_a)
    page = client.get(f"/o/alpha/reports/?{QUERY}", HTTP_HX_REQUEST="true")
    assert page.status_code == 200
    assert b"<html" not in page.content and b'id="by-station"' in page.content


def test_report_page_bad_period(tenants):
    page = tenants.client(tenants.owner_a).get("/o/alpha/reports/?from=2025-04-01&to=2025-03-01")
    assert page.status_code == 400 and b"ends before it starts" in page.content


@pytest.mark.parametrize(
    ("path", "content_type", "start"),
    [
        ("stations.csv", "text/csv; charset=utf-8", b"period_from,period_to,station"),
        ("users.csv", "text/csv; charset=utf-8", b"period_from,period_to,account_name"),
        ("stations.pdf", "application/pdf", b"%PDF"),
        ("users.pdf", "application/pdf", b"%PDF"),
        ("payout.pdf", "application/pdf", b"%PDF"),
    ],
)
def test_report_downloads(tenants, data, path, content_type, start):
    response = tenants.client(tenants.viewer_a).get(f"/o/alpha/reports/{path}?{QUERY}")
    assert response.status_code == 200
    assert response["Content-Type"] == content_type
    assert response.content.startswith(start)
    assert "attachment" in response["Content-Disposition"]


def test_report_download_bad_period(tenants):
    response = tenants.client(tenants.owner_a).get("/o/alpha/reports/users.csv?from=x")
    assert response.status_code == 400 and b"is not a date" in response.content


@pytest.mark.parametrize("path", ["reports/", "reports/stations.csv", "reports/payout.pdf"])
def test_other_owner_gets_404_on_reports(tenants, data, path):
    assert tenants.client(tenants.owner_b).get(f"/o/alpha/{path}").status_code == 404


def test_report_page_query_count(tenants, data, django_assert_max_num_queries):
    for i in range(10):
        make_session(data[0], driver=UserFactory(), started_at=at(10) + timedelta(hours=i))
    client = tenants.client(tenants.owner_a)
    with django_assert_max_num_queries(12):
        assert client.get(f"/o/alpha/reports/?{QUERY}").status_code == 200


# --- billing profile -----------------------------------------------------------------------

PROFILE = {
    "legal_name": "Alpha Energy AG",
    "address": "Bahnhofstrasse 1\n8001 Zürich",
    "vat_id": "CHE-123.456.789 MWST",
    "iban": "ch93 0076 2011 6238 5295 7",
}


def test_owner_edits_the_billing_profile(tenants):
    client = tenants.client(tenants.owner_a)
    page = client.get("/o/alpha/billing-profile/")
    assert page.status_code == 200 and b"Alpha Energy" in page.content  # the org's name
    response = client.post("/o/alpha/billing-profile/", PROFILE)
    assert response.status_code == 302
    profile = BillingProfile.objects.get(organization=tenants.a)
    assert profile.iban == "CH9300762011623852957"
    assert profile.address == "Bahnhofstrasse 1\n8001 Zürich"


def test_billing_profile_refuses_a_bad_iban(tenants):
    client = tenants.client(tenants.owner_a)
    response = client.post(
        "/o/alpha/billing-profile/", {**PROFILE, "iban": "CH9300762011623852958"}
    )
    assert response.status_code == 400 and b"check digits" in response.content
    assert not BillingProfile.objects.exists()


def test_only_owners_change_the_billing_profile(tenants):
    for user in (tenants.manager_a, tenants.viewer_a):
        client = tenants.client(user)
        page = client.get("/o/alpha/billing-profile/")
        assert page.status_code == 200 and b"Only owners" in page.content
        assert client.post("/o/alpha/billing-profile/", PROFILE).status_code == 403
    assert not BillingProfile.objects.exists()
    assert tenants.client(tenants.owner_b).get("/o/alpha/billing-profile/").status_code == 404
