"""Pages of the portal app: landing, driver profile, organizations, members, invitations.

Views parse the request and delegate to services; tenant resolution is OrgViewMixin's job.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.mixins import LoginRequiredMixin
from django.http import HttpRequest, HttpResponse, HttpResponsePermanentRedirect
from django.shortcuts import get_object_or_404, redirect, render
from django.templatetags.static import static
from django.urls import NoReverseMatch, reverse
from django.utils.translation import gettext as _
from django.views import View
from django.views.generic import TemplateView
from rest_framework.authtoken.models import Token

from portal import selectors, services
from portal.errors import DomainError
from portal.forms import (
    InvitationForm,
    MemberAddForm,
    OrganizationDeleteForm,
    OrganizationForm,
    RoleForm,
)
from portal.models import Invitation, Membership, Role
from portal.tenancy import OrgViewMixin


def favicon(request: HttpRequest) -> HttpResponse:
    """Pages declare their icon (base.html); browsers still ask for /favicon.ico on the
    others (admin, the API's JSON), and a 404 there is an error in every console."""
    return HttpResponsePermanentRedirect(static("portal/icon.svg"))


def home(request: HttpRequest) -> HttpResponse:
    """Owners land in their last organization; drivers on their charging page."""
    if not request.user.is_authenticated:
        return redirect("account_login")
    organization = selectors.landing_organization(request.user)
    if organization is not None:
        return redirect("org_dashboard", org=organization.slug)
    try:  # the billing app's page, which also shows the account name to give to owners
        return redirect(reverse("billing_driver"))
    except NoReverseMatch:  # without that app: the account page
        return redirect("driver_home")


class DriverHomeView(LoginRequiredMixin, TemplateView):
    template_name = "portal/driver_home.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context["memberships"] = selectors.memberships_of_user(self.request.user)
        context["token"] = Token.objects.filter(user=self.request.user).first()
        return context


class ApiTokenView(LoginRequiredMixin, View):
    """Create (or replace) and revoke the user's API token."""

    def post(self, request: HttpRequest) -> HttpResponse:
        Token.objects.filter(user=request.user).delete()
        if request.POST.get("action") != "revoke":
            token = Token.objects.create(user=request.user)
            messages.success(request, _("New API token: %(key)s") % {"key": token.key})
        else:
            messages.success(request, _("API token revoked."))
        return redirect("driver_home")


class OrganizationCreateView(LoginRequiredMixin, View):
    template_name = "portal/organization_new.html"

    def get(self, request: HttpRequest) -> HttpResponse:
        return render(request, self.template_name, {"form": OrganizationForm()})

    def post(self, request: HttpRequest) -> HttpResponse:
        form = OrganizationForm(request.POST)
        if form.is_valid():
            try:
                organization = services.organization_create(
                    name=form.cleaned_data["name"], owner=request.user
                )
            except DomainError as exc:
                form.add_error("name", exc.detail)
            else:
                messages.success(request, _("Organization created."))
                return redirect("org_dashboard", org=organization.slug)
        return render(request, self.template_name, {"form": form}, status=400)


class DashboardView(OrgViewMixin, TemplateView):
    template_name = "portal/dashboard.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context["member_count"] = selectors.members(self.organization).count()
        context["open_invitations"] = selectors.invitations_open(self.organization).count()
        context["panels"] = dashboard_panels(self.request, self.organization)
        return context


def dashboard_panels(request: HttpRequest, organization: Any) -> list[str]:
    """Each app may contribute a dashboard panel (``<app>.panels.dashboard_panel``)."""
    from importlib import import_module

    panels = []
    for app in ("stations", "billing", "loadmgmt"):
        try:
            module = import_module(f"{app}.panels")
        except ModuleNotFoundError:
            continue
        html = module.dashboard_panel(request, organization)
        if html:
            panels.append(html)
    return panels


class OrganizationSettingsView(OrgViewMixin, View):
    template_name = "portal/organization_settings.html"

    def get(self, request: HttpRequest, org: str) -> HttpResponse:
        return self.render(OrganizationForm(initial={"name": self.organization.name}))

    def render(self, form: OrganizationForm, delete_form: Any = None, status: int = 200):
        return render(
            self.request,
            self.template_name,
            {
                "organization": self.organization,
                "membership": self.membership,
                "form": form,
                "delete_form": delete_form or OrganizationDeleteForm(),
            },
            status=status,
        )

    def post(self, request: HttpRequest, org: str) -> HttpResponse:
        form = OrganizationForm(request.POST)
        if form.is_valid():
            services.organization_update(
                organization=self.organization, name=form.cleaned_data["name"]
            )
            messages.success(request, _("Saved."))
            return redirect("org_settings", org=self.organization.slug)
        return self.render(form, status=400)


class OrganizationDeleteView(OrgViewMixin, View):
    write_role = Role.OWNER

    def post(self, request: HttpRequest, org: str) -> HttpResponse:
        form = OrganizationDeleteForm(request.POST)
        if form.is_valid():
            try:
                services.organization_delete(
                    organization=self.organization,
                    confirm_name=form.cleaned_data["confirm_name"],
                )
            except DomainError as exc:
                messages.error(request, exc.detail)
                return redirect("org_settings", org=org)
            messages.success(request, _("Organization deleted."))
            return redirect("home")
        messages.error(request, _("Type the organization's name exactly to confirm."))
        return redirect("org_settings", org=org)


class MembersView(OrgViewMixin, View):
    """Members and invitations. Everyone in the organization reads; only owners change."""

    template_name = "portal/members.html"
    write_role = Role.OWNER

    def get(self, request: HttpRequest, org: str) -> HttpResponse:
        return self.render()

    def render(self, invite_form=None, add_form=None, status: int = 200) -> HttpResponse:
        return render(
            self.request,
            self.template_name,
            {
                "organization": self.organization,
                "membership": self.membership,
                "members": selectors.members(self.organization).order_by("user__username"),
                "invitations": selectors.invitations_open(self.organization),
                "invite_form": invite_form or InvitationForm(),
                "add_form": add_form or MemberAddForm(),
                "roles": Role.choices,
            },
            status=status,
        )

    def post(self, request: HttpRequest, org: str) -> HttpResponse:
        action = request.POST.get("action")
        if action == "invite":
            form = InvitationForm(request.POST)
            if not form.is_valid():
                return self.render(invite_form=form, status=400)
            try:
                services.invitation_create(
                    organization=self.organization,
                    email=form.cleaned_data["email"],
                    role=form.cleaned_data["role"],
                    invited_by=request.user,
                )
            except DomainError as exc:
                form.add_error("email", exc.detail)
                return self.render(invite_form=form, status=400)
            messages.success(request, _("Invitation sent."))
        elif action == "add":
            form = MemberAddForm(request.POST)
            if not form.is_valid():
                return self.render(add_form=form, status=400)
            try:
                services.membership_add(
                    organization=self.organization,
                    account_name=form.cleaned_data["account_name"],
                    role=form.cleaned_data["role"],
                )
            except DomainError as exc:
                form.add_error("account_name", exc.detail)
                return self.render(add_form=form, status=400)
            messages.success(request, _("Member added."))
        else:
            messages.error(request, _("Unknown action."))
        return redirect("org_members", org=org)


class MemberChangeView(OrgViewMixin, View):
    write_role = Role.OWNER

    def post(self, request: HttpRequest, org: str, pk: int) -> HttpResponse:
        membership = get_object_or_404(self.tenant_queryset(Membership), pk=pk)
        try:
            if request.POST.get("action") == "remove":
                services.membership_remove(membership=membership)
                messages.success(request, _("Member removed."))
                if membership.user_id == request.user.id:
                    return redirect("home")
            else:
                form = RoleForm(request.POST)
                if not form.is_valid():
                    messages.error(request, _("Choose a valid role."))
                    return redirect("org_members", org=org)
                services.membership_change_role(
                    membership=membership, role=form.cleaned_data["role"]
                )
                messages.success(request, _("Role changed."))
        except DomainError as exc:
            messages.error(request, exc.detail)
        return redirect("org_members", org=org)


class InvitationRevokeView(OrgViewMixin, View):
    write_role = Role.OWNER

    def post(self, request: HttpRequest, org: str, pk: int) -> HttpResponse:
        invitation = get_object_or_404(self.tenant_queryset(Invitation), pk=pk)
        try:
            services.invitation_revoke(invitation=invitation)
            messages.success(request, _("Invitation revoked."))
        except DomainError as exc:
            messages.error(request, exc.detail)
        return redirect("org_members", org=org)


@login_required
def invitation_accept(request: HttpRequest, token: str) -> HttpResponse:
    invitation = Invitation.objects.select_related("organization").filter(token=token).first()
    if request.method == "POST":
        try:
            membership = services.invitation_accept(token=token, user=request.user)
        except DomainError as exc:
            messages.error(request, exc.detail)
            return redirect("home")
        messages.success(request, _("Welcome to %(org)s.") % {"org": membership.organization.name})
        return redirect("org_dashboard", org=membership.organization.slug)
    return render(request, "portal/invitation_accept.html", {"invitation": invitation})
