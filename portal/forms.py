from __future__ import annotations

from allauth.account.forms import SignupForm as AllauthSignupForm
from django import forms
from django.utils.translation import gettext_lazy as _

from portal.models import Role


class OrganizationForm(forms.Form):
    name = forms.CharField(label=_("Name"), max_length=120)


class OrganizationDeleteForm(forms.Form):
    confirm_name = forms.CharField(
        label=_("Type the organization's name to confirm"), max_length=120
    )


class InvitationForm(forms.Form):
    email = forms.EmailField(label=_("E-mail address"))
    role = forms.ChoiceField(label=_("Role"), choices=Role.choices, initial=Role.VIEWER)


class MemberAddForm(forms.Form):
    account_name = forms.CharField(label=_("Account name"), max_length=40)
    role = forms.ChoiceField(label=_("Role"), choices=Role.choices, initial=Role.VIEWER)


class RoleForm(forms.Form):
    role = forms.ChoiceField(label=_("Role"), choices=Role.choices)


class SignupForm(AllauthSignupForm):
    """django-allauth's sign-up form (ACCOUNT_FORMS["signup"]) with the username presented as
    what it is for drivers: the shareable account name."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        field = self.fields["username"]
        field.label = _("Account name")
        field.help_text = _(
            "Share it with station owners so they can let you charge. "
            "3 to 40 letters, digits, dots, dashes or underscores."
        )
        field.widget.attrs["placeholder"] = _("Account name")
