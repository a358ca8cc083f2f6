"""API of invoices and reports: an owner's invoices (list, retrieve, PDF, issue a month),
revenue reports and the payout statement for a period (organization-scoped), and a driver's
own invoices under ``me/invoices/``."""

from __future__ import annotations

from django.db.models import QuerySet
from django.http import HttpResponse
from django.urls import path
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import mixins, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.routers import SimpleRouter
from rest_framework.views import APIView

from billing import invoices, reports
from billing.models import Invoice, InvoiceLine
from portal.api.base import OrgScopedViewSet
from portal.models import Role
from portal.tenancy import OrgRolePermission


class InvoiceLineOut(serializers.ModelSerializer):
    class Meta:
        model = InvoiceLine
        fields = ["session", "description", "energy_kwh", "connected_hours", "total", "vat_amount"]


class InvoiceOut(serializers.ModelSerializer):
    organization = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    account_name = serializers.CharField(source="user.username", read_only=True)
    lines = InvoiceLineOut(many=True, read_only=True)

    class Meta:
        model = Invoice
        fields = [
            "id",
            "organization",
            "number",
            "year",
            "month",
            "account_name",
            "currency",
            "total",
            "vat_amount",
            "net_amount",
            "issued_at",
            "issuer_name",
            "issuer_address",
            "issuer_vat_id",
            "lines",
        ]


class IssueIn(serializers.Serializer):
    year = serializers.IntegerField(min_value=2000, max_value=2999)
    month = serializers.IntegerField(min_value=1, max_value=12)


class IssueOut(serializers.Serializer):
    issued = InvoiceOut(many=True)


def pdf_response(invoice: Invoice) -> HttpResponse:
    response = HttpResponse(invoices.invoice_pdf(invoice), content_type="application/pdf")
    response["Content-Disposition"] = (
        f'attachment; filename="invoice-{invoice.organization.slug}-{invoice.number}.pdf"'
    )
    return response


def _invoice_scope(queryset: QuerySet) -> QuerySet:
    return queryset.select_related("organization", "user").prefetch_related("lines")


class InvoiceViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, OrgScopedViewSet):
    """The organization's invoices; managers and owners issue a month's invoices."""

    model = Invoice
    serializer_class = InvoiceOut

    def scope(self, queryset: QuerySet) -> QuerySet:
        return _invoice_scope(queryset)

    @extend_schema(responses={(200, "application/pdf"): OpenApiTypes.BINARY})
    @action(detail=True, methods=["get"])
    def pdf(self, request: Request, *args, **kwargs) -> HttpResponse:
        return pdf_response(self.get_object())

    @extend_schema(request=IssueIn, responses={201: IssueOut})
    @action(detail=False, methods=["post"])
    def issue(self, request: Request, *args, **kwargs) -> Response:
        data = IssueIn(data=request.data)
        data.is_valid(raise_exception=True)
        issued = invoices.invoices_issue(organization=self.organization, **data.validated_data)
        issued = list(_invoice_scope(Invoice.objects.filter(pk__in=[i.pk for i in issued])))
        return Response({"issued": InvoiceOut(issued, many=True).data}, status=201)


PERIOD_PARAMETERS = [
    OpenApiParameter("from", OpenApiTypes.DATE, description="First day (default: 1st of month)"),
    OpenApiParameter("to", OpenApiTypes.DATE, description="Last day, included (default: today)"),
]


def _period(request: Request) -> reports.Period:
    return reports.Period.parse(
        request.query_params.get("from"), request.query_params.get("to"), reports.today_local()
    )


class ReportRowOut(serializers.Serializer):
    key = serializers.CharField()
    label = serializers.CharField()
    currency = serializers.CharField()
    sessions = serializers.IntegerField()
    energy_kwh = serializers.DecimalField(max_digits=14, decimal_places=3)
    hours = serializers.DecimalField(max_digits=14, decimal_places=4)
    revenue = serializers.DecimalField(max_digits=14, decimal_places=2)
    vat = serializers.DecimalField(max_digits=14, decimal_places=2)
    net = serializers.DecimalField(max_digits=14, decimal_places=2)
    free_sessions = serializers.IntegerField()
    notional_value = serializers.DecimalField(max_digits=14, decimal_places=2)


