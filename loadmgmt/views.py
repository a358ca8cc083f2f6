"""Load-management pages: the overview (tree, groups, stations, meters, warnings), forms for
nodes, groups, meters and station limits. Thin: the tenant comes from ``OrgViewMixin`` (404
for outsiders; viewers read, managers change, owners also handle meter tokens), objects are
read through ``for_tenant``, forms parse, services decide."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.forms import Form
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views import View

from loadmgmt import live, selectors, services
from loadmgmt.forms import GroupForm, MeterForm, NodeForm, StationLimitsForm
from loadmgmt.models import PHASE_VOLTAGE, LoadGroup, Meter, TreeNode, power_kw
from portal.errors import DomainError
from portal.models import Role
from portal.tenancy import OrgViewMixin
from stations.models import Station


def apply_errors(form: Form, exc: ValidationError | DomainError) -> None:
    """Put a service's refusal on the form, next to its field when it names one."""
    if isinstance(exc, DomainError):
        form.add_error(None, exc.detail)
    elif hasattr(exc, "error_dict"):
        for name, errors in exc.message_dict.items():
            form.add_error(name if name in form.fields else None, errors)
    else:
        form.add_error(None, exc.messages)


class LoadView(OrgViewMixin, View):
    template = ""

    def page(self, status: int = 200, **context: Any) -> HttpResponse:
        return render(
            self.request,
            self.template,
            {
                "organization": self.organization,
                "membership": self.membership,
                "can_change": self.membership.can_change,
                "is_owner": self.membership.is_owner,
                **context,
            },
            status=status,
        )

    def overview(self) -> HttpResponse:
        return redirect("loadmgmt_overview", org=self.organization.slug)

    def tenant_get(self, model: type, pk: int) -> Any:
        return get_object_or_404(self.tenant_queryset(model), pk=pk)


class OverviewView(LoadView):
    template = "loadmgmt/overview.html"

    def get(self, request: HttpRequest, org: str) -> HttpResponse:
        tree = selectors.tree_for(self.organization, now=timezone.now())
        summary = live.summary_get(self.organization.pk)
        return self.page(tree=tree, live=summary, **live.chart_context(self.organization))


class ChartView(LoadView):
    """The chart of the last hours (refreshed by the page every minute)."""

    template = "loadmgmt/_chart.html"

    def get(self, request: HttpRequest, org: str) -> HttpResponse:
        return self.page(**live.chart_context(self.organization))


# --- nodes --------------------------------------------------------------------------------


class NodeEditView(LoadView):
    """``pk`` absent: a new node."""

    template = "loadmgmt/node.html"

    def get_node(self, pk: int | None) -> TreeNode | None:
        return self.tenant_get(TreeNode, pk) if pk else None

    def get(self, request: HttpRequest, org: str, pk: int | None = None) -> HttpResponse:
        node = self.get_node(pk)
        if node is None:
            initial = {"parent": request.GET.get("parent"), "shed_signal": "none"}
            form = NodeForm(organization=self.organization, initial=initial)
        else:
            initial = {f: getattr(node, f) for f in services.NODE_FIELDS}
            form = NodeForm(organization=self.organization, node=node, initial=initial)
        return self.page(form=form, node=node)

    def post(self, request: HttpRequest, org: str, pk: int | None = None) -> HttpResponse:
        node = self.get_node(pk)
        form = NodeForm(request.POST, organization=self.organization, node=node)
        if form.is_valid():
            try:
                if node is None:
                    node = services.node_create(organization=self.organization, **form.cleaned_data)
                    messages.success(request, _("Node %(name)s added.") % {"name": node.name})
                else:
                    services.node_update(node=node, **form.cleaned_data)
                    messages.success(request, _("Node %(name)s saved.") % {"name": node.name})
                return self.overview()
            except (ValidationError, DomainError) as exc:
                apply_errors(form, exc)
        return self.page(status=400, form=form, node=node)


class NodeDeleteView(LoadView):
    def post(self, request: HttpRequest, org: str, pk: int) -> HttpResponse:
        node = self.tenant_get(TreeNode, pk)
        try:
            services.node_delete(node=node)
        except DomainError as exc:
            messages.error(request, exc.detail)
        else:
            messages.success(request, _("Node %(name)s deleted.") % {"name": node.name})
        return self.overview()


# --- groups -------------------------------------------------------------------------------


class GroupEditView(LoadView):
    template = "loadmgmt/group.html"

    def get_group(self, pk: int | None) -> LoadGroup | None:
        return self.tenant_get(LoadGroup, pk) if pk else None

    def get(self, request: HttpRequest, org: str, pk: int | None = None) -> HttpResponse:
        group = self.get_group(pk)
        if group is None:
            initial = {"node": request.GET.get("node"), "failure_action": "fail_safe"}
        else:
            initial = {f: getattr(group, f) for f in services.GROUP_FIELDS}
            initial["stations"] = list(group.members.values_list("station_id", flat=True))
        form = GroupForm(organization=self.organization, group=group, initial=initial)
        return self.page(form=form, group=group)

    def post(self, request: HttpRequest, org: str, pk: int | None = None) -> HttpResponse:
        group = self.get_group(pk)
        form = GroupForm(request.POST, organization=self.organization, group=group)
        if form.is_valid():
            data = form.cleaned_data
            try:
                if group is None:
                    group = services.group_create(organization=self.organization, **data)
                    messages.success(request, _("Group %(name)s added.") % {"name": group.name})
                else:
                    services.group_update(group=group, **data)
                    messages.success(request, _("Group %(name)s saved.") % {"name": group.name})
                return self.overview()
            except (ValidationError, DomainError) as exc:
                apply_errors(form, exc)
        return self.page(status=400, form=form, group=group)


