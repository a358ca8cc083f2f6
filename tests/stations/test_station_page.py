"""The station page: display personalisation, commands, advanced settings and deletion through
the pages (roles, refusals with clear messages, nothing half-changed). The OCPP side of each
is in test_station_page_ocpp.py."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import timezone
from PIL import Image

from stations import services
from stations.display_image import MAX_BYTES, SIZE
from stations.models import (
    ChargingSession,
    ConfigurationKey,
    Connector,
    MeterSample,
    Station,
    StationCommand,
)
from tests.stations.factories import StationFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def station(tenants):
    return StationFactory(
        organization=tenants.a, charge_point_id="PAGE-1", name="Garage", connectors=2
    )


def url(name, station, **query):
    base = reverse(name, kwargs={"org": "alpha", "pk": station.pk})
    return base + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")


def png(image: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **kw)
    return out.getvalue()


def square(size=SIZE, background=(0, 0, 0), colour=(200, 0, 0)) -> Image.Image:
    image = Image.new("RGB", (size, size), background)
    for x in range(size // 4, 3 * size // 4):
        for y in range(size // 4, 3 * size // 4):
            image.putpixel((x, y), colour)
    return image


def upload(client, station, data: bytes, name="x.png", **extra):
    return client.post(
        url("stations_display", station),
        {"choice": "upload", "image": SimpleUploadedFile(name, data), **extra},
    )


def messages_of(response) -> list[str]:
    return [str(m) for m in response.wsgi_request._messages]


def make_session(station, connector_id=1, id_tag="AA", days_ago=1, status="completed", **kw):
    started = timezone.now() - timedelta(days=days_ago)
    return ChargingSession.objects.create(
        station=station,
        connector_id=connector_id,
        id_tag=id_tag,
        status=status,
        meter_start=1000,
        meter_stop=None if status == "active" else 5000,
        energy_wh=0 if status == "active" else 4000,
        started_at=started,
        stopped_at=None if status == "active" else started + timedelta(hours=1),
        station_started_at=started,
        idempotency_key=f"k{ChargingSession.objects.count()}",
        **kw,
    )


# --- the page ---------------------------------------------------------------------------


def test_sections_in_the_seeds_order(tenants, station):
    page = tenants.client(tenants.owner_a).get(url("stations_detail", station)).content.decode()
    order = [
        'id="authentication"',
        'id="display"',
        'id="load"',
        'id="commands"',
        'id="advanced"',
        'id="sessions"',
    ]
    positions = [page.index(marker) for marker in order]
    assert positions == sorted(positions)
    assert "Fix cable lock" in page and "Delete station" in page and "Show on the display" in page


def test_viewer_reads_but_cannot_change_anything(tenants, station):
    client = tenants.client(tenants.viewer_a)
    page = client.get(url("stations_detail", station)).content.decode()
    assert "Delete station" not in page and "Restart station" not in page
    assert client.get(url("stations_display", station)).status_code == 200
    for name, data in [
        ("stations_display", {"choice": "design", "design": "bolt"}),
        ("stations_advanced", {"setting": "modbus_tcp", "value": "on"}),
        ("stations_delete", {"name": "Garage"}),
        ("stations_command", {"action": "ShowMeter", "connector_id": 1}),
    ]:
        assert client.post(url(name, station), data).status_code == 403
    station.refresh_from_db()
    assert not station.display_payload and not station.modbus_tcp
    assert not StationCommand.objects.exists()


def test_manager_changes_settings_but_only_owners_delete(tenants, station):
    client = tenants.client(tenants.manager_a)
    assert client.post(url("stations_delete", station), {"name": "Garage"}).status_code == 403
    assert Station.objects.filter(pk=station.pk).exists()
    client.post(url("stations_advanced", station), {"setting": "modbus_tcp", "value": "on"})
    station.refresh_from_db()
    assert station.modbus_tcp


def test_section_fragments_render_for_viewers(tenants, station):
    client = tenants.client(tenants.viewer_a)
    for part in ("display", "meter", "advanced"):
        response = client.get(url("stations_section", station, part=part))
        assert response.status_code == 200
        assert f'id="station-{station.pk}-section-{part}"' in response.content.decode()
    assert client.get(url("stations_section", station, part="nope")).status_code == 400


# --- display ------------------------------------------------------------------------------


def test_stock_design_is_stored_and_sent_offline_station_says_so(tenants, station):
    client = tenants.client(tenants.owner_a)
    page = client.get(url("stations_display", station)).content.decode()
    assert 'data-design="battery"' in page and "image-rendering" not in page  # CSS file
    response = client.post(
        url("stations_display", station), {"choice": "design", "design": "battery"}
    )
    assert response.status_code == 302
    station.refresh_from_db()
    assert station.display_source == "design:battery"
    assert len(station.display_payload["frames"]) == 10
    command = StationCommand.objects.get(station=station)
    assert command.action == "DataTransfer" and command.status == "offline"
    assert command.payload["vendorId"] == "org.chargeportal"
    assert command.payload["messageId"] == "DisplayImage"
    assert json.loads(command.payload["data"]) == station.display_payload
    assert any("offline" in m for m in messages_of(response))
    # The station page shows the preview (a GIF data URI) and the result.
    page = client.get(url("stations_detail", station)).content.decode()
    assert "data:image/gif;base64," in page and "Station offline" in page
    # Unknown design: refused, nothing changes.
    client.post(url("stations_display", station), {"choice": "design", "design": "nope"})
    station.refresh_from_db()
    assert station.display_source == "design:battery"


def test_station_name_on_the_display(tenants, station):
    client = tenants.client(tenants.owner_a)
    client.post(url("stations_display", station), {"choice": "name"})
    station.refresh_from_db()
    assert station.display_source == "name" and station.display_payload["frames"]


def test_resend_needs_an_image_first(tenants, station):
    client = tenants.client(tenants.owner_a)
    response = client.post(url("stations_display", station), {"choice": "resend"})
    assert any("Choose a design or upload" in m for m in messages_of(response))
    assert not StationCommand.objects.exists()


def test_upload_a_32px_png(tenants, station):
    response = upload(tenants.client(tenants.owner_a), station, png(square()))
    assert response.status_code == 302
    station.refresh_from_db()
    assert station.display_source == "upload" and station.display_notes == []


def test_upload_a_larger_image_is_scaled_and_says_so(tenants, station):
    response = upload(tenants.client(tenants.owner_a), station, png(square(64)))
    assert response.status_code == 302
    assert any("scaled to 32×32" in m for m in messages_of(response))
    station.refresh_from_db()
    assert "scaled" in station.display_notes[0]


def _bad_inputs() -> list[tuple[str, bytes, str, str]]:
    big = png(Image.effect_noise((400, 400), 100).convert("RGB"))
    assert len(big) > MAX_BYTES
    white_gif = png(square(background=(255, 255, 255)), "GIF")
    bmp = png(square(), "BMP")
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="32" height="32"></svg>'
    huge = png(Image.new("1", (10_000, 10_000)))
    truncated = png(square(), "GIF")[:-40]
    return [
        ("201kb.png", (big + b"\0" * MAX_BYTES)[:201_000], "at most 200 kB", "201 kB"),
        ("x.bmp", bmp, "upload a JPG, PNG or GIF", "BMP"),
        ("x.svg", svg, "not a JPG, PNG or GIF", "SVG"),
        ("huge.png", huge, "far too", "10000"),
        ("white.gif", white_gif, "must be black", "#000000"),
        ("cut.gif", truncated, "truncated", "damaged"),
    ]


@pytest.mark.parametrize(("name", "data", "message", "also"), _bad_inputs())
def test_bad_uploads_are_refused_clearly_and_change_nothing(
    tenants, station, name, data, message, also
):
    response = upload(tenants.client(tenants.owner_a), station, data, name=name)
    assert response.status_code == 400
    page = response.content.decode()
    assert message in page and also in page
    station.refresh_from_db()
    assert station.display_payload is None and not StationCommand.objects.exists()


def test_near_black_background_offers_the_fix(tenants, station):
    client = tenants.client(tenants.owner_a)
    data = png(square(background=(6, 6, 6)))
    response = upload(client, station, data)
    assert response.status_code == 400
    assert "Make near-black pixels black and send" in response.content.decode()
    offer = response.context["offer_fix"]
    assert offer and Station.objects.get(pk=station.pk).display_payload is None
    response = client.post(
        url("stations_display", station),
        {"choice": "upload", "source_b64": offer, "make_near_black_black": "on"},
    )
    assert response.status_code == 302
    station.refresh_from_db()
    frame = Image.frombytes(
        "RGB", (SIZE, SIZE), __import__("base64").b64decode(station.display_payload["frames"][0])
    )
    assert frame.getpixel((0, 0)) == (0, 0, 0) and frame.getpixel((16, 16)) == (200, 0, 0)


def test_upload_without_a_file(tenants, station):
    response = tenants.client(tenants.owner_a).post(
        url("stations_display", station), {"choice": "upload"}
    )
    assert response.status_code == 400 and "Choose an image file" in response.content.decode()


# --- commands -------------------------------------------------------------------------------


def test_show_meter_and_last_register_reading(tenants, station):
    session = make_session(station, connector_id=1)
    MeterSample.objects.create(
        station=station,
        session=session,
        connector_id=1,
        time=session.started_at + timedelta(minutes=30),
        energy_wh=3210,
    )
    client = tenants.client(tenants.owner_a)
    page = client.get(url("stations_detail", station)).content.decode()
    assert "5000 Wh" in page  # the stop register is newer than the sample
    readings = services.last_register_readings(station)
    assert [(r.connector_id, r.energy_wh, r.source) for r in readings] == [
        (1, 5000.0, "session stop")
    ]
    response = client.post(
        url("stations_command", station), {"action": "ShowMeter", "connector_id": 2}
    )
    command = StationCommand.objects.get()
    assert command.payload["messageId"] == "ShowMeter" and command.status == "offline"
    assert json.loads(command.payload["data"])["connectorId"] == 2
    assert any("offline" in m for m in messages_of(response))
    # A connector the station does not have: refused.
    response = client.post(
        url("stations_command", station), {"action": "ShowMeter", "connector_id": 7}
    )
    assert any("no connector 7" in m for m in messages_of(response))
    assert StationCommand.objects.count() == 1


def test_the_command_log_shows_charging_profiles_in_a_line(tenants, station):
    """Load management sends a profile per connector every few seconds: the log shows each
    as connector, limit, purpose and end in the portal's time (the JSON folded away), by
    "load management", so the owner's own commands stay readable beside them."""
    from loadmgmt.profiles import Lease, lease_payload
    from stations.models import LEASE_SUPERSEDED

    lease = lease_payload(Lease(2, 19, 3, datetime(2026, 12, 7, 20, 48, 42, tzinfo=UTC)))
    StationCommand.objects.create(station=station, action="SetChargingProfile", payload=lease)
    StationCommand.objects.create(
        station=station,
        action="UnlockConnector",
        payload={"connectorId": 1},
        requested_by=tenants.owner_a,
    )
    page = tenants.client(tenants.owner_a).get(url("stations_detail", station)).content.decode()
    log = page.split(f'id="station-{station.pk}-commands"')[1].split("</table>")[0]
    line = log.split('class="muted profile-summary">')[1].split("</small>")[0]
    assert "connector 2" in line and "19&nbsp;A</strong> × 3" in line
    assert "TxDefaultProfile, stack level 1" in line and "until 21:48:42" in line  # Zurich
    assert "<summary>Payload</summary>" in log and "load management" in log
    assert tenants.owner_a.username in log  # the owner's own command, by name
    # A lease replaced before it went out is routine: "Replaced", not a red "Error".
    StationCommand.objects.create(
        station=station,
        action="SetChargingProfile",
        payload=lease,
        status="error",
        error=LEASE_SUPERSEDED,
    )
    page = tenants.client(tenants.owner_a).get(url("stations_detail", station)).content.decode()
    log = page.split(f'id="station-{station.pk}-commands"')[1].split("</table>")[0]
    assert '<span class="badge">Replaced</span>' in log and "badge bad" not in log


