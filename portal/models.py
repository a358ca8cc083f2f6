"""Users, organizations (the tenants), memberships with roles, invitations."""

from __future__ import annotations

import secrets

from django.contrib.auth.models import AbstractUser, UserManager
from django.core.validators import RegexValidator
from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from portal.querysets import TenantQuerySet

account_name_validator = RegexValidator(
    r"^[a-zA-Z0-9][a-zA-Z0-9._-]{2,39}$",
    _(
        "3 to 40 characters: letters, digits, dots, dashes and underscores, "
        "starting with a letter or digit."
    ),
)
# django-allauth reads this (ACCOUNT_USERNAME_VALIDATORS) for the sign-up form.
account_name_validators = [account_name_validator]


class User(AbstractUser):
    """Every user can be a driver; ``username`` is the shareable account name.

    Owners type a driver's account name to add them as a special user of a station, so it is
    unique case-insensitively and never an e-mail address (which would leak it).
    """

    username = models.CharField(
        _("account name"),
        max_length=40,
        unique=True,
        validators=[account_name_validator],
        help_text=_("Share this name with station owners so they can add you."),
        error_messages={"unique": _("This account name is taken.")},
    )
    email = models.EmailField(_("e-mail address"), unique=True)
    last_organization = models.ForeignKey(
        "portal.Organization",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text=_("Where the user lands after login."),
    )

    objects = UserManager()

    class Meta:
        constraints = [
            models.UniqueConstraint(Lower("username"), name="user_account_name_ci_unique"),
        ]

    @property
    def account_name(self) -> str:
        return self.username

    def __str__(self) -> str:
        return self.username


class Organization(models.Model):
    """A station owner: a person or a company. The tenant of all station data."""

    name = models.CharField(_("name"), max_length=120)
    slug = models.SlugField(_("slug"), max_length=60, unique=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Role(models.TextChoices):
    OWNER = "owner", _("Owner")
    MANAGER = "manager", _("Manager")
    VIEWER = "viewer", _("Viewer")


ROLE_RANK = {Role.VIEWER: 1, Role.MANAGER: 2, Role.OWNER: 3}


class Membership(models.Model):
    """A user's role in an organization. Viewer reads; manager changes; owner also manages
    members and deletes things."""

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="memberships"
    )
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(_("role"), max_length=10, choices=Role.choices, default=Role.VIEWER)
    created_at = models.DateTimeField(default=timezone.now)

    objects = TenantQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["organization", "user"], name="membership_unique"),
        ]
        ordering = ["organization__name", "user__username"]

    def __str__(self) -> str:
        return f"{self.user} @ {self.organization} ({self.role})"

    def has_role(self, minimum: str) -> bool:
        return ROLE_RANK[Role(self.role)] >= ROLE_RANK[Role(minimum)]

    @property
    def can_change(self) -> bool:
        return self.has_role(Role.MANAGER)

    @property
    def is_owner(self) -> bool:
        return self.role == Role.OWNER


def new_invitation_token() -> str:
    return secrets.token_urlsafe(32)


class Invitation(models.Model):
    """An owner invites someone by e-mail; the link lets the invitee join with the given role."""

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="invitations"
    )
    email = models.EmailField(_("e-mail address"))
    role = models.CharField(_("role"), max_length=10, choices=Role.choices, default=Role.VIEWER)
    token = models.CharField(max_length=64, unique=True, default=new_invitation_token)
    invited_by = models.ForeignKey(
        User, null=True, on_delete=models.SET_NULL, related_name="invitations_sent"
    )
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    objects = TenantQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                "organization",
                Lower("email"),
                condition=models.Q(accepted_at__isnull=True),
                name="invitation_one_open_per_email",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.email} → {self.organization} ({self.role})"

    @property
    def is_open(self) -> bool:
        return self.accepted_at is None and self.expires_at > timezone.now()
