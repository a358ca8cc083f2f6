"""Forms of the load-management pages. They parse input (choices limited to the
organization's own rows); the rules are checked by ``loadmgmt/services.py``."""

from __future__ import annotations

from typing import Any

from django import forms
from django.utils.translation import gettext_lazy as _

from loadmgmt.models import (
    IEC_MIN_CURRENT,
    STATION_MAX_CURRENT,
    FailureAction,
    LoadGroup,
    LoadGroupMember,
    PhaseRotation,
    SheddingInputs,
    ShedSignal,
    TreeNode,
)
from portal.models import Organization
from stations.models import Station

AMPERE = {"min": 0, "step": 1}


class StationLimitsForm(forms.Form):
    max_current = forms.IntegerField(
        label=_("Max current (A)"),
        min_value=IEC_MIN_CURRENT,
        max_value=STATION_MAX_CURRENT,
        help_text=_("6 to 32 A in 1 A steps."),
    )
    min_current = forms.IntegerField(
        label=_("Min current (A)"),
        min_value=IEC_MIN_CURRENT,
        max_value=STATION_MAX_CURRENT,
        help_text=_("At least 6 A (IEC 61851); raise it for cars that need more to start."),
    )
    installer_max = forms.IntegerField(
        label=_("Installer's max current (A)"),
        min_value=IEC_MIN_CURRENT,
        max_value=STATION_MAX_CURRENT,
        help_text=_("The installation's hard limit: nothing overrides it."),
    )
    phase_rotation = forms.ChoiceField(label=_("Phase rotation"), choices=PhaseRotation.choices)
    can_switch_phases = forms.BooleanField(label=_("Can switch from 3 to 1 phase"), required=False)
    fail_safe_current = forms.IntegerField(
        label=_("Fail-safe current (A)"),
        min_value=0,
        max_value=STATION_MAX_CURRENT,
        help_text=_(
            "Offered when the station loses the portal: 0 A, or 6 A to the installer's max."
        ),
    )
    shedding_inputs = forms.ChoiceField(
        label=_("Load-shedding inputs"), choices=SheddingInputs.choices
    )
    priority = forms.IntegerField(label=_("Priority"), min_value=0, max_value=9)


class NodeChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj: TreeNode) -> str:
        return f"{obj.name} ({obj.limit_l1}/{obj.limit_l2}/{obj.limit_l3} A)"


class NodeForm(forms.Form):
    name = forms.CharField(label=_("Name"), max_length=120)
    parent = NodeChoiceField(
        label=_("Parent"),
        queryset=TreeNode.objects.none(),
        required=False,
        empty_label=_("(none: a root, e.g. the house connection)"),
    )
    limit_l1 = forms.IntegerField(label=_("Limit L1 (A)"), min_value=1)
    limit_l2 = forms.IntegerField(label=_("Limit L2 (A)"), min_value=1)
    limit_l3 = forms.IntegerField(label=_("Limit L3 (A)"), min_value=1)
    safety_margin = forms.IntegerField(label=_("Safety margin (A)"), min_value=0, initial=0)
    fallback_limit = forms.IntegerField(
        label=_("Fallback limit when the meter is stale (A)"), min_value=0, required=False
    )
    shed_signal = forms.ChoiceField(label=_("Cloud shedding signal"), choices=ShedSignal.choices)

    def __init__(
        self, *args: Any, organization: Organization, node: TreeNode | None = None, **kw: Any
    ):
        super().__init__(*args, **kw)
        queryset = TreeNode.objects.for_tenant(organization).order_by("name")
        if node is not None:
            queryset = queryset.exclude(pk=node.pk)
        self.fields["parent"].queryset = queryset


class StationsField(forms.ModelMultipleChoiceField):
    widget = forms.CheckboxSelectMultiple

    def label_from_instance(self, obj: Station) -> str:
        other = getattr(obj, "other_group", None)
        label = obj.charge_point_id if not obj.name else f"{obj.charge_point_id} · {obj.name}"
        return f"{label} (in group {other})" if other else label


class GroupForm(forms.Form):
    name = forms.CharField(label=_("Name"), max_length=120)
    max_current = forms.IntegerField(
        label=_("Max current per phase (A)"), min_value=IEC_MIN_CURRENT
    )
    failure_action = forms.ChoiceField(
        label=_("On connection failure"), choices=FailureAction.choices
    )
    node = NodeChoiceField(
        label=_("Parent node"),
        queryset=TreeNode.objects.none(),
        required=False,
        empty_label=_("(none)"),
    )
    stations = StationsField(label=_("Stations"), queryset=Station.objects.none(), required=False)

    def __init__(
        self, *args: Any, organization: Organization, group: LoadGroup | None = None, **kw: Any
    ):
        super().__init__(*args, **kw)
        self.fields["node"].queryset = TreeNode.objects.for_tenant(organization).order_by("name")
        stations = Station.objects.for_tenant(organization).order_by("charge_point_id")
        self.fields["stations"].queryset = stations
        # Say which stations are in another group (the service refuses them with a message).
        others = dict(
            LoadGroupMember.objects.filter(group__organization=organization)
            .exclude(group=group)
            .values_list("station_id", "group__name")
        )
        field = self.fields["stations"]
        choices = []
        for station in stations:
            station.other_group = others.get(station.pk)
            choices.append((station.pk, field.label_from_instance(station)))
        field.choices = choices


class MeterForm(forms.Form):
    name = forms.CharField(label=_("Name"), max_length=120)
    mqtt_topic = forms.CharField(
        label=_("MQTT topic"),
        max_length=200,
        required=False,
        help_text=_("Empty: one is generated."),
    )
    stale_after = forms.IntegerField(
        label=_("Stale after (s)"), min_value=5, initial=60, help_text=_("Default 60 s.")
    )
