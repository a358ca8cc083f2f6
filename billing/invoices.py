"""Monthly invoices: issuing (one per driver and currency per owner and month) and the PDF.

Invariants:
- A session is on at most one invoice (``InvoiceLine.session`` is one-to-one), so issuing is
  idempotent: running it twice for the same month issues nothing new.
- Numbers are sequential per organization, without gaps: the organization's row is locked
  (``select_for_update``) while the next number is taken, so two concurrent runs queue.
- Amounts are frozen at issue from ``billing.services.session_price`` (itself computed from
  the session's frozen tariff); the invoice's total, VAT and net are the sums of its lines.
- A month is evaluated in the portal's time zone (``settings.TIME_ZONE``); a session belongs
  to the month it started in.
- Stragglers: a session that ends (or is reported) after its driver's invoice for its month
  was issued cannot go on that invoice any more (amounts are frozen, and there is one invoice
  per driver, month and currency); it goes on the driver's next invoice instead, because each
  run takes the uninvoiced sessions that started in the month or up to ``STRAGGLER_MONTHS``
  before it. The bound keeps each run's work proportional to recent activity: free sessions
  are never invoiced, so an unbounded look-back would re-read them forever.
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import transaction
from django.db.models import Max
from django.utils import timezone
from django.utils.translation import gettext as _
from fpdf import FPDF

from billing import pricing
from billing.authorization import snapshot_tariff
from billing.models import BillingProfile, Invoice, InvoiceLine
from billing.services import session_price
from portal.errors import DomainError
from portal.models import Organization, User
from stations.models import ChargingSession, SessionStatus

FINISHED = (SessionStatus.COMPLETED, SessionStatus.ABANDONED)
STRAGGLER_MONTHS = 2


# --- periods -------------------------------------------------------------------------------


def portal_zone() -> ZoneInfo:
    return ZoneInfo(settings.TIME_ZONE)


def day_start(day: date) -> datetime:
    """Midnight at the start of ``day`` in the portal's time zone (DST-safe)."""
    return datetime.combine(day, time.min, tzinfo=portal_zone())


def month_bounds(year: int, month: int) -> tuple[datetime, datetime]:
    """[start, end) of a calendar month in the portal's time zone."""
    if not (1 <= month <= 12) or not (2000 <= year <= 2999):
        raise DomainError(_("No such month: %(year)s-%(month)s.") % {"year": year, "month": month})
    first = date(year, month, 1)
    following = date(year + (month == 12), month % 12 + 1, 1)
    return day_start(first), day_start(following)


def add_months(year: int, month: int, months: int) -> tuple[int, int]:
    index = year * 12 + month - 1 + months
    return index // 12, index % 12 + 1


def invoice_window(year: int, month: int) -> tuple[datetime, datetime]:
    """Sessions started in [start, end) are candidates for the month's invoices: the month
    itself and the stragglers of the ``STRAGGLER_MONTHS`` before it."""
    _start, end = month_bounds(year, month)
    start, _end = month_bounds(*add_months(year, month, -STRAGGLER_MONTHS))
    return start, end


def previous_month(now: datetime) -> tuple[int, int]:
    """The month before the one ``now`` falls in, in the portal's time zone."""
    first = now.astimezone(portal_zone()).date().replace(day=1)
    last = first - timedelta(days=1)
    return last.year, last.month


# --- issuing -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Priced:
    session: ChargingSession
    price: pricing.PriceBreakdown


def _issuer(organization: Organization) -> tuple[str, str, str]:
    profile = BillingProfile.objects.filter(organization=organization).first()
    if profile is None or not profile.legal_name.strip():
        return organization.name, "", ""
    return profile.legal_name, profile.address, profile.vat_id


def line_description(session: ChargingSession) -> str:
    started = timezone.localtime(session.started_at, portal_zone())
    station = session.station.name or session.station.charge_point_id
    return f"{started:%Y-%m-%d %H:%M} {station} #{session.connector_id}"[:200]


def uninvoiced_sessions(start: datetime, end: datetime):
    """Finished sessions with a driver, started in [start, end), on no invoice yet.
    Private (always free) sessions are left out in SQL; other free ones after pricing."""
    return ChargingSession.objects.filter(
        status__in=FINISHED,
        user_id_ref__isnull=False,
        started_at__gte=start,
        started_at__lt=end,
        invoice_line__isnull=True,
    ).exclude(tariff_snapshot__source=pricing.TariffSource.PRIVATE.value)


