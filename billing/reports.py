"""Owners' reports: revenue by station, connector, user and month for a period; station and
user reports as CSV and PDF; the payout statement. Reads only; no writes.

Every figure comes from ``billing.services.session_price`` over the sessions' frozen tariffs,
so a report for a past period never changes when prices do. Sessions count in the period
they started in (days in the portal's time zone, both ends included); only finished sessions
(completed or abandoned) count. Free sessions add no revenue but their notional value (what
they would have cost at the connector's public price) is reported as the value of free
charging. Sums are kept per currency: CHF and EUR are never added together.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from django.utils import timezone
from django.utils.translation import gettext as _

from billing import pricing
from billing.invoices import FINISHED, PortalPdf, day_start, money, portal_zone
from billing.models import PlatformSettings
from billing.services import SessionPrice, session_price
from portal.errors import DomainError
from portal.models import Organization, User
from stations.models import ChargingSession

ZERO = pricing.ZERO
CENT = pricing.CENT
MAX_PERIOD_DAYS = 3 * 366


@dataclass(frozen=True)
class Period:
    """Whole days in the portal's time zone, ``start`` to ``end`` both included."""

    start: date
    end: date

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise DomainError(_("The period ends before it starts."), code="invalid_period")
        if (self.end - self.start).days > MAX_PERIOD_DAYS:
            raise DomainError(
                _("The period is too long: at most three years."), code="invalid_period"
            )

    @property
    def bounds(self) -> tuple[datetime, datetime]:
        return day_start(self.start), day_start(self.end + timedelta(days=1))

    def __str__(self) -> str:
        return f"{self.start:%Y-%m-%d} – {self.end:%Y-%m-%d}"

    @classmethod
    def parse(cls, start: str | None, end: str | None, today: date) -> Period:
        """From ``YYYY-MM-DD`` strings; missing: this month up to today."""

        def one(value: str | None, name: str, default: date) -> date:
            if not value:
                return default
            try:
                return date.fromisoformat(value)
            except ValueError as exc:
                raise DomainError(
                    _("%(name)s: %(value)r is not a date (YYYY-MM-DD).")
                    % {"name": name, "value": value},
                    code="invalid_period",
                ) from exc

        return cls(one(start, "from", today.replace(day=1)), one(end, "to", today))


def today_local(now: datetime | None = None) -> date:
    return (now or timezone.now()).astimezone(portal_zone()).date()


@dataclass
class Totals:
    """Sums over sessions in one currency."""

    sessions: int = 0
    energy_kwh: Decimal = ZERO
    hours: Decimal = ZERO
    revenue: Decimal = ZERO  # what drivers pay, VAT included
    vat: Decimal = ZERO
    free_sessions: int = 0
    notional: Decimal = ZERO  # the value of free charging

    def add(self, price: SessionPrice) -> None:
        value = price.value
        self.sessions += 1
        self.energy_kwh += value.energy_kwh
        self.hours += value.connected_hours
        self.revenue += price.price.total
        self.vat += price.price.vat_amount
        if price.price.total == ZERO:
            self.free_sessions += 1
            if price.notional is not None:
                self.notional += price.notional.total

    @property
    def net(self) -> Decimal:
        return self.revenue - self.vat


@dataclass(frozen=True)
class Row:
    key: str  # stable: a station id, "station:connector", a user id or "YYYY-MM"
    label: str
    currency: str
    totals: Totals

    def as_dict(self) -> dict[str, object]:
        t = self.totals
        return {
            "key": self.key,
            "label": self.label,
            "currency": self.currency,
            "sessions": t.sessions,
            "energy_kwh": str(t.energy_kwh),
            "hours": str(t.hours),
            "revenue": str(t.revenue),
            "vat": str(t.vat),
            "net": str(t.net),
            "free_sessions": t.free_sessions,
            "notional_value": str(t.notional),
        }


@dataclass
class RevenueReport:
    organization: Organization
    period: Period
    by_station: list[Row] = field(default_factory=list)
    by_connector: list[Row] = field(default_factory=list)
    by_user: list[Row] = field(default_factory=list)
    by_month: list[Row] = field(default_factory=list)
    totals: list[Row] = field(default_factory=list)  # one per currency


