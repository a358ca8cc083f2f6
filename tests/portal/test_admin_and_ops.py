"""Admin, demo data, the periodic schedule, deployment checks."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib import admin
from django.core.management import call_command

from portal.models import Membership, Organization, User
from portal.schedule import PERIODIC, celery_beat_schedule

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.django_db
def test_every_model_is_in_the_admin_with_search(admin_client, tenants):
    from django.apps import apps

    for model in apps.get_models():
        if model._meta.app_label not in {"portal", "stations", "billing", "loadmgmt"}:
            continue
        assert model in admin.site._registry, f"{model.__name__} is not in the admin"
        model_admin = admin.site._registry[model]
        assert model_admin.search_fields, f"{model.__name__} admin has no search"
        url = f"/admin/{model._meta.app_label}/{model._meta.model_name}/"
        r = admin_client.get(url, {"q": "alpha"})
        assert r.status_code == 200, url


@pytest.mark.django_db
def test_admin_finds_a_user_by_organization(admin_client, tenants):
    r = admin_client.get("/admin/portal/user/", {"q": "Beta Parking"})
    assert b"bob" in r.content
    assert b"anna" not in r.content.split(b'id="result_list"')[1]


@pytest.mark.django_db
def test_seed_demo_is_idempotent():
    call_command("seed_demo", stdout=io.StringIO())
    counts = (User.objects.count(), Organization.objects.count(), Membership.objects.count())
    call_command("seed_demo", stdout=io.StringIO())
    assert counts == (
        User.objects.count(),
        Organization.objects.count(),
        Membership.objects.count(),
    )
    owner = User.objects.get(email="owner@demo.test")
    assert owner.check_password("demo-charge-2026")
    roles = dict(
        Membership.objects.filter(organization__slug="demo").values_list("user__username", "role")
    )
    assert roles == {"olivia": "owner", "manuel": "manager", "vera": "viewer"}


@pytest.mark.django_db
def test_every_demo_login_of_the_readme_logs_in_through_the_portal(client):
    """Each login the demo prints (and the README lists) gets past the login form, none is
    held at "verify your e-mail" (the admin was, having no verified address)."""
    from portal import demo

    call_command("seed_demo", stdout=io.StringIO())
    for email, password, _role in demo.logins():
        client.logout()
        r = client.post("/accounts/login/", {"login": email, "password": password})
        assert r.status_code == 302, email
        assert "confirm-email" not in r["Location"], email
        assert client.get("/api/v1/me/").status_code == 200, email
    assert client.get("/admin/").status_code == 200  # the last one: the platform admin


@pytest.mark.django_db
def test_the_navigation_links_the_admin_for_platform_admins_only(tenants, admin_user):
    link = 'href="/admin/"'
    owner = tenants.client(tenants.owner_a)
    assert link not in owner.get("/o/alpha/").content.decode()
    assert link not in owner.get("/me/").content.decode()
    staff = tenants.client(admin_user)
    assert link in staff.get("/me/").content.decode()
    assert "Plattform-Admin" in staff.get("/me/", HTTP_ACCEPT_LANGUAGE="de").content.decode()


def test_every_beat_entry_expires_before_its_next_run():
    schedule = celery_beat_schedule()
    assert schedule.keys() == PERIODIC.keys()
    for name, entry in schedule.items():
        assert entry["options"]["expires"] < entry["schedule"].total_seconds(), name


def test_beat_tasks_exist():
    from portal.celery import app

    app.loader.import_default_modules()
    for entry in PERIODIC.values():
        assert entry.task in app.tasks, entry.task


def test_check_deploy_is_clean_with_debug_off():
    env = {
        **os.environ,
        "DEBUG": "0",
        "SECRET_KEY": "k3J-9vQz!x7Lm2@pW5$nB8^rT4&yH6*cD1%eF0(gA" * 2,
        "ALLOWED_HOSTS": "portal.example.com",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_debug_off_refuses_the_dev_secret_key():
    env = {k: v for k, v in os.environ.items() if k != "SECRET_KEY"}
    env["DEBUG"] = "0"
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "Set SECRET_KEY" in result.stderr


@pytest.mark.django_db
def test_in_process_beat_runs_due_tasks_and_survives_failures():
    from datetime import timedelta

    from portal.celery import app
    from portal.periodic import STARTUP_DELAY_S, run_due
    from portal.schedule import PeriodicTask

    calls = []

    @app.task(name="tests.periodic_probe")
    def probe():
        calls.append("probe")

    @app.task(name="tests.periodic_broken")
    def broken():
        raise RuntimeError("boom")

    entries = {
        "broken": PeriodicTask("tests.periodic_broken", timedelta(seconds=10)),
        "probe": PeriodicTask("tests.periodic_probe", timedelta(seconds=60)),
    }
    due: dict[str, float] = {}
    assert run_due(due, 0.0, entries) == []  # nothing right at start-up
    assert run_due(due, STARTUP_DELAY_S, entries) == ["probe"]  # "broken" failed, logged
    assert calls == ["probe"]
    assert run_due(due, STARTUP_DELAY_S + 30, entries) == []  # "broken" ran and failed again
    assert run_due(due, STARTUP_DELAY_S + 60, entries) == ["probe"]
    assert calls == ["probe", "probe"]


def test_in_process_beat_runs_the_real_schedule_in_a_fresh_process(tmp_path):
    """In a process that has not imported any tasks module (like the ASGI server), every
    entry of the real schedule runs."""
    script = (
        "import django, os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'portal.settings');"
        "django.setup();"
        "from django.core.management import call_command; call_command('migrate', verbosity=0);"
        "from portal.periodic import STARTUP_DELAY_S, run_due;"
        "from portal.schedule import PERIODIC;"
        "due = {}; run_due(due, 0.0); ran = run_due(due, STARTUP_DELAY_S);"
        "print(sorted(ran) == sorted(PERIODIC), sorted(ran))"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env["PORTAL_VAR_DIR"] = str(tmp_path)
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.stdout.startswith("True"), result.stdout + result.stderr


def test_favicon_is_the_portal_icon(client):
    """Pages declare the icon; /favicon.ico (asked for by browsers on admin and API pages)
    redirects to it instead of answering 404."""
    from django.contrib.staticfiles import finders

    response = client.get("/favicon.ico")
    assert response.status_code == 301
    assert response["Location"].endswith("portal/icon.svg")
    assert finders.find("portal/icon.svg")
    assert (
        'rel="icon" href="/static/portal/icon.svg"'
        in client.get("/accounts/login/").content.decode()
    )
