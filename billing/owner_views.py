"""The owner's "Access & prices" pages: station authentication, connector access and time
rules, tariffs, special users, user groups, the organization's RFID cards.

Thin views: the tenant comes from ``OrgViewMixin`` (404 for outsiders, viewers read, managers
and owners change), objects are fetched through ``for_tenant``, forms parse, the services in
``billing/owner_services.py`` and ``billing/imports.py`` decide. Every POST redirects back with
a message (or re-renders the page with the form's errors and status 400).
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.db.models import Count, Prefetch
from django.forms import Form
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _
from django.views import View

from billing import imports, owner_services
from billing.models import (
    AccessRule,
    RfidCard,
    SpecialUser,
    Tariff,
    UserGroup,
    UserGroupMember,
)
from billing.owner_forms import (
    AccessRuleForm,
    AccountForm,
    CardAddForm,
    CardEditForm,
    ConnectorAccessForm,
    CsvUploadForm,
    GroupForm,
    SpecialUserAddForm,
    SpecialUserEditForm,
    StationAccessForm,
    TariffForm,
)
from portal.errors import DomainError
from portal.tenancy import OrgViewMixin
from stations.models import ConfigurationKey, Connector, Station, StationCommand


def apply_errors(form: Form, exc: ValidationError | DomainError) -> None:
    """Put a service's refusal on the form: next to its field when it names one."""
    if isinstance(exc, DomainError):
        field = "account_name" if exc.code == "unknown_account" else None
        form.add_error(field if field in form.fields else None, exc.detail)
        return
    if hasattr(exc, "error_dict"):
        for field, errors in exc.message_dict.items():
            form.add_error(field if field in form.fields else None, errors)
    else:
        form.add_error(None, exc.messages)


class AccessView(OrgViewMixin, View):
    template: str

    def page(self, status: int = 200, **context: Any) -> HttpResponse:
        return render(
            self.request,
            self.template,
            {
                "organization": self.organization,
                "membership": self.membership,
                "can_change": self.membership.can_change,
                **context,
            },
            status=status,
        )

    def back(self) -> HttpResponse:
        return redirect(self.request.path)

    def tenant_get(self, model: type, pk: int, **related: Any) -> Any:
        queryset = self.tenant_queryset(model)
        if related.get("select"):
            queryset = queryset.select_related(*related["select"])
        return get_object_or_404(queryset, pk=pk)


# --- overview -----------------------------------------------------------------------------


class AccessOverviewView(AccessView):
    template = "billing/owner/access.html"

    def get(self, request: HttpRequest, org: str) -> HttpResponse:
        connectors = Connector.objects.select_related("access__tariff").prefetch_related(
            Prefetch("access__rules", queryset=AccessRule.objects.order_by("position", "id"))
        )
        stations = list(
            Station.objects.for_tenant(self.organization)
            .prefetch_related(Prefetch("connectors", queryset=connectors.order_by("connector_id")))
            .order_by("name", "charge_point_id")
        )
        rows = []
        for station in stations:
            items = [(c, getattr(c, "access", None)) for c in station.connectors.all()]
            rows.append((station, items))
        org = self.organization
        return self.page(
            rows=rows,
            counts={
                "tariffs": Tariff.objects.for_tenant(org).count(),
                "special_users": SpecialUser.objects.for_tenant(org).count(),
                "groups": UserGroup.objects.for_tenant(org).count(),
                "cards": RfidCard.objects.for_tenant(org).count(),
            },
        )


# --- station authentication ---------------------------------------------------------------


