"""The authorization decision: mode × access × who × time of day, cards, CarID, app tags,
concurrency, and the tariff snapshot that comes with an acceptance."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from billing import pricing
from billing.authorization import access_at, authorize, snapshot_tariff
from billing.models import AccessRule, AppTag
from stations.authorization import AuthorizationRequest
from stations.models import ChargingSession, Connector
from tests.billing.factories import (
    AccessRuleFactory,
    ConnectorAccessFactory,
    SpecialUserFactory,
    TariffFactory,
    UserGroupFactory,
    UserGroupMemberFactory,
    VehicleFactory,
)
from tests.factories import UserFactory
from tests.stations.factories import RfidCardFactory, StationFactory

pytestmark = pytest.mark.django_db

# A Wednesday, 10:00 in Zurich (09:00 UTC in winter).
WEDNESDAY_10 = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
WEDNESDAY_20 = datetime(2026, 12, 2, 19, 0, tzinfo=UTC)
SATURDAY_10 = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)


def ask(station, tag, connector_id=1, when=WEDNESDAY_10):
    return authorize(
        AuthorizationRequest(
            organization_id=station.organization_id,
            station_id=station.pk,
            charge_point_id=station.charge_point_id,
            connector_id=connector_id,
            id_tag=tag,
            time=when,
        )
    )


@pytest.fixture
def site(tenants):
    """Alpha's station with connector 1 (configured per test) and cards for everyone."""
    station = StationFactory(organization=tenants.a, connectors=2)
    public = TariffFactory(organization=tenants.a, name="Public", per_kwh=Decimal("0.50"))
    cards = {
        "owner": RfidCardFactory(organization=None, user=tenants.owner_a, uid="0A0A0A0A"),
        "org": RfidCardFactory(organization=tenants.a, user=None, uid="0B0B0B0B"),
        "driver": RfidCardFactory(organization=None, user=tenants.driver, uid="0D0D0D0D"),
        "stranger": RfidCardFactory(organization=None, user=UserFactory(), uid="05050505"),
        "beta": RfidCardFactory(organization=tenants.b, user=None, uid="0E0E0E0E"),
    }
    connector = Connector.objects.get(station=station, connector_id=1)
    return station, connector, public, cards


def open_connector(connector, access, tariff=None):
    return ConnectorAccessFactory(connector=connector, access=access, tariff=tariff)


# who → expected status per access level (no special prices involved)
MATRIX = {
    "private": {"owner": "Accepted", "org": "Accepted", "driver": "Invalid", "stranger": "Invalid"},
    "limited": {
        "owner": "Accepted",
        "org": "Accepted",
        "driver": "Accepted",
        "stranger": "Invalid",
    },
    "public": {
        "owner": "Accepted",
        "org": "Accepted",
        "driver": "Accepted",
        "stranger": "Accepted",
    },
}


@pytest.mark.parametrize("access", ["private", "limited", "public"])
@pytest.mark.parametrize("who", ["owner", "org", "driver", "stranger"])
def test_access_matrix(site, tenants, access, who):
    station, connector, public, cards = site
    open_connector(connector, access, public)
    SpecialUserFactory(organization=tenants.a, user=tenants.driver)  # dora is special
    result = ask(station, cards[who].uid)
    assert result.status == MATRIX[access][who], result.reason
    if result.accepted:
        tariff, source, _ = snapshot_tariff(result.tariff)
        if who in ("owner", "org"):
            assert tariff.is_free and source == "private"
        else:
            assert tariff.per_kwh == Decimal("0.50") and source == "public"


def test_connector_without_settings_is_private(site):
    station, _, _, cards = site
    assert ask(station, cards["org"].uid).status == "Accepted"
    assert ask(station, cards["driver"].uid).status == "Invalid"
    assert ask(station, cards["driver"].uid, connector_id=7).status == "Invalid"  # not reported


def test_other_organizations_own_card_is_unknown(site):
    station, connector, public, cards = site
    open_connector(connector, "public", public)
    result = ask(station, cards["beta"].uid)
    assert result.status == "Invalid" and result.user_id is None


def test_unknown_identifier(site):
    station, connector, public, _ = site
    open_connector(connector, "public", public)
    assert ask(station, "FFFF0000").status == "Invalid"


def test_uid_is_normalised(site):
    station, connector, public, _ = site
    open_connector(connector, "public", public)
    assert ask(station, "0d:0d:0d:0d").status == "Accepted"


