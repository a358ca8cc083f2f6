from __future__ import annotations

import pytest

from stations import events
from stations.authorization import reset_policy_cache
from tests.stations import helpers
from tests.stations.factories import RfidCardFactory, StationFactory


@pytest.fixture
def ocpp_settings(settings):
    """Short timeouts for the OCPP tests (use with pytest.mark.usefixtures)."""
    settings.OCPP_CALL_TIMEOUT = 1.0
    settings.OCPP_BOOT_WAIT = 0.3
    settings.OCPP_METER_BATCH_DELAY = 0.005
    settings.OCPP_LAST_SEEN_EVERY = 0.0
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    from channels.layers import channel_layers

    channel_layers.backends.clear()
    reset_policy_cache()
    yield
    channel_layers.backends.clear()


@pytest.fixture
def station(tenants):
    return StationFactory(organization=tenants.a, charge_point_id="ALPHA-1", connectors=2)


@pytest.fixture
def card(tenants):
    return RfidCardFactory(organization=tenants.a, uid="DEADBEEF", user=tenants.owner_a)


@pytest.fixture
def receiver(settings):
    """The station events delivered from now on, in order (``OCPP_EVENT_HOOK``)."""
    settings.OCPP_EVENT_HOOK = "tests.stations.helpers.record"
    events.reset_receiver_cache()
    helpers.RECEIVED.clear()
    yield helpers.RECEIVED
    events.reset_receiver_cache()