class GroupDeleteView(LoadView):
    def post(self, request: HttpRequest, org: str, pk: int) -> HttpResponse:
        group = self.tenant_get(LoadGroup, pk)
        services.group_delete(group=group)
        messages.success(request, _("Group %(name)s deleted.") % {"name": group.name})
        return self.overview()


# --- meters -------------------------------------------------------------------------------


class MeterAddView(LoadView):
    """Owners only: creating a meter shows its REST token, once."""

    template = "loadmgmt/meter.html"
    read_role = Role.OWNER
    write_role = Role.OWNER

    def get(self, request: HttpRequest, org: str, node: int) -> HttpResponse:
        parent = self.tenant_get(TreeNode, node)
        form = MeterForm(initial={"name": f"{parent.name} meter", "stale_after": 60})
        return self.page(form=form, node=parent, meter=None)

    def post(self, request: HttpRequest, org: str, node: int) -> HttpResponse:
        parent = self.tenant_get(TreeNode, node)
        form = MeterForm(request.POST)
        if form.is_valid():
            try:
                meter, token = services.meter_create(node=parent, **form.cleaned_data)
            except (ValidationError, DomainError) as exc:
                apply_errors(form, exc)
            else:
                return self.token_page(meter, token)
        return self.page(status=400, form=form, node=parent, meter=None)

    def token_page(self, meter: Meter, token: str) -> HttpResponse:
        self.template = "loadmgmt/meter_token.html"
        url = self.request.build_absolute_uri(f"/api/v1/meters/{meter.pk}/readings")
        return self.page(meter=meter, token=token, url=url)


class MeterEditView(LoadView):
    template = "loadmgmt/meter.html"

    def get(self, request: HttpRequest, org: str, pk: int) -> HttpResponse:
        meter = self.tenant_get(Meter, pk)
        form = MeterForm(
            initial={f: getattr(meter, f) for f in ("name", "mqtt_topic", "stale_after")}
        )
        return self.page(form=form, node=meter.node, meter=meter)

    def post(self, request: HttpRequest, org: str, pk: int) -> HttpResponse:
        meter = self.tenant_get(Meter, pk)
        form = MeterForm(request.POST)
        if form.is_valid():
            try:
                services.meter_update(meter=meter, **form.cleaned_data)
            except (ValidationError, DomainError) as exc:
                apply_errors(form, exc)
            else:
                messages.success(request, _("Meter %(name)s saved.") % {"name": meter.name})
                return self.overview()
        return self.page(status=400, form=form, node=meter.node, meter=meter)


class MeterTokenView(MeterAddView):
    """A new token for an existing meter (owners); the old one stops working at once."""

    def get(self, request: HttpRequest, org: str, pk: int) -> HttpResponse:  # type: ignore[override]
        self.tenant_get(Meter, pk)  # another tenant's (or no) meter: 404, as everywhere
        return self.overview()

    def post(self, request: HttpRequest, org: str, pk: int) -> HttpResponse:  # type: ignore[override]
        meter = self.tenant_get(Meter, pk)
        return self.token_page(meter, services.meter_rotate_token(meter=meter))


class MeterDeleteView(LoadView):
    write_role = Role.OWNER

    def post(self, request: HttpRequest, org: str, pk: int) -> HttpResponse:
        meter = self.tenant_get(Meter, pk)
        services.meter_delete(meter=meter)
        messages.success(request, _("Meter %(name)s deleted.") % {"name": meter.name})
        return self.overview()


# --- station limits -----------------------------------------------------------------------


def power_table(effective_max: int) -> list[tuple[int, float, float]]:
    """(A, kW on 3 phases, kW on 1 phase) for the page's reference table."""
    return [(a, power_kw(a, 3), power_kw(a, 1)) for a in (6, 10, 13, 16, 20, 25, 32)]


class StationLimitsView(LoadView):
    template = "loadmgmt/station_limits.html"

    def get_station(self, pk: int) -> Station:
        return self.tenant_get(Station, pk)

    def context(self, station: Station, form: StationLimitsForm) -> dict[str, Any]:
        limits = services.station_limits_get(station=station)
        current = form.data.get("max_current") if form.is_bound else limits.max_current
        try:
            current = int(current)
        except (TypeError, ValueError):
            current = limits.max_current
        return {
            "station": station,
            "form": form,
            "limits": limits,
            "group": selectors.station_group(station),
            "power_3": power_kw(current, 3),
            "power_1": power_kw(current, 1),
            "voltage": PHASE_VOLTAGE,
            "table": power_table(limits.effective_max),
        }

    def get(self, request: HttpRequest, org: str, pk: int) -> HttpResponse:
        station = self.get_station(pk)
        limits = services.station_limits_get(station=station)
        form = StationLimitsForm(initial={f: getattr(limits, f) for f in services.LIMIT_FIELDS})
        return self.page(**self.context(station, form))

    def post(self, request: HttpRequest, org: str, pk: int) -> HttpResponse:
        station = self.get_station(pk)
        form = StationLimitsForm(request.POST)
        if form.is_valid():
            try:
                services.station_limits_set(station=station, **form.cleaned_data)
            except ValidationError as exc:
                apply_errors(form, exc)
            else:
                messages.success(
                    request, _("Limits of %(station)s saved.") % {"station": station.label}
                )
                return self.overview()
        return self.page(status=400, **self.context(station, form))