def test_blocked_and_expired_cards(site):
    station, connector, public, cards = site
    open_connector(connector, "public", public)
    card = cards["driver"]
    card.blocked = True
    card.save()
    assert ask(station, card.uid).status == "Blocked"
    card.blocked = False
    card.expires_at = WEDNESDAY_10 - timedelta(seconds=1)
    card.save()
    result = ask(station, card.uid)
    assert result.status == "Expired" and result.expiry_date == card.expires_at
    card.expires_at = WEDNESDAY_10 + timedelta(days=30)
    card.save()
    result = ask(station, card.uid)
    assert result.status == "Accepted" and result.expiry_date == card.expires_at
    assert result.id_tag_info()["expiryDate"] == card.expires_at.isoformat()


def test_price_precedence_individual_over_group_over_public(site, tenants):
    station, connector, public, cards = site
    open_connector(connector, "public", public)
    driver = tenants.driver
    cheap_group = TariffFactory(organization=tenants.a, name="Club", per_kwh=Decimal("0.30"))
    dear_group = TariffFactory(organization=tenants.a, name="Guests", per_kwh=Decimal("0.40"))
    for tariff in (dear_group, cheap_group):
        group = UserGroupFactory(organization=tenants.a, tariff=tariff)
        UserGroupMemberFactory(group=group, user=driver)
    result = ask(station, cards["driver"].uid)
    tariff, source, _ = snapshot_tariff(result.tariff)
    assert (tariff.per_kwh, source, result.tariff["name"]) == (Decimal("0.30"), "group", "Club")

    staff = TariffFactory(organization=tenants.a, name="Staff", per_kwh=Decimal("0.20"))
    SpecialUserFactory(organization=tenants.a, user=driver, tariff=staff)
    tariff, source, _ = snapshot_tariff(ask(station, cards["driver"].uid).tariff)
    assert (tariff.per_kwh, source) == (Decimal("0.20"), "individual")
    # Another driver without special prices pays the public price.
    tariff, source, _ = snapshot_tariff(ask(station, cards["stranger"].uid).tariff)
    assert (tariff.per_kwh, source) == (Decimal("0.50"), "public")


def test_group_member_counts_as_special_user_at_limited_connector(site, tenants):
    station, connector, public, cards = site
    open_connector(connector, "limited", public)
    assert ask(station, cards["driver"].uid).status == "Invalid"
    group = UserGroupFactory(organization=tenants.a, tariff=None)
    UserGroupMemberFactory(group=group, user=tenants.driver)
    result = ask(station, cards["driver"].uid)
    assert result.status == "Accepted"
    assert snapshot_tariff(result.tariff)[0].per_kwh == Decimal("0.50")  # connector's price


def test_special_user_of_another_organization_does_not_count(site, tenants):
    station, connector, public, cards = site
    open_connector(connector, "limited", public)
    SpecialUserFactory(organization=tenants.b, user=tenants.driver)
    assert ask(station, cards["driver"].uid).status == "Invalid"


class TestTimeOfDay:
    """Limited on weekdays 07:00–18:00, public otherwise, in the station's time zone."""

    @pytest.fixture
    def ruled(self, site):
        station, connector, public, cards = site
        access = open_connector(connector, "public", public)
        AccessRuleFactory(
            connector_access=access,
            weekdays="12345",
            start_time=time(7),
            end_time=time(18),
            access="limited",
        )
        return station, cards

    @pytest.mark.parametrize(
        ("when", "status"),
        [(WEDNESDAY_10, "Invalid"), (WEDNESDAY_20, "Accepted"), (SATURDAY_10, "Accepted")],
    )
    def test_window(self, ruled, when, status):
        station, cards = ruled
        assert ask(station, cards["stranger"].uid, when=when).status == status

    def test_evaluated_in_the_station_time_zone(self, ruled):
        station, cards = ruled
        # 17:30 UTC is 18:30 in Zurich (outside the window) but 12:30 in New York (inside).
        when = datetime(2026, 12, 2, 17, 30, tzinfo=UTC)
        assert ask(station, cards["stranger"].uid, when=when).status == "Accepted"
        station.time_zone = "America/New_York"
        station.save()
        assert ask(station, cards["stranger"].uid, when=when).status == "Invalid"


def test_access_at_over_midnight_belongs_to_the_starting_day():
    rule = AccessRule(weekdays="5", start_time=time(22), end_time=time(6), access="private")
    friday_23 = datetime(2026, 12, 4, 23, 0)
    saturday_3 = datetime(2026, 12, 5, 3, 0)
    saturday_23 = datetime(2026, 12, 5, 23, 0)
    thursday_3 = datetime(2026, 12, 3, 3, 0)
    assert access_at("public", [rule], friday_23) == "private"
    assert access_at("public", [rule], saturday_3) == "private"
    assert access_at("public", [rule], saturday_23) == "public"
    assert access_at("public", [rule], thursday_3) == "public"


