"""Pages of invoices and reports: owners' (under ``/o/<org>/``, tenant via OrgViewMixin) and
a driver's own invoices (``/me/invoices/``). Thin: reads in billing.reports / invoices."""

from __future__ import annotations

import re
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.mixins import LoginRequiredMixin
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views import View

from billing import invoices, reports
from billing.models import BillingProfile, Invoice
from portal.errors import DomainError
from portal.models import Role
from portal.tenancy import OrgViewMixin


class PeriodForm(forms.Form):
    start = forms.DateField(label=gettext_lazy("From"), widget=forms.DateInput({"type": "date"}))
    end = forms.DateField(label=gettext_lazy("To"), widget=forms.DateInput({"type": "date"}))


def period_from(request: HttpRequest) -> reports.Period:
    """The period in ``?from=YYYY-MM-DD&to=YYYY-MM-DD``; this month so far by default."""
    return reports.Period.parse(
        request.GET.get("from"), request.GET.get("to"), reports.today_local()
    )


class ReportsView(OrgViewMixin, View):
    """Revenue by station, connector, user and month, with the payout for the period."""

    def get(self, request: HttpRequest, org: str) -> HttpResponse:
        context: dict[str, Any] = {"organization": self.organization, "membership": self.membership}
        status = 200
        try:
            period = period_from(request)
        except DomainError as exc:
            context["error"] = exc.detail
            status = 400
        else:
            report = reports.revenue_report(self.organization, period)
            context.update(
                period=period,
                report=report,
                payout=reports.payout_statement(self.organization, period, report),
                query=f"from={period.start:%Y-%m-%d}&to={period.end:%Y-%m-%d}",
            )
        template = (
            "billing/reports/_report.html" if request.htmx else "billing/reports/reports.html"
        )
        return render(request, template, context, status=status)


class ReportFileView(OrgViewMixin, View):
    """A report as a file; ``kind`` and ``fmt`` come from the URL pattern."""

    kind: str = "stations"
    fmt: str = "csv"

    def get(self, request: HttpRequest, org: str) -> HttpResponse:
        try:
            period = period_from(request)
        except DomainError as exc:
            return HttpResponseBadRequest(exc.detail, content_type="text/plain; charset=utf-8")
        report = reports.revenue_report(self.organization, period)
        name = f"{self.organization.slug}-{self.kind}-{period.start:%Y%m%d}-{period.end:%Y%m%d}"
        if self.kind == "payout":
            content: bytes | str = reports.payout_pdf(
                reports.payout_statement(self.organization, period, report)
            )
        elif self.fmt == "csv":
            render_csv = reports.stations_csv if self.kind == "stations" else reports.users_csv
            content = render_csv(report)
        else:
            render_pdf = reports.stations_pdf if self.kind == "stations" else reports.users_pdf
            content = render_pdf(report)
        return file_response(content, f"{name}.{self.fmt}")


def file_response(content: bytes | str, filename: str) -> HttpResponse:
    content_type = "application/pdf" if filename.endswith(".pdf") else "text/csv; charset=utf-8"
    response = HttpResponse(content, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


class IssueForm(forms.Form):
    month = forms.CharField(
        label=gettext_lazy("Month"), widget=forms.TextInput({"type": "month"}), max_length=7
    )

    def clean_month(self) -> tuple[int, int]:
        value = self.cleaned_data["month"]
        match = re.fullmatch(r"(\d{4})-(\d{2})", value)
        if not match or not 1 <= int(match[2]) <= 12:
            raise forms.ValidationError(_("A month as YYYY-MM, e.g. 2025-03."))
        return int(match[1]), int(match[2])


class InvoiceListView(OrgViewMixin, View):
    """The owner's invoices; managers and owners issue a month's invoices here."""

    def get(self, request: HttpRequest, org: str) -> HttpResponse:
        year, month = invoices.previous_month(timezone.now())
        return self.render(IssueForm(initial={"month": f"{year}-{month:02d}"}))

    def render(self, form: IssueForm, status: int = 200) -> HttpResponse:
        return render(
            self.request,
            "billing/reports/invoices.html",
            {
                "organization": self.organization,
                "membership": self.membership,
                "form": form,
                "invoices": invoices.invoices_of_organization(self.organization)[:500],
            },
            status=status,
        )

    def post(self, request: HttpRequest, org: str) -> HttpResponse:
        form = IssueForm(request.POST)
        if not form.is_valid():
            return self.render(form, status=400)
        year, month = form.cleaned_data["month"]
        try:
            issued = invoices.invoices_issue(organization=self.organization, year=year, month=month)
        except DomainError as exc:
            form.add_error("month", exc.detail)
            return self.render(form, status=400)
        if issued:
            messages.success(request, _("%(count)d invoices issued.") % {"count": len(issued)})
        else:
            messages.info(request, _("Nothing new to invoice for this month."))
        return redirect("billing_invoices", org=org)


class InvoicePdfView(OrgViewMixin, View):
    def get(self, request: HttpRequest, org: str, pk: int) -> HttpResponse:
        invoice = get_object_or_404(invoices.invoices_of_organization(self.organization), pk=pk)
        return file_response(invoices.invoice_pdf(invoice), invoice_filename(invoice))


def invoice_filename(invoice: Invoice) -> str:
    return f"invoice-{invoice.organization.slug}-{invoice.number}.pdf"


class BillingProfileForm(forms.ModelForm):
    class Meta:
        model = BillingProfile
        fields = ["legal_name", "address", "vat_id", "iban"]
        widgets = {"address": forms.Textarea({"rows": 3})}

    def clean_iban(self) -> str:
        try:
            return invoices.normalize_iban(self.cleaned_data["iban"])
        except DomainError as exc:
            raise forms.ValidationError(exc.detail) from exc


class BillingProfileView(OrgViewMixin, View):
    """What invoices say about the owner; members read it, owners change it."""

    write_role = Role.OWNER

    def get(self, request: HttpRequest, org: str) -> HttpResponse:
        profile = BillingProfile.objects.for_tenant(self.organization).first()
        initial = {"legal_name": self.organization.name} if profile is None else None
        return self.render(BillingProfileForm(instance=profile, initial=initial))

    def render(self, form: BillingProfileForm, status: int = 200) -> HttpResponse:
        if not self.membership.is_owner:
            for field in form.fields.values():
                field.disabled = True
        return render(
            self.request,
            "billing/reports/billing_profile.html",
            {"organization": self.organization, "membership": self.membership, "form": form},
            status=status,
        )

    def post(self, request: HttpRequest, org: str) -> HttpResponse:
        profile = BillingProfile.objects.for_tenant(self.organization).first()
        form = BillingProfileForm(request.POST, instance=profile)
        if not form.is_valid():
            return self.render(form, status=400)
        invoices.billing_profile_set(organization=self.organization, **form.cleaned_data)
        messages.success(request, _("Billing details saved; new invoices will show them."))
        return redirect("billing_profile", org=org)


class MyInvoicesView(LoginRequiredMixin, View):
    """A driver's invoices from every owner they charged with."""

    def get(self, request: HttpRequest) -> HttpResponse:
        return render(
            request,
            "billing/reports/my_invoices.html",
            {"invoices": invoices.invoices_of_driver(request.user)[:500]},
        )


class MyInvoicePdfView(LoginRequiredMixin, View):
    def get(self, request: HttpRequest, pk: int) -> HttpResponse:
        # Scoped to the driver: another driver's invoice is a 404, as if it did not exist.
        invoice = get_object_or_404(invoices.invoices_of_driver(request.user), pk=pk)
        return file_response(invoices.invoice_pdf(invoice), invoice_filename(invoice))
