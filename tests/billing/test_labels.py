"""QR labels: PNG and PDF for an organization's connector, downloadable by its members only."""

from __future__ import annotations

import io

import pytest
from django.test import override_settings
from PIL import Image

from billing import labels
from stations.models import Connector
from tests.billing.factories import ConnectorAccessFactory
from tests.stations.factories import StationFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def access(tenants):
    station = StationFactory(organization=tenants.a, name="Garage Süd", connectors=2)
    return ConnectorAccessFactory(connector=Connector.objects.get(station=station, connector_id=2))


@override_settings(SITE_URL="https://charge.example")
def test_label_url_is_the_short_qr_url(access):
    assert labels.label_url(access) == f"https://charge.example/c/{access.code}/"


def test_png_decodes_as_a_printable_image(access):
    image = Image.open(io.BytesIO(labels.label_png(access)))
    image.load()
    assert image.format == "PNG"
    assert image.size == (620, 1000)  # 62 × 100 mm at 10 px/mm


def test_png_differs_per_connector(tenants, access):
    other = ConnectorAccessFactory(
        connector=Connector.objects.get(station=access.connector.station, connector_id=1)
    )
    assert labels.label_png(access) != labels.label_png(other)


def test_pdf_is_a_62_by_100_mm_page(access):
    pdf = labels.label_pdf(access)
    assert pdf.startswith(b"%PDF")
    # 62 × 100 mm in PDF points (1 mm = 72/25.4 pt).
    assert b"/MediaBox [0 0 175.75 283.46]" in pdf


def test_pdf_with_latin1_core_font_fallback(access, monkeypatch):
    monkeypatch.setattr(labels, "UNICODE_FONTS", [])
    access.connector.station.name = "Station ⚡ Nord"
    assert labels.label_pdf(access).startswith(b"%PDF")


@pytest.mark.parametrize("who", ["owner_a", "manager_a", "viewer_a"])
def test_members_download_png_and_pdf(tenants, access, who):
    client = tenants.client(getattr(tenants, who))
    url = f"/o/alpha/access/labels/{access.pk}/"
    png = client.get(url, {"format": "png"})
    assert png.status_code == 200 and png["Content-Type"] == "image/png"
    Image.open(io.BytesIO(png.content)).verify()
    pdf = client.get(url)
    assert pdf.status_code == 200 and pdf["Content-Type"] == "application/pdf"
    assert pdf.content.startswith(b"%PDF")
    assert "label-" in pdf["Content-Disposition"]


def test_bad_format_is_400(tenants, access):
    r = tenants.client(tenants.owner_a).get(
        f"/o/alpha/access/labels/{access.pk}/", {"format": "gif"}
    )
    assert r.status_code == 400


def test_other_tenant_gets_404(tenants, access):
    client = tenants.client(tenants.owner_b)
    assert client.get(f"/o/alpha/access/labels/{access.pk}/").status_code == 404
    # Under its own organization the foreign label does not exist either.
    assert client.get(f"/o/beta/access/labels/{access.pk}/").status_code == 404


def test_driver_without_org_gets_404(tenants, access):
    r = tenants.client(tenants.driver).get(f"/o/alpha/access/labels/{access.pk}/")
    assert r.status_code == 404
