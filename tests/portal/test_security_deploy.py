"""``manage.py check --deploy`` with production settings: DEBUG off, a real SECRET_KEY,
ALLOWED_HOSTS, HTTPS site URL. Run in a subprocess because settings are read once at start."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parents[2]


def check_deploy(tmp_path: Path, **extra: str | None) -> subprocess.CompletedProcess:
    """``check --deploy`` in production; ``extra`` sets (or with None removes) variables."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "DATABASE_URL", "REDIS_URL", "SECURE_", "CSP_"))
    }
    env.update(
        DEBUG="0",
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="portal.example.com",
        SITE_URL="https://portal.example.com",
        PORTAL_VAR_DIR=str(tmp_path),
        DJANGO_SETTINGS_MODULE="portal.settings",
    )
    for name, value in extra.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_is_clean_in_production(tmp_path):
    result = check_deploy(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)" in result.stdout


def test_check_deploy_would_catch_a_weakened_setting(tmp_path):
    """The check above can fail: without HSTS the same command reports security.W004."""
    result = check_deploy(tmp_path, SECURE_HSTS_SECONDS="0")
    assert result.returncode != 0
    assert "security.W004" in result.stdout + result.stderr


def test_production_refuses_the_development_secret_key(tmp_path):
    result = check_deploy(tmp_path, SECRET_KEY=None)
    assert result.returncode != 0
    assert "Set SECRET_KEY when DEBUG is off" in result.stderr
