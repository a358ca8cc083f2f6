"""Demo tree for the demo organization: a metered house connection, a board, a group of the
four demo stations wired with rotated phases. Idempotent (``manage.py seed_demo``)."""

from __future__ import annotations

from typing import Any

from loadmgmt.models import LoadGroup, LoadGroupMember, Meter, StationLimits, TreeNode
from loadmgmt.services import token_hash
from stations.models import Station

DEMO_METER_TOKEN = "demo-meter-token-house"
DEMO_METER_TOPIC = "chargeportal/demo/house"
ROTATIONS = ["L1-L2-L3", "L2-L3-L1", "L3-L1-L2", "L1-L2-L3"]


def seed(context: Any) -> None:
    organization = context.organization
    house, _ = TreeNode.objects.update_or_create(
        organization=organization,
        name="House connection",
        defaults={
            "limit_l1": 63,
            "limit_l2": 63,
            "limit_l3": 63,
            "safety_margin": 3,
            "fallback_limit": 32,
        },
    )
    board, _ = TreeNode.objects.update_or_create(
        organization=organization,
        name="Garage board",
        defaults={"parent": house, "limit_l1": 40, "limit_l2": 40, "limit_l3": 40},
    )
    Meter.objects.update_or_create(
        node=house,
        defaults={
            "name": "House meter",
            "mqtt_topic": DEMO_METER_TOPIC,
            "token_hash": token_hash(DEMO_METER_TOKEN),
        },
    )
    group, _ = LoadGroup.objects.update_or_create(
        organization=organization,
        name="Car park",
        defaults={"max_current": 32, "node": board},
    )
    stations = Station.objects.filter(
        organization=organization, charge_point_id__startswith="DEMO-CP-"
    ).order_by("charge_point_id")
    for index, station in enumerate(stations):
        LoadGroupMember.objects.update_or_create(station=station, defaults={"group": group})
        StationLimits.objects.update_or_create(
            station=station,
            defaults={
                "phase_rotation": ROTATIONS[index % 3],
                "can_switch_phases": True,
                "fail_safe_current": 6 if index < 4 else 0,
            },
        )