class StationAccessView(AccessView):
    template = "billing/owner/station.html"

    def get(self, request: HttpRequest, org: str, pk: int) -> HttpResponse:
        station = self.tenant_get(Station, pk)
        form = StationAccessForm(
            initial={
                "auth_mode": station.auth_mode,
                "third_party_url": station.third_party_url,
                "auto_car_detection": station.auto_car_detection,
                "time_zone": station.time_zone,
            }
        )
        return self.render_station(station, form)

    def render_station(self, station: Station, form: Form, status: int = 200) -> HttpResponse:
        connectors = Connector.objects.filter(station=station).select_related("access__tariff")
        return self.page(
            status=status,
            station=station,
            form=form,
            connectors=[(c, getattr(c, "access", None)) for c in connectors],
            configuration=ConfigurationKey.objects.for_tenant(self.organization).filter(
                station=station
            ),
            commands=StationCommand.objects.for_tenant(self.organization).filter(
                station=station, action="ChangeConfiguration"
            )[:10],
        )

    def post(self, request: HttpRequest, org: str, pk: int) -> HttpResponse:
        station = self.tenant_get(Station, pk)
        form = StationAccessForm(request.POST)
        if not form.is_valid():
            return self.render_station(station, form, status=400)
        try:
            sent = owner_services.station_access_settings_set(
                station=station, requested_by=request.user, **form.cleaned_data
            )
        except (ValidationError, DomainError) as exc:
            apply_errors(form, exc)
            station.refresh_from_db()
            return self.render_station(station, form, status=400)
        if sent:
            messages.success(
                request,
                _("Saved. %(n)s configuration change(s) sent to the station; results below.")
                % {"n": len(sent)},
            )
        else:
            messages.success(request, _("Saved."))
        return self.back()


# --- connector access and time rules ------------------------------------------------------


class ConnectorAccessView(AccessView):
    template = "billing/owner/connector.html"

    def get_connector(self, pk: int) -> Connector:
        return self.tenant_get(Connector, pk, select=["station", "access__tariff"])

    def get(self, request: HttpRequest, org: str, pk: int) -> HttpResponse:
        connector = self.get_connector(pk)
        row = getattr(connector, "access", None)
        form = ConnectorAccessForm(
            organization=self.organization,
            initial={
                "access": row.access if row else "private",
                "tariff": row.tariff_id if row else None,
            },
        )
        return self.render_connector(connector, form, AccessRuleForm(initial={"weekdays": []}))

    def render_connector(
        self, connector: Connector, form: Form, rule_form: Form, status: int = 200
    ) -> HttpResponse:
        row = getattr(connector, "access", None)
        return self.page(
            status=status,
            connector=connector,
            station=connector.station,
            access_row=row,
            rules=list(row.rules.order_by("position", "id")) if row else [],
            form=form,
            rule_form=rule_form,
        )

    def post(self, request: HttpRequest, org: str, pk: int) -> HttpResponse:
        connector = self.get_connector(pk)
        action = request.POST.get("action", "set")
        row = getattr(connector, "access", None)
        form = ConnectorAccessForm(
            organization=self.organization,
            initial={
                "access": row.access if row else "private",
                "tariff": row.tariff_id if row else None,
            },
        )
        rule_form = AccessRuleForm(initial={"weekdays": []})
        if action == "set":
            form = ConnectorAccessForm(request.POST, organization=self.organization)
            if form.is_valid():
                try:
                    owner_services.connector_access_set(connector=connector, **form.cleaned_data)
                except (ValidationError, DomainError) as exc:
                    apply_errors(form, exc)
                else:
                    messages.success(request, _("Access saved."))
                    return self.back()
        elif action == "add_rule":
            rule_form = AccessRuleForm(request.POST)
            if rule_form.is_valid():
                try:
                    owner_services.access_rule_add(
                        connector_access=owner_services.connector_access_for(connector),
                        **rule_form.rule(),
                    )
                except ValidationError as exc:
                    apply_errors(rule_form, exc)
                else:
                    messages.success(request, _("Time rule added."))
                    return self.back()
        elif action == "remove_rule":
            rule = get_object_or_404(
                AccessRule.objects.for_tenant(self.organization).filter(
                    connector_access__connector=connector
                ),
                pk=request.POST.get("rule") if str(request.POST.get("rule", "")).isdigit() else 0,
            )
            owner_services.access_rule_remove(rule=rule)
            messages.success(request, _("Time rule removed."))
            return self.back()
        connector = self.get_connector(pk)  # re-read: adding a rule may have created the row
        return self.render_connector(connector, form, rule_form, status=400)


