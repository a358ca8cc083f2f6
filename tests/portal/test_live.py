"""The browsers' live channel: authenticated in connect(), per-tenant groups, pushes after
commit reach exactly the right sockets."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser

from portal.asgi import application
from portal.live import org_group, push_async

pytestmark = pytest.mark.django_db(transaction=True)


async def _connect(user, org: str = ""):
    path = "/ws/live/" + (f"?org={org}" if org else "")
    communicator = WebsocketCommunicator(
        application, path, headers=[(b"host", b"localhost"), (b"origin", b"http://localhost")]
    )
    communicator.scope["user"] = user
    connected, code = await communicator.connect()
    return communicator, connected, code


async def test_member_receives_its_organizations_events(tenants):
    member, ok, _ = await _connect(tenants.viewer_a, "alpha")
    assert ok
    assert (await member.receive_json_from())["event"] == "live.hello"
    outsider, ok, _ = await _connect(tenants.owner_b, "beta")
    assert ok
    await outsider.receive_json_from()

    await push_async(
        org_group(tenants.a.id),
        "station.status",
        data={"station": 1},
        fragments={"station-1": "<tr id='station-1'></tr>"},
    )
    message = await member.receive_json_from(timeout=2)
    assert message == {
        "event": "station.status",
        "data": {"station": 1},
        "fragments": {"station-1": "<tr id='station-1'></tr>"},
    }
    assert await outsider.receive_nothing(timeout=0.3)
    await member.disconnect()
    await outsider.disconnect()


async def test_outsider_cannot_join_another_tenants_group(tenants):
    _communicator, ok, code = await _connect(tenants.owner_b, "alpha")
    assert not ok
    assert code == 4404


async def test_anonymous_is_refused():
    _communicator, ok, code = await _connect(AnonymousUser())
    assert not ok
    assert code == 4401


async def test_push_from_sync_code_is_sent_after_commit(tenants):
    from django.db import transaction

    from portal.live import push

    member, _ok, _ = await _connect(tenants.owner_a, "alpha")
    await member.receive_json_from()

    @database_sync_to_async
    def rolled_back_then_committed():
        try:
            with transaction.atomic():
                push(org_group(tenants.a.id), "never")
                raise RuntimeError("rollback")
        except RuntimeError:
            pass
        with transaction.atomic():
            push(org_group(tenants.a.id), "committed")

    await rolled_back_then_committed()
    message = await member.receive_json_from(timeout=2)
    assert message["event"] == "committed"
    assert await member.receive_nothing(timeout=0.3)
    await member.disconnect()


async def test_foreign_origin_is_refused(tenants):
    communicator = WebsocketCommunicator(
        application,
        "/ws/live/",
        headers=[(b"host", b"localhost"), (b"origin", b"https://evil.example")],
    )
    communicator.scope["user"] = tenants.owner_a
    connected, _ = await communicator.connect()
    assert not connected


async def test_a_watching_browser_marks_its_organization_and_each_ping_renews_it(
    tenants, monkeypatch
):
    from django.core.cache import cache

    from portal import live

    assert not await database_sync_to_async(live.watched)(tenants.a.id)
    member, ok, _ = await _connect(tenants.viewer_a, "alpha")
    assert ok and (await member.receive_json_from())["event"] == "live.hello"
    assert await database_sync_to_async(live.watched)(tenants.a.id)
    assert not await database_sync_to_async(live.watched)(tenants.b.id)
    # The mark lapses unless renewed: a ping renews it.
    await database_sync_to_async(cache.delete)(live._watch_key(tenants.a.id))
    live._watched_memo.clear()
    assert not await database_sync_to_async(live.watched)(tenants.a.id)
    await member.send_json_to({"event": "ping"})
    assert (await member.receive_json_from())["event"] == "pong"
    assert await database_sync_to_async(live.watched)(tenants.a.id)
    await member.disconnect()


async def test_station_events_reach_a_watching_browser_and_cost_nothing_unwatched(
    tenants, group_sends
):
    """Only browsers join an organization's group and each marks it watched: while none
    does, ``push_org_async`` sends nothing (no layer call), and once one does, it gets the
    events."""
    from portal import live

    sent = group_sends()
    live._watched_memo.clear()
    await live.push_org_async(tenants.a.id, "station.online", data={"station": 1})
    assert sent == []

    member, ok, _ = await _connect(tenants.viewer_a, "alpha")
    assert ok and (await member.receive_json_from())["event"] == "live.hello"
    await live.push_org_async(tenants.a.id, "station.online", data={"station": 1})
    assert (await member.receive_json_from(timeout=2))["event"] == "station.online"
    assert sent == [org_group(tenants.a.id)]
    # Another organization, unwatched: still nothing sent.
    await live.push_org_async(tenants.b.id, "station.online", data={"station": 2})
    assert sent == [org_group(tenants.a.id)]
    await member.disconnect()
