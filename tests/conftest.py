"""Shared fixtures: two tenants with every role, a driver, and API clients per person.

Tenant A ("alpha"): owner, manager, viewer. Tenant B ("beta"): owner. Plus a driver with no
organization. Every endpoint test should also assert that B's owner gets 404 on A's objects.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest
from django.test import Client
from rest_framework.test import APIClient

from portal.models import Organization, Role, User
from tests.factories import MembershipFactory, OrganizationFactory, UserFactory


def pytest_configure(config):
    # Fast hashing in tests; argon2 stays the production hasher (tested explicitly).
    from django.conf import settings

    settings.PASSWORD_HASHERS = [
        "django.contrib.auth.hashers.MD5PasswordHasher",
        "django.contrib.auth.hashers.Argon2PasswordHasher",
    ]


@dataclass
class Tenants:
    a: Organization
    b: Organization
    owner_a: User
    manager_a: User
    viewer_a: User
    owner_b: User
    driver: User

    def client(self, user: User | None) -> Client:
        client = Client()
        if user is not None:
            client.force_login(user)
        return client

    def api(self, user: User | None) -> APIClient:
        client = APIClient()
        if user is not None:
            client.force_authenticate(user)
        return client


@pytest.fixture
def tenants(db) -> Tenants:
    a = OrganizationFactory(name="Alpha Energy", slug="alpha")
    b = OrganizationFactory(name="Beta Parking", slug="beta")
    owner_a = MembershipFactory(organization=a, role=Role.OWNER, user__username="anna").user
    manager_a = MembershipFactory(organization=a, role=Role.MANAGER, user__username="max").user
    viewer_a = MembershipFactory(organization=a, role=Role.VIEWER, user__username="vic").user
    owner_b = MembershipFactory(organization=b, role=Role.OWNER, user__username="bob").user
    driver = UserFactory(username="dora")
    return Tenants(a, b, owner_a, manager_a, viewer_a, owner_b, driver)


def real_services_expected() -> bool:
    """CI sets REQUIRE_REAL_SERVICES=1: tests marked ``services`` must then run, not skip."""
    return os.environ.get("REQUIRE_REAL_SERVICES") == "1"