def test_a_charging_profile_summary_survives_odd_payloads(station):
    from stations.models import ChargingProfileSummary

    assert ChargingProfileSummary.of({}) is None
    assert ChargingProfileSummary.of({"csChargingProfiles": "x"}) is None
    assert ChargingProfileSummary.of({"csChargingProfiles": {"chargingSchedule": "x"}}) is None
    empty = {"csChargingProfiles": {"chargingSchedule": {"chargingSchedulePeriod": []}}}
    assert ChargingProfileSummary.of(empty) is None
    odd = {
        "connectorId": 0,
        "csChargingProfiles": {
            "validTo": "not a time",
            "chargingSchedule": {"chargingSchedulePeriod": [{"startPeriod": 0, "limit": 7.5}]},
        },
    }
    summary = ChargingProfileSummary.of(odd)
    assert (summary.connector, summary.limit, summary.phases, summary.valid_to) == (
        0,
        7.5,
        None,
        None,
    )
    assert StationCommand(station=station, action="Reset", payload={}).charging_profile is None


def test_restart_with_a_running_session_needs_confirmation(tenants, station):
    make_session(station, status="active", days_ago=0)
    client = tenants.client(tenants.owner_a)
    page = client.get(url("stations_detail", station)).content.decode()
    assert "restarting stops it" in page
    response = client.post(url("stations_command", station), {"action": "Reset", "type": "Soft"})
    assert any("restarting stops it" in m for m in messages_of(response))
    assert not StationCommand.objects.exists()
    client.post(
        url("stations_command", station), {"action": "Reset", "type": "Soft", "confirmed": "on"}
    )
    assert StationCommand.objects.get().action == "Reset"


