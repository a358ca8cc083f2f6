"""Station pages: thin views around services and selectors; tenant via OrgViewMixin."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _
from django.views import View

from portal.errors import DomainError
from portal.models import Role
from portal.tenancy import OrgViewMixin
from stations import commands, selectors, services
from stations.forms import (
    AdvancedForm,
    CommandForm,
    DeleteStationForm,
    DisplayUploadForm,
    StationAddForm,
)
from stations.live import power_fragment
from stations.models import ChargingSession, ConfigurationKey, Station, StationCommand


class StationListView(OrgViewMixin, View):
    def get(self, request: HttpRequest, org: str) -> HttpResponse:
        stations = list(selectors.stations_for(self.organization))
        rows = [(s, list(s.connectors.all())) for s in stations]
        return render(
            request,
            "stations/list.html",
            {
                "organization": self.organization,
                "membership": self.membership,
                "rows": rows,
            },
        )


class StationAddView(OrgViewMixin, View):
    read_role = Role.MANAGER

    def get(self, request: HttpRequest, org: str) -> HttpResponse:
        form = StationAddForm(initial={"charge_point_id": request.GET.get("identity", "")})
        return self.render(form)

    def render(self, form: StationAddForm, status: int = 200, **extra: Any) -> HttpResponse:
        return render(
            self.request,
            "stations/add.html",
            {
                "organization": self.organization,
                "membership": self.membership,
                "form": form,
                **extra,
            },
            status=status,
        )

    def post(self, request: HttpRequest, org: str) -> HttpResponse:
        form = StationAddForm(request.POST)
        if not form.is_valid():
            return self.render(form, status=400)
        # Read before registering: registration clears the identity's unknown record.
        earlier_attempts = selectors.unknown_identity(form.cleaned_data["charge_point_id"])
        try:
            credentials = services.station_register(
                organization=self.organization, **form.cleaned_data
            )
        except DomainError as exc:
            form.add_error("charge_point_id", exc.detail)
            return self.render(form, status=400)
        except ValidationError as exc:
            for field, errors in exc.message_dict.items():
                form.add_error(field if field in form.fields else None, errors)
            return self.render(form, status=400)
        return render(
            request,
            "stations/credentials.html",
            {
                "organization": self.organization,
                "membership": self.membership,
                "credentials": credentials,
                "new": True,
                "earlier_attempts": earlier_attempts,
            },
        )


class StationDetailView(OrgViewMixin, View):
    def get_station(self, pk: int) -> Station:
        return get_object_or_404(selectors.stations_for(self.organization), pk=pk)

    def get(self, request: HttpRequest, org: str, pk: int) -> HttpResponse:
        station = self.get_station(pk)
        active_sessions = list(ChargingSession.objects.filter(station=station, status="active"))
        power = {s.connector_id: s.power_w for s in active_sessions}
        connectors = list(station.connectors.all())
        for connector in connectors:  # the power cell as live updates render it
            connector.power_html = power_fragment(
                station.pk, connector.connector_id, power.get(connector.connector_id)
            )
        return render(
            request,
            "stations/detail.html",
            {
                "organization": self.organization,
                "membership": self.membership,
                "station": station,
                "connectors": connectors,
                "org_slug": self.organization.slug,
                "sessions": ChargingSession.objects.filter(station=station)[:20],
                "active_sessions": active_sessions,
                "commands": selectors.commands_for(self.organization).filter(station=station)[:20],
                "url": services.station_url(station),
                "can_change": self.membership.can_change,
                **station_sections(station),
            },
        )


class StationCommandView(StationDetailView):
    def post(self, request: HttpRequest, org: str, pk: int) -> HttpResponse:
        station = self.get_station(pk)
        form = CommandForm(request.POST)
        if not form.is_valid():
            messages.error(request, _("Invalid command."))
            return redirect("stations_detail", org=org, pk=pk)
        action, payload = form.call()
        if (
            action == "Reset"
            and not form.cleaned_data["confirmed"]
            and ChargingSession.objects.filter(station=station, status="active").exists()
        ):
            messages.warning(
                request,
                _(
                    "A charging session is running: restarting stops it. Tick “Stop the "
                    "running session” to restart anyway."
                ),
            )
            return redirect("stations_detail", org=org, pk=pk)
        try:
            if action == "ShowMeter":
                command = services.show_meter(
                    station=station,
                    connector_id=payload["connectorId"],
                    requested_by=request.user,
                )
            else:
                command = commands.command_send(
                    station=station, action=action, payload=payload, requested_by=request.user
                )
        except DomainError as exc:
            messages.error(request, exc.detail)
        else:
            if command.status == "offline":
                messages.warning(request, _("The station is offline."))
            else:
                messages.success(request, _("%(action)s sent.") % {"action": action})
        return redirect(f"{station_detail_url(org, pk)}#commands")


class StationPasswordView(StationDetailView):
    write_role = Role.OWNER

    def post(self, request: HttpRequest, org: str, pk: int) -> HttpResponse:
        credentials = services.station_rotate_password(station=self.get_station(pk))
        return render(
            request,
            "stations/credentials.html",
            {
                "organization": self.organization,
                "membership": self.membership,
                "credentials": credentials,
                "new": False,
            },
        )


# --- The station page's sections: display, command results, advanced settings, deletion ------


def _data_uri(gif: bytes) -> str:
    import base64

    return "data:image/gif;base64," + base64.b64encode(gif).decode("ascii")


def _latest(station: Station, **payload: str) -> StationCommand | None:
    filters = {f"payload__{k}": v for k, v in payload.items()}
    return StationCommand.objects.filter(station=station, **filters).order_by("-id").first()


def _meter_shown(command: StationCommand | None) -> int | None:
    """The register the station reported in its ShowMeter answer, if it did."""
    import json

    try:
        return int(json.loads((command.response or {}).get("data") or "")["energyWh"])
    except (AttributeError, KeyError, TypeError, ValueError):
        return None


def station_sections(station: Station) -> dict[str, Any]:
    """What the display, command and advanced sections show (also their live refresh)."""
    from stations.display_image import from_payload

    keys = {k.key: k for k in ConfigurationKey.objects.filter(station=station)}
    settings = []
    for name, key in (
        ("auto_car_detection", services.auto_car_detection_key()),
        ("modbus_tcp", services.modbus_tcp_key()),
        ("cable_lock", services.CABLE_LOCK_KEY),
    ):
        wanted = keys.get(key)
        settings.append(
            {
                "name": name,
                "key": key,
                "wanted": wanted,
                "command": _latest(station, key=key),
                "pending": wanted is not None and wanted.applied_value != wanted.value,
            }
        )
    show_meter = _latest(station, messageId="ShowMeter")
    version = services.communication_version(station)
    return {
        "station": station,
        "display_command": _latest(station, messageId="DisplayImage"),
        "display_preview": _data_uri(from_payload(station.display_payload).preview(scale=6))
        if station.display_payload
        else "",
        "meter_command": show_meter,
        "meter_shown_wh": _meter_shown(show_meter),
        "readings": services.last_register_readings(station),
        "settings": {s["name"]: s for s in settings},
        # A pending result re-fetches itself (the live event may come before the page's
        # websocket is connected, e.g. right after the redirect that follows a submit).
        "advanced_pending": any(
            s["command"] and s["command"].status == "pending" for s in settings
        ),
        "cable_fixed": (
            keys.get(services.CABLE_LOCK_KEY) is not None
            and keys[services.CABLE_LOCK_KEY].value == "false"
        ),
        "communication_version": ".".join(map(str, version)) if version else "",
        "cable_lock_possible": version is not None
        and version >= services.MIN_COMMUNICATION_VERSION,
        "car_plugged": [c for c in station.connectors.all() if c.status in services.CAR_PLUGGED],
    }


class StationSectionView(StationDetailView):
    """GET: one section's live part (htmx refreshes it on every ``live:station.command``)."""

    PARTS = ("display", "meter", "advanced")

    def get(self, request: HttpRequest, org: str, pk: int) -> HttpResponse:
        station = self.get_station(pk)  # first: another tenant's station is a 404
        part = request.GET.get("part", "")
        if part not in self.PARTS:
            return HttpResponse(status=400)
        return render(
            request,
            f"stations/_section_{part}.html",
            {
                **station_sections(station),
                "organization": self.organization,
                "can_change": self.membership.can_change,
            },
        )