# --- tariffs ------------------------------------------------------------------------------


class TariffListView(AccessView):
    template = "billing/owner/tariffs.html"

    def get(self, request: HttpRequest, org: str) -> HttpResponse:
        return self.render_list(TariffForm(initial={"currency": "CHF", "vat_percent": "8.1"}))

    def render_list(self, form: Form, status: int = 200) -> HttpResponse:
        tariffs = (
            Tariff.objects.for_tenant(self.organization)
            .annotate(
                n_connectors=Count("connectors", distinct=True),
                n_special=Count("special_users", distinct=True),
                n_groups=Count("user_groups", distinct=True),
            )
            .order_by("name")
        )
        return self.page(status=status, tariffs=tariffs, form=form)

    def post(self, request: HttpRequest, org: str) -> HttpResponse:
        form = TariffForm(request.POST)
        if form.is_valid():
            try:
                tariff = owner_services.tariff_create(
                    organization=self.organization, **form.cleaned_data
                )
            except ValidationError as exc:
                apply_errors(form, exc)
            else:
                messages.success(request, _("Price '%(name)s' created.") % {"name": tariff.name})
                return self.back()
        return self.render_list(form, status=400)


class TariffEditView(AccessView):
    template = "billing/owner/tariff.html"

    def get(self, request: HttpRequest, org: str, pk: int) -> HttpResponse:
        tariff = self.tenant_get(Tariff, pk)
        return self.page(tariff=tariff, form=TariffForm.for_tariff(tariff))

    def post(self, request: HttpRequest, org: str, pk: int) -> HttpResponse:
        tariff = self.tenant_get(Tariff, pk)
        if request.POST.get("action") == "delete":
            try:
                owner_services.tariff_delete(tariff=tariff)
            except DomainError as exc:
                messages.error(request, exc.detail)
                return self.back()
            messages.success(request, _("Price deleted."))
            return redirect("billing_tariffs", org=org)
        form = TariffForm(request.POST)
        if form.is_valid():
            try:
                owner_services.tariff_update(tariff=tariff, **form.cleaned_data)
            except ValidationError as exc:
                apply_errors(form, exc)
            else:
                messages.success(request, _("Price saved."))
                return redirect("billing_tariffs", org=org)
        tariff.refresh_from_db()
        return self.page(tariff=tariff, form=form, status=400)


# --- special users ------------------------------------------------------------------------


class SpecialUsersView(AccessView):
    template = "billing/owner/special_users.html"

    def get(self, request: HttpRequest, org: str) -> HttpResponse:
        return self.render_list(SpecialUserAddForm(organization=self.organization))

    def render_list(self, form: Form, status: int = 200) -> HttpResponse:
        special = SpecialUser.objects.for_tenant(self.organization).select_related("user", "tariff")
        rows = [
            (
                s,
                SpecialUserEditForm(
                    organization=self.organization,
                    initial={"tariff": s.tariff_id, "note": s.note},
                    prefix=f"s{s.pk}",
                ),
            )
            for s in special
        ]
        return self.page(status=status, rows=rows, form=form)

    def post(self, request: HttpRequest, org: str) -> HttpResponse:
        form = SpecialUserAddForm(request.POST, organization=self.organization)
        if form.is_valid():
            try:
                special = owner_services.special_user_add(
                    organization=self.organization, **form.cleaned_data
                )
            except (ValidationError, DomainError) as exc:
                apply_errors(form, exc)
            else:
                messages.success(
                    request, _("'%(name)s' is now a special user.") % {"name": special.user}
                )
                return self.back()
        return self.render_list(form, status=400)