# --- advanced settings ------------------------------------------------------------------------


def advanced(client, station, setting, value, **extra):
    return client.post(
        url("stations_advanced", station), {"setting": setting, "value": value, **extra}
    )


def test_modbus_and_auto_car_detection_become_wanted_configuration(tenants, station):
    client = tenants.client(tenants.owner_a)
    advanced(client, station, "modbus_tcp", "on")
    advanced(client, station, "auto_car_detection", "on")
    station.refresh_from_db()
    assert station.modbus_tcp and station.auto_car_detection
    wanted = dict(ConfigurationKey.objects.values_list("key", "value"))
    assert wanted == {"ModbusTcpEnabled": "true", "AutoCarDetection": "true"}
    advanced(client, station, "modbus_tcp", "off")
    assert ConfigurationKey.objects.get(key="ModbusTcpEnabled").value == "false"


@pytest.mark.parametrize(
    ("firmware", "allowed"),
    [
        ("", False),
        ("0.0.6", False),
        ("0.0.7", True),
        ("fw 2.3.1 comm 0.0.5", False),
        ("Pico v1.2.0", True),
        ("sim-1.0", True),
    ],
)
def test_fix_cable_lock_needs_communication_version_0_0_7(tenants, station, firmware, allowed):
    Station.objects.filter(pk=station.pk).update(firmware_version=firmware)
    response = advanced(tenants.client(tenants.owner_a), station, "cable_lock", "on")
    wanted = ConfigurationKey.objects.filter(key="UnlockConnectorOnEVSideDisconnect").first()
    if allowed:
        assert wanted.value == "false"
    else:
        assert wanted is None and not StationCommand.objects.exists()
        assert any("0.0.7" in m for m in messages_of(response))


