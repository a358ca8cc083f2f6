"""Sign-up with e-mail verification, login, throttling, password hashing, the account name."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.hashers import identify_hasher, make_password
from django.core import mail
from django.test import override_settings

from portal.models import User
from tests.factories import PASSWORD, UserFactory

pytestmark = pytest.mark.django_db

STRONG = "Tr1cky-Volt-Amp-2026"


def test_signup_verification_email_then_login(client):
    r = client.post(
        "/accounts/signup/",
        {
            "email": "new.driver@example.test",
            "username": "new-driver",
            "password1": STRONG,
            "password2": STRONG,
        },
    )
    assert r.status_code == 302
    assert r["Location"] == "/accounts/confirm-email/"
    user = User.objects.get(email="new.driver@example.test")
    assert user.account_name == "new-driver"

    # Not verified yet: logging in only re-sends the verification mail.
    client.logout()
    assert len(mail.outbox) == 1
    body = mail.outbox[0].body
    link = re.search(r"https?://[^/\s]+(/accounts/confirm-email/[^\s]+)", body).group(1)
    r = client.post("/accounts/login/", {"login": "new.driver@example.test", "password": STRONG})
    assert r.status_code == 302 and r["Location"] == "/accounts/confirm-email/"
    assert "_auth_user_id" not in client.session

    assert client.get(link).status_code == 200
    r = client.post(link)
    assert r.status_code == 302
    client.logout()
    r = client.post("/accounts/login/", {"login": "new.driver@example.test", "password": STRONG})
    assert r.status_code == 302
    assert client.session["_auth_user_id"] == str(user.pk)
    # A user without organization lands on the driver's charging page, which shows the
    # account name to give to owners; the account page is "My account".
    landing = client.get("/", follow=True)
    assert landing.redirect_chain[-1][0] == "/me/charging/"
    assert "<code>new-driver</code>" in landing.content.decode()
    assert "<h1>My account</h1>" in client.get("/me/").content.decode()


def test_account_name_unique_case_insensitively(client):
    UserFactory(username="Charger")
    r = client.post(
        "/accounts/signup/",
        {
            "email": "other@example.test",
            "username": "charger",
            "password1": STRONG,
            "password2": STRONG,
        },
    )
    assert r.status_code == 200
    assert not User.objects.filter(email="other@example.test").exists()


def test_account_name_rejects_email_like_names(client):
    r = client.post(
        "/accounts/signup/",
        {
            "email": "x@example.test",
            "username": "x@example.test",
            "password1": STRONG,
            "password2": STRONG,
        },
    )
    assert r.status_code == 200
    assert not User.objects.filter(email="x@example.test").exists()


@override_settings(ACCOUNT_RATE_LIMITS={"login_failed": "100/m/ip,5/5m/key"})
def test_repeated_failed_logins_are_locked(client):
    user = UserFactory(username="target")
    for _ in range(5):
        r = client.post("/accounts/login/", {"login": user.email, "password": "wrong"})
        assert r.status_code == 200
    # Even the right password is refused while the account is locked.
    r = client.post("/accounts/login/", {"login": user.email, "password": PASSWORD})
    assert r.status_code in (200, 429)
    assert "_auth_user_id" not in client.session
    assert b"Too many failed login attempts" in r.content


def test_login_works_before_the_lock(client):
    user = UserFactory()
    for _ in range(3):
        client.post("/accounts/login/", {"login": user.email, "password": "wrong"})
    r = client.post("/accounts/login/", {"login": user.email, "password": PASSWORD})
    assert r.status_code == 302
    assert client.session["_auth_user_id"] == str(user.pk)


def test_password_reset_sends_mail(client):
    user = UserFactory()
    r = client.post("/accounts/password/reset/", {"email": user.email})
    assert r.status_code == 302
    assert mail.outbox and user.email in mail.outbox[0].to
    assert "/accounts/password/reset/key/" in mail.outbox[0].body


def test_password_change(client):
    user = UserFactory()
    client.force_login(user)
    r = client.post(
        "/accounts/password/change/",
        {"oldpassword": PASSWORD, "password1": STRONG, "password2": STRONG},
    )
    assert r.status_code == 302
    user.refresh_from_db()
    assert user.check_password(STRONG)


def test_production_hasher_is_argon2():
    from portal import settings as project_settings

    assert project_settings.PASSWORD_HASHERS[0].endswith("Argon2PasswordHasher")
    hashed = make_password("x", hasher="argon2")
    assert identify_hasher(hashed).algorithm == "argon2"


def test_signup_page_calls_the_username_account_name(client):
    html = client.get("/accounts/signup/").content.decode()
    assert "Account name" in html
    assert "Username" not in html