class SpecialUserView(AccessView):
    def post(self, request: HttpRequest, org: str, pk: int) -> HttpResponse:
        special = self.tenant_get(SpecialUser, pk, select=["user"])
        if request.POST.get("action") == "remove":
            owner_services.special_user_remove(special_user=special)
            messages.success(
                request, _("'%(name)s' is no longer a special user.") % {"name": special.user}
            )
        else:
            form = SpecialUserEditForm(
                request.POST, organization=self.organization, prefix=f"s{special.pk}"
            )
            if form.is_valid():
                try:
                    owner_services.special_user_update(special_user=special, **form.cleaned_data)
                except DomainError as exc:
                    messages.error(request, exc.detail)
                else:
                    messages.success(request, _("Saved."))
            else:
                messages.error(request, " ".join(m for e in form.errors.values() for m in e))
        return redirect("billing_special_users", org=org)


# --- user groups --------------------------------------------------------------------------


class GroupsView(AccessView):
    template = "billing/owner/groups.html"

    def get(self, request: HttpRequest, org: str) -> HttpResponse:
        return self.render_list(GroupForm(organization=self.organization))

    def render_list(self, form: Form, status: int = 200) -> HttpResponse:
        groups = (
            UserGroup.objects.for_tenant(self.organization)
            .select_related("tariff")
            .annotate(n_members=Count("memberships"))
            .order_by("name")  # Meta.ordering is dropped on aggregated queries
        )
        return self.page(status=status, groups=groups, form=form)

    def post(self, request: HttpRequest, org: str) -> HttpResponse:
        form = GroupForm(request.POST, organization=self.organization)
        if form.is_valid():
            try:
                group = owner_services.group_create(
                    organization=self.organization, **form.cleaned_data
                )
            except (ValidationError, DomainError) as exc:
                apply_errors(form, exc)
            else:
                messages.success(request, _("Group '%(name)s' created.") % {"name": group.name})
                return redirect("billing_group", org=org, pk=group.pk)
        return self.render_list(form, status=400)


class GroupView(AccessView):
    template = "billing/owner/group.html"

    def get(self, request: HttpRequest, org: str, pk: int) -> HttpResponse:
        group = self.tenant_get(UserGroup, pk)
        form = GroupForm(
            organization=self.organization, initial={"name": group.name, "tariff": group.tariff_id}
        )
        return self.render_group(group, form=form)

    def render_group(
        self,
        group: UserGroup,
        *,
        form: Form,
        member_form: Form | None = None,
        upload_form: Form | None = None,
        import_errors: list | None = None,
        status: int = 200,
    ) -> HttpResponse:
        return self.page(
            status=status,
            group=group,
            members=UserGroupMember.objects.filter(group=group).select_related("user"),
            form=form,
            member_form=member_form or AccountForm(),
            upload_form=upload_form or CsvUploadForm(),
            import_errors=import_errors or [],
        )

    def post(self, request: HttpRequest, org: str, pk: int) -> HttpResponse:
        group = self.tenant_get(UserGroup, pk)
        action = request.POST.get("action", "save")
        blank = GroupForm(
            organization=self.organization, initial={"name": group.name, "tariff": group.tariff_id}
        )
        if action == "delete":
            owner_services.group_delete(group=group)
            messages.success(request, _("Group '%(name)s' deleted.") % {"name": group.name})
            return redirect("billing_groups", org=org)
        if action == "remove_member":
            user_id = request.POST.get("user", "")
            if user_id.isdigit():
                owner_services.group_member_remove(group=group, user_id=int(user_id))
            messages.success(request, _("Member removed."))
            return self.back()
        if action == "add_member":
            member_form = AccountForm(request.POST)
            if member_form.is_valid():
                try:
                    membership, created = owner_services.group_member_add(
                        group=group, account_name=member_form.cleaned_data["account_name"]
                    )
                except DomainError as exc:
                    apply_errors(member_form, exc)
                else:
                    messages.success(
                        request,
                        (
                            _("'%(name)s' added.")
                            if created
                            else _("'%(name)s' was already a member.")
                        )
                        % {"name": membership.user.username},
                    )
                    return self.back()
            return self.render_group(group, form=blank, member_form=member_form, status=400)
        if action == "import":
            upload_form = CsvUploadForm(request.POST, request.FILES)
            if upload_form.is_valid():
                try:
                    result = imports.group_members_import(
                        group=group, data=upload_form.cleaned_data["file"]
                    )
                except imports.CsvImportError as exc:
                    return self.render_group(
                        group,
                        form=blank,
                        upload_form=upload_form,
                        import_errors=exc.errors,
                        status=400,
                    )
                messages.success(
                    request,
                    _("%(created)s member(s) added, %(unchanged)s already in the group.")
                    % {"created": result.created, "unchanged": result.unchanged},
                )
                return self.back()
            return self.render_group(group, form=blank, upload_form=upload_form, status=400)
        form = GroupForm(request.POST, organization=self.organization)
        if form.is_valid():
            try:
                owner_services.group_update(group=group, **form.cleaned_data)
            except (ValidationError, DomainError) as exc:
                apply_errors(form, exc)
            else:
                messages.success(request, _("Group saved."))
                return self.back()
        group.refresh_from_db()
        return self.render_group(group, form=form, status=400)


