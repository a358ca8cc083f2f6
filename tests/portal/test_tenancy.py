"""Tenant isolation and roles, for every page and endpoint under an organization."""

from __future__ import annotations

import re

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

from portal.models import Membership, Role
from tests.factories import InvitationFactory, MembershipFactory

pytestmark = pytest.mark.django_db


def _org_routes() -> list[str]:
    """Every URL (pages and API) that takes the ``org`` slug, as a template string."""
    found: list[str] = []

    def walk(patterns, prefix: str) -> None:
        for p in patterns:
            route = prefix + str(p.pattern)
            if isinstance(p, URLResolver):
                walk(p.url_patterns, route)
            elif isinstance(p, URLPattern) and "<slug:org>" in route:
                found.append(route)

    walk(get_resolver().url_patterns, "/")
    return sorted(set(found))


def _fill(route: str, org: str) -> str:
    route = route.replace("<slug:org>", org)
    route = re.sub(r"\(\?P<\w+>[^)]*\)", "1", route)  # router regex groups
    route = re.sub(r"<int:\w+>|<\w+>", "1", route)
    route = re.sub(r"<(?:str|slug|uuid|path):\w+>", "x", route)
    return route.replace("^", "").replace("$", "")


ORG_ROUTES = _org_routes()


def test_there_are_org_routes_to_check():
    assert len(ORG_ROUTES) >= 8, ORG_ROUTES


@pytest.mark.parametrize("route", ORG_ROUTES)
@pytest.mark.parametrize("method", ["get", "post", "patch", "delete"])
def test_outsider_gets_404_on_every_org_route(tenants, route, method):
    """B's owner probing A's organization learns nothing: 404, never 403."""
    url = _fill(route, tenants.a.slug)
    client = tenants.api(tenants.owner_b) if "/api/" in url else tenants.client(tenants.owner_b)
    response = getattr(client, method)(url)
    assert response.status_code == 404, (url, response.status_code)


@pytest.mark.parametrize("route", ORG_ROUTES)
def test_anonymous_never_sees_org_routes(tenants, route):
    url = _fill(route, tenants.a.slug)
    response = tenants.client(None).get(url)
    assert response.status_code in (302, 401, 403, 404)
    if response.status_code == 302:
        assert "/accounts/login/" in response["Location"]


def test_member_object_of_other_tenant_is_404(tenants):
    """A's membership id used under B's organization (where B's owner is a member): 404."""
    foreign = Membership.objects.get(organization=tenants.a, user=tenants.viewer_a)
    client = tenants.client(tenants.owner_b)
    r = client.post(f"/o/beta/members/{foreign.id}/", {"action": "remove"})
    assert r.status_code == 404
    api = tenants.api(tenants.owner_b)
    assert api.get(f"/api/v1/organizations/beta/members/{foreign.id}/").status_code == 404
    assert api.delete(f"/api/v1/organizations/beta/members/{foreign.id}/").status_code == 404
    assert Membership.objects.filter(pk=foreign.pk).exists()


def test_invitation_of_other_tenant_is_404(tenants):
    invitation = InvitationFactory(organization=tenants.a)
    api = tenants.api(tenants.owner_b)
    assert api.delete(f"/api/v1/organizations/beta/invitations/{invitation.id}/").status_code == 404
    r = tenants.client(tenants.owner_b).post(f"/o/beta/invitations/{invitation.id}/revoke/")
    assert r.status_code == 404
    invitation.refresh_from_db()


class TestRoles:
    def test_viewer_reads_but_cannot_change(self, tenants):
        client = tenants.client(tenants.viewer_a)
        assert client.get("/o/alpha/").status_code == 200
        assert client.get("/o/alpha/members/").status_code == 200
        assert client.get("/o/alpha/settings/").status_code == 200
        assert client.post("/o/alpha/settings/", {"name": "Hacked"}).status_code == 403
        api = tenants.api(tenants.viewer_a)
        assert api.patch("/api/v1/organizations/alpha/", {"name": "Hacked"}).status_code == 403
        tenants.a.refresh_from_db()
        assert tenants.a.name == "Alpha Energy"

    def test_manager_changes_but_cannot_manage_members(self, tenants):
        client = tenants.client(tenants.manager_a)
        r = client.post("/o/alpha/settings/", {"name": "Alpha Energy AG"})
        assert r.status_code == 302
        tenants.a.refresh_from_db()
        assert tenants.a.name == "Alpha Energy AG"
        r = client.post(
            "/o/alpha/members/", {"action": "add", "account_name": "dora", "role": "viewer"}
        )
        assert r.status_code == 403
        api = tenants.api(tenants.manager_a)
        r = api.post("/api/v1/organizations/alpha/members/", {"account_name": "dora"})
        assert r.status_code == 403
        assert r.json()["error"] == "permission_denied"
        viewer = Membership.objects.get(organization=tenants.a, user=tenants.viewer_a)
        r = api.patch(f"/api/v1/organizations/alpha/members/{viewer.id}/", {"role": "owner"})
        assert r.status_code == 403
        r = api.post("/api/v1/organizations/alpha/invitations/", {"email": "x@example.test"})
        assert r.status_code == 403

    def test_manager_cannot_delete_organization(self, tenants):
        r = tenants.client(tenants.manager_a).post(
            "/o/alpha/delete/", {"confirm_name": "Alpha Energy"}
        )
        assert r.status_code == 403
        r = tenants.api(tenants.manager_a).delete("/api/v1/organizations/alpha/?confirm=x")
        assert r.status_code == 403

    def test_owner_deletes_organization_only_with_its_name(self, tenants):
        api = tenants.api(tenants.owner_a)
        r = api.delete("/api/v1/organizations/alpha/?confirm=wrong")
        assert r.status_code == 400
        assert r.json() == {
            "error": "invalid",
            "detail": "Type the organization's name exactly to confirm.",
        }
        assert api.delete("/api/v1/organizations/alpha/?confirm=Alpha%20Energy").status_code == 204
        assert not Membership.objects.filter(organization__slug="alpha").exists()

    def test_owner_manages_members_but_not_the_last_owner(self, tenants):
        api = tenants.api(tenants.owner_a)
        r = api.post(
            "/api/v1/organizations/alpha/members/", {"account_name": "DORA", "role": "manager"}
        )
        assert r.status_code == 201, r.json()
        assert r.json()["account_name"] == "dora"
        assert r.json()["role"] == "manager"
        owner = Membership.objects.get(organization=tenants.a, user=tenants.owner_a)
        r = api.patch(f"/api/v1/organizations/alpha/members/{owner.id}/", {"role": "viewer"})
        assert r.status_code == 409
        assert r.json()["error"] == "conflict"
        r = api.delete(f"/api/v1/organizations/alpha/members/{owner.id}/")
        assert r.status_code == 409
        second = MembershipFactory(organization=tenants.a, role=Role.OWNER)
        r = api.patch(f"/api/v1/organizations/alpha/members/{owner.id}/", {"role": "viewer"})
        assert r.status_code == 200
        assert second.role == Role.OWNER

    def test_unknown_account_name_is_a_clear_error(self, tenants):
        r = tenants.api(tenants.owner_a).post(
            "/api/v1/organizations/alpha/members/", {"account_name": "nobody"}
        )
        assert r.status_code == 400
        assert r.json() == {"error": "unknown_account", "detail": "No user has this account name."}
