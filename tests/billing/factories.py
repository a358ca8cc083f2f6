from __future__ import annotations

from decimal import Decimal

import factory

from billing.models import (
    AccessRule,
    ConnectorAccess,
    SpecialUser,
    Tariff,
    UserGroup,
    UserGroupMember,
    Vehicle,
)
from tests.factories import OrganizationFactory, UserFactory


class TariffFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Tariff

    organization = factory.SubFactory(OrganizationFactory)
    name = factory.Sequence(lambda n: f"Tariff {n}")
    per_kwh = Decimal("0.45")
    per_hour = Decimal("0")
    currency = "CHF"
    vat_percent = Decimal("8.1")


class ConnectorAccessFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ConnectorAccess

    access = "public"


class AccessRuleFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = AccessRule


class SpecialUserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = SpecialUser

    user = factory.SubFactory(UserFactory)


class UserGroupFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = UserGroup

    name = factory.Sequence(lambda n: f"Group {n}")


class UserGroupMemberFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = UserGroupMember


class VehicleFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Vehicle

    user = factory.SubFactory(UserFactory)
    car_id = factory.Sequence(lambda n: f"CAR{n:06d}")
