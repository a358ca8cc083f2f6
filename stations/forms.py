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
        "ShowMeter",
    ]
    action = forms.ChoiceField(choices=[(a, a) for a in ACTIONS])
    type = forms.ChoiceField(choices=[("Soft", "Soft"), ("Hard", "Hard")], required=False)
    connector_id = forms.IntegerField(min_value=1, max_value=99, required=False)
    id_tag = forms.CharField(max_length=20, required=False)
    transaction_id = forms.IntegerField(min_value=1, required=False)
    # Restart while a session runs: the page asks to tick this (the session stops).
    confirmed = forms.BooleanField(required=False)

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
        if action == "ShowMeter":
            return action, {"connectorId": data.get("connector_id") or 1}
        if action == "TriggerStatus":
            return "TriggerMessage", {"requestedMessage": "StatusNotification"}
        return "GetConfiguration", {}


class DisplayUploadForm(forms.Form):
    """An owner's JPG/PNG/GIF. ``source_b64`` carries an earlier upload back when the page
    offers to fix its near-black background (a file input cannot be refilled)."""

    image = forms.FileField(
        label=_("Image (JPG, PNG or GIF, 32×32, at most 200 kB)"), required=False
    )
    source_b64 = forms.CharField(widget=forms.HiddenInput, required=False, max_length=300_000)
    make_near_black_black = forms.BooleanField(
        label=_("Make near-black pixels black"), required=False
    )

    def clean(self) -> dict:
        import base64
        import binascii

        data = super().clean()
        upload = data.get("image")
        if upload is not None:
            from stations.display_image import MAX_BYTES

            if upload.size > MAX_BYTES:  # refused before reading it into memory
                raise forms.ValidationError(
                    _("The file is %(size)s kB; at most %(max)s kB are allowed.")
                    % {"size": f"{upload.size / 1000:.0f}", "max": MAX_BYTES // 1000}
                )
            data["raw"] = upload.read()
        elif data.get("source_b64"):
            try:
                data["raw"] = base64.b64decode(data["source_b64"], validate=True)
            except (binascii.Error, ValueError):
                raise forms.ValidationError(_("Upload the image again.")) from None
        else:
            raise forms.ValidationError(_("Choose an image file to upload."))
        return data


class DisplayDesignForm(forms.Form):
    design = forms.CharField(max_length=40)


class AdvancedForm(forms.Form):
    """One advanced setting per submit: the button's ``setting`` and its new value."""

    setting = forms.ChoiceField(
        choices=[
            ("auto_car_detection", "auto_car_detection"),
            ("modbus_tcp", "modbus_tcp"),
            ("cable_lock", "cable_lock"),
        ]
    )
    value = forms.ChoiceField(choices=[("on", "on"), ("off", "off")])
    confirmed = forms.BooleanField(required=False)


class DeleteStationForm(forms.Form):
    name = forms.CharField(label=_("Type the station's name to confirm"), max_length=120)
