from __future__ import annotations

import factory
from django.utils import timezone

from billing.models import RfidCard
from stations.credentials import station_password_hash
from stations.models import Connector, Station
from tests.factories import OrganizationFactory

STATION_PASSWORD = "station-secret-0123456789"


class StationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Station
        skip_postgeneration_save = True

    organization = factory.SubFactory(OrganizationFactory)
    charge_point_id = factory.Sequence(lambda n: f"CP-{n:04d}")
    name = factory.Sequence(lambda n: f"Station {n}")
    password_hash = factory.LazyFunction(lambda: station_password_hash(STATION_PASSWORD))
    password_set_at = factory.LazyFunction(timezone.now)
    heartbeat_interval = 300

    @factory.post_generation
    def connectors(self, create, extracted, **kwargs):
        if create:
            for n in range(1, (extracted or 2) + 1):
                Connector.objects.create(station=self, connector_id=n)


class RfidCardFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = RfidCard

    organization = factory.SubFactory(OrganizationFactory)
    uid = factory.Sequence(lambda n: f"{0xA0000000 + n:08X}")
    label = "card"
