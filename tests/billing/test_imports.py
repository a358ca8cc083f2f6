"""CSV imports: cards in bulk and group members; all or nothing, row and column in messages."""

from __future__ import annotations

from datetime import date

import pytest

from billing import imports
from billing.models import RfidCard, UserGroupMember
from billing.owner_services import expiry_date
from tests.billing.factories import UserGroupFactory, UserGroupMemberFactory
from tests.factories import UserFactory
from tests.stations.factories import RfidCardFactory

pytestmark = pytest.mark.django_db


class TestParseCards:
    def test_header_in_any_order_and_aliases(self):
        text = "Account Name;UID;expires\ndora;de:ad:be:ef;2026-12-31\n;0a0b0c0d;\n"
        cards, errors = imports.parse_cards(text)
        assert errors == []
        assert [(c.row, c.uid, c.account, c.expires) for c in cards] == [
            (2, "DEADBEEF", "dora", date(2026, 12, 31)),
            (3, "0A0B0C0D", "", None),
        ]

    def test_without_header_columns_are_positional(self):
        cards, errors = imports.parse_cards("DEADBEEF,dora,Dora's card\n")
        assert errors == []
        assert cards[0].row == 1 and cards[0].label == "Dora's card"

    def test_every_bad_row_is_reported_with_row_and_column(self):
        text = (
            "uid,account,label,expires\n"
            "DEADBEEF,,,\n"
            "XYZ!,,,\n"  # row 3: malformed
            "dead beef,,,\n"  # row 4: duplicate of row 2 after normalizing
            "CAFE0001,,,31.12.2026\n"  # row 5: not ISO
            "CAFE0002,a,b,2026-01-01,extra\n"  # row 6: too many values
        )
        cards, errors = imports.parse_cards(text)
        messages = [str(e) for e in errors]
        assert messages[0].startswith("Row 3, column uid: 'XYZ!' is not a valid UID")
        assert messages[1] == (
            "Row 4, column uid: DEADBEEF appears twice in the file (also row 2)."
        )
        assert messages[2].startswith("Row 5, column expires: '31.12.2026' is not a date")
        assert messages[3].startswith("Row 6: 5 values, but only 4 columns")
        assert [c.uid for c in cards] == ["DEADBEEF"]

    def test_unknown_header_column(self):
        _cards, errors = imports.parse_cards("uid,colour\nDEADBEEF,red\n")
        assert str(errors[0]).startswith("Row 1, column colour: unknown column")

    def test_semicolons_and_bom(self):
        cards, errors = imports.parse_cards("\ufeffuid;label\nDEADBEEF;x\n")
        assert errors == [] and cards[0].label == "x"


class TestCardsImport:
    def test_imports_all_rows(self, tenants):
        result = imports.cards_import(
            organization=tenants.a,
            data=b"uid,account,label,expires\nDEADBEEF,DORA,Dora,2026-12-31\n0A0B0C0D,,Spare,\n",
        )
        assert result.created == 2
        dora_card = RfidCard.objects.get(uid="DEADBEEF")
        assert dora_card.user == tenants.driver
        assert dora_card.organization == tenants.a
        assert expiry_date(dora_card.expires_at) == date(2026, 12, 31)
        spare = RfidCard.objects.get(uid="0A0B0C0D")
        assert spare.user is None and spare.expires_at is None

    def test_one_bad_row_imports_nothing(self, tenants):
        RfidCardFactory(organization=tenants.b, uid="CAFE0000")
        text = "uid,account\nDEADBEEF,dora\nCAFE0000,\n0A0B0C0D,nobody\n"
        with pytest.raises(imports.CsvImportError) as exc:
            imports.cards_import(organization=tenants.a, data=text)
        assert [str(e) for e in exc.value.errors] == [
            "Row 3, column uid: This card is already registered.",
            "Row 4, column account: No account named 'nobody'.",
        ]
        # the clash never names the other organization or user
        assert "beta" not in exc.value.detail.lower() and "bob" not in exc.value.detail
        assert not RfidCard.objects.filter(uid__in=["DEADBEEF", "0A0B0C0D"]).exists()

    def test_not_utf8_and_empty(self, tenants):
        with pytest.raises(imports.CsvImportError, match="not UTF-8"):
            imports.cards_import(organization=tenants.a, data=b"uid\n\xff\xfe\xfa\n")
        with pytest.raises(imports.CsvImportError, match="empty"):
            imports.cards_import(organization=tenants.a, data=b"   \n")
        with pytest.raises(imports.CsvImportError, match="no cards"):
            imports.cards_import(organization=tenants.a, data=b"uid,label\n")


class TestGroupMembersImport:
    def test_header_optional_duplicates_and_existing_members_are_idempotent(self, tenants):
        group = UserGroupFactory(organization=tenants.a)
        UserGroupMemberFactory(group=group, user=tenants.driver)
        erin = UserFactory(username="Erin")
        result = imports.group_members_import(group=group, data="account\ndora\nerin\nERIN\n")
        assert (result.created, result.unchanged) == (1, 2)
        assert set(group.memberships.values_list("user_id", flat=True)) == {
            tenants.driver.pk,
            erin.pk,
        }
        # the same file again (without header this time) changes nothing
        result = imports.group_members_import(group=group, data="dora\nerin\n")
        assert (result.created, result.unchanged) == (0, 2)

    def test_unknown_names_refuse_the_whole_file(self, tenants):
        group = UserGroupFactory(organization=tenants.a)
        with pytest.raises(imports.CsvImportError) as exc:
            imports.group_members_import(group=group, data="account\ndora\nghost\n\nspook\n")
        assert [str(e) for e in exc.value.errors] == [
            "Row 3, column account: No account named 'ghost'.",
            "Row 5, column account: No account named 'spook'.",
        ]
        assert exc.value.detail.startswith("Nothing was imported.")
        assert not UserGroupMember.objects.filter(group=group).exists()

    def test_two_values_in_a_row(self, tenants):
        group = UserGroupFactory(organization=tenants.a)
        with pytest.raises(imports.CsvImportError) as exc:
            imports.group_members_import(group=group, data="dora,anna\n")
        assert str(exc.value.errors[0]) == "Row 1: one value per row: the account name only."
