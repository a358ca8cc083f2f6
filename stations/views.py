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
from stations.forms import CommandForm, StationAddForm
from stations.live import power_fragment
from stations.models import ChargingSession, Station


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
        try:
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
        return redirect("stations_detail", org=org, pk=pk)


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