def invoice_candidates(organization: Organization, year: int, month: int):
    return (
        uninvoiced_sessions(*invoice_window(year, month))
        .for_tenant(organization)
        .select_related("station")
        .order_by("started_at", "pk")
    )


def invoices_issue(
    *, organization: Organization, year: int, month: int, now: datetime | None = None
) -> list[Invoice]:
    """Issue the month's invoices of one owner: one per driver and currency, for their
    finished sessions with a price above zero that are on no invoice yet. Returns the new
    invoices (none when run again)."""
    now = now or timezone.now()
    _start, end = month_bounds(year, month)
    if end > now:
        raise DomainError(
            _("Invoices for %(year)s-%(month)02d can be issued once the month has ended.")
            % {"year": year, "month": month},
            code="month_not_over",
        )
    issued: list[Invoice] = []
    with transaction.atomic():
        # The lock makes numbering gap-free and sequential under concurrent runs; the second
        # run waits here and then finds the sessions already invoiced.
        Organization.objects.select_for_update().only("pk").get(pk=organization.pk)
        groups: dict[tuple[int, str], list[_Priced]] = defaultdict(list)
        for session in invoice_candidates(organization, year, month):
            price = session_price(session).price
            if price.total > 0:  # free sessions are not invoiced (reports show their value)
                groups[(session.user_id_ref, price.currency)].append(_Priced(session, price))
        if not groups:
            return []
        users = User.objects.in_bulk({user_id for user_id, _currency in groups})
        already = set(
            Invoice.objects.filter(organization=organization, year=year, month=month).values_list(
                "user_id", "currency"
            )
        )
        number = (
            Invoice.objects.filter(organization=organization).aggregate(n=Max("number"))["n"] or 0
        )
        name, address, vat_id = _issuer(organization)

        def order(key: tuple[int, str]) -> tuple[str, str]:
            user = users.get(key[0])
            return (user.username if user else "", key[1])

        for user_id, currency in sorted(groups, key=order):
            lines = groups[(user_id, currency)]
            if user_id not in users or (user_id, currency) in already:
                # A deleted account cannot be invoiced; an existing invoice for the month is
                # never changed: these sessions wait for the driver's next invoice.
                continue
            number += 1
            total = sum((p.price.total for p in lines), pricing.ZERO)
            vat = sum((p.price.vat_amount for p in lines), pricing.ZERO)
            invoice = Invoice.objects.create(
                organization=organization,
                user=users[user_id],
                number=number,
                year=year,
                month=month,
                currency=currency,
                total=total,
                vat_amount=vat,
                net_amount=total - vat,
                issued_at=now,
                issuer_name=name,
                issuer_address=address,
                issuer_vat_id=vat_id,
            )
            InvoiceLine.objects.bulk_create(
                InvoiceLine(
                    invoice=invoice,
                    session=p.session,
                    description=line_description(p.session),
                    started_at=p.session.started_at,
                    station_name=(p.session.station.name or p.session.station.charge_point_id)[
                        :120
                    ],
                    connector_id=p.session.connector_id,
                    vat_percent=p.price.vat_percent,
                    energy_kwh=p.price.energy_kwh,
                    connected_hours=p.price.connected_hours,
                    total=p.price.total,
                    vat_amount=p.price.vat_amount,
                )
                for p in lines
            )
            issued.append(invoice)
    return issued


def organizations_to_invoice(year: int, month: int) -> list[int]:
    """Ids of organizations that may have something to invoice for the month."""
    sessions = uninvoiced_sessions(*invoice_window(year, month))
    return sorted(set(sessions.values_list("station__organization_id", flat=True)))


# --- the owner's billing details --------------------------------------------------------


def normalize_iban(value: str) -> str:
    """``ch93 0076 2011 6238 5295 7`` → ``CH9300762011623852957``; checked with ISO 13616's
    mod-97 so a typo is caught before it reaches a payout. Empty stays empty."""
    iban = "".join((value or "").split()).upper()
    if not iban:
        return ""
    if not re.fullmatch(r"[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}", iban):
        raise DomainError(
            _("An IBAN is a country code, two check digits and 11 to 30 letters or digits."),
            code="invalid_iban",
        )
    digits = "".join(str(int(ch, 36)) for ch in iban[4:] + iban[:4])
    if int(digits) % 97 != 1:
        raise DomainError(_("This IBAN's check digits do not match: a typo?"), code="invalid_iban")
    return iban


