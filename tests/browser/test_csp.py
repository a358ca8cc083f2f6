"""The content security policy in Chromium: the main pages load with no policy violation and
no console error, and the behaviours moved out of inline scripts (confirmations, the station
limits' power figures) still work."""

from __future__ import annotations

from playwright.sync_api import expect

from portal.models import Membership
from stations.models import Connector
from tests.billing.factories import ConnectorAccessFactory, TariffFactory
from tests.factories import MembershipFactory
from tests.loadmgmt.factories import MeterFactory, TreeNodeFactory
from tests.stations.factories import StationFactory

# Registered before any page script runs: every violation the page reports, with where.
COLLECT_VIOLATIONS = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", function (e) {
  window.__csp.push(e.violatedDirective + " blocked " + (e.blockedURI || "inline") + " at " +
                    e.sourceFile + ":" + e.lineNumber);
});
"""


class Watch:
    """Console errors, uncaught page errors and CSP violations of one page."""

    def __init__(self, page) -> None:
        self.page = page
        self.errors: list[str] = []
        page.add_init_script(COLLECT_VIOLATIONS)
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))

    def _console(self, message) -> None:
        if message.type == "error":
            self.errors.append(f"console: {message.text}")

    def visit(self, url: str, ready: str = "main, #swagger-ui, #content") -> list[str]:
        """Load ``url``, let its scripts, htmx and the live socket settle, and return what
        went wrong (an empty list on a clean page)."""
        self.errors.clear()
        response = self.page.goto(url)
        assert response is not None and response.ok, f"{url}: {response and response.status}"
        assert response.header_value("content-security-policy"), f"{url}: no policy header"
        self.page.locator(ready).first.wait_for()
        self.page.wait_for_load_state("networkidle")
        found = [f"{url}: {v}" for v in self.page.evaluate("window.__csp")]
        return found + [f"{url}: {e}" for e in self.errors]


def seed(tenants):
    station = StationFactory(organization=tenants.a, name="Garage", connectors=2)
    tariff = TariffFactory(organization=tenants.a, name="Public")
    connector = Connector.objects.filter(station=station).first()
    ConnectorAccessFactory(connector=connector, access="public", tariff=tariff)
    node = TreeNodeFactory(organization=tenants.a, name="Main board")
    MeterFactory(node=node)
    user = tenants.owner_a
    user.is_staff = user.is_superuser = True
    user.save()
    return station


def test_main_pages_have_no_csp_violations(page, login, tenants):
    station = seed(tenants)
    watch = Watch(page)
    login(page, tenants.owner_a)
    pages = [
        "/o/alpha/",
        "/o/alpha/stations/",
        f"/o/alpha/stations/{station.pk}/",
        f"/o/alpha/stations/{station.pk}/display/",
        "/o/alpha/access/",
        "/o/alpha/load/",
        f"/o/alpha/load/stations/{station.pk}/",
        "/o/alpha/members/",
        "/o/alpha/settings/",
        "/me/",
        "/api/v1/docs/",
        "/admin/",
        "/admin/portal/user/",
        f"/admin/portal/user/{tenants.owner_a.pk}/change/",
    ]
    problems = []
    for url in pages:
        problems += watch.visit(url)
    # Swagger UI really started (its start-up script is a separate file now).
    page.goto("/api/v1/docs/")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Charging portal API")
    # Logged out: login, sign-up and password reset.
    page.context.clear_cookies()
    for url in ["/accounts/login/", "/accounts/signup/", "/accounts/password/reset/"]:
        problems += watch.visit(url)
    assert not problems, "\n".join(problems)


def test_confirmations_and_power_figures_work_without_inline_scripts(page, login, tenants):
    station = seed(tenants)
    login(page, tenants.owner_a)
    watch = Watch(page)

    # The station limits page recomputes kW while typing (was an inline script).
    assert not watch.visit(f"/o/alpha/load/stations/{station.pk}/")
    page.fill("#limits-form [name=max_current]", "16")
    expect(page.locator("#power-3")).to_have_text("11")  # 16 A x 230 V x 3, in kW, down
    expect(page.locator("#power-1")).to_have_text("3.6")

    # The role select submits itself (was an inline onchange).
    guest = MembershipFactory(organization=tenants.a, user__username="gina").user
    assert not watch.visit("/o/alpha/members/")
    row = page.locator(f"#member-{Membership.objects.get(user=guest).pk}")
    row.locator("select[name=role]").select_option("manager")
    expect(row.locator("select[name=role]")).to_have_value("manager")
    assert Membership.objects.get(user=guest).role == "manager"

    # Removing a member asks first (was an inline onsubmit): dismissed, nothing happens.
    page.once("dialog", lambda dialog: dialog.dismiss())
    row.get_by_role("button", name="Remove").click()
    page.wait_for_load_state("networkidle")
    assert Membership.objects.filter(user=guest).exists()
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Remove").click()
    expect(row).to_have_count(0)
    assert not Membership.objects.filter(user=guest).exists()
    assert not watch.errors, watch.errors
