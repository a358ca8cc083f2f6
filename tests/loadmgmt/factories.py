"""factory_boy factories of the load-management configuration."""

from __future__ import annotations

import factory

from loadmgmt.models import LoadGroup, LoadGroupMember, Meter, StationLimits, TreeNode
from loadmgmt.services import token_hash
from tests.factories import OrganizationFactory
from tests.stations.factories import StationFactory

METER_TOKEN = "meter-token-0123456789abcdef"


class TreeNodeFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = TreeNode

    organization = factory.SubFactory(OrganizationFactory)
    name = factory.Sequence(lambda n: f"Board {n}")
    limit_l1 = 63
    limit_l2 = 63
    limit_l3 = 63


class LoadGroupFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = LoadGroup

    organization = factory.SubFactory(OrganizationFactory)
    name = factory.Sequence(lambda n: f"Group {n}")
    max_current = 32


class LoadGroupMemberFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = LoadGroupMember

    group = factory.SubFactory(LoadGroupFactory)
    station = factory.SubFactory(
        StationFactory, organization=factory.SelfAttribute("..group.organization")
    )


class StationLimitsFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = StationLimits

    station = factory.SubFactory(StationFactory)


class MeterFactory(factory.django.DjangoModelFactory):
    """A meter whose REST token is ``METER_TOKEN``."""

    class Meta:
        model = Meter

    node = factory.SubFactory(TreeNodeFactory)
    name = factory.Sequence(lambda n: f"Meter {n}")
    mqtt_topic = factory.Sequence(lambda n: f"test/meters/{n}")
    token_hash = factory.LazyFunction(lambda: token_hash(METER_TOKEN))