RevenueReportOut = inline_serializer(
    "RevenueReport",
    {
        "from": serializers.DateField(),
        "to": serializers.DateField(),
        **{
            name: ReportRowOut(many=True)
            for name in ("by_station", "by_connector", "by_user", "by_month", "totals")
        },
    },
)


def report_data(report: reports.RevenueReport) -> dict:
    def rows(items: list[reports.Row]) -> list[dict]:
        return [row.as_dict() for row in items]

    return {
        "from": report.period.start.isoformat(),
        "to": report.period.end.isoformat(),
        "by_station": rows(report.by_station),
        "by_connector": rows(report.by_connector),
        "by_user": rows(report.by_user),
        "by_month": rows(report.by_month),
        "totals": rows(report.totals),
    }


class _OrgReadView(APIView):
    """Read-only, organization-scoped: any member reads (viewer and up); outsiders get 404."""

    # Permissions run before the method check: an outsider's POST is a 404 too, not a 405.
    permission_classes = [OrgRolePermission]
    read_role = Role.VIEWER


class RevenueReportView(_OrgReadView):
    """Revenue (VAT included), VAT, and the value of free charging by station, connector,
    driver and month, per currency, for sessions started in the period."""

    @extend_schema(parameters=PERIOD_PARAMETERS, responses=RevenueReportOut)
    def get(self, request: Request, org: str) -> Response:
        return Response(report_data(reports.revenue_report(self.organization, _period(request))))


class PayoutLineOut(serializers.Serializer):
    currency = serializers.CharField()
    revenue = serializers.DecimalField(max_digits=14, decimal_places=2)
    commission_percent = serializers.DecimalField(max_digits=5, decimal_places=2)
    commission = serializers.DecimalField(max_digits=14, decimal_places=2)
    payout = serializers.DecimalField(max_digits=14, decimal_places=2)


PayoutOut = inline_serializer(
    "PayoutStatement",
    {
        "from": serializers.DateField(),
        "to": serializers.DateField(),
        "commission_percent": serializers.DecimalField(max_digits=5, decimal_places=2),
        "lines": PayoutLineOut(many=True),
    },
)


class PayoutView(_OrgReadView):
    """The payout statement: revenue, the platform's commission and the payout per currency."""

    @extend_schema(parameters=PERIOD_PARAMETERS, responses=PayoutOut)
    def get(self, request: Request, org: str) -> Response:
        period = _period(request)
        statement = reports.payout_statement(self.organization, period)
        return Response(
            {
                "from": period.start.isoformat(),
                "to": period.end.isoformat(),
                "commission_percent": str(statement.commission_percent),
                "lines": [line.as_dict() for line in statement.lines],
            }
        )


class MyInvoiceViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """The authenticated driver's invoices from every owner; others' are 404."""

    serializer_class = InvoiceOut
    permission_classes = [IsAuthenticated]

    def get_queryset(self) -> QuerySet:
        if getattr(self, "swagger_fake_view", False):
            return Invoice.objects.none()
        return _invoice_scope(invoices.invoices_of_driver(self.request.user))

    @extend_schema(responses={(200, "application/pdf"): OpenApiTypes.BINARY})
    @action(detail=True, methods=["get"])
    def pdf(self, request: Request, *args, **kwargs) -> HttpResponse:
        return pdf_response(self.get_object())


org_router = SimpleRouter()
org_router.register("invoices", InvoiceViewSet, basename="billing-invoice")
me_router = SimpleRouter()
me_router.register("me/invoices", MyInvoiceViewSet, basename="billing-my-invoice")

org_urlpatterns = [
    *org_router.urls,
    path("reports/revenue/", RevenueReportView.as_view(), name="billing-report-revenue"),
    path("reports/payout/", PayoutView.as_view(), name="billing-report-payout"),
]
urlpatterns = [*me_router.urls]
