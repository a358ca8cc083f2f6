"""Printable QR labels for connectors: PNG and PDF (62 × 100 mm, a common label-printer roll).

The QR code holds the connector's short URL (``SITE_URL/c/<code>``); the label also prints
that URL (for phones without a QR reader), the station's name, the connector number and
"Scan to charge". QR codes are made with ``qrcode`` (error correction M: survives a scratched
label), PDFs with ``fpdf2``.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import qrcode
from django.conf import settings
from django.urls import reverse
from django.utils.translation import gettext as _
from fpdf import FPDF
from PIL import Image, ImageDraw, ImageFont

from billing.models import ConnectorAccess

LABEL_MM = (62, 100)
PNG_PX_PER_MM = 10  # about 254 dpi: sharp on a 203 or 300 dpi label printer
# A Unicode font when the system has one (station names are free text); else the PDF core
# font, whose Latin-1 covers German, French and Italian names.
UNICODE_FONTS = [
    Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"),
    Path("/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf"),
]
# fpdf2 subsets embedded fonts with fontTools, which logs every step at INFO: one label would
# add some forty lines to the server log.
logging.getLogger("fontTools").setLevel(logging.WARNING)


def label_url(connector_access: ConnectorAccess) -> str:
    return settings.SITE_URL + reverse("billing_qr", kwargs={"code": connector_access.code})


def _texts(connector_access: ConnectorAccess) -> tuple[str, str, str]:
    connector = connector_access.connector
    return (
        _("Scan to charge"),
        connector.station.label,
        _("Connector %(number)d") % {"number": connector.connector_id},
    )


def qr_image(url: str, box_size: int = 10) -> Image.Image:
    qr = qrcode.QRCode(
        error_correction=qrcode.constants.ERROR_CORRECT_M, box_size=box_size, border=2
    )
    qr.add_data(url)
    qr.make(fit=True)
    return qr.make_image(fill_color="black", back_color="white").get_image().convert("RGB")


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    for path in UNICODE_FONTS:
        if path.exists():
            return ImageFont.truetype(str(path), size)
    return ImageFont.load_default(size=size)


def _fit(draw: ImageDraw.ImageDraw, text: str, size: int, width: int):
    """The largest font up to ``size`` in which ``text`` fits ``width`` (long station names)."""
    while size > 12:
        font = _font(size)
        if draw.textlength(text, font=font) <= width:
            return font
        size -= 2
    return _font(size)


def label_png(connector_access: ConnectorAccess) -> bytes:
    width, height = (n * PNG_PX_PER_MM for n in LABEL_MM)
    margin = 3 * PNG_PX_PER_MM
    url = label_url(connector_access)
    caption, station, number = _texts(connector_access)
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    inner = width - 2 * margin
    y = margin
    for text, size in ((caption, 56), (station, 44), (number, 40)):
        font = _fit(draw, text, size, inner)
        draw.text((width // 2, y), text, fill="black", font=font, anchor="mt")
        y += int(size * 1.35)
    qr = qr_image(url).resize((inner, inner), Image.Resampling.NEAREST)
    image.paste(qr, (margin, y))
    y += inner + PNG_PX_PER_MM
    font = _fit(draw, url, 30, inner)
    draw.text((width // 2, y), url, fill="black", font=font, anchor="mt")
    out = io.BytesIO()
    image.save(out, format="PNG", dpi=(254, 254))
    return out.getvalue()


def _pdf_font(pdf: FPDF) -> str:
    for path in UNICODE_FONTS:
        if path.exists():
            pdf.add_font("LabelSans", fname=str(path))
            return "LabelSans"
    return "Helvetica"


def label_pdf(connector_access: ConnectorAccess) -> bytes:
    url = label_url(connector_access)
    caption, station, number = _texts(connector_access)
    pdf = FPDF(unit="mm", format=LABEL_MM)
    pdf.set_margins(3, 3, 3)
    pdf.set_auto_page_break(False)
    pdf.set_title(f"{caption}: {station} · {number}")
    pdf.add_page()
    family = _pdf_font(pdf)
    if family == "Helvetica":  # the core font is Latin-1 only

        def clean(text: str) -> str:
            return text.encode("latin-1", "replace").decode("latin-1")
    else:

        def clean(text: str) -> str:
            return text

    inner = LABEL_MM[0] - 6
    for text, size in ((caption, 16), (station, 12), (number, 11)):
        pdf.set_font(family, size=size)
        while size > 6 and pdf.get_string_width(clean(text)) > inner:
            size -= 1
            pdf.set_font(family, size=size)
        pdf.cell(inner, size * 0.5, clean(text), align="C", new_x="LMARGIN", new_y="NEXT")
        pdf.ln(1)
    y = pdf.get_y() + 1
    pdf.image(qr_image(url), x=3, y=y, w=inner, h=inner)
    pdf.set_y(y + inner + 2)
    pdf.set_font(family, size=8)
    pdf.multi_cell(inner, 4, clean(url), align="C")
    return bytes(pdf.output())
