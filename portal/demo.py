"""Demo data: one organization with every role and a driver. Idempotent.

``seed_demo`` calls ``seed`` here, then ``<app>.demo.seed(context)`` of every other app that
has one, so each feature adds its own demo rows (stations, cards, prices...).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import import_module
from typing import Any

from django.db import transaction

from portal.models import Membership, Organization, Role, User

DEMO_PASSWORD = "demo-charge-2026"
DEMO_USERS = [
    # account name, e-mail, role in the demo organization (None: driver only)
    ("olivia", "owner@demo.test", Role.OWNER),
    ("manuel", "manager@demo.test", Role.MANAGER),
    ("vera", "viewer@demo.test", Role.VIEWER),
    ("dario", "driver@demo.test", None),
]
DEMO_ORG = ("Demo Charging AG", "demo")
SECOND_ORG = ("Garage Bern GmbH", "garage-bern")


@dataclass
class DemoContext:
    organization: Organization
    users: dict[str, User]
    extra: dict[str, Any] = field(default_factory=dict)


def _user(account_name: str, email: str, *, superuser: bool = False) -> User:
    user = User.objects.filter(email=email).first()
    if user is None:
        user = User.objects.create_user(username=account_name, email=email)
    if superuser:
        user.is_staff = user.is_superuser = True
    user.set_password(DEMO_PASSWORD)
    user.save()
    # Verified e-mail so the demo logins work with mandatory verification (the admin too:
    # it logs in through the portal's form like anyone else, not only at /admin/).
    from allauth.account.models import EmailAddress

    EmailAddress.objects.update_or_create(
        user=user, email=email, defaults={"verified": True, "primary": True}
    )
    return user


@transaction.atomic
def seed() -> DemoContext:
    organization, _ = Organization.objects.get_or_create(
        slug=DEMO_ORG[1], defaults={"name": DEMO_ORG[0]}
    )
    users: dict[str, User] = {}
    for account_name, email, role in DEMO_USERS:
        user = _user(account_name, email)
        users[account_name] = user
        if role is not None:
            Membership.objects.update_or_create(
                organization=organization, user=user, defaults={"role": role}
            )
    # The owner also runs a second organization, so the switcher has something to switch to.
    second, _ = Organization.objects.get_or_create(
        slug=SECOND_ORG[1], defaults={"name": SECOND_ORG[0]}
    )
    Membership.objects.update_or_create(
        organization=second, user=users["olivia"], defaults={"role": Role.OWNER}
    )
    users["admin"] = _user("admin", "admin@demo.test", superuser=True)
    context = DemoContext(organization=organization, users=users, extra={"second": second})
    for app in ("stations", "billing", "loadmgmt"):
        try:
            module = import_module(f"{app}.demo")
        except ModuleNotFoundError:
            continue
        module.seed(context)
    return context


def logins() -> list[tuple[str, str, str]]:
    rows = [
        (email, DEMO_PASSWORD, role.label if role else "driver")
        for _name, email, role in DEMO_USERS
    ]
    rows.append(("admin@demo.test", DEMO_PASSWORD, "platform admin (/admin/)"))
    return rows