def priced_sessions(
    organization: Organization, period: Period
) -> Iterator[tuple[ChargingSession, SessionPrice]]:
    """The organization's finished sessions that started in the period, with their prices."""
    start, end = period.bounds
    sessions = (
        ChargingSession.objects.for_tenant(organization)
        .filter(status__in=FINISHED, started_at__gte=start, started_at__lt=end)
        .select_related("station")
        .only(
            "id",
            "station__id",
            "station__name",
            "station__charge_point_id",
            "connector_id",
            "user_id_ref",
            "energy_wh",
            "started_at",
            "stopped_at",
            "tariff_snapshot",
        )
        .order_by("started_at", "pk")
    )
    for session in sessions.iterator(chunk_size=2000):
        yield session, session_price(session)


NO_ACCOUNT = "-"


def revenue_report(organization: Organization, period: Period) -> RevenueReport:
    """Revenue and the value of free charging by station, connector, user and month."""
    groups: dict[str, dict[tuple[str, str], Totals]] = {
        name: {} for name in ("station", "connector", "user", "month", "total")
    }
    labels: dict[tuple[str, str], str] = {}
    user_ids: set[int] = set()
    zone = portal_zone()
    for session, price in priced_sessions(organization, period):
        currency = price.value.currency
        station = session.station
        station_label = station.name or station.charge_point_id
        month = f"{timezone.localtime(session.started_at, zone):%Y-%m}"
        user_key = str(session.user_id_ref) if session.user_id_ref else NO_ACCOUNT
        if session.user_id_ref:
            user_ids.add(session.user_id_ref)
        keys = {
            "station": str(station.pk),
            "connector": f"{station.pk}:{session.connector_id}",
            "user": user_key,
            "month": month,
            "total": "total",
        }
        labels[("station", keys["station"])] = station_label
        labels[("connector", keys["connector"])] = f"{station_label} #{session.connector_id}"
        labels[("month", month)] = month
        for name, key in keys.items():
            groups[name].setdefault((key, currency), Totals()).add(price)
    usernames = dict(User.objects.filter(pk__in=user_ids).values_list("pk", "username"))
    for user_id in user_ids:
        labels[("user", str(user_id))] = usernames.get(user_id, _("(deleted account)"))
    labels[("user", NO_ACCOUNT)] = _("(no account)")
    labels[("total", "total")] = _("Total")

    def rows(name: str, sort_by_label: bool = True) -> list[Row]:
        found = [
            Row(key, labels[(name, key)], currency, totals)
            for (key, currency), totals in groups[name].items()
        ]
        return sorted(
            found, key=lambda r: (r.label.lower() if sort_by_label else r.key, r.currency)
        )

    return RevenueReport(
        organization=organization,
        period=period,
        by_station=rows("station"),
        by_connector=rows("connector"),
        by_user=rows("user"),
        by_month=rows("month", sort_by_label=False),
        totals=rows("total"),
    )


# --- payout --------------------------------------------------------------------------------


def round_cent(amount: Decimal) -> Decimal:
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


@dataclass(frozen=True)
class PayoutLine:
    currency: str
    revenue: Decimal
    commission_percent: Decimal
    commission: Decimal
    payout: Decimal

    def as_dict(self) -> dict[str, str]:
        return {k: str(v) for k, v in self.__dict__.items()}


def payout_line(revenue: Decimal, currency: str, commission_percent: Decimal) -> PayoutLine:
    """Commission = revenue × percent / 100, to the cent half up; payout = revenue − that."""
    commission = round_cent(revenue * commission_percent / Decimal(100))
    return PayoutLine(
        currency=currency,
        revenue=round_cent(revenue),
        commission_percent=commission_percent,
        commission=commission,
        payout=round_cent(revenue) - commission,
    )


@dataclass(frozen=True)
class PayoutStatement:
    organization: Organization
    period: Period
    commission_percent: Decimal
    lines: list[PayoutLine]

    @property
    def percent_display(self) -> str:
        return f"{self.commission_percent.normalize():f}"  # 10.00 → "10", 2.50 → "2.5"


def payout_statement(
    organization: Organization, period: Period, report: RevenueReport | None = None
) -> PayoutStatement:
    """What the owner earned in the period (VAT included, as drivers paid it), what the
    platform keeps (its commission, set by the admin) and what is paid out, per currency."""
    report = report or revenue_report(organization, period)
    percent = Decimal(PlatformSettings.load().commission_percent)
    lines = [payout_line(row.totals.revenue, row.currency, percent) for row in report.totals]
    return PayoutStatement(organization, period, percent, lines)