@pytest.mark.parametrize(
    "status", ["Preparing", "Charging", "SuspendedEV", "SuspendedEVSE", "Finishing"]
)
def test_fix_cable_lock_refused_with_a_car_plugged(tenants, station, status):
    Station.objects.filter(pk=station.pk).update(firmware_version="0.0.7")
    Connector.objects.filter(station=station, connector_id=2).update(status=status)
    response = advanced(tenants.client(tenants.owner_a), station, "cable_lock", "on")
    assert any(f"connector 2 ({status})" in m for m in messages_of(response))
    assert not ConfigurationKey.objects.exists()


def test_cable_lock_fixed_and_released(tenants, station):
    Station.objects.filter(pk=station.pk).update(firmware_version="0.0.8")
    client = tenants.client(tenants.owner_a)
    advanced(client, station, "cable_lock", "on")
    assert "Release the cable" in client.get(url("stations_detail", station)).content.decode()
    advanced(client, station, "cable_lock", "off")
    assert ConfigurationKey.objects.get().value == "true"


def test_switching_auto_car_detection_off_while_carid_is_used_warns(tenants, station):
    from billing.models import Vehicle

    Station.objects.filter(pk=station.pk).update(auto_car_detection=True)
    station.refresh_from_db()
    Vehicle.objects.create(user=tenants.driver, car_id="CAR0001")
    make_session(station, id_tag="CAR0001", days_ago=3)
    client = tenants.client(tenants.owner_a)
    response = advanced(client, station, "auto_car_detection", "off")
    assert any("CarID is in use" in m for m in messages_of(response))
    station.refresh_from_db()
    assert station.auto_car_detection and not ConfigurationKey.objects.exists()
    advanced(client, station, "auto_car_detection", "off", confirmed="on")
    station.refresh_from_db()
    assert not station.auto_car_detection
    assert ConfigurationKey.objects.get().value == "false"


