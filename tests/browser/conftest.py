"""The browser harness: the real ASGI application served by Uvicorn in a thread of the test
process (so it shares the test database), and Playwright driving Debian's Chromium.

Fixtures: ``portal_server`` (base URL), ``browser``, ``page``, ``login(page, user)``.
Chromium comes from Debian's package (/usr/bin/chromium); where it is missing the tests are
skipped, and with REQUIRE_BROWSER=1 (CI) they fail instead.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time

import pytest

from tests.factories import PASSWORD

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _chromium() -> str | None:
    return os.environ.get("CHROMIUM") or shutil.which("chromium")


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/browser/" in str(item.fspath):
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = _chromium()
    if not path:
        reason = "needs Debian's chromium (apt-get install chromium)"
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail(reason + " (required in CI)", pytrace=False)
        pytest.skip(reason)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def portal_server(transactional_db):
    import uvicorn
    from channels.layers import channel_layers

    from portal.asgi import application

    # A fresh channel-layer instance per server: channels_redis binds its receiving to one
    # event loop, and a previous test's server loop, stopped with sockets open, could leave
    # it bound ("Two event loops are trying to receive() on one channel layer at once!").
    channel_layers.backends.clear()
    port = _free_port()
    config = uvicorn.Config(
        application,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="off",
        ws="websockets-sansio",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(5)
    channel_layers.backends.clear()
    # Without lifespan: the request threads' database connections would stay open and keep
    # the test database from being dropped at the end of the run.
    from portal.asgi import django_asgi_app

    django_asgi_app.threads.close_connections()


@pytest.fixture
def browser(chromium_path, monkeypatch):
    """One Chromium per test: Playwright's sync API runs an event loop in this thread while it
    is open, which must not outlive the test (pytest-asyncio tests need the thread free)."""
    from playwright.sync_api import sync_playwright

    # The test's own ORM calls (fixtures) are plain synchronous code; with Playwright's loop
    # in this thread Django's async guard would be a false alarm. Scoped to this test only.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium_path, args=CHROMIUM_ARGS, headless=True
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser, portal_server):
    context = browser.new_context(base_url=portal_server, viewport={"width": 1200, "height": 800})
    page = context.new_page()
    page.set_default_timeout(10_000)
    yield page
    context.close()


@pytest.fixture
def login():
    def do_login(page, user, password: str = PASSWORD):
        page.goto("/accounts/login/")
        page.fill("input[name=login]", user.email)
        page.fill("input[name=password]", password)
        page.click("button[type=submit]")
        page.wait_for_url(lambda url: "/accounts/login/" not in url)

    return do_login
