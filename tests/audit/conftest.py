from __future__ import annotations

# The OCPP test settings (short timeouts, in-memory channel layer) of the stations' tests.
from tests.stations.conftest import ocpp_settings  # noqa: F401