# --- CSV -----------------------------------------------------------------------------------

CSV_FIELDS = [
    "currency",
    "sessions",
    "energy_kwh",
    "hours",
    "revenue",
    "vat",
    "net",
    "free_sessions",
    "notional_value",
]


def _csv(header: list[str], rows: Iterable[list[object]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def _values(row: Row) -> list[object]:
    data = row.as_dict()
    return [data[name] for name in CSV_FIELDS]


def stations_csv(report: RevenueReport) -> str:
    """One row per station and currency, then per connector (``connector`` filled)."""
    header = ["period_from", "period_to", "station", "connector", *CSV_FIELDS]
    p = report.period
    rows = [[p.start, p.end, r.label, "", *_values(r)] for r in report.by_station]
    for r in report.by_connector:
        station_label, _sep, connector = r.label.rpartition(" #")
        rows.append([p.start, p.end, station_label, connector, *_values(r)])
    return _csv(header, rows)


def users_csv(report: RevenueReport) -> str:
    """One row per driver (account name) and currency."""
    header = ["period_from", "period_to", "account_name", *CSV_FIELDS]
    p = report.period
    return _csv(header, ([p.start, p.end, r.label, *_values(r)] for r in report.by_user))


# --- PDF -----------------------------------------------------------------------------------


def _table_header() -> list[str]:
    return [_("Cur."), _("Sessions"), _("kWh"), _("Hours"), _("Revenue"), _("VAT"), _("Free value")]


_TABLE_WIDTHS = [52, 12, 16, 22, 18, 24, 20, 26]


def _table_rows(rows: list[Row]) -> list[list[object]]:
    return [
        [
            r.label,
            r.currency,
            r.totals.sessions,
            f"{r.totals.energy_kwh:.3f}",
            f"{r.totals.hours:.2f}",
            money(r.totals.revenue),
            money(r.totals.vat),
            money(r.totals.notional),
        ]
        for r in rows
    ]


def _report_pdf(
    report: RevenueReport, title: str, sections: list[tuple[str, list[Row]]], core_font: bool
) -> bytes:
    doc = PortalPdf(title, core_font=core_font)
    doc.heading(title)
    doc.lines(report.organization.name, _("Period: %(period)s") % {"period": report.period})
    doc.lines(
        _("Revenue includes VAT. Free value: what free sessions would have cost at the price.")
    )
    doc.ln(3)
    header = _table_header()
    for heading, rows in sections:
        doc.heading(heading, size=12)
        doc.table_rows([heading, *header], _table_rows(rows), _TABLE_WIDTHS, "LLRRRRRR")
    return doc.bytes()


def stations_pdf(report: RevenueReport, *, core_font: bool = False) -> bytes:
    return _report_pdf(
        report,
        _("Station report"),
        [
            (_("Stations"), report.by_station),
            (_("Connectors"), report.by_connector),
            (_("Total"), report.totals),
        ],
        core_font,
    )


def users_pdf(report: RevenueReport, *, core_font: bool = False) -> bytes:
    return _report_pdf(
        report,
        _("User report"),
        [
            (_("Drivers"), report.by_user),
            (_("Months"), report.by_month),
            (_("Total"), report.totals),
        ],
        core_font,
    )


def payout_pdf(statement: PayoutStatement, *, core_font: bool = False) -> bytes:
    title = _("Payout statement")
    doc = PortalPdf(title, core_font=core_font)
    doc.heading(title)
    doc.lines(
        statement.organization.name,
        _("Period: %(period)s") % {"period": statement.period},
        _("Platform commission: %(percent)s%%") % {"percent": statement.percent_display},
    )
    doc.ln(3)
    doc.table_rows(
        [_("Currency"), _("Revenue"), _("Commission"), _("Payout")],
        [
            [line.currency, money(line.revenue), money(line.commission), money(line.payout)]
            for line in statement.lines
        ]
        or [["-", money(ZERO), money(ZERO), money(ZERO)]],
        [30, 50, 50, 50],
        "LRRR",
    )
    doc.lines(_("Revenue as drivers paid it, VAT included; payout = revenue - commission."))
    return doc.bytes()
