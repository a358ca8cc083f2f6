"""The REST API base: auth, the current user, organizations, members, invitations, errors."""

from __future__ import annotations

import pytest
from django.core import mail
from rest_framework.test import APIClient

from portal.models import Invitation, Membership, Organization
from tests.factories import PASSWORD, InvitationFactory, MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_anonymous_gets_json_401():
    r = APIClient().get("/api/v1/me/")
    assert r.status_code == 401
    assert r.json()["error"] == "not_authenticated"
    assert "detail" in r.json()


def test_token_auth_round_trip(tenants):
    api = APIClient()
    r = api.post("/api/v1/auth/token/", {"email": tenants.owner_a.email, "password": PASSWORD})
    assert r.status_code == 200
    token = r.json()["token"]
    r = api.post("/api/v1/auth/token/", {"email": tenants.owner_a.email, "password": "nope"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_credentials"
    api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    me = api.get("/api/v1/me/").json()
    assert me["account_name"] == "anna"
    orgs = api.get("/api/v1/organizations/").json()
    assert [(o["slug"], o["role"]) for o in orgs["results"]] == [("alpha", "owner")]


def test_me_update_keeps_identity_fields(tenants):
    api = tenants.api(tenants.driver)
    r = api.patch(
        "/api/v1/me/",
        {"first_name": "Dora", "account_name": "hijack", "email": "x@example.test"},
        format="json",
    )
    assert r.status_code == 200
    assert r.json()["first_name"] == "Dora"
    assert r.json()["account_name"] == "dora"


def test_create_organization_makes_owner(tenants):
    api = tenants.api(tenants.driver)
    r = api.post("/api/v1/organizations/", {"name": "Dora's Garage"}, format="json")
    assert r.status_code == 201, r.json()
    assert r.json()["role"] == "owner"
    slug = r.json()["slug"]
    assert Membership.objects.get(organization__slug=slug).user == tenants.driver


def test_validation_error_shape(tenants):
    r = tenants.api(tenants.driver).post("/api/v1/organizations/", {}, format="json")
    assert r.status_code == 400
    assert r.json() == {"error": "invalid", "detail": {"name": ["This field is required."]}}


def test_members_list_scoped_and_paginated(tenants):
    r = tenants.api(tenants.viewer_a).get("/api/v1/organizations/alpha/members/")
    assert r.status_code == 200
    names = [m["account_name"] for m in r.json()["results"]]
    assert names == ["anna", "max", "vic"]
    assert r.json()["count"] == 3


def test_invitation_flow_sends_mail_after_commit_and_accepts(
    tenants, django_capture_on_commit_callbacks
):
    api = tenants.api(tenants.owner_a)
    with django_capture_on_commit_callbacks(execute=True):
        r = api.post(
            "/api/v1/organizations/alpha/invitations/",
            {"email": "Dora@Example.test", "role": "manager"},
            format="json",
        )
    assert r.status_code == 201, r.json()
    assert len(mail.outbox) == 1
    invitation = Invitation.objects.get()
    assert invitation.token in mail.outbox[0].body
    # Duplicate open invitation is refused.
    r = api.post("/api/v1/organizations/alpha/invitations/", {"email": "dora@example.test"})
    assert r.status_code == 409
    # Only the invited address may accept.
    r = tenants.api(tenants.owner_b).post(f"/api/v1/invitations/{invitation.token}/accept/")
    assert r.status_code == 400 and r.json()["error"] == "wrong_recipient"
    tenants.driver.email = "dora@example.test"
    tenants.driver.save()
    r = tenants.api(tenants.driver).post(f"/api/v1/invitations/{invitation.token}/accept/")
    assert r.status_code == 200
    assert r.json() == {"organization": "alpha", "role": "manager"}
    r = tenants.api(tenants.driver).post(f"/api/v1/invitations/{invitation.token}/accept/")
    assert r.status_code == 400 and r.json()["error"] == "invalid_token"


def test_revoked_invitation_sends_nothing(tenants, django_capture_on_commit_callbacks):
    invitation = InvitationFactory(organization=tenants.a)
    from portal.tasks import invitation_send

    invitation.delete()
    assert invitation_send(invitation.id) is False
    assert mail.outbox == []


def test_invitation_page_accept(tenants):
    invitation = InvitationFactory(organization=tenants.a, email=tenants.driver.email)
    client = tenants.client(tenants.driver)
    assert b"Join Alpha Energy" in client.get(f"/invitations/{invitation.token}/").content
    r = client.post(f"/invitations/{invitation.token}/")
    assert r.status_code == 302 and r["Location"] == "/o/alpha/"
    assert Membership.objects.filter(organization=tenants.a, user=tenants.driver).exists()


def test_query_counts_do_not_grow_with_rows(tenants, django_assert_max_num_queries):
    api = tenants.api(tenants.owner_a)
    for _ in range(25):
        MembershipFactory(organization=tenants.a)
        org = Organization.objects.create(name=f"X{_}", slug=f"x{_}")
        Membership.objects.create(organization=org, user=tenants.owner_a, role="viewer")
    # Pinned: permission (1) + count (1) + page (1).
    with django_assert_max_num_queries(3):
        assert api.get("/api/v1/organizations/alpha/members/").status_code == 200
    # Pinned: count + page + roles map.
    with django_assert_max_num_queries(3):
        assert api.get("/api/v1/organizations/").status_code == 200
    with django_assert_max_num_queries(3):
        assert api.get("/api/v1/organizations/alpha/invitations/").status_code == 200


def test_members_page_query_count_is_pinned(tenants, django_assert_max_num_queries):
    client = tenants.client(tenants.owner_a)
    client.get("/o/alpha/members/")  # warm the session / last organization
    for _ in range(30):
        MembershipFactory(organization=tenants.a)
        InvitationFactory(organization=tenants.a)
    # session + user + membership + members + invitations + switcher
    with django_assert_max_num_queries(7):
        r = client.get("/o/alpha/members/")
    assert r.status_code == 200
    assert r.content.count(b'id="member-') == 33


def test_dashboard_query_count_is_pinned(tenants, django_assert_max_num_queries):
    client = tenants.client(tenants.owner_a)
    client.get("/o/alpha/")
    with django_assert_max_num_queries(12):
        assert client.get("/o/alpha/").status_code == 200


def test_openapi_schema_and_docs(tenants):
    client = tenants.client(tenants.owner_a)
    r = client.get("/api/v1/schema/?format=json")
    assert r.status_code == 200
    paths = r.json()["paths"]
    assert "/api/v1/organizations/{org}/members/" in paths
    assert "/api/v1/me/" in paths
    r = client.get("/api/v1/docs/")
    assert r.status_code == 200
    assert b"swagger-ui" in r.content
    assert b"cdn.jsdelivr" not in r.content


def test_schema_generates_without_warnings():
    from django.core.management import call_command

    call_command("spectacular", "--validate", "--fail-on-warn", "--file", "/dev/null")


def test_user_with_no_org_cannot_list_foreign_members():
    user = UserFactory()
    api = APIClient()
    api.force_authenticate(user)
    assert api.get("/api/v1/organizations/").json()["results"] == []
