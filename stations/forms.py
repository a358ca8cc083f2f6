from __future__ import annotations

from django import forms
from django.utils.translation import gettext_lazy as _

from stations.models import identity_validator


class StationAddForm(forms.Form):
    charge_point_id = forms.CharField(
        label=_("Charge point identity"), max_length=48, validators=[identity_validator]
    )
    name = forms.CharField(label=_("Name"), max_length=120, required=False)
    connectors = forms.IntegerField(label=_("Connectors"), min_value=1, max_value=99, initial=1)


class CommandForm(forms.Form):
    """The buttons of the station page; each maps to one OCPP call."""

    ACTIONS = [
        "Reset",
        "UnlockConnector",
        "RemoteStartTransaction",
        "RemoteStopTransaction",
        "TriggerStatus",
        "GetConfiguration",
    ]
    action = forms.ChoiceField(choices=[(a, a) for a in ACTIONS])
    type = forms.ChoiceField(choices=[("Soft", "Soft"), ("Hard", "Hard")], required=False)
    connector_id = forms.IntegerField(min_value=1, max_value=99, required=False)
    id_tag = forms.CharField(max_length=20, required=False)
    transaction_id = forms.IntegerField(min_value=1, required=False)

    def call(self) -> tuple[str, dict]:
        data = self.cleaned_data
        action = data["action"]
        if action == "Reset":
            return action, {"type": data.get("type") or "Soft"}
        if action == "UnlockConnector":
            return action, {"connectorId": data.get("connector_id") or 1}
        if action == "RemoteStartTransaction":
            payload = {"idTag": data.get("id_tag") or ""}
            if data.get("connector_id"):
                payload["connectorId"] = data["connector_id"]
            return action, payload
        if action == "RemoteStopTransaction":
            return action, {"transactionId": data.get("transaction_id") or 0}
        if action == "TriggerStatus":
            return "TriggerMessage", {"requestedMessage": "StatusNotification"}
        return "GetConfiguration", {}
