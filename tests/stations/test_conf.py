"""stations.conf reads each setting once, and again after a setting changes."""

from __future__ import annotations

from django.test import override_settings

from loadmgmt import conf as loadmgmt_conf
from stations import conf


def test_a_changed_setting_is_read_again(settings):
    settings.OCPP_CALL_TIMEOUT = 7.0
    assert conf.call_timeout() == 7.0
    settings.OCPP_CALL_TIMEOUT = 9.0
    assert conf.call_timeout() == 9.0
    with override_settings(LOADMGMT_CYCLE_SECONDS=3.0):
        assert loadmgmt_conf.cycle_seconds() == 3.0
    assert loadmgmt_conf.cycle_seconds() != 3.0


def test_a_setting_is_read_once(settings, monkeypatch):
    """The environment (the fallback of an unset setting) is not read on every call."""
    settings.OCPP_MAX_FRAME_BYTES = None  # unset: the environment, then the default
    monkeypatch.setenv("OCPP_MAX_FRAME_BYTES", "1234")
    assert conf.max_frame_bytes() == 1234
    monkeypatch.setenv("OCPP_MAX_FRAME_BYTES", "4321")
    assert conf.max_frame_bytes() == 1234
