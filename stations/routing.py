"""Websocket routes of the stations app (mounted without session or origin checks)."""

from __future__ import annotations

from django.urls import re_path

from stations.admission import AdmissionMiddleware
from stations.consumers import OcppConsumer

# Everything after /ocpp/ is the identity (already percent-decoded by the server); the
# consumer refuses empty identities and ones containing a slash with 404. A busy process
# refuses handshakes before the consumer is built (stations/admission.py).
websocket_urlpatterns = [
    re_path(r"^ocpp/(?P<charge_point_id>.*)$", AdmissionMiddleware(OcppConsumer.as_asgi())),
]