# --- cards --------------------------------------------------------------------------------


class CardsView(AccessView):
    template = "billing/owner/cards.html"

    def get(self, request: HttpRequest, org: str) -> HttpResponse:
        return self.render_list()

    def render_list(
        self,
        form: Form | None = None,
        upload_form: Form | None = None,
        import_errors: list | None = None,
        status: int = 200,
    ) -> HttpResponse:
        cards = RfidCard.objects.for_tenant(self.organization).select_related("user")
        rows = [
            (
                card,
                owner_services.expiry_date(card.expires_at),
                CardEditForm(
                    prefix=f"c{card.pk}",
                    initial={
                        "label": card.label,
                        "blocked": card.blocked,
                        "expires": owner_services.expiry_date(card.expires_at),
                    },
                ),
            )
            for card in cards
        ]
        return self.page(
            status=status,
            rows=rows,
            form=form or CardAddForm(),
            upload_form=upload_form or CsvUploadForm(),
            import_errors=import_errors or [],
        )

    def post(self, request: HttpRequest, org: str) -> HttpResponse:
        if request.POST.get("action") == "import":
            upload_form = CsvUploadForm(request.POST, request.FILES)
            if not upload_form.is_valid():
                return self.render_list(upload_form=upload_form, status=400)
            try:
                result = imports.cards_import(
                    organization=self.organization, data=upload_form.cleaned_data["file"]
                )
            except imports.CsvImportError as exc:
                return self.render_list(
                    upload_form=upload_form, import_errors=exc.errors, status=400
                )
            messages.success(request, _("%(n)s card(s) imported.") % {"n": result.created})
            return self.back()
        form = CardAddForm(request.POST)
        if form.is_valid():
            try:
                card = owner_services.card_add(organization=self.organization, **form.cleaned_data)
            except (ValidationError, DomainError) as exc:
                apply_errors(form, exc)
            else:
                messages.success(request, _("Card %(uid)s added.") % {"uid": card.uid})
                return self.back()
        return self.render_list(form=form, status=400)


class CardView(AccessView):
    def post(self, request: HttpRequest, org: str, pk: int) -> HttpResponse:
        card = self.tenant_get(RfidCard, pk)
        action = request.POST.get("action", "save")
        if action == "delete":
            owner_services.card_delete(card=card)
            messages.success(request, _("Card %(uid)s deleted.") % {"uid": card.uid})
        elif action in ("block", "unblock"):
            owner_services.card_update(card=card, blocked=action == "block")
            messages.success(
                request,
                (_("Card %(uid)s blocked.") if card.blocked else _("Card %(uid)s unblocked."))
                % {"uid": card.uid},
            )
        else:
            form = CardEditForm(request.POST, prefix=f"c{card.pk}")
            if form.is_valid():
                owner_services.card_update(card=card, **form.cleaned_data)
                messages.success(request, _("Card %(uid)s saved.") % {"uid": card.uid})
            else:
                messages.error(request, " ".join(m for e in form.errors.values() for m in e))
        return redirect("billing_cards", org=org)
