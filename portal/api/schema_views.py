"""Swagger UI under a strict content security policy."""

from __future__ import annotations

from drf_spectacular.views import SpectacularSwaggerSplitView


class SwaggerView(SpectacularSwaggerSplitView):
    """Swagger UI whose start-up script is a separate response (``?script``), not an inline
    script, and whose page has no inline style (templates/api/swagger_ui.html)."""

    template_name = "api/swagger_ui.html"
