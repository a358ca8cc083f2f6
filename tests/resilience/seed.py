"""Seed one fault-injection fleet into the private database (run as a subprocess).

    python -m tests.resilience.seed PREFIX STATIONS LINE_A

The test process never opens the private database through pytest-django (its own test
database lives on the machine's PostgreSQL), so the rows are made here, by the portal's own
models and the project's factories, in a process whose ``DATABASE_URL`` is the private one.
Prints the station primary keys in order, one line of JSON.
"""

from __future__ import annotations

import json
import sys

ROTATIONS = ["L1-L2-L3", "L2-L3-L1", "L3-L1-L2"]


def seed(prefix: str, count: int, line_a: int) -> list[int]:
    from loadmgmt.models import StationLimits
    from tests.factories import OrganizationFactory
    from tests.loadmgmt.factories import LoadGroupFactory
    from tests.stations.factories import StationFactory

    slug = f"faults-{prefix.lower()}"
    organization = OrganizationFactory(name=f"Faults {prefix}", slug=slug)
    group = LoadGroupFactory(organization=organization, name="Car park", max_current=line_a)
    ids = []
    for i in range(count):
        station = StationFactory(
            organization=organization,
            charge_point_id=f"{prefix}-{i:02d}",
            name=f"{prefix} {i}",
            connectors=1,
            auth_mode="none",  # charges when plugged in: these tests are about the current
        )
        # Station 0 falls back to 6 A, the others to 0 A: the fuse holds with every lease
        # ended (6 A on one grid phase at most).
        StationLimits.objects.create(
            station=station,
            phase_rotation=ROTATIONS[i % 3],
            can_switch_phases=True,
            fail_safe_current=0 if i else 6,
        )
        group.members.create(station=station)
        ids.append(station.pk)
    return ids


def main() -> None:
    import django

    django.setup()
    prefix, count, line_a = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    print(json.dumps(seed(prefix, count, line_a)))


if __name__ == "__main__":
    main()
