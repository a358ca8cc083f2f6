"""The UI shell in a real browser: login, organization switcher, language switch, live dot."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from portal.models import Role
from tests.factories import MembershipFactory


def test_login_switch_organization_and_language(page, login, tenants):
    # The owner of Alpha is also a viewer in Beta: the switcher offers both.
    MembershipFactory(organization=tenants.b, user=tenants.owner_a, role=Role.VIEWER)
    login(page, tenants.owner_a)
    expect(page).to_have_url(re.compile(r"/o/alpha/$"))
    expect(page.locator("h1")).to_have_text("Alpha Energy")

    page.click("#org-switcher summary")
    page.click("#org-switcher a[data-org=beta]")
    expect(page).to_have_url(re.compile(r"/o/beta/$"))
    expect(page.locator("h1")).to_have_text("Beta Parking")
    expect(page.locator("#org-switcher summary")).to_have_text("Beta Parking")

    # The live channel connects for this organization.
    expect(page.locator("#live-status")).to_have_class(re.compile(r"\bon\b"))

    page.select_option("#language-form select", "de")
    expect(page.locator("html")).to_have_attribute("lang", "de")
    expect(page.get_by_role("link", name="Mitglieder", exact=True)).to_be_visible()
    page.select_option("#language-form select", "fr")
    expect(page.get_by_role("link", name="Membres", exact=True)).to_be_visible()

    # Next login lands in the organization used last.
    page.context.clear_cookies()
    login(page, tenants.owner_a)
    expect(page).to_have_url(re.compile(r"/o/beta/$"))


def test_phone_sized_layout_keeps_navigation(browser, portal_server, login, tenants):
    context = browser.new_context(base_url=portal_server, viewport={"width": 390, "height": 844})
    page = context.new_page()
    login(page, tenants.driver)
    expect(page).to_have_url(re.compile(r"/me/charging/$"))  # a driver lands on charging
    expect(page.locator("#account-name-hint code")).to_have_text("dora")
    for path in ("/me/charging/", "/me/"):
        page.goto(path)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 400, f"{path} scrolls sideways on a phone: {width}px"
    expect(page.locator("#account-name")).to_have_text("dora")
    context.close()
