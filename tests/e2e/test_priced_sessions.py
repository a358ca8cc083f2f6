"""Unlock functions end to end with the simulator and a real portal process (PostgreSQL,
Redis): an RFID session, an app start and stop, a CarID session and a QR start, each priced
to the rappen from the tariff frozen when it started."""

from __future__ import annotations

import asyncio
import http.cookiejar
import re
import urllib.parse
import urllib.request
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async
from django.db import connections

from billing.models import AppTag, ConnectorAccess, SpecialUser
from billing.services import charging_start, charging_stop, session_price
from stations.models import ChargingSession, Connector, Station
from stations.simulator import Car, FakeClock, SimStation
from tests.billing.factories import TariffFactory, VehicleFactory
from tests.stations.factories import STATION_PASSWORD, RfidCardFactory, StationFactory

CP = "SIM-PRICED-1"


async def wait_until(predicate, seconds: float = 15):
    async with asyncio.timeout(seconds):
        while not (value := await predicate()):  # noqa: ASYNC110 - polling another process's writes
            await asyncio.sleep(0.1)
    return value


def completed(transaction_id: int):
    async def check():
        s = await ChargingSession.objects.aget(pk=transaction_id)
        return s if s.status == "completed" else None

    return check


@pytest.fixture
def site(tenants):
    """Alpha's public station at CHF 0.47/kWh + 1.00/h (VAT 8.1 %), dora's card."""
    station = StationFactory(organization=tenants.a, charge_point_id=CP, connectors=2)
    public = TariffFactory(
        organization=tenants.a, name="Public", per_kwh=Decimal("0.47"), per_hour=Decimal("1.00")
    )
    for connector in Connector.objects.filter(station=station):
        ConnectorAccess.objects.create(connector=connector, access="public", tariff=public)
    RfidCardFactory(organization=None, uid="D0A00001", user=tenants.driver)
    return station, public


@pytest.fixture
async def sim(portal_processes, site):
    (portal,) = portal_processes(1)
    clock = FakeClock()
    station = SimStation(CP, f"{portal.ws_url}/ocpp/", STATION_PASSWORD, connectors=2, clock=clock)
    await station.start()
    try:
        yield station, clock, portal
    finally:
        await station.stop()
        await sync_to_async(connections.close_all)()


async def test_rfid_session_priced_to_the_rappen(sim, tenants):
    station, clock, _ = sim
    tx = await station.plug_in(
        1, Car(battery_kwh=60, soc=20, phases=3, max_current_a=16), "D0A00001"
    )
    transaction_id = await tx.wait_started()
    await clock.advance(1800)  # half an hour at 3 x 16 A
    await station.unplug(1)
    session = await wait_until(completed(transaction_id))
    assert session.user_id_ref == tenants.driver.pk
    assert session.energy_wh == 5520
    price = (await sync_to_async(session_price)(session)).price
    # 5.52 kWh x 0.47 = 2.5944, + 0.5 h x 1.00 = 3.0944 → CHF 3.10 (0.05 steps, half up)
    assert (price.total, price.currency, price.source) == (Decimal("3.10"), "CHF", "public")
    assert (price.net_amount, price.vat_amount) == (Decimal("2.87"), Decimal("0.23"))


async def test_app_start_and_stop_priced_and_frozen(sim, tenants, site):
    station, clock, _ = sim
    _, public = site
    await station.plug_in(2, Car(battery_kwh=60, soc=20, phases=1, max_current_a=16))
    connector = await Connector.objects.select_related("station").aget(
        station__charge_point_id=CP, connector_id=2
    )

    async def preparing():
        c = await Connector.objects.select_related("station").aget(pk=connector.pk)
        return c if c.status == "Preparing" else None

    connector = await wait_until(preparing)
    command = await sync_to_async(charging_start)(user=tenants.driver, connector=connector)
    app_tag = (await AppTag.objects.aget(user=tenants.driver)).id_tag

    async def running():
        return await ChargingSession.objects.filter(
            station__charge_point_id=CP, connector_id=2, status="active"
        ).afirst()

    session = await wait_until(running)
    assert session.id_tag == app_tag and session.user_id_ref == tenants.driver.pk
    await command.arefresh_from_db()
    assert command.status == "accepted"

    # The owner doubles the price mid-session: the running session keeps its tariff.
    public.per_kwh = Decimal("0.94")
    await public.asave()

    await clock.advance(3600)  # one hour at 1 x 16 A
    stop = await sync_to_async(charging_stop)(user=tenants.driver, session=session)
    session = await wait_until(completed(session.pk))
    await stop.arefresh_from_db()
    assert stop.status == "accepted" and session.stop_reason == "Remote"
    assert session.energy_wh == 3680
    price = (await sync_to_async(session_price)(session)).price
    # 3.68 kWh x 0.47 = 1.7296, + 1 h x 1.00 = 2.7296 → CHF 2.75
    assert price.total == Decimal("2.75")


