"""Core access-and-pricing services: session prices from the snapshot, app start refusals,
switching a station's authentication mode."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from billing import pricing
from billing.authorization import tariff_snapshot
from billing.models import ConnectorAccess
from billing.services import (
    charging_start,
    charging_stop,
    session_price,
    station_auth_mode_set,
)
from portal.errors import DomainError
from stations.models import ChargingSession, ConfigurationKey, Connector, StationCommand
from tests.billing.factories import TariffFactory
from tests.stations.factories import StationFactory

pytestmark = pytest.mark.django_db

START = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


def session(station, snapshot, energy_wh=10_000, minutes=90, **kw):
    return ChargingSession.objects.create(
        station=station,
        connector_id=1,
        id_tag="T",
        meter_start=0,
        energy_wh=energy_wh,
        started_at=START,
        stopped_at=START + timedelta(minutes=minutes) if minutes is not None else None,
        station_started_at=START,
        status="completed" if minutes is not None else "active",
        idempotency_key=f"k{ChargingSession.objects.count()}",
        tariff_snapshot=snapshot,
        **kw,
    )


class TestSessionPrice:
    def test_from_the_snapshot_and_repeatable(self, tenants):
        station = StationFactory(organization=tenants.a)
        tariff = pricing.Tariff(per_kwh=Decimal("0.45"), per_hour=Decimal("1.20"))
        s = session(station, tariff_snapshot(tariff, pricing.TariffSource.GROUP))
        first = session_price(s)
        # 10 kWh x 0.45 + 1.5 h x 1.20 = 6.30
        assert first.price.total == Decimal("6.30") and first.price.source == "group"
        assert first.notional is None and first.value == first.price
        assert session_price(s) == first

    def test_free_session_keeps_a_notional_value(self, tenants):
        station = StationFactory(organization=tenants.a)
        public = pricing.Tariff(per_kwh=Decimal("0.50"), currency="EUR")
        snapshot = tariff_snapshot(pricing.FREE, pricing.TariffSource.PRIVATE, notional=public)
        result = session_price(session(station, snapshot))
        assert result.price.total == Decimal("0.00")
        assert result.notional.total == Decimal("5.00") and result.value.currency == "EUR"

    def test_running_session_priced_up_to_now(self, tenants):
        station = StationFactory(organization=tenants.a)
        tariff = pricing.Tariff(per_hour=Decimal("2.00"))
        s = session(station, tariff_snapshot(tariff, pricing.TariffSource.PUBLIC), minutes=None)
        later = START + timedelta(minutes=30)
        assert session_price(s, now=later).price.total == Decimal("1.00")

    def test_without_snapshot_is_free(self, tenants):
        station = StationFactory(organization=tenants.a)
        assert session_price(session(station, None)).price.total == Decimal("0.00")


@pytest.fixture
def open_station(tenants):
    station = StationFactory(organization=tenants.a, connectors=2, online=True)
    tariff = TariffFactory(organization=tenants.a)
    for connector in Connector.objects.filter(station=station):
        ConnectorAccess.objects.create(connector=connector, access="public", tariff=tariff)
    Connector.objects.filter(station=station).update(status="Available")
    return station


def connector(station, n=1):
    return Connector.objects.select_related("station").get(station=station, connector_id=n)


class TestAppStart:
    def test_sends_remote_start_with_the_app_tag(self, tenants, open_station):
        command = charging_start(user=tenants.driver, connector=connector(open_station))
        assert command.action == "RemoteStartTransaction"
        assert command.payload["connectorId"] == 1
        assert command.payload["idTag"] == tenants.driver.app_tag.id_tag

    def test_refused_when_not_allowed(self, tenants, open_station):
        ConnectorAccess.objects.filter(connector__station=open_station).update(access="private")
        with pytest.raises(DomainError, match="may not charge"):
            charging_start(user=tenants.driver, connector=connector(open_station))
        assert not StationCommand.objects.exists()

    def test_refused_when_offline_busy_or_not_backend(self, tenants, open_station):
        Connector.objects.filter(station=open_station, connector_id=1).update(status="Charging")
        with pytest.raises(DomainError, match="charging"):
            charging_start(user=tenants.driver, connector=connector(open_station))
        open_station.auth_mode = "none"
        open_station.save()
        with pytest.raises(DomainError, match="not unlocked through this portal"):
            charging_start(user=tenants.driver, connector=connector(open_station, 2))
        open_station.auth_mode, open_station.online = "backend", False
        open_station.save()
        with pytest.raises(DomainError, match="offline"):
            charging_start(user=tenants.driver, connector=connector(open_station, 2))
        assert not StationCommand.objects.exists()

    def test_stop_only_own_running_session(self, tenants, open_station):
        mine = session(open_station, None, minutes=None, user_id_ref=tenants.driver.pk)
        theirs = session(open_station, None, minutes=None, user_id_ref=tenants.owner_a.pk)
        with pytest.raises(DomainError):
            charging_stop(user=tenants.driver, session=theirs)
        command = charging_stop(user=tenants.driver, session=mine)
        assert command.payload == {"transactionId": mine.pk}


class TestAuthMode:
    def test_switch_configures_the_station(self, tenants, open_station):
        commands = station_auth_mode_set(station=open_station, mode="none")
        assert [c.payload for c in commands] == [{"key": "FreeVendActive", "value": "true"}]
        assert ConfigurationKey.objects.get(station=open_station).value == "true"
        station_auth_mode_set(station=open_station, mode="backend")
        assert ConfigurationKey.objects.get(station=open_station).value == "false"

    def test_third_party_needs_a_websocket_url(self, tenants, open_station):
        for bad in ("", "http://other.example/ocpp", "wss://", "ftp://x"):
            with pytest.raises(DomainError, match="ws://"):
                station_auth_mode_set(
                    station=open_station, mode="ocpp_third_party", third_party_url=bad
                )
        open_station.refresh_from_db()
        assert open_station.auth_mode == "backend"
        station_auth_mode_set(
            station=open_station,
            mode="ocpp_third_party",
            third_party_url="wss://b.example/ocpp",
            check_reachable=False,
        )
        open_station.refresh_from_db()
        assert open_station.managed_elsewhere
        assert open_station.third_party_url == "wss://b.example/ocpp"

    def test_backend_url_key_only_when_configured(self, tenants, open_station, settings):
        settings.OCPP_BACKEND_URL_KEY = "CentralSystemUrl"
        settings.OCPP_FREE_VEND_KEY = "-"
        commands = station_auth_mode_set(
            station=open_station,
            mode="ocpp_third_party",
            third_party_url="ws://b.example/",
            check_reachable=False,
        )
        assert [c.payload for c in commands] == [
            {"key": "CentralSystemUrl", "value": "ws://b.example/"}
        ]


class TestCarDetectionThroughTheAccessPage:
    def test_switch_sends_the_vendor_key_like_the_station_page(self, tenants, open_station):
        station_auth_mode_set(
            station=open_station, mode="backend", auto_car_detection=True, check_reachable=False
        )
        open_station.refresh_from_db()
        assert open_station.auto_car_detection
        keys = dict(
            ConfigurationKey.objects.filter(station=open_station).values_list("key", "value")
        )
        assert keys["AutoCarDetection"] == "true"

    def test_switching_off_while_carid_is_used_changes_nothing(self, tenants, open_station):
        from tests.billing.factories import VehicleFactory

        open_station.auto_car_detection = True
        open_station.save()
        VehicleFactory(user=tenants.driver, car_id="CAFE1234")
        ChargingSession.objects.create(
            station=open_station,
            connector_id=1,
            id_tag="CAFE1234",
            meter_start=0,
            started_at=START,
            station_started_at=START,
            idempotency_key="carid",
            status="completed",
            user_id_ref=tenants.driver.pk,
        )
        with pytest.raises(DomainError, match="CarID is in use"):
            station_auth_mode_set(
                station=open_station, mode="none", auto_car_detection=False, check_reachable=False
            )
        open_station.refresh_from_db()
        assert open_station.auto_car_detection and open_station.auth_mode == "backend"
