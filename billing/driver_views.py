"""A driver's pages (``/me/...``): charging now, cards, vehicles, stations open to them,
sessions; the public QR page of a connector (``/c/<code>/``); the owner's QR label download.

Views parse and delegate: reads through ``billing.selectors`` (always filtered by the driver),
writes through ``billing.driver_services``; domain errors become page messages.
"""

from __future__ import annotations

import re
from typing import Any

from django.contrib import messages
from django.contrib.auth.mixins import LoginRequiredMixin
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.views import View

from billing import driver_services, labels, selectors
from billing.models import ConnectorAccess
from portal.errors import DomainError
from portal.tenancy import OrgViewMixin


def _safe_next(request: HttpRequest, default: str) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return default


class DriverChargingView(LoginRequiredMixin, View):
    """Home: running sessions with live power and energy and a stop button; the result of the
    last start or stop the driver sent."""

    def get(self, request: HttpRequest) -> HttpResponse:
        now = timezone.now()
        running = selectors.session_rows(selectors.driver_running_sessions(request.user), now)
        command = None
        if request.GET.get("command", "").isdigit():
            command = selectors.driver_command(request.user, int(request.GET["command"]))
        return render(
            request,
            "billing/driver/charging.html",
            {
                "running": running,
                "command": command,
                "recent": selectors.session_rows(
                    selectors.driver_sessions(request.user).exclude(status="active")[:3], now
                ),
            },
        )


class CardsView(LoginRequiredMixin, View):
    def get(self, request: HttpRequest) -> HttpResponse:
        return self.render()

    def render(self, status: int = 200, **form: Any) -> HttpResponse:
        return render(
            self.request,
            "billing/driver/cards.html",
            {
                "cards": selectors.driver_cards(self.request.user),
                "form": form,
                "now": timezone.now(),
            },
            status=status,
        )

    def post(self, request: HttpRequest) -> HttpResponse:
        uid, label = request.POST.get("uid", ""), request.POST.get("label", "")
        try:
            card = driver_services.card_add(user=request.user, uid=uid, label=label)
        except DomainError as exc:
            return self.render(status=400, uid=uid, label=label, error=exc.detail)
        messages.success(request, _("Card %(uid)s added.") % {"uid": card.uid})
        return redirect("billing_driver_cards")


class CardChangeView(LoginRequiredMixin, View):
    """One of the driver's cards: block, unblock or remove (someone else's card: 404)."""

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        card = selectors.driver_card(request.user, pk)
        action = request.POST.get("action")
        try:
            if action == "remove":
                driver_services.card_remove(user=request.user, card=card)
                messages.success(request, _("Card %(uid)s removed.") % {"uid": card.uid})
            elif action in ("block", "unblock"):
                driver_services.card_block(user=request.user, card=card, blocked=action == "block")
                messages.success(
                    request,
                    (_("Card %(uid)s blocked.") if card.blocked else _("Card %(uid)s unblocked."))
                    % {"uid": card.uid},
                )
            else:
                return HttpResponseBadRequest(_("Unknown action."))
        except DomainError as exc:
            messages.error(request, exc.detail)
        return redirect("billing_driver_cards")


class VehiclesView(LoginRequiredMixin, View):
    def get(self, request: HttpRequest) -> HttpResponse:
        return self.render()

    def render(self, status: int = 200, **form: Any) -> HttpResponse:
        return render(
            self.request,
            "billing/driver/vehicles.html",
            {"vehicles": selectors.driver_vehicles(self.request.user), "form": form},
            status=status,
        )

    def post(self, request: HttpRequest) -> HttpResponse:
        car_id, label = request.POST.get("car_id", ""), request.POST.get("label", "")
        try:
            vehicle = driver_services.vehicle_add(user=request.user, car_id=car_id, label=label)
        except DomainError as exc:
            return self.render(status=400, car_id=car_id, label=label, error=exc.detail)
        messages.success(request, _("Vehicle %(car)s added.") % {"car": vehicle.car_id})
        return redirect("billing_driver_vehicles")


class VehicleRemoveView(LoginRequiredMixin, View):
    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        vehicle = selectors.driver_vehicle(request.user, pk)
        driver_services.vehicle_remove(user=request.user, vehicle=vehicle)
        messages.success(request, _("Vehicle %(car)s removed.") % {"car": vehicle.car_id})
        return redirect("billing_driver_vehicles")


class StationsView(LoginRequiredMixin, View):
    def get(self, request: HttpRequest) -> HttpResponse:
        return render(
            request,
            "billing/driver/stations.html",
            {"open_connectors": selectors.connectors_open_to(request.user)},
        )


SESSIONS_PAGE = 100


