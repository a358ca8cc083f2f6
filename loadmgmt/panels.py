"""The load-management panel of the organization dashboard (shown once something is set up)."""

from __future__ import annotations

from django.db.models import Q
from django.http import HttpRequest
from django.template.loader import render_to_string
from django.utils import timezone

from loadmgmt.models import LoadGroup, LoadGroupMember, Meter, TreeNode
from portal.models import Organization


def dashboard_panel(request: HttpRequest, organization: Organization) -> str:
    groups = LoadGroup.objects.for_tenant(organization).count()
    nodes = TreeNode.objects.for_tenant(organization).count()
    if not groups and not nodes:
        return ""
    now = timezone.now()
    meters = list(Meter.objects.for_tenant(organization).only("last_reading_at", "stale_after"))
    figures = {
        "groups": groups,
        "nodes": nodes,
        "stations": LoadGroupMember.objects.for_tenant(organization).count(),
        "meters": len(meters),
        "stale": sum(1 for m in meters if m.is_stale(now)),
        "shedding": TreeNode.objects.for_tenant(organization)
        .filter(~Q(shed_signal="none"))
        .count(),
    }
    return render_to_string(
        "loadmgmt/_dashboard_panel.html",
        {"organization": organization, "figures": figures},
        request=request,
    )
