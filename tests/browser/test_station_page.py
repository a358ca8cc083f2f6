"""The station page in Chromium: a simulated station connected over a real websocket answers
the page's commands, and each result appears live (no reload); the display page previews and
pushes a design. With SCREENSHOT_DIR set, the page is saved for the docs."""

from __future__ import annotations

import asyncio
import os
import re
import threading

from playwright.sync_api import expect

from stations.models import Station
from stations.simulator import SimStation
from tests.stations.factories import STATION_PASSWORD, StationFactory


class SimThread:
    """The simulator in its own event loop and thread (Playwright's sync API owns this one)."""

    def __init__(self, url: str, identity: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.sim = SimStation(identity, url, STATION_PASSWORD, connectors=2, meter_start_wh=4321)

    def run(self, coro, timeout: float = 15):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.run(self.sim.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def test_station_page_commands_settings_and_display(page, login, tenants, portal_server):
    station = StationFactory(
        organization=tenants.a, charge_point_id="PAGE-SIM-1", name="Garage", connectors=2
    )
    sim = SimThread(portal_server.replace("http://", "ws://") + "/ocpp/", "PAGE-SIM-1")
    try:
        sim.run(sim.sim.start())
        login(page, tenants.owner_a)
        page.goto(f"/o/alpha/stations/{station.pk}/")
        expect(page.locator(f"#station-{station.pk}-status")).to_contain_text("online")
        expect(page.locator("#live-status")).to_have_class(re.compile(r"\bon\b"))
        headings = page.locator("main h2, body > main h2, h2").all_inner_texts()
        wanted = ["Authentication", "Display", "Load management", "Commands", "Advanced settings"]
        positions = [next(i for i, h in enumerate(headings) if h.startswith(w)) for w in wanted]
        assert positions == sorted(positions)

        # Show meter reading: the station's answer appears without a reload.
        meter = page.locator(".commands article", has_text="Show meter reading")
        meter.locator("select").select_option("2")
        meter.get_by_role("button", name="Show on the display").click()
        expect(page.locator(f"#station-{station.pk}-section-meter")).to_contain_text(
            "the station reports 4321 Wh"
        )

        # Modbus TCP on: accepted, shown in the settings table.
        page.locator(".advanced article", has_text="Modbus TCP").get_by_role(
            "button", name="Switch on"
        ).click()
        expect(page.locator(f"#station-{station.pk}-section-advanced")).to_contain_text("Accepted")
        assert sim.sim.cfg_bool("ModbusTcpEnabled")

        # Fix cable lock: the simulator's firmware "sim-1.0" is new enough.
        page.locator(".advanced article", has_text="Fix cable lock").get_by_role(
            "button", name="Fix cable lock"
        ).click()
        expect(page.locator(".advanced")).to_contain_text("Release the cable")
        lock_row = page.locator(f"#station-{station.pk}-section-advanced tr", has_text="Fix")
        expect(lock_row).to_contain_text("fixed")
        expect(lock_row).to_contain_text("Accepted")
        assert sim.sim.cfg("UnlockConnectorOnEVSideDisconnect") == "false"

        # Display: pick the animated battery; the push result comes live.
        page.get_by_role("button", name="Personalise the display").click()
        page.locator("form", has=page.locator('[data-design="battery"]')).get_by_role(
            "button", name="Use"
        ).click()
        expect(page.locator(f"#station-{station.pk}-section-display")).to_contain_text("Accepted")
        assert len(sim.run(_frames(sim.sim))) == 10
        preview = page.locator(".display-preview img")
        assert preview.evaluate("img => getComputedStyle(img).imageRendering") == "pixelated"

        # A refused upload: clear message, nothing changed.
        page.set_input_files(
            'input[name="image"]',
            files=[{"name": "x.svg", "mimeType": "image/svg+xml", "buffer": b"<svg/>"}],
        )
        page.get_by_role("button", name="Upload and send").click()
        expect(page.locator("#upload-error")).to_contain_text("not a JPG, PNG or GIF")
        assert Station.objects.get(pk=station.pk).display_source == "design:battery"

        page.goto(f"/o/alpha/stations/{station.pk}/")
        expect(page.locator(f"#station-{station.pk}-section-display img")).to_be_visible()
        if os.environ.get("SCREENSHOT_DIR"):  # docs: SCREENSHOT_DIR=docs/img
            page.screenshot(
                path=f"{os.environ['SCREENSHOT_DIR']}/screenshot-station.png", full_page=True
            )

        # Delete: the wrong name is refused; the right one deletes and disconnects.
        delete = page.locator("article.danger")
        delete.locator('input[name="name"]').fill("garage")
        delete.get_by_role("button", name="Delete station").click()
        expect(page.locator("#messages")).to_contain_text("Type the station's name exactly")
        page.locator('article.danger input[name="name"]').fill("Garage")
        page.locator("article.danger").get_by_role("button", name="Delete station").click()
        expect(page.locator("#messages")).to_contain_text("Station Garage deleted.")
        assert not Station.objects.filter(pk=station.pk).exists()
        sim.run(_until_refused(sim.sim))
    finally:
        sim.close()


async def _frames(sim: SimStation) -> list[bytes]:
    return sim.display_frames


async def _until_refused(sim: SimStation) -> None:
    """The portal closed the deleted station's socket; reconnects are refused."""
    async with asyncio.timeout(10):
        while sim.online:  # noqa: ASYNC110 - the simulator exposes no event for this
            await asyncio.sleep(0.05)