class SessionsView(LoginRequiredMixin, View):
    def get(self, request: HttpRequest) -> HttpResponse:
        rows = selectors.session_rows(selectors.driver_sessions(request.user)[:SESSIONS_PAGE])
        return render(
            request, "billing/driver/sessions.html", {"rows": rows, "limit": SESSIONS_PAGE}
        )


class SessionsCsvView(LoginRequiredMixin, View):
    def get(self, request: HttpRequest) -> HttpResponse:
        rows = selectors.session_rows(selectors.driver_sessions(request.user))
        response = HttpResponse(selectors.sessions_csv(rows), content_type="text/csv")
        response["Content-Disposition"] = 'attachment; filename="charging-sessions.csv"'
        return response


def _show_command(command_id: int) -> HttpResponse:
    # The charging home shows the command's result (polled while pending) and, once the
    # station reports it, the running session with its stop button.
    return redirect(f"{reverse('billing_driver')}?command={command_id}")


class StartView(LoginRequiredMixin, View):
    """App start from the stations list: the connector by its code."""

    def post(self, request: HttpRequest) -> HttpResponse:
        connector_access = selectors.connector_access_by_code(request.POST.get("code", ""))
        try:
            command = driver_services.driver_charging_start(
                user=request.user, connector=connector_access.connector
            )
        except DomainError as exc:
            messages.error(request, exc.detail)
            return redirect(_safe_next(request, reverse("billing_driver_stations")))
        return _show_command(command.pk)


class StopView(LoginRequiredMixin, View):
    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        session = selectors.driver_session(request.user, pk)
        try:
            command = driver_services.driver_charging_stop(user=request.user, session=session)
        except DomainError as exc:
            messages.error(request, exc.detail)
            return redirect("billing_driver")
        return _show_command(command.pk)


class CommandView(LoginRequiredMixin, View):
    """The result of one of the driver's start/stop commands, as a fragment htmx polls while
    it is pending."""

    def get(self, request: HttpRequest, pk: int) -> HttpResponse:
        command = selectors.driver_command(request.user, pk)
        return render(request, "billing/driver/_command.html", {"command": command})


class QrView(View):
    """What a printed label's QR code opens. Public: anyone sees the station, connector,
    status and public price; a logged-in driver sees their own price and a Start button; a
    visitor can log in inline (or sign up) and comes back here."""

    def get(self, request: HttpRequest, code: str) -> HttpResponse:
        connector_access = selectors.connector_access_by_code(code)
        standing = selectors.driver_standing(request.user)
        price = selectors.price_for(standing, connector_access, timezone.now())
        command = None
        if request.user.is_authenticated and request.GET.get("command", "").isdigit():
            command = selectors.driver_command(request.user, int(request.GET["command"]))
        here = reverse("billing_qr", kwargs={"code": connector_access.code})
        return render(
            request,
            "billing/driver/qr.html",
            {
                "connector_access": connector_access,
                "connector": connector_access.connector,
                "station": connector_access.connector.station,
                "price": price,
                "startable": selectors.connector_startable(connector_access),
                "command": command,
                "here": here,
            },
        )

    def post(self, request: HttpRequest, code: str) -> HttpResponse:
        connector_access = selectors.connector_access_by_code(code)
        here = reverse("billing_qr", kwargs={"code": connector_access.code})
        if not request.user.is_authenticated:
            return redirect(f"{reverse('account_login')}?next={here}")
        try:
            command = driver_services.driver_charging_start(
                user=request.user, connector=connector_access.connector
            )
        except DomainError as exc:
            messages.error(request, exc.detail)
            return redirect(here)
        return redirect(f"{here}?command={command.pk}")


class ConnectorLabelView(OrgViewMixin, View):
    """The printable QR label of one of the organization's connectors (any member)."""

    def get(self, request: HttpRequest, org: str, pk: int) -> HttpResponse:
        connector_access = get_object_or_404(
            self.tenant_queryset(ConnectorAccess).select_related("connector__station"), pk=pk
        )
        kind = request.GET.get("format", "pdf")
        if kind not in ("png", "pdf"):
            return HttpResponseBadRequest(_("Choose format=png or format=pdf."))
        # The identity may hold quotes or other characters a header's file name cannot.
        identity = re.sub(
            r"[^A-Za-z0-9._-]", "_", connector_access.connector.station.charge_point_id
        )
        name = f"label-{identity}-{connector_access.connector.connector_id}.{kind}"
        if kind == "png":
            response = HttpResponse(labels.label_png(connector_access), content_type="image/png")
        else:
            response = HttpResponse(
                labels.label_pdf(connector_access), content_type="application/pdf"
            )
        response["Content-Disposition"] = f'inline; filename="{name}"'
        return response