def billing_profile_set(
    *,
    organization: Organization,
    legal_name: str,
    address: str = "",
    vat_id: str = "",
    iban: str = "",
) -> BillingProfile:
    """Create or change what the owner's invoices say about the owner. Invoices already issued
    keep the details they were issued with (copied onto each invoice)."""
    legal_name = legal_name.strip()
    if not legal_name:
        raise DomainError(_("The name on invoices cannot be empty."), code="invalid")
    profile, _created = BillingProfile.objects.update_or_create(
        organization=organization,
        defaults={
            "legal_name": legal_name,
            "address": address.strip(),
            "vat_id": vat_id.strip(),
            "iban": normalize_iban(iban),
        },
    )
    return profile


# --- reading -------------------------------------------------------------------------------


def invoices_of_driver(user: User):
    return Invoice.objects.filter(user=user).select_related("organization")


def invoices_of_organization(organization: Organization):
    return Invoice.objects.for_tenant(organization).select_related("user")


def line_vat_percent(line: InvoiceLine) -> Decimal:
    """The VAT rate of a line, as copied at issue (the session's frozen tariff)."""
    if line.vat_percent is not None:
        return line.vat_percent
    tariff, _source, _notional = snapshot_tariff(line.session.tariff_snapshot)
    return tariff.vat_percent


# --- PDF -----------------------------------------------------------------------------------

FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
)
# Letters without a Latin-1 form nor a decomposition to one.
_TRANSLITERATE = {"Ł": "L", "ł": "l", "Đ": "D", "đ": "d", "Œ": "OE", "œ": "oe", "ß": "ss"}
_TRANSLITERATE.update({"–": "-", "—": "-", "‘": "'", "’": "'", "“": '"', "”": '"', "€": "EUR"})


def pdf_font_path() -> str | None:
    """A Unicode TrueType font when the system has one (``BILLING_PDF_FONT`` to choose);
    else None, and PDFs use a core font with text reduced to Latin-1."""
    configured = getattr(settings, "BILLING_PDF_FONT", None)
    for candidate in (configured, *FONT_CANDIDATES):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def latin1(text: str) -> str:
    """Text a core PDF font can show: Latin-1 kept, other letters without their accents
    (``Łódź`` → ``Lodz``), anything else as ``?``."""
    out = []
    for ch in text:
        if ord(ch) < 256:
            out.append(ch)
        elif ch in _TRANSLITERATE:
            out.append(_TRANSLITERATE[ch])
        else:
            base = "".join(
                c
                for c in unicodedata.normalize("NFKD", ch)
                if ord(c) < 256 and not unicodedata.combining(c)
            )
            out.append(base or "?")
    return "".join(out)


class PortalPdf(FPDF):
    """An A4 document with one font family, Unicode when available (see ``pdf_font_path``)."""

    def __init__(self, title: str, *, core_font: bool = False) -> None:
        super().__init__(orientation="portrait", unit="mm", format="A4")
        font_path = None if core_font else pdf_font_path()
        self.set_auto_page_break(auto=True, margin=15)
        self.set_title(title)
        self.set_creator("Charging portal")
        self.unicode = font_path is not None
        if font_path is not None:
            bold = Path(font_path).with_name(Path(font_path).stem + "-Bold.ttf")
            self.add_font("Body", "", font_path)
            self.add_font("Body", "B", str(bold) if bold.is_file() else font_path)
            self.family = "Body"
        else:
            self.family = "Helvetica"
        self.add_page()
        self.body()

    def text_(self, value: object) -> str:
        text = "" if value is None else str(value)
        return text if self.unicode else latin1(text)

    def body(self, size: float = 10) -> None:
        self.set_font(self.family, "", size)

    def heading(self, text: str, size: float = 16) -> None:
        self.set_font(self.family, "B", size)
        self.multi_cell(0, size * 0.5, self.text_(text), new_x="LMARGIN", new_y="NEXT")
        self.ln(2)
        self.body()

    def lines(self, *texts: str, size: float = 10) -> None:
        self.body(size)
        for text in texts:
            if text:
                self.multi_cell(0, 5, self.text_(text), new_x="LMARGIN", new_y="NEXT")

    def table_rows(
        self, header: list[str], rows: list[list[object]], widths: list[float], align: str
    ) -> None:
        """A simple table; ``align`` has one letter per column (L, R, C)."""
        self.body(8)
        self.set_fill_color(230, 230, 230)
        for text, width in zip(header, widths, strict=True):
            self.cell(width, 6, self.fit(self.text_(text), width), border=1, fill=True)
        self.ln()
        for row in rows:
            if self.will_page_break(6):
                self.add_page()
            for value, width, how in zip(row, widths, align, strict=True):
                self.cell(width, 6, self.fit(self.text_(value), width), border=1, align=how)
            self.ln()
        self.body()
        self.ln(3)

    def fit(self, text: str, width: float) -> str:
        """Shortened with "..." to fit a cell: long station names must not spill over."""
        if self.get_string_width(text) <= width - 2:
            return text
        while text and self.get_string_width(text + "...") > width - 2:
            text = text[:-1]
        return text + "..."

    def bytes(self) -> bytes:
        return bytes(self.output())


