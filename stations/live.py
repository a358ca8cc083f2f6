"""Live fragments of station pages, pushed to the organization's group after commit.

Element ids: ``station-<pk>`` (row in the list), ``station-<pk>-status`` (detail header),
``connector-<pk>`` (detail), ``power-<station pk>-<connector id>`` (power cell),
``station-<pk>-commands`` and ``station-<pk>-sessions`` (detail tables).
"""

from __future__ import annotations

from typing import Any

from django.template.loader import render_to_string
from django.utils.html import escape

from portal.live import org_group, push, push_org_async, watched
from stations.models import ChargingSession, Connector, Station, StationCommand


def station_fragments(station: Station) -> dict[str, str]:
    """The station's row, header and connectors; nothing while no browser watches."""
    if not watched(station.organization_id):
        return {}
    connectors = list(station.connectors.all())
    context = {"station": station, "connectors": connectors, "org_slug": station.organization.slug}
    fragments = {
        f"station-{station.pk}": render_to_string("stations/_station_row.html", context),
        f"station-{station.pk}-status": render_to_string("stations/_station_status.html", context),
    }
    for connector in connectors:
        fragments[f"connector-{connector.pk}"] = render_to_string(
            "stations/_connector_row.html", {"connector": connector, "station": station}
        )
    return fragments


def commands_fragment(station: Station) -> dict[str, str]:
    if not watched(station.organization_id):
        return {}
    commands = StationCommand.objects.filter(station=station).select_related("requested_by")[:20]
    return {
        f"station-{station.pk}-commands": render_to_string(
            "stations/_commands.html", {"station": station, "commands": commands}
        )
    }


def sessions_fragment(station: Station) -> dict[str, str]:
    if not watched(station.organization_id):
        return {}
    sessions = ChargingSession.objects.filter(station=station)[:20]
    return {
        f"station-{station.pk}-sessions": render_to_string(
            "stations/_sessions.html", {"station": station, "sessions": sessions}
        )
    }


def power_fragment(station_id: int, connector_id: int, power_w: float | None) -> str:
    text = "-" if power_w is None else f"{power_w / 1000:.1f} kW"
    return f'<span id="power-{station_id}-{connector_id}">{escape(text)}</span>'


def station_event(
    station: Station,
    event: str,
    *,
    sessions: bool = False,
    commands: bool = False,
    data: dict[str, Any] | None = None,
) -> None:
    """Push the station's fragments after the current transaction commits (sync code);
    nothing while no browser watches the organization (portal/live.py)."""
    if not watched(station.organization_id):
        return
    fragments = station_fragments(station)
    if sessions:
        fragments.update(sessions_fragment(station))
    if commands:
        fragments.update(commands_fragment(station))
    payload = {"station": station.pk, "online": station.online, **(data or {})}
    push(org_group(station.organization_id), event, data=payload, fragments=fragments)


async def push_rendered(
    organization_id: int, event: str, data: dict[str, Any], fragments: dict[str, str]
) -> None:
    await push_org_async(organization_id, event, data=data, fragments=fragments)


__all__ = ["Connector", "commands_fragment", "power_fragment", "station_event"]
