from tests.stations.conftest import ocpp_settings  # noqa: F401  (the OCPP tests' settings)
