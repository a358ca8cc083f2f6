"""Organizations, members and invitations: every change goes through here.

Each function validates, mutates inside a transaction, and schedules side effects (e-mail,
live pushes) with ``transaction.on_commit`` so nothing is announced that did not happen.
"""

from __future__ import annotations

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.text import slugify
from django.utils.translation import gettext as _

from portal.errors import Conflict, DomainError
from portal.models import Invitation, Membership, Organization, Role, User


def _unique_slug(name: str) -> str:
    base = slugify(name)[:50] or "org"
    slug, n = base, 2
    while Organization.objects.filter(slug=slug).exists():
        slug, n = f"{base}-{n}", n + 1
    return slug


@transaction.atomic
def organization_create(*, name: str, owner: User, slug: str = "") -> Organization:
    """A new organization with ``owner`` as its first owner."""
    name = name.strip()
    if not name:
        raise DomainError(_("An organization needs a name."), code="invalid")
    if slug and Organization.objects.filter(slug=slug).exists():
        raise Conflict(_("This short name is taken."))
    organization = Organization.objects.create(name=name, slug=slug or _unique_slug(name))
    Membership.objects.create(organization=organization, user=owner, role=Role.OWNER)
    return organization


def organization_update(*, organization: Organization, name: str) -> Organization:
    name = name.strip()
    if not name:
        raise DomainError(_("An organization needs a name."), code="invalid")
    organization.name = name
    organization.save(update_fields=["name"])
    return organization


@transaction.atomic
def organization_delete(*, organization: Organization, confirm_name: str) -> None:
    """Delete the organization and everything it owns. The name must be typed to confirm."""
    if confirm_name.strip() != organization.name:
        raise DomainError(_("Type the organization's name exactly to confirm."), code="invalid")
    organization.delete()


def _owner_count(organization: Organization) -> int:
    return Membership.objects.filter(organization=organization, role=Role.OWNER).count()


@transaction.atomic
def membership_add(*, organization: Organization, account_name: str, role: str) -> Membership:
    """Add an existing user, found by account name, with a role."""
    user = User.objects.filter(username__iexact=account_name.strip()).first()
    if user is None:
        raise DomainError(_("No user has this account name."), code="unknown_account")
    if Membership.objects.filter(organization=organization, user=user).exists():
        raise Conflict(_("This user is already a member."))
    return Membership.objects.create(organization=organization, user=user, role=Role(role))


@transaction.atomic
def membership_change_role(*, membership: Membership, role: str) -> Membership:
    role = Role(role)
    # Lock the organization's owner rows so two demotions cannot both pass the check.
    list(
        Membership.objects.select_for_update()
        .filter(organization_id=membership.organization_id, role=Role.OWNER)
        .values_list("id", flat=True)
    )
    if (
        membership.role == Role.OWNER
        and role != Role.OWNER
        and _owner_count(membership.organization) <= 1
    ):
        raise Conflict(_("An organization needs at least one owner."))
    membership.role = role
    membership.save(update_fields=["role"])
    return membership


@transaction.atomic
def membership_remove(*, membership: Membership) -> None:
    list(
        Membership.objects.select_for_update()
        .filter(organization_id=membership.organization_id, role=Role.OWNER)
        .values_list("id", flat=True)
    )
    if membership.role == Role.OWNER and _owner_count(membership.organization) <= 1:
        raise Conflict(_("An organization needs at least one owner."))
    User.objects.filter(pk=membership.user_id, last_organization=membership.organization_id).update(
        last_organization=None
    )
    membership.delete()


@transaction.atomic
def invitation_create(
    *, organization: Organization, email: str, role: str, invited_by: User
) -> Invitation:
    """Invite by e-mail; the invitation e-mail is sent after commit."""
    email = email.strip()
    if Membership.objects.filter(organization=organization, user__email__iexact=email).exists():
        raise Conflict(_("This person is already a member."))
    # An expired open invitation for the same address is replaced by the new one.
    Invitation.objects.filter(
        organization=organization, email__iexact=email, accepted_at__isnull=True
    ).filter(expires_at__lte=timezone.now()).delete()
    try:
        with transaction.atomic():
            invitation = Invitation.objects.create(
                organization=organization,
                email=email,
                role=Role(role),
                invited_by=invited_by,
                expires_at=timezone.now() + settings.INVITATION_VALIDITY,
            )
    except IntegrityError as exc:
        raise Conflict(_("This address has an open invitation already.")) from exc
    from portal.tasks import invitation_send

    transaction.on_commit(lambda: invitation_send.delay(invitation.id))
    return invitation


def invitation_revoke(*, invitation: Invitation) -> None:
    if invitation.accepted_at is not None:
        raise Conflict(_("This invitation was accepted already."))
    invitation.delete()


@transaction.atomic
def invitation_accept(*, token: str, user: User) -> Membership:
    """The invitee joins with the invited role. Only the invited e-mail address may accept."""
    invitation = (
        Invitation.objects.select_for_update().select_related("organization").filter(token=token)
    ).first()
    if invitation is None or not invitation.is_open:
        raise DomainError(_("This invitation is unknown, used or expired."), code="invalid_token")
    if invitation.email.lower() != user.email.lower():
        raise DomainError(
            _("This invitation was sent to another e-mail address."), code="wrong_recipient"
        )
    membership, _created = Membership.objects.get_or_create(
        organization=invitation.organization, user=user, defaults={"role": invitation.role}
    )
    invitation.accepted_at = timezone.now()
    invitation.accepted_by = user
    invitation.save(update_fields=["accepted_at", "accepted_by"])
    return membership


def invitations_purge_expired(*, now=None) -> int:
    """Delete open invitations that expired more than a week ago; returns how many."""
    now = now or timezone.now()
    deleted, _details = Invitation.objects.filter(
        accepted_at__isnull=True, expires_at__lt=now - timezone.timedelta(days=7)
    ).delete()
    return deleted
