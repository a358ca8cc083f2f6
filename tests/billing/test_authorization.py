from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from billing.authorization import authorize
from stations.authorization import AuthorizationRequest
from tests.stations.factories import RfidCardFactory

pytestmark = pytest.mark.django_db


def request(org, tag):
    return AuthorizationRequest(
        organization_id=org.id,
        station_id=1,
        charge_point_id="X",
        connector_id=1,
        id_tag=tag,
        time=timezone.now(),
    )


def test_policy(tenants):
    card = RfidCardFactory(organization=tenants.a, uid="de:ad:be:ef", user=tenants.driver)
    assert card.uid == "DEADBEEF"
    result = authorize(request(tenants.a, "deadbeef"))
    assert result.status == "Accepted" and result.user_id == tenants.driver.id
    assert authorize(request(tenants.b, "DEADBEEF")).status == "Invalid"  # other tenant
    assert authorize(request(tenants.a, "CAFE")).status == "Invalid"
    card.blocked = True
    card.save()
    assert authorize(request(tenants.a, "DEADBEEF")).status == "Blocked"
    card.blocked = False
    card.expires_at = timezone.now() - timedelta(days=1)
    card.save()
    assert authorize(request(tenants.a, "DEADBEEF")).status == "Expired"


def test_stations_does_not_import_billing_at_module_level():
    import ast
    from pathlib import Path

    for path in Path("stations").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, ast.ImportFrom | ast.Import):
                names = (
                    [node.module]
                    if isinstance(node, ast.ImportFrom)
                    else [a.name for a in node.names]
                )
                assert not any((n or "").startswith("billing") for n in names), path
