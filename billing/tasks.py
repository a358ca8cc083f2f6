"""Periodic work of the billing app (entries in portal/schedule.py): thin, take ids,
idempotent."""

from __future__ import annotations

from datetime import datetime

from celery import shared_task
from django.utils import timezone

from billing import invoices
from portal.models import Organization

# Days at the start of a month on which last month's invoices are issued: the hourly runs of
# the 1st do it; the later days catch up after a worker outage. Issuing is idempotent.
ISSUE_DAYS = 3


@shared_task
def billing_invoices_issue(organization_id: int, year: int, month: int) -> int:
    """Issue one owner's invoices for a month; running it again issues nothing new."""
    organization = Organization.objects.filter(pk=organization_id).first()
    if organization is None:  # deleted meanwhile
        return 0
    return len(invoices.invoices_issue(organization=organization, year=year, month=month))


def invoices_due(now: datetime) -> tuple[int, int] | None:
    """The month to invoice at ``now``: last month during the first days of this one."""
    if now.astimezone(invoices.portal_zone()).day > ISSUE_DAYS:
        return None
    return invoices.previous_month(now)


@shared_task
def billing_invoices_issue_last_month() -> int:
    """Last month's invoices for every owner with sessions to invoice, one task each.

    Scheduled hourly (the schedule has intervals, not dates); acts only on the first
    ``ISSUE_DAYS`` days of a month, in the portal's time zone.
    """
    due = invoices_due(timezone.now())
    if due is None:
        return 0
    year, month = due
    organization_ids = invoices.organizations_to_invoice(year, month)
    for organization_id in organization_ids:
        billing_invoices_issue.delay(organization_id, year, month)
    return len(organization_ids)