class StationDisplayView(StationDetailView):
    """Personalise the display: a stock design, the station's name or an upload; each is
    stored and pushed to the station (DataTransfer DisplayImage) at once."""

    def get(self, request: HttpRequest, org: str, pk: int) -> HttpResponse:
        return self.render_page(self.get_station(pk), DisplayUploadForm())

    def render_page(
        self,
        station: Station,
        form: DisplayUploadForm,
        status: int = 200,
        offer_fix: str = "",
    ) -> HttpResponse:
        from stations.display_image import DESIGNS, design_image, name_image

        designs = [
            (key, label, _data_uri(design_image(key).preview(scale=3)))
            for key, (label, _draw) in DESIGNS.items()
        ]
        return render(
            self.request,
            "stations/display.html",
            {
                **station_sections(station),
                "organization": self.organization,
                "membership": self.membership,
                "can_change": self.membership.can_change,
                "designs": designs,
                "name_preview": _data_uri(name_image(station.label).preview(scale=3)),
                "form": form,
                "offer_fix": offer_fix,
                "commands": selectors.commands_for(self.organization).filter(station=station)[:20],
            },
            status=status,
        )

    def post(self, request: HttpRequest, org: str, pk: int) -> HttpResponse:
        from stations import display_image

        station = self.get_station(pk)
        choice = request.POST.get("choice", "")
        try:
            if choice == "design":
                key = request.POST.get("design", "")
                if key not in display_image.DESIGNS:
                    raise DomainError(_("Choose one of the designs."), code="unknown_design")
                command = services.display_set(
                    station=station,
                    image=display_image.design_image(key),
                    source=f"design:{key}",
                    requested_by=request.user,
                )
            elif choice == "name":
                command = services.display_set(
                    station=station,
                    image=display_image.name_image(station.label),
                    source="name",
                    requested_by=request.user,
                )
            elif choice == "resend":
                command = services.display_resend(station=station, requested_by=request.user)
            else:
                return self.upload(station)
        except DomainError as exc:
            messages.error(request, exc.detail)
            return redirect("stations_display", org=org, pk=pk)
        self.announce(command)
        return redirect("stations_display", org=org, pk=pk)

    def announce(self, command: StationCommand) -> None:
        if command.status == "offline":
            messages.warning(
                self.request,
                _("Saved, but the station is offline: use “Send again” once it is connected."),
            )
        else:
            messages.success(self.request, _("Sent to the station; the result appears below."))

    def upload(self, station: Station) -> HttpResponse:
        import base64

        from stations import display_image

        form = DisplayUploadForm(self.request.POST, self.request.FILES)
        if not form.is_valid():
            return self.render_page(station, form, status=400)
        raw = form.cleaned_data["raw"]
        try:
            image = display_image.prepare_display_image(
                raw, make_near_black_black=form.cleaned_data["make_near_black_black"]
            )
        except display_image.DisplayImageError as exc:
            form.add_error("image", str(exc))
            offer = ""
            if "almost but not completely black" in str(exc):
                offer = base64.b64encode(raw).decode("ascii")
            return self.render_page(station, form, status=400, offer_fix=offer)
        command = services.display_set(
            station=station, image=image, source="upload", requested_by=self.request.user
        )
        for note in image.notes:
            messages.info(self.request, note)
        self.announce(command)
        return redirect("stations_display", org=station.organization.slug, pk=station.pk)