def test_first_matching_rule_wins():
    rules = [
        AccessRule(weekdays="1234567", start_time=time(12), end_time=time(13), access="private"),
        AccessRule(weekdays="1234567", start_time=time(8), end_time=time(18), access="limited"),
    ]
    assert access_at("public", rules, datetime(2026, 12, 2, 12, 30)) == "private"
    assert access_at("public", rules, datetime(2026, 12, 2, 9)) == "limited"
    assert access_at("public", rules, datetime(2026, 12, 2, 18)) == "public"  # end excluded


class TestModes:
    def test_none_accepts_anything_free_with_notional_price(self, site):
        station, connector, public, _ = site
        open_connector(connector, "private", public)
        station.auth_mode = "none"
        station.save()
        result = ask(station, "ANYTHING")
        assert result.accepted and result.user_id is None
        tariff, _, notional = snapshot_tariff(result.tariff)
        assert tariff.is_free and notional.per_kwh == Decimal("0.50")

    def test_third_party_never_accepts(self, site):
        station, connector, public, cards = site
        open_connector(connector, "public", public)
        station.auth_mode = "ocpp_third_party"
        station.third_party_url = "wss://other.example/ocpp"
        station.save()
        assert ask(station, cards["org"].uid).status == "Invalid"


class TestCarIdAndAppTags:
    def test_car_id_only_with_auto_car_detection(self, site, tenants):
        station, connector, public, _ = site
        open_connector(connector, "public", public)
        VehicleFactory(user=tenants.driver, car_id="ab:cd:ef:01:23:45")
        assert ask(station, "ABCDEF012345").status == "Invalid"
        station.auto_car_detection = True
        station.save()
        result = ask(station, "ABCDEF012345")
        assert result.accepted and result.user_id == tenants.driver.pk

    def test_app_tag_identifies_the_driver(self, site, tenants):
        station, connector, public, _ = site
        open_connector(connector, "public", public)
        tag = AppTag.objects.create(user=tenants.driver).id_tag
        assert len(tag) <= 20
        result = ask(station, tag)
        assert result.accepted and result.user_id == tenants.driver.pk


class TestConcurrentTx:
    def start(self, station, connector_id, tag):
        now = timezone.now()
        return ChargingSession.objects.create(
            station=station,
            connector_id=connector_id,
            id_tag=tag,
            meter_start=0,
            started_at=now,
            station_started_at=now,
            idempotency_key=f"{station.pk}-{connector_id}-{tag}",
        )

    def test_second_session_on_the_same_card(self, site, tenants):
        station, connector, public, cards = site
        open_connector(connector, "public", public)
        open_connector(Connector.objects.get(station=station, connector_id=2), "public", public)
        tag = cards["driver"].uid
        self.start(station, 1, tag)
        assert ask(station, tag, connector_id=2).status == "ConcurrentTx"
        # The same connector (a re-sent start, or the stop's idTagInfo) is not concurrent.
        assert ask(station, tag, connector_id=1).status == "Accepted"
        # Authorize at the station where the tag charges may be a stop request.
        assert ask(station, tag, connector_id=None).status == "Accepted"
        other = StationFactory(organization=tenants.a, connectors=1)
        open_connector(Connector.objects.get(station=other), "public", public)
        assert ask(other, tag, connector_id=None).status == "ConcurrentTx"
        ChargingSession.objects.update(status="completed")
        assert ask(station, tag, connector_id=2).status == "Accepted"


def test_snapshot_is_json_of_strings_and_roundtrips(site):
    station, connector, public, cards = site
    open_connector(connector, "public", public)
    snapshot = ask(station, cards["driver"].uid).tariff
    assert all(isinstance(snapshot[k], str) for k in ("per_kwh", "per_hour", "vat_percent"))
    tariff, source, _ = snapshot_tariff(snapshot)
    assert tariff == pricing.Tariff(per_kwh=Decimal("0.50"), currency="CHF")
    assert source == pricing.TariffSource.PUBLIC


def test_stations_does_not_import_billing_at_module_level():
    import ast
    from pathlib import Path

    for path in Path("stations").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, ast.ImportFrom | ast.Import):
                names = (
                    [node.module]
                    if isinstance(node, ast.ImportFrom)
                    else [a.name for a in node.names]
                )
                assert not any((n or "").startswith("billing") for n in names), path
