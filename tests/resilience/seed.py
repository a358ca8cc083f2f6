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


def seed(prefix: str, count: int, line_a: int) -> list[int]:
    from tests.factories import OrganizationFactory
    from tests.loadmgmt.lines import line_of_stations

    slug = f"faults-{prefix.lower()}"
    organization = OrganizationFactory(name=f"Faults {prefix}", slug=slug)
    _group, stations = line_of_stations(organization, prefix, count, line_a)
    return [station.pk for station in stations]


def main() -> None:
    import django

    django.setup()
    prefix, count, line_a = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    print(json.dumps(seed(prefix, count, line_a)))


if __name__ == "__main__":
    main()