def test_carid_rule(tenants, station):
    from billing.models import Vehicle

    assert services.carid_in_use(station) == ""
    Vehicle.objects.create(user=tenants.driver, car_id="CAR0002")
    old = make_session(station, id_tag="CAR0002", days_ago=40)
    assert services.carid_in_use(station) == ""  # older than 30 days, driver unknown
    ChargingSession.objects.filter(pk=old.pk).update(user_id_ref=tenants.driver.pk)
    assert "vehicles registered" in services.carid_in_use(station)  # backend mode
    Station.objects.filter(pk=station.pk).update(auth_mode="none")
    station.refresh_from_db()
    assert services.carid_in_use(station) == ""
    make_session(station, id_tag="CAR0002", days_ago=2)
    assert "last 30 days" in services.carid_in_use(station)


# --- delete -----------------------------------------------------------------------------------


def test_delete_needs_the_stations_name(tenants, station):
    client = tenants.client(tenants.owner_a)
    response = client.post(url("stations_delete", station), {"name": "garage"})
    assert any("Type the station's name exactly (Garage)" in m for m in messages_of(response))
    assert Station.objects.filter(pk=station.pk).exists()


def test_delete_removes_everything_but_issued_invoices(tenants, station):
    from billing import invoices
    from billing.models import InvoiceLine
    from tests.billing.session_factories import make_session as priced_session

    march = datetime(2025, 3, 10, 9, 0, tzinfo=UTC)
    session = priced_session(station, driver=tenants.driver, started_at=march, energy_wh=10_000)
    MeterSample.objects.create(
        station=station, session=session, connector_id=1, time=march, energy_wh=1
    )
    [invoice] = invoices.invoices_issue(
        organization=tenants.a, year=2025, month=3, now=datetime(2025, 4, 2, tzinfo=UTC)
    )
    client = tenants.client(tenants.owner_a)
    response = client.post(url("stations_delete", station), {"name": " Garage "})
    assert response.status_code == 302 and response.url == "/o/alpha/stations/"
    assert not Station.objects.filter(pk=station.pk).exists()
    assert not ChargingSession.objects.exists() and not MeterSample.objects.exists()
    assert not Connector.objects.exists()
    line = InvoiceLine.objects.get(invoice=invoice)
    assert line.session_id is None and line.station_name == "Garage"
    assert client.get(url("stations_detail", station)).status_code == 404