class StationAdvancedView(StationDetailView):
    """POST one advanced setting; refusals are messages and change nothing."""

    def post(self, request: HttpRequest, org: str, pk: int) -> HttpResponse:
        station = self.get_station(pk)
        form = AdvancedForm(request.POST)
        if not form.is_valid():
            messages.error(request, _("Unknown setting."))
            return redirect(f"{station_detail_url(org, pk)}#advanced")
        setting, on = form.cleaned_data["setting"], form.cleaned_data["value"] == "on"
        try:
            if setting == "auto_car_detection":
                command = services.auto_car_detection_set(
                    station=station,
                    enabled=on,
                    confirmed=form.cleaned_data["confirmed"],
                    requested_by=request.user,
                )
            elif setting == "modbus_tcp":
                command = services.modbus_tcp_set(
                    station=station, enabled=on, requested_by=request.user
                )
            else:
                command = services.cable_lock_set(
                    station=station, fixed=on, requested_by=request.user
                )
        except DomainError as exc:
            messages.error(request, exc.detail)
        else:
            if command.status == "offline":
                messages.warning(
                    request,
                    _("Saved. The station is offline: it gets the setting when it reconnects."),
                )
            else:
                messages.success(request, _("Sent to the station; the result appears below."))
        return redirect(f"{station_detail_url(org, pk)}#advanced")


class StationDeleteView(StationDetailView):
    """Owners only: type the station's name, then it is deleted and disconnected."""

    write_role = Role.OWNER

    def post(self, request: HttpRequest, org: str, pk: int) -> HttpResponse:
        station = self.get_station(pk)
        form = DeleteStationForm(request.POST)
        typed = form.data.get("name", "") if not form.is_valid() else form.cleaned_data["name"]
        label = station.label
        try:
            services.station_delete_confirmed(station=station, typed_name=typed)
        except DomainError as exc:
            messages.error(request, exc.detail)
            return redirect(f"{station_detail_url(org, pk)}#advanced")
        messages.success(request, _("Station %(name)s deleted.") % {"name": label})
        return redirect("stations_list", org=org)


def station_detail_url(org: str, pk: int) -> str:
    from django.urls import reverse

    return reverse("stations_detail", kwargs={"org": org, "pk": pk})
