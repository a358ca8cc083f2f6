"""schemathesis over the OpenAPI schema (/api/v1/schema/), in-process through WSGI.

Each operation gets a few generated requests as the owner of organization "alpha" (the
``org`` path parameter is pinned so requests reach real data): no 5xx, and every response
matches the schema (status code documented, body and content type as declared). The long run
is documented in docs/RESILIENCE.md (``SCHEMATHESIS_EXAMPLES=200``).
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from rest_framework.authtoken.models import Token
from schemathesis import checks

from tests.stations.factories import StationFactory

# Checks left out, and why (see docs/RESILIENCE.md for what they report):
# - status_code_conformance: the schema documents only success codes; our 400/403/404/409
#   error envelope ({"error", "detail"}) is not declared per operation yet.
# - ignored_auth: without credentials the org API answers 404 like for any non-member
#   (docs/ARCHITECTURE.md, "Tenant scoping"), where schemathesis expects 401/403.
# - positive_data_acceptance / negative_data_rejection: serializers accept or refuse some
#   inputs the schema describes otherwise (listed in docs/RESILIENCE.md), not crashes.
EXCLUDED = [
    checks.status_code_conformance,
    checks.ignored_auth,
    checks.positive_data_acceptance,
    checks.negative_data_rejection,
]
EXAMPLES = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "4"))

schema = schemathesis.openapi.from_wsgi("/api/v1/schema/", get_wsgi_application())


@pytest.fixture
def owner_token(tenants) -> str:
    StationFactory(organization=tenants.a, charge_point_id="API-1")
    return Token.objects.create(user=tenants.owner_a).key


@pytest.fixture(autouse=True)
def _keep_test_connection():
    """The WSGI handler closes the database connection when a request finishes, which ends
    the test's transaction on PostgreSQL; Django's own test client unhooks it the same way."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.mark.django_db
@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms_to_its_schema(case, owner_token):
    if "org" in (case.path_parameters or {}):
        case.path_parameters["org"] = "alpha"
    case.call_and_validate(
        headers={"Authorization": f"Token {owner_token}"}, excluded_checks=EXCLUDED
    )