async def test_car_id_session_at_the_special_users_price(sim, tenants):
    station, clock, _ = sim
    await Station.objects.filter(charge_point_id=CP).aupdate(auto_car_detection=True)
    await sync_to_async(VehicleFactory)(user=tenants.driver, car_id="5C:0E:8B:11:22:33")
    individual = await sync_to_async(TariffFactory)(
        organization=tenants.a, name="Neighbours", per_kwh=Decimal("0.30"), per_hour=Decimal("0")
    )
    await SpecialUser.objects.acreate(
        organization=tenants.a, user=tenants.driver, tariff=individual
    )
    # A station with auto car detection sends the car's identifier as the idTag.
    car = Car(battery_kwh=60, soc=20, phases=3, max_current_a=16)
    tx = await station.plug_in(1, car, id_tag="5C0E8B112233")
    transaction_id = await tx.wait_started()
    await clock.advance(1800)
    await station.unplug(1)
    session = await wait_until(completed(transaction_id))
    assert session.user_id_ref == tenants.driver.pk
    price = (await sync_to_async(session_price)(session)).price
    # 5.52 kWh x 0.30 = 1.656 → CHF 1.65 (33.12 steps of 0.05, half up → 33)
    assert (price.total, price.source) == (Decimal("1.65"), "individual")


async def test_unknown_card_is_refused_by_the_station(sim):
    station, _, _ = sim
    tx = await station.plug_in(1, Car(battery_kwh=60, soc=20), "BADBAD00")
    assert tx is None
    assert await ChargingSession.objects.filter(station__charge_point_id=CP).acount() == 0


class Browserless:
    """A logged-in driver's HTTP client against the portal process (session + CSRF cookies)."""

    def __init__(self, base_url: str, user) -> None:
        from django.conf import settings
        from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
        from django.contrib.sessions.backends.db import SessionStore

        session = SessionStore()
        session[SESSION_KEY] = str(user.pk)
        session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
        session[HASH_SESSION_KEY] = user.get_session_auth_hash()
        session.save()
        self.base_url = base_url
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))
        self.session_cookie = f"{settings.SESSION_COOKIE_NAME}={session.session_key}"
        self.opener.addheaders = [("Cookie", self.session_cookie)]

    def get(self, path: str) -> str:
        with self.opener.open(self.base_url + path, timeout=10) as response:
            return response.read().decode()

    def post_form(self, path: str) -> tuple[str, str]:
        """POST the page's own form (with its CSRF token); returns the final page."""
        html = self.get(path)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html).group(1)
        csrf_cookie = next(c.value for c in self.jar if c.name == "csrftoken")
        request = urllib.request.Request(
            self.base_url + path,
            data=urllib.parse.urlencode({"csrfmiddlewaretoken": token}).encode(),
            headers={
                "Referer": self.base_url + path,
                "Cookie": f"{self.session_cookie}; csrftoken={csrf_cookie}",
            },
        )
        with self.opener.open(request, timeout=10) as response:
            return response.url, response.read().decode()


async def test_qr_start_priced_to_the_rappen(sim, tenants):
    station, clock, portal = sim
    access = await ConnectorAccess.objects.select_related("connector").aget(
        connector__station__charge_point_id=CP, connector__connector_id=1
    )
    await station.plug_in(1, Car(battery_kwh=60, soc=20, phases=3, max_current_a=16))

    async def preparing():
        c = await Connector.objects.aget(pk=access.connector_id)
        return c.status == "Preparing"

    await wait_until(preparing)
    driver = await sync_to_async(Browserless)(portal.url, tenants.driver)
    page = await sync_to_async(driver.get)(f"/c/{access.code}/")
    assert CP in page or "Station" in page
    url, page = await sync_to_async(driver.post_form)(f"/c/{access.code}/")
    assert "?command=" in url

    async def running():
        return await ChargingSession.objects.filter(
            station__charge_point_id=CP, connector_id=1, status="active"
        ).afirst()

    session = await wait_until(running)
    assert session.user_id_ref == tenants.driver.pk
    await clock.advance(900)  # a quarter of an hour at 3 x 16 A
    await station.unplug(1)
    session = await wait_until(completed(session.pk))
    assert session.energy_wh == 2760
    price = (await sync_to_async(session_price)(session)).price
    # 2.76 kWh x 0.47 = 1.2972, + 0.25 h x 1.00 = 1.5472 → CHF 1.55
    assert price.total == Decimal("1.55")
