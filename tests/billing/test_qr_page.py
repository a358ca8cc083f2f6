"""The public QR page of a connector (/c/<code>/): what visitors and drivers see, inline
login that comes back, start from the page, unknown code 404."""

from __future__ import annotations

from decimal import Decimal

import pytest

from billing.models import AppTag
from stations.models import AuthMode, Connector, StationCommand
from tests.billing.factories import ConnectorAccessFactory, SpecialUserFactory, TariffFactory
from tests.factories import PASSWORD
from tests.stations.factories import StationFactory

pytestmark = pytest.mark.django_db


def connector_access(org, *, access="public", tariff=None, online=True, **station_kw):
    station = StationFactory(organization=org, name="Bahnhof", online=online, **station_kw)
    connector = Connector.objects.get(station=station, connector_id=2)
    connector.status = "Available"
    connector.save(update_fields=["status"])
    return ConnectorAccessFactory(connector=connector, access=access, tariff=tariff)


@pytest.fixture
def public(tenants):
    tariff = TariffFactory(organization=tenants.a, per_kwh=Decimal("0.45"), per_hour=Decimal("1"))
    return connector_access(tenants.a, tariff=tariff)


def test_anonymous_sees_station_status_price_and_inline_login(tenants, public):
    r = tenants.client(None).get(f"/c/{public.code}/")
    assert r.status_code == 200
    text = r.content.decode()
    assert "Bahnhof" in text and "Connector 2" in text and "Available" in text
    assert "0.45 CHF/kWh + 1.00 CHF/h" in text
    assert 'action="/accounts/login/"' in text
    assert f'name="next" value="/c/{public.code}/"' in text
    assert f"/accounts/signup/?next=/c/{public.code}/" in text
    assert 'id="qr-start"' not in text


def test_inline_login_comes_back_to_the_page(tenants, public):
    client = tenants.client(None)
    r = client.post(
        "/accounts/login/",
        {"login": tenants.driver.email, "password": PASSWORD, "next": f"/c/{public.code}/"},
    )
    assert r.status_code == 302 and r["Location"] == f"/c/{public.code}/"
    assert 'id="qr-start"' in client.get(r["Location"]).content.decode()


def test_private_connector_is_not_open_to_the_public(tenants):
    private = connector_access(tenants.a, access="private")
    text = tenants.client(None).get(f"/c/{private.code}/").content.decode()
    assert 'id="not-public"' in text and "Bahnhof" in text


def test_logged_in_driver_sees_own_price_and_starts(tenants, public):
    mine = TariffFactory(organization=tenants.a, per_kwh=Decimal("0.20"))
    SpecialUserFactory(organization=tenants.a, user=tenants.driver, tariff=mine)
    client = tenants.client(tenants.driver)
    text = client.get(f"/c/{public.code}/").content.decode()
    assert "0.20 CHF/kWh" in text and "(your price)" in text and "0.45" not in text
    assert 'id="qr-start"' in text and "qr-login" not in text
    r = client.post(f"/c/{public.code}/")
    command = StationCommand.objects.get(action="RemoteStartTransaction")
    assert r["Location"] == f"/c/{public.code}/?command={command.pk}"
    assert command.payload["idTag"] == AppTag.objects.get(user=tenants.driver).id_tag
    page = client.get(r["Location"]).content.decode()
    assert 'data-status="pending"' in page and "hx-get" in page  # polls the result


def test_driver_not_allowed_sees_no_start_and_cannot_start(tenants):
    limited = connector_access(tenants.a, access="limited")
    client = tenants.client(tenants.driver)
    text = client.get(f"/c/{limited.code}/").content.decode()
    assert 'id="qr-start"' not in text and "not open to you" in text
    r = client.post(f"/c/{limited.code}/", follow=True)
    assert "You may not charge at this connector." in r.content.decode()
    assert not StationCommand.objects.exists()


def test_offline_station_start_is_refused_with_a_message(tenants):
    offline = connector_access(tenants.a, online=False)
    client = tenants.client(tenants.driver)
    assert "offline" in client.get(f"/c/{offline.code}/").content.decode()
    r = client.post(f"/c/{offline.code}/", follow=True)
    assert "The station is offline" in r.content.decode()
    assert not StationCommand.objects.exists()


def test_anonymous_post_goes_to_login(tenants, public):
    r = tenants.client(None).post(f"/c/{public.code}/")
    assert r.status_code == 302
    assert r["Location"] == f"/accounts/login/?next=/c/{public.code}/"
    assert not StationCommand.objects.exists()


def test_third_party_station_shows_managed_elsewhere(tenants):
    elsewhere = connector_access(
        tenants.a, auth_mode=AuthMode.THIRD_PARTY, third_party_url="wss://x.example/ocpp"
    )
    text = tenants.client(tenants.driver).get(f"/c/{elsewhere.code}/").content.decode()
    assert "managed by another backend" in text and 'id="qr-start"' not in text


def test_unknown_code_is_404(tenants):
    assert tenants.client(None).get("/c/doesnotexist/").status_code == 404
    assert tenants.client(tenants.driver).post("/c/doesnotexist/").status_code == 404


def test_someone_elses_command_is_404_on_the_page(tenants, public):
    other = tenants.client(tenants.owner_b)
    other.post(f"/c/{public.code}/")
    command = StationCommand.objects.get()
    r = tenants.client(tenants.driver).get(f"/c/{public.code}/?command={command.pk}")
    assert r.status_code == 404


def test_no_authentication_station_is_free_and_needs_no_start(tenants):
    tariff = TariffFactory(organization=tenants.a, per_kwh=Decimal("0.45"))
    plug_in = connector_access(tenants.a, tariff=tariff, auth_mode=AuthMode.NONE)
    text = tenants.client(None).get(f"/c/{plug_in.code}/").content.decode()
    assert "as soon as you plug in" in text and "free" in text and "0.45" not in text
    assert "qr-login" not in text and 'id="qr-start"' not in text
