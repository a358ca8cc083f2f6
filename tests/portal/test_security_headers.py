"""The content security policy on every page, and templates that stay within it (no inline
scripts or inline event handlers; the browser check is tests/browser/test_csp.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.django_db

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"


def policy(response) -> dict[str, list[str]]:
    header = response.headers["Content-Security-Policy"]
    parts = [p.strip().split() for p in header.split(";") if p.strip()]
    return {p[0]: p[1:] for p in parts}


@pytest.mark.parametrize("url", ["/accounts/login/", "/o/alpha/", "/api/v1/docs/", "/admin/"])
def test_pages_carry_a_strict_policy(tenants, url):
    tenants.owner_a.is_staff = tenants.owner_a.is_superuser = True
    tenants.owner_a.save()
    r = tenants.client(tenants.owner_a).get(url, follow=True)
    assert r.status_code == 200
    csp = policy(r)
    assert csp["default-src"] == ["'self'"]
    assert csp["script-src"] == ["'self'"]
    assert csp["style-src"] == ["'self'"]
    assert csp["frame-ancestors"] == ["'none'"]
    assert csp["object-src"] == ["'none'"]
    assert "data:" in csp["img-src"]
    assert "'self'" in csp["connect-src"]
    assert any(s.startswith(("ws://", "wss://")) for s in csp["connect-src"])


def test_swagger_start_script_is_a_separate_response(tenants):
    client = tenants.client(tenants.owner_a)
    html = client.get("/api/v1/docs/").content.decode()
    assert "<style" not in html
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html)
    script = re.search(r'<script src="([^"]*script[^"]*)"', html).group(1)
    r = client.get(script.replace("&amp;", "&"))
    assert r.status_code == 200 and r["Content-Type"].startswith("application/javascript")
    assert b"SwaggerUIBundle" in r.content
    # Outside localhost Swagger UI would load a badge from validator.swagger.io.
    assert b'"validatorUrl": null' in r.content


def test_templates_have_no_inline_scripts_or_handlers():
    offenders = []
    for path in TEMPLATES.rglob("*.html"):
        text = re.sub(r"\{#.*?#\}", "", path.read_text())  # template comments may name them
        for match in re.finditer(r"<script(?![^>]*\bsrc=)[^>]*>", text):
            offenders.append(f"{path.relative_to(TEMPLATES)}: {match.group(0)}")
        for match in re.finditer(r"\son[a-z]+\s*=", text):
            offenders.append(f"{path.relative_to(TEMPLATES)}: {match.group(0).strip()}")
        if "javascript:" in text or "<style" in text:
            offenders.append(f"{path.relative_to(TEMPLATES)}: javascript: or <style>")
    assert not offenders, offenders
