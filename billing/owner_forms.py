"""Forms of the owner's access-and-prices pages. They parse input; the rules are checked by
``billing/owner_services.py`` (whose field errors the views put back on these forms)."""

from __future__ import annotations

from typing import Any
from zoneinfo import available_timezones

from django import forms
from django.utils.translation import gettext_lazy as _

from billing.imports import MAX_BYTES
from billing.models import Access, Currency, Tariff
from portal.models import Organization
from stations.models import AuthMode, validate_ws_url

WEEKDAYS = [
    ("1", _("Mon")),
    ("2", _("Tue")),
    ("3", _("Wed")),
    ("4", _("Thu")),
    ("5", _("Fri")),
    ("6", _("Sat")),
    ("7", _("Sun")),
]


def _time_zones() -> list[tuple[str, str]]:
    return [(tz, tz) for tz in sorted(available_timezones()) if "/" in tz or tz == "UTC"]


class StationAccessForm(forms.Form):
    auth_mode = forms.ChoiceField(
        label=_("Authentication mode"), choices=AuthMode.choices, widget=forms.RadioSelect
    )
    third_party_url = forms.CharField(
        label=_("Other backend's URL"),
        required=False,
        max_length=300,
        validators=[validate_ws_url],
        help_text=_("Only for 'Another OCPP backend': ws://… or wss://…"),
    )
    auto_car_detection = forms.BooleanField(
        label=_("Auto car detection (needed for CarID)"), required=False
    )
    time_zone = forms.ChoiceField(
        label=_("Time zone"),
        choices=_time_zones,
        help_text=_("Time rules of this station's connectors are evaluated in this time zone."),
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        missing_url = not data.get("third_party_url") and "third_party_url" not in self.errors
        if data.get("auth_mode") == AuthMode.THIRD_PARTY and missing_url:
            self.add_error("third_party_url", _("Enter the other backend's ws:// or wss:// URL."))
        return data


class TariffChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj: Tariff) -> str:
        return str(obj)


def tariff_field(organization: Organization, label: str, empty: str) -> TariffChoiceField:
    return TariffChoiceField(
        queryset=Tariff.objects.for_tenant(organization),
        required=False,
        label=label,
        empty_label=empty,
    )


class ConnectorAccessForm(forms.Form):
    access = forms.ChoiceField(label=_("Access"), choices=Access.choices, widget=forms.RadioSelect)

    def __init__(self, *args: Any, organization: Organization, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["tariff"] = tariff_field(organization, _("Public price"), _("Free (no price)"))


class AccessRuleForm(forms.Form):
    weekdays = forms.MultipleChoiceField(
        label=_("Weekdays"),
        choices=WEEKDAYS,
        widget=forms.CheckboxSelectMultiple,
        error_messages={"required": _("Choose at least one weekday.")},
    )
    start_time = forms.TimeField(label=_("From"), widget=forms.TimeInput(attrs={"type": "time"}))
    end_time = forms.TimeField(
        label=_("Until"),
        widget=forms.TimeInput(attrs={"type": "time"}),
        help_text=_("Earlier than 'from' means the window runs over midnight."),
    )
    access = forms.ChoiceField(label=_("Access in this window"), choices=Access.choices)

    def rule(self) -> dict[str, Any]:
        data = dict(self.cleaned_data)
        data["weekdays"] = "".join(sorted(data["weekdays"]))
        return data


class TariffForm(forms.Form):
    """Plain decimals: negatives and maxima are refused by the service with the pricing
    core's own messages."""

    name = forms.CharField(label=_("Name"), max_length=80)
    per_kwh = forms.DecimalField(label=_("Price per kWh"), max_digits=8, decimal_places=4)
    per_hour = forms.DecimalField(
        label=_("Price per hour connected"), max_digits=8, decimal_places=4
    )
    currency = forms.ChoiceField(label=_("Currency"), choices=Currency.choices)
    vat_percent = forms.DecimalField(label=_("VAT rate (%)"), max_digits=5, decimal_places=2)

    @classmethod
    def for_tariff(cls, tariff: Tariff) -> TariffForm:
        return cls(
            initial={
                f: getattr(tariff, f)
                for f in ("name", "per_kwh", "per_hour", "currency", "vat_percent")
            }
        )


class AccountNameField(forms.CharField):
    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("label", _("Account name"))
        kwargs.setdefault("max_length", 150)
        kwargs.setdefault(
            "help_text", _("The driver's account name, as they see it on 'My charging'.")
        )
        super().__init__(**kwargs)


class SpecialUserAddForm(forms.Form):
    account_name = AccountNameField()
    note = forms.CharField(label=_("Note"), max_length=120, required=False)

    def __init__(self, *args: Any, organization: Organization, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["tariff"] = tariff_field(
            organization, _("Individual price"), _("None (group's or connector's price)")
        )


class SpecialUserEditForm(forms.Form):
    note = forms.CharField(label=_("Note"), max_length=120, required=False)

    def __init__(self, *args: Any, organization: Organization, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["tariff"] = tariff_field(
            organization, _("Individual price"), _("None (group's or connector's price)")
        )


class GroupForm(forms.Form):
    name = forms.CharField(label=_("Name"), max_length=80)

    def __init__(self, *args: Any, organization: Organization, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["tariff"] = tariff_field(
            organization, _("Group price"), _("None (the connector's price)")
        )


class AccountForm(forms.Form):
    account_name = AccountNameField()


class CsvUploadForm(forms.Form):
    file = forms.FileField(label=_("CSV file"))

    def clean_file(self) -> bytes:
        upload = self.cleaned_data["file"]
        if upload.size > MAX_BYTES:
            raise forms.ValidationError(_("The file is larger than 1 MB."))
        return upload.read()


class CardAddForm(forms.Form):
    uid = forms.CharField(
        label=_("UID"),
        max_length=40,
        help_text=_("Hexadecimal, as the reader shows it; separators such as ':' are ignored."),
    )
    account_name = AccountNameField(
        required=False,
        help_text=_("The driver the card belongs to; empty for one of the organization's own."),
    )
    label = forms.CharField(label=_("Label"), max_length=80, required=False)
    expires = forms.DateField(
        label=_("Valid through"),
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
        help_text=_("Empty: no expiry."),
    )


class CardEditForm(forms.Form):
    label = forms.CharField(label=_("Label"), max_length=80, required=False)
    blocked = forms.BooleanField(label=_("Blocked"), required=False)
    expires = forms.DateField(
        label=_("Valid through"),
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
    )
