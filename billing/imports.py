"""CSV imports: an owner's RFID cards in bulk, and user-group members.

Parsing is pure (text in, rows and errors out); the services check the rows against the
database and write everything in one transaction, or nothing: one bad row refuses the whole
file, and the refusal lists every bad row as "Row 3, column uid: ...". Rows are numbered as a
spreadsheet shows them (the header, when there is one, is row 1). The delimiter may be a comma,
a semicolon (what spreadsheets write in Swiss and German locales) or a tab.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models.functions import Lower
from django.utils.translation import gettext as _

from billing import owner_services
from billing.models import RfidCard, UserGroup, UserGroupMember
from portal.errors import DomainError
from portal.models import Organization, User

MAX_BYTES = 1_000_000
MAX_ROWS = 10_000
CARD_COLUMNS = ("uid", "account", "label", "expires")
# Header spellings accepted for each column (lower-case, spaces/underscores ignored).
ALIASES = {
    "uid": "uid",
    "carduid": "uid",
    "card": "uid",
    "account": "account",
    "accountname": "account",
    "username": "account",
    "user": "account",
    "label": "label",
    "name": "label",
    "expires": "expires",
    "expiry": "expires",
    "expiresat": "expires",
    "expireson": "expires",
    "validuntil": "expires",
}


@dataclass(frozen=True)
class RowError:
    row: int
    column: str | None
    message: str

    def __str__(self) -> str:
        if self.row == 0:
            return self.message
        if self.column:
            return _("Row %(row)s, column %(col)s: %(msg)s") % {
                "row": self.row,
                "col": self.column,
                "msg": self.message,
            }
        return _("Row %(row)s: %(msg)s") % {"row": self.row, "msg": self.message}

    def as_dict(self) -> dict:
        return {"row": self.row, "column": self.column, "message": self.message}


class CsvImportError(DomainError):
    """The file was refused; ``errors`` lists every problem found (nothing was imported)."""

    code = "invalid_csv"

    def __init__(self, errors: list[RowError]) -> None:
        self.errors = errors
        super().__init__(
            _("Nothing was imported. %(errors)s")
            % {"errors": " ".join(f"{e}" if str(e).endswith(".") else f"{e}." for e in errors)}
        )


@dataclass
class ImportResult:
    created: int = 0
    unchanged: int = 0
    rows: list = field(default_factory=list)


def decode(data: bytes | str) -> str:
    """Text of an uploaded file: UTF-8 (with or without BOM), else a clear refusal."""
    if isinstance(data, str):
        return data
    if len(data) > MAX_BYTES:
        raise CsvImportError([RowError(0, None, _("The file is larger than 1 MB."))])
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CsvImportError(
            [RowError(0, None, _("The file is not UTF-8 text; save it as CSV (UTF-8)."))]
        ) from exc


def _delimiter(first_line: str) -> str:
    counts = {d: first_line.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def read_rows(text: str) -> list[tuple[int, list[str]]]:
    """(row number, stripped cells) of every non-empty row."""
    text = text.lstrip("\ufeff")
    if not text.strip():
        raise CsvImportError([RowError(0, None, _("The file is empty."))])
    first = text.splitlines()[0] if text.splitlines() else ""
    reader = csv.reader(io.StringIO(text), delimiter=_delimiter(first))
    rows = []
    try:
        for cells in reader:
            if any(c.strip() for c in cells):
                rows.append((reader.line_num, [c.strip() for c in cells]))
            if len(rows) > MAX_ROWS:
                raise CsvImportError(
                    [
                        RowError(
                            0, None, _("More than %(n)s rows: split the file.") % {"n": MAX_ROWS}
                        )
                    ]
                )
    except csv.Error as exc:
        raise CsvImportError([RowError(reader.line_num, None, str(exc))]) from exc
    return rows


def _column_name(cell: str) -> str | None:
    return ALIASES.get(cell.lower().replace(" ", "").replace("_", "").replace("-", ""))


def _header(
    rows: list[tuple[int, list[str]]], columns: tuple[str, ...], key: str
) -> tuple[list[str], list[tuple[int, list[str]]], list[RowError]]:
    """The column order and the data rows. The first row is a header when one of its cells
    names the ``key`` column; without a header the columns are in ``columns`` order."""
    if not rows:
        return list(columns), [], [RowError(0, None, _("The file has no rows."))]
    number, first = rows[0]
    if key not in [_column_name(c) for c in first]:
        return list(columns), rows, []
    order: list[str] = []
    errors = []
    for cell in first:
        name = _column_name(cell)
        if name not in columns:
            errors.append(
                RowError(
                    number,
                    cell,
                    _("unknown column; the columns are %(cols)s.") % {"cols": ", ".join(columns)},
                )
            )
        elif name in order:
            errors.append(RowError(number, cell, _("this column appears twice.")))
        order.append(name or "")
    return order, rows[1:], errors


def _parse_date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise ValidationError(
            _("'%(v)s' is not a date: use YYYY-MM-DD, e.g. 2026-12-31.") % {"v": value}
        ) from exc


# --- cards --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CardRow:
    row: int
    uid: str
    account: str
    label: str
    expires: date | None


def parse_cards(text: str) -> tuple[list[CardRow], list[RowError]]:
    """Rows of ``uid, account, label, expires`` (only ``uid`` required); the checks that need
    no database: UID format, duplicates within the file, label length, date format."""
    order, rows, errors = _header(read_rows(text), CARD_COLUMNS, "uid")
    cards: list[CardRow] = []
    seen: dict[str, int] = {}
    for number, cells in rows:
        if len(cells) > len(order):
            errors.append(
                RowError(
                    number,
                    None,
                    _("%(n)s values, but only %(m)s columns (%(cols)s).")
                    % {"n": len(cells), "m": len(order), "cols": ", ".join(order)},
                )
            )
            continue
        values = dict(zip(order, cells, strict=False))
        row_errors: list[RowError] = []
        uid = ""
        try:
            uid = owner_services.uid_clean(values.get("uid", ""))
        except ValidationError as exc:
            row_errors.append(RowError(number, "uid", exc.messages[0]))
        if uid and uid in seen:
            row_errors.append(
                RowError(
                    number,
                    "uid",
                    _("%(uid)s appears twice in the file (also row %(other)s).")
                    % {"uid": uid, "other": seen[uid]},
                )
            )
        elif uid:
            seen[uid] = number
        label = values.get("label", "")
        if len(label) > 80:
            row_errors.append(RowError(number, "label", _("longer than 80 characters.")))
        expires = None
        if values.get("expires"):
            try:
                expires = _parse_date(values["expires"])
            except ValidationError as exc:
                row_errors.append(RowError(number, "expires", exc.messages[0]))
        if row_errors:
            errors += row_errors
        else:
            cards.append(CardRow(number, uid, values.get("account", ""), label, expires))
    return cards, errors


def _users_by_name(names: Iterable[str]) -> dict[str, User]:
    """Account names (matched case-insensitively) to users, in one query."""
    wanted = {n.lower() for n in names if n}
    if not wanted:
        return {}
    users = User.objects.annotate(lname=Lower("username")).filter(lname__in=wanted)
    return {u.lname: u for u in users.only("id", "username")}


def cards_import(*, organization: Organization, data: bytes | str) -> ImportResult:
    """Add the organization's cards from CSV, all or nothing. A UID registered anywhere is
    refused without saying whose card it is."""
    cards, errors = parse_cards(decode(data))
    users = _users_by_name(c.account for c in cards)
    taken = set(
        RfidCard.objects.filter(uid__in=[c.uid for c in cards]).values_list("uid", flat=True)
    )
    for card in cards:
        if card.uid in taken:
            errors.append(RowError(card.row, "uid", str(owner_services.CARD_TAKEN)))
        if card.account and card.account.lower() not in users:
            errors.append(
                RowError(
                    card.row, "account", _("No account named '%(name)s'.") % {"name": card.account}
                )
            )
    if not cards and not errors:
        errors.append(RowError(0, None, _("The file has no cards.")))
    if errors:
        raise CsvImportError(sorted(errors, key=lambda e: (e.row, e.column or "")))
    with transaction.atomic():
        # One by one, not bulk_create: each card is an entry in the audit trail (bulk inserts
        # send no signals); all or nothing still, in this transaction.
        created = [
            RfidCard.objects.create(
                organization=organization,
                uid=c.uid,
                user=users.get(c.account.lower()) if c.account else None,
                label=c.label,
                expires_at=owner_services.expiry_from_date(c.expires),
            )
            for c in cards
        ]
    return ImportResult(created=len(created), rows=created)


# --- group members ------------------------------------------------------------------------


def parse_accounts(text: str) -> tuple[list[tuple[int, str]], list[RowError]]:
    """One column ``account``; a header row is optional."""
    _order, rows, errors = _header(read_rows(text), ("account",), "account")
    accounts = []
    for number, cells in rows:
        filled = [c for c in cells if c]
        if len(filled) > 1 or (filled and cells[0] == ""):
            errors.append(RowError(number, None, _("one value per row: the account name only.")))
        elif not filled:
            continue
        else:
            accounts.append((number, cells[0]))
    return accounts, errors


def group_members_import(*, group: UserGroup, data: bytes | str) -> ImportResult:
    """Add members by account name from CSV, all or nothing; names already in the group or
    repeated in the file are counted as unchanged (importing the same file twice is harmless)."""
    accounts, errors = parse_accounts(decode(data))
    users = _users_by_name(name for _row, name in accounts)
    for number, name in accounts:
        if name.lower() not in users:
            errors.append(
                RowError(number, "account", _("No account named '%(name)s'.") % {"name": name})
            )
    if not accounts and not errors:
        errors.append(RowError(0, None, _("The file has no account names.")))
    if errors:
        raise CsvImportError(sorted(errors, key=lambda e: (e.row, e.column or "")))
    wanted = {users[name.lower()].pk: users[name.lower()] for _row, name in accounts}
    with transaction.atomic():
        existing = set(
            UserGroupMember.objects.filter(group=group, user_id__in=wanted).values_list(
                "user_id", flat=True
            )
        )
        # One by one (audit trail, see cards_import); a member added meanwhile is kept.
        new = []
        for pk, user in wanted.items():
            if pk in existing:
                continue
            member, created = UserGroupMember.objects.get_or_create(group=group, user=user)
            if created:
                new.append(member)
    return ImportResult(created=len(new), unchanged=len(accounts) - len(new), rows=new)
