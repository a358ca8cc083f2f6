"""API hygiene: default throttles (anonymous, per user, token exchange) answering 429 in the
error envelope, and the error responses documented in the OpenAPI schema."""

from __future__ import annotations

import pytest
from django.conf import settings
from rest_framework.test import APIClient
from rest_framework.throttling import SimpleRateThrottle

from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def allowed(scope: str) -> int:
    count, _period = settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"][scope].split("/")
    return int(count)


@pytest.fixture
def small_rates(monkeypatch):
    """DRF binds the rates when it imports its throttles; smaller numbers keep tests quick."""
    rates = {**SimpleRateThrottle.THROTTLE_RATES, "anon": "3/min", "user": "5/min"}
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", rates)


def assert_throttled(r) -> None:
    assert r.status_code == 429
    assert r.json()["error"] == "throttled"
    assert "Retry-After" in r.headers


def test_token_endpoint_is_throttled_per_address():
    user = UserFactory()
    api = APIClient()
    for _ in range(allowed("token")):
        r = api.post("/api/v1/auth/token/", {"email": user.email, "password": "wrong"})
        assert r.status_code == 400
    r = api.post("/api/v1/auth/token/", {"email": user.email, "password": "wrong"})
    assert_throttled(r)


def test_defaults_throttle_every_endpoint():
    classes = settings.REST_FRAMEWORK["DEFAULT_THROTTLE_CLASSES"]
    assert "rest_framework.throttling.AnonRateThrottle" in classes
    assert "rest_framework.throttling.UserRateThrottle" in classes
    assert allowed("anon") <= 300 and allowed("user") <= 3000


def test_user_rate(small_rates, tenants):
    api = APIClient()
    api.force_authenticate(tenants.owner_a)
    for _ in range(5):
        assert api.get("/api/v1/me/").status_code == 200
    assert_throttled(api.get("/api/v1/me/"))
    # Another user has their own allowance.
    other = APIClient()
    other.force_authenticate(tenants.owner_b)
    assert other.get("/api/v1/me/").status_code == 200


def test_anonymous_rate(small_rates):
    """Endpoints open to anonymous callers (here the OpenAPI schema) count per address.
    (Meters' readings have a rate of their own: tests/loadmgmt/test_meters.py.)"""
    api = APIClient()
    for _ in range(3):
        assert api.get("/api/v1/schema/?format=json").status_code == 200
    assert_throttled(api.get("/api/v1/schema/?format=json"))


def test_unmatched_api_url_answers_json_404(client):
    r = client.get("/api/v1/no-such-endpoint/")
    assert r.status_code == 404
    assert r.json() == {"error": "not_found", "detail": "Not found."}
    # Pages keep Django's HTML page.
    r = client.get("/no-such-page/")
    assert r.status_code == 404 and r["Content-Type"].startswith("text/html")


@pytest.fixture(scope="module")
def schema(django_db_blocker):
    from drf_spectacular.generators import SchemaGenerator

    with django_db_blocker.unblock():
        return SchemaGenerator().get_schema(request=None, public=True)


ERROR_REF = "#/components/schemas/Error"


def operations(schema):
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if method in {"get", "post", "put", "patch", "delete"}:
                yield path, method, operation


def error_ref(response: dict) -> str | None:
    return response.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref")


def test_error_component_has_the_envelope(schema):
    error = schema["components"]["schemas"]["Error"]
    assert set(error["required"]) == {"error", "detail"}
    assert error["properties"]["error"]["type"] == "string"


def test_member_endpoints_document_their_errors(schema):
    members = schema["paths"]["/api/v1/organizations/{org}/members/"]
    for status in ("401", "403", "404", "429"):
        assert error_ref(members["get"]["responses"][status]) == ERROR_REF
    assert error_ref(members["post"]["responses"]["400"]) == ERROR_REF


def test_token_endpoint_documents_400_and_429_but_no_auth_errors(schema):
    responses = schema["paths"]["/api/v1/auth/token/"]["post"]["responses"]
    assert error_ref(responses["400"]) == ERROR_REF
    assert error_ref(responses["429"]) == ERROR_REF
    assert "401" not in responses and "403" not in responses


def test_every_operation_documents_its_errors(schema):
    missing = []
    for path, method, operation in operations(schema):
        responses = operation["responses"]
        expected = {"429"}
        if "{" in path:
            expected.add("404")
        if method in {"post", "put", "patch", "delete"}:
            expected.add("400")
        if operation.get("security") not in (None, [{}]):
            expected |= {"401", "403"}
        for status in sorted(expected):
            if status not in responses or not responses[status].get("content"):
                missing.append(f"{method.upper()} {path} {status}")
    assert not missing, missing