def format_duration(hours: Decimal) -> str:
    minutes = int((hours * 60).to_integral_value())
    return f"{minutes // 60} h {minutes % 60:02d} min"


def money(amount: Decimal) -> str:
    return f"{amount:,.2f}".replace(",", "'")


def invoice_pdf(invoice: Invoice, *, core_font: bool = False) -> bytes:
    """The invoice as a PDF: issuer, driver, number and period, one line per session, VAT.
    ``core_font`` forces the Latin-1 core font (what happens without a Unicode font)."""
    lines = list(invoice.lines.order_by("started_at", "pk"))
    user = invoice.user
    doc = PortalPdf(_("Invoice %(number)s") % {"number": invoice.number}, core_font=core_font)
    doc.lines(invoice.issuer_name, *invoice.issuer_address.splitlines(), size=11)
    if invoice.issuer_vat_id:
        doc.lines(_("VAT number: %(vat_id)s") % {"vat_id": invoice.issuer_vat_id})
    doc.ln(6)
    doc.lines(
        _("To:"),
        user.get_full_name() or user.username,
        _("Account: %(name)s") % {"name": user.username},
        user.email,
    )
    doc.ln(6)
    doc.heading(_("Invoice no. %(number)s") % {"number": invoice.number})
    issued = timezone.localtime(invoice.issued_at, portal_zone())
    doc.lines(
        _("Period: %(year)s-%(month)02d") % {"year": invoice.year, "month": invoice.month},
        _("Issued: %(date)s") % {"date": f"{issued:%Y-%m-%d}"},
        _("Currency: %(currency)s") % {"currency": invoice.currency},
    )
    doc.ln(4)
    rows = []
    by_rate: dict[Decimal, list[Decimal]] = defaultdict(lambda: [pricing.ZERO, pricing.ZERO])
    for line in lines:
        started = timezone.localtime(line.started_at, portal_zone())
        rate = line_vat_percent(line)
        by_rate[rate][0] += line.total
        by_rate[rate][1] += line.vat_amount
        rows.append(
            [
                f"{started:%Y-%m-%d %H:%M}",
                line.station_name,
                line.connector_id,
                f"{line.energy_kwh:.3f}",
                format_duration(line.connected_hours),
                f"{rate.normalize():f}%",
                money(line.total),
            ]
        )
    doc.table_rows(
        [_("Date"), _("Station"), _("Conn."), _("kWh"), _("Duration"), _("VAT"), _("Amount")],
        rows,
        [30, 58, 12, 20, 26, 16, 28],
        "LLRRRRR",
    )
    summary = [[_("Total (VAT included)"), money(invoice.total)]]
    for rate, (gross, vat) in sorted(by_rate.items()):
        summary.append(
            [
                _("VAT %(rate)s%% included in %(gross)s")
                % {"rate": f"{rate.normalize():f}", "gross": money(gross)},
                money(vat),
            ]
        )
    summary.append([_("VAT total"), money(invoice.vat_amount)])
    summary.append([_("Net (without VAT)"), money(invoice.net_amount)])
    doc.table_rows([_("Summary"), invoice.currency], summary, [120, 40], "LR")
    return doc.bytes()
