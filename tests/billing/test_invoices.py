"""Monthly invoices: issuing (totals, numbering, idempotence, months in the portal's time
zone), the PDF, the periodic task, and the owner's and driver's pages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing import invoices
from billing.models import BillingProfile, Invoice, InvoiceLine
from billing.services import session_price
from billing.tasks import billing_invoices_issue_last_month
from portal.errors import DomainError
from tests.billing.session_factories import free_session, make_session, pdf_text, tariff
from tests.factories import OrganizationFactory, UserFactory
from tests.stations.factories import StationFactory

pytestmark = pytest.mark.django_db

D = Decimal
MARCH = datetime(2025, 3, 10, 9, 0, tzinfo=UTC)
AFTER_MARCH = datetime(2025, 4, 2, 12, 0, tzinfo=UTC)


def issue(org, year=2025, month=3, now=AFTER_MARCH):
    return invoices.invoices_issue(organization=org, year=year, month=month, now=now)


@pytest.fixture
def station(tenants):
    return StationFactory(organization=tenants.a, name="Garage Zürich")


def test_invoice_is_the_sum_of_its_sessions(tenants, station):
    s1 = make_session(station, driver=tenants.driver, started_at=MARCH, energy_wh=12_345)
    s2 = make_session(
        station,
        driver=tenants.driver,
        started_at=MARCH + timedelta(days=3),
        energy_wh=7_000,
        minutes=150,
        price=tariff("0.45", "1.20"),
    )
    [invoice] = issue(tenants.a)
    expected = [session_price(s).price for s in (s1, s2)]
    assert invoice.total == sum(p.total for p in expected)
    assert invoice.vat_amount == sum(p.vat_amount for p in expected)
    assert invoice.net_amount == invoice.total - invoice.vat_amount
    assert invoice.user == tenants.driver and invoice.currency == "CHF"
    assert (invoice.year, invoice.month, invoice.number) == (2025, 3, 1)
    lines = list(invoice.lines.order_by("session__started_at"))
    assert [line.session_id for line in lines] == [s1.pk, s2.pk]
    assert [line.total for line in lines] == [p.total for p in expected]
    # 12.345 kWh at 0.50 = 6.1725 → 6.15 CHF (0.05 steps).
    assert lines[0].total == D("6.15") and lines[0].energy_kwh == D("12.345")


def test_numbers_are_sequential_per_owner_and_independent(tenants, station):
    other_station = StationFactory(organization=tenants.b)
    drivers = [UserFactory(username=f"driver{i}") for i in range(3)]
    for driver in drivers:
        make_session(station, driver=driver, started_at=MARCH)
    make_session(other_station, driver=drivers[0], started_at=MARCH)
    a_invoices = issue(tenants.a)
    b_invoices = issue(tenants.b)
    assert sorted(i.number for i in a_invoices) == [1, 2, 3]
    assert [i.number for i in b_invoices] == [1]
    # The next month continues each owner's sequence without gaps.
    make_session(station, driver=drivers[0], started_at=datetime(2025, 4, 3, tzinfo=UTC))
    [april] = issue(tenants.a, month=4, now=datetime(2025, 5, 1, 12, tzinfo=UTC))
    assert april.number == 4


def test_issue_twice_issues_nothing_new(tenants, station):
    make_session(station, driver=tenants.driver, started_at=MARCH)
    assert len(issue(tenants.a)) == 1
    assert issue(tenants.a) == []
    assert Invoice.objects.count() == 1 and InvoiceLine.objects.count() == 1


def test_a_session_is_never_on_two_invoices(tenants, station):
    """A straggler (a March session finished after March was invoiced) waits for the next
    invoice: the March invoice is never changed and the session is invoiced once."""
    first = make_session(station, driver=tenants.driver, started_at=MARCH)
    [march] = issue(tenants.a)
    late = make_session(station, driver=tenants.driver, started_at=MARCH + timedelta(days=20))
    assert issue(tenants.a) == []  # March's invoice exists: unchanged
    make_session(station, driver=tenants.driver, started_at=datetime(2025, 4, 5, tzinfo=UTC))
    [april] = issue(tenants.a, month=4, now=datetime(2025, 5, 1, 12, tzinfo=UTC))
    assert list(march.lines.values_list("session_id", flat=True)) == [first.pk]
    assert late.pk in april.lines.values_list("session_id", flat=True)
    assert InvoiceLine.objects.filter(session=first).count() == 1
    assert InvoiceLine.objects.filter(session=late).count() == 1


def test_stragglers_are_looked_for_two_months_back_only(tenants, station):
    january = make_session(
        station, driver=tenants.driver, started_at=datetime(2025, 1, 20, tzinfo=UTC)
    )
    december = make_session(
        station, driver=tenants.driver, started_at=datetime(2024, 12, 20, tzinfo=UTC)
    )
    [march] = issue(tenants.a)  # March, plus January and February stragglers
    assert list(march.lines.values_list("session_id", flat=True)) == [january.pk]
    assert not InvoiceLine.objects.filter(session=december).exists()


def test_free_active_and_anonymous_sessions_are_not_invoiced(tenants, station):
    free_session(station, driver=tenants.driver, started_at=MARCH)
    make_session(station, driver=tenants.driver, started_at=MARCH, status="active")
    make_session(station, driver=None, started_at=MARCH)  # auth mode none: nobody to bill
    make_session(station, driver=tenants.driver, started_at=MARCH, energy_wh=10)  # 0.005 → 0
    make_session(station, driver=tenants.driver, started_at=MARCH, price=tariff("0"))  # free
    assert issue(tenants.a) == []


def test_abandoned_sessions_are_invoiced(tenants, station):
    make_session(station, driver=tenants.driver, started_at=MARCH, status="abandoned")
    assert len(issue(tenants.a)) == 1


def test_one_invoice_per_currency(tenants, station):
    make_session(station, driver=tenants.driver, started_at=MARCH)
    make_session(station, driver=tenants.driver, started_at=MARCH, price=tariff(currency="EUR"))
    issued = issue(tenants.a)
    assert sorted(i.currency for i in issued) == ["CHF", "EUR"]
    assert sorted(i.number for i in issued) == [1, 2]


def test_the_month_is_evaluated_in_the_portal_time_zone(tenants, station):
    # 2025-02-28 23:30 UTC is 2025-03-01 00:30 in Zurich: a March session.
    session = make_session(
        station, driver=tenants.driver, started_at=datetime(2025, 2, 28, 23, 30, tzinfo=UTC)
    )
    assert issue(tenants.a, month=2, now=AFTER_MARCH) == []
    [march] = issue(tenants.a)
    assert march.lines.get().session == session
    # 2025-03-31 22:30 UTC is April 1st 00:30 in Zurich (summer time): not March.
    make_session(
        station, driver=tenants.driver, started_at=datetime(2025, 3, 31, 22, 30, tzinfo=UTC)
    )
    assert issue(tenants.a) == []


def test_a_month_that_has_not_ended_cannot_be_invoiced(tenants):
    with pytest.raises(DomainError, match="once the month has ended"):
        issue(tenants.a, month=4, now=datetime(2025, 4, 30, 12, tzinfo=UTC))
    with pytest.raises(DomainError, match="No such month"):
        issue(tenants.a, month=13)


def test_issuer_comes_from_the_billing_profile_and_is_frozen(tenants, station):
    make_session(station, driver=tenants.driver, started_at=MARCH)
    [fallback] = issue(tenants.a)
    assert (fallback.issuer_name, fallback.issuer_vat_id) == ("Alpha Energy", "")
    BillingProfile.objects.create(
        organization=tenants.a,
        legal_name="Alpha Energy AG",
        address="Bahnhofstrasse 1\n8001 Zürich",
        vat_id="CHE-123.456.789 MWST",
    )
    make_session(station, driver=tenants.driver, started_at=datetime(2025, 4, 3, tzinfo=UTC))
    [april] = issue(tenants.a, month=4, now=datetime(2025, 5, 1, 12, tzinfo=UTC))
    assert april.issuer_name == "Alpha Energy AG"
    assert april.issuer_vat_id == "CHE-123.456.789 MWST"
    assert "8001 Zürich" in april.issuer_address
    fallback.refresh_from_db()
    assert fallback.issuer_name == "Alpha Energy"  # an issued invoice never changes


def test_later_price_changes_do_not_change_issued_amounts(tenants, station):
    session = make_session(station, driver=tenants.driver, started_at=MARCH)
    [invoice] = issue(tenants.a)
    total = invoice.total
    session.energy_wh = 99_000  # a late StopTransaction of an abandoned session, say
    session.save()
    invoice.refresh_from_db()
    assert invoice.total == total == invoice.lines.get().total


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    sessions=st.lists(
        st.tuples(
            st.integers(0, 2),  # driver
            st.integers(0, 80_000),  # Wh
            st.integers(0, 600),  # minutes
            st.sampled_from(["0", "0.35", "0.4999", "0.55"]),  # per kWh
            st.sampled_from(["0", "1.20", "2.5"]),  # per hour
            st.sampled_from(["CHF", "EUR"]),
            st.sampled_from(["0", "7.7", "8.1", "19"]),  # VAT
            st.integers(0, 30 * 24 * 60 - 1),  # start: minutes into March
        ),
        max_size=12,
    )
)
def test_property_invoices_add_up_and_cover_every_paid_session_once(tenants, sessions):
    with transaction.atomic():
        org = OrganizationFactory()
        station = StationFactory(organization=org)
        drivers = [UserFactory() for _ in range(3)]
        made = [
            make_session(
                station,
                driver=drivers[d],
                started_at=datetime(2025, 3, 1, 12, tzinfo=UTC) + timedelta(minutes=start),
                energy_wh=wh,
                minutes=minutes,
                price=tariff(kwh, hour, currency, vat),
            )
            for d, wh, minutes, kwh, hour, currency, vat, start in sessions
        ]
        issued = issue(org)
        assert issue(org) == []
        prices = {s.pk: session_price(s).price for s in made}
        invoiced = {}
        for invoice in issued:
            lines = list(invoice.lines.all())
            assert invoice.total == sum((prices[line.session_id].total for line in lines), D(0))
            assert invoice.vat_amount == sum(
                (prices[line.session_id].vat_amount for line in lines), D(0)
            )
            assert invoice.net_amount == invoice.total - invoice.vat_amount
            assert all(prices[line.session_id].currency == invoice.currency for line in lines)
            for line in lines:
                assert line.session_id not in invoiced
                invoiced[line.session_id] = invoice
        assert set(invoiced) == {pk for pk, price in prices.items() if price.total > 0}
        assert sorted(i.number for i in issued) == list(range(1, len(issued) + 1))
        transaction.set_rollback(True)


# --- PDF -----------------------------------------------------------------------------------


@pytest.fixture
def invoice(tenants, station):
    BillingProfile.objects.create(
        organization=tenants.a,
        legal_name="Łódź Ładowanie Sp. z o.o.",
        address="ul. Piotrkowska 1\n90-001 Łódź",
        vat_id="PL1234567890",
    )
    tenants.driver.first_name, tenants.driver.last_name = "Zoë", "Müller-Łukasz"
    tenants.driver.save()
    make_session(station, driver=tenants.driver, started_at=MARCH, energy_wh=12_345)
    make_session(station, driver=tenants.driver, started_at=MARCH, price=tariff(vat="7.7"))
    return issue(tenants.a)[0]


def test_pdf_renders_with_a_unicode_font_when_there_is_one(invoice):
    data = invoices.invoice_pdf(invoice)
    assert data.startswith(b"%PDF")
    if invoices.pdf_font_path():
        assert b"DejaVu" in data


def test_pdf_with_the_core_font_replaces_what_latin1_cannot_show(invoice):
    """The fallback without a Unicode font: no crash on Ł or ź; readable text remains."""
    data = invoices.invoice_pdf(invoice, core_font=True)
    assert data.startswith(b"%PDF")
    text = pdf_text(data)
    assert "Lódz Ladowanie" in text  # Ł → L, ź → z, ó kept (Latin-1)
    assert "PL1234567890" in text  # the issuer's VAT id
    assert "Zoë Müller-Lukasz" in text
    assert "dora@example.test" in text
    assert "Invoice no. 1" in text and "2025-03" in text
    assert "Garage Zürich" in text
    # VAT per rate and in total; the net.
    assert "VAT 7.7%" in text and "VAT 8.1%" in text
    assert "VAT total" in text and f"{invoice.vat_amount:.2f}" in text
    assert "Net" in text and f"{invoice.net_amount:.2f}" in text
    assert f"{invoice.total:.2f}" in text


def test_long_station_names_are_shortened_to_fit(tenants):
    station = StationFactory(organization=tenants.a, name="Parkhaus " + "sehr lang " * 11)
    make_session(station, driver=tenants.driver, started_at=MARCH)
    [invoice] = issue(tenants.a)
    text = pdf_text(invoices.invoice_pdf(invoice, core_font=True))
    assert "Parkhaus sehr lang" in text and "..." in text
    assert "sehr lang " * 11 not in text


def test_latin1_transliteration():
    assert invoices.latin1("Łódź – Zürich € ☃") == "Lódz - Zürich EUR ?"


# --- periodic task -------------------------------------------------------------------------


def test_task_issues_last_month_for_every_owner(tenants, station, monkeypatch):
    make_session(station, driver=tenants.driver, started_at=MARCH)
    make_session(StationFactory(organization=tenants.b), driver=tenants.driver, started_at=MARCH)
    monkeypatch.setattr(
        "billing.tasks.timezone.now", lambda: datetime(2025, 4, 1, 0, 30, tzinfo=UTC)
    )
    assert billing_invoices_issue_last_month() == 2
    assert set(Invoice.objects.values_list("organization__slug", "number", "month")) == {
        ("alpha", 1, 3),
        ("beta", 1, 3),
    }
    billing_invoices_issue_last_month()  # again: nothing new
    assert Invoice.objects.count() == 2


def test_task_acts_only_in_the_first_days_of_a_month(tenants, station, monkeypatch):
    make_session(station, driver=tenants.driver, started_at=MARCH)
    monkeypatch.setattr("billing.tasks.timezone.now", lambda: datetime(2025, 4, 10, 12, tzinfo=UTC))
    assert billing_invoices_issue_last_month() == 0
    assert not Invoice.objects.exists()


def test_previous_month_in_the_portal_time_zone():
    # 2025-03-31 22:30 UTC is already April 1st in Zurich: last month is March.
    assert invoices.previous_month(datetime(2025, 3, 31, 22, 30, tzinfo=UTC)) == (2025, 3)
    assert invoices.previous_month(datetime(2025, 1, 15, tzinfo=UTC)) == (2024, 12)


# --- pages ---------------------------------------------------------------------------------


def test_owner_lists_issues_and_downloads(tenants, station):
    make_session(station, driver=tenants.driver, started_at=MARCH)
    client = tenants.client(tenants.manager_a)
    page = client.get("/o/alpha/invoices/")
    assert page.status_code == 200 and b"No invoices yet" in page.content
    assert b'name="month"' in page.content  # the issue form
    response = client.post("/o/alpha/invoices/", {"month": "2025-03"})
    assert response.status_code == 302
    invoice = Invoice.objects.get()
    page = client.get("/o/alpha/invoices/")
    assert b"dora" in page.content and f"{invoice.total}".encode() in page.content
    pdf = client.get(f"/o/alpha/invoices/{invoice.pk}.pdf")
    assert pdf.status_code == 200 and pdf["Content-Type"] == "application/pdf"
    assert pdf.content.startswith(b"%PDF")


def test_issue_form_refuses_a_bad_month(tenants):
    client = tenants.client(tenants.owner_a)
    response = client.post("/o/alpha/invoices/", {"month": "2025-13"})
    assert response.status_code == 400 and b"YYYY-MM" in response.content
    response = client.post("/o/alpha/invoices/", {"month": "2999-01"})
    assert response.status_code == 400 and b"once the month has ended" in response.content


def test_viewer_reads_invoices_but_cannot_issue(tenants, station):
    make_session(station, driver=tenants.driver, started_at=MARCH)
    client = tenants.client(tenants.viewer_a)
    page = client.get("/o/alpha/invoices/")
    assert page.status_code == 200 and b'name="month"' not in page.content
    assert client.post("/o/alpha/invoices/", {"month": "2025-03"}).status_code == 403
    assert not Invoice.objects.exists()


def test_other_owner_gets_404_on_invoices(tenants, station):
    make_session(station, driver=tenants.driver, started_at=MARCH)
    [invoice] = issue(tenants.a)
    client = tenants.client(tenants.owner_b)
    assert client.get("/o/alpha/invoices/").status_code == 404
    assert client.get(f"/o/alpha/invoices/{invoice.pk}.pdf").status_code == 404
    # Under B's own organization A's invoice does not exist either.
    assert client.get(f"/o/beta/invoices/{invoice.pk}.pdf").status_code == 404


def test_driver_sees_own_invoices_only(tenants, station):
    make_session(station, driver=tenants.driver, started_at=MARCH)
    other = UserFactory(username="otto")
    make_session(station, driver=other, started_at=MARCH)
    issued = {i.user.username: i for i in issue(tenants.a)}
    client = tenants.client(tenants.driver)
    page = client.get("/me/invoices/")
    assert page.status_code == 200
    assert f"/me/invoices/{issued['dora'].pk}.pdf".encode() in page.content
    assert f"/me/invoices/{issued['otto'].pk}.pdf".encode() not in page.content
    own = client.get(f"/me/invoices/{issued['dora'].pk}.pdf")
    assert own.status_code == 200 and own.content.startswith(b"%PDF")
    assert client.get(f"/me/invoices/{issued['otto'].pk}.pdf").status_code == 404
    # The owner's own "my invoices" are theirs as a driver, not the organization's.
    assert (
        tenants.client(tenants.owner_a).get(f"/me/invoices/{issued['dora'].pk}.pdf").status_code
        == 404
    )


def test_anonymous_is_sent_to_login(tenants):
    response = tenants.client(None).get("/me/invoices/")
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_invoice_list_query_count(tenants, station, django_assert_max_num_queries):
    for i in range(5):
        make_session(station, driver=UserFactory(), started_at=MARCH + timedelta(hours=i))
    issue(tenants.a)
    client = tenants.client(tenants.owner_a)
    with django_assert_max_num_queries(12):
        assert client.get("/o/alpha/invoices/").status_code == 200


# --- concurrency (PostgreSQL: SQLite serializes writers anyway) -----------------------------


@pytest.mark.django_db(transaction=True)
def test_concurrent_runs_number_without_gaps_or_duplicates():
    """Two runs for two months of one owner at the same time: the organization row lock makes
    the second wait, so numbers are 1..n with no duplicate (else one would fail on the
    unique number)."""
    import threading

    from django.db import connection, connections

    if connection.vendor != "postgresql":
        pytest.skip("row locks need PostgreSQL")
    org = OrganizationFactory()
    station = StationFactory(organization=org)
    for month in (3, 4):
        for _i in range(4):
            make_session(
                station, driver=UserFactory(), started_at=datetime(2025, month, 5, tzinfo=UTC)
            )
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def run(month: int) -> None:
        try:
            barrier.wait()
            invoices.invoices_issue(
                organization=org, year=2025, month=month, now=datetime(2025, 6, 1, tzinfo=UTC)
            )
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(month,)) for month in (3, 4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    numbers = sorted(Invoice.objects.filter(organization=org).values_list("number", flat=True))
    assert numbers == list(range(1, 9))


def test_invoice_outlives_its_station(tenants, station):
    """Deleting a station deletes its sessions, never the invoices issued for them."""
    make_session(station, driver=tenants.driver, started_at=MARCH, energy_wh=12_345)
    [invoice] = issue(tenants.a)
    name = station.name
    station.delete()
    invoice.refresh_from_db()
    [line] = invoice.lines.all()
    assert line.session_id is None and line.station_name == name
    assert line.total == invoice.total == D("6.15") and line.vat_percent == D("8.1")
    text = pdf_text(invoices.invoice_pdf(invoice, core_font=True))
    assert name in text and "6.15" in text
