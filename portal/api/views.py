"""API of the portal app: the current user, their organizations, members and invitations."""

from __future__ import annotations

from django.contrib.auth import authenticate
from drf_spectacular.utils import extend_schema
from rest_framework import generics, mixins, status
from rest_framework.authtoken.models import Token
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from portal import selectors, services
from portal.api import serializers as s
from portal.api.base import OrgScopedViewSet
from portal.models import Invitation, Membership, Role
from portal.tenancy import OrgRolePermission


class MeView(generics.RetrieveUpdateAPIView):
    """The authenticated user (every user is a driver; ``account_name`` is shareable)."""

    serializer_class = s.UserSerializer
    permission_classes = [IsAuthenticated]
    http_method_names = ["get", "patch", "head", "options"]

    def get_object(self):
        return self.request.user


class TokenView(APIView):
    """Exchange e-mail and password for the user's API token (``Authorization: Token <key>``)."""

    permission_classes = [AllowAny]
    authentication_classes: list = []
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "token"

    @extend_schema(request=s.TokenRequestSerializer, responses=s.TokenSerializer)
    def post(self, request: Request) -> Response:
        data = s.TokenRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = authenticate(
            request._request,
            email=data.validated_data["email"],
            password=data.validated_data["password"],
        )
        if user is None:
            return Response(
                {"error": "invalid_credentials", "detail": "Wrong e-mail or password."},
                status=status.HTTP_400_BAD_REQUEST,
            )
        token, _created = Token.objects.get_or_create(user=user)
        return Response({"token": token.key})


class OrganizationListView(generics.ListCreateAPIView):
    """The organizations the user belongs to; creating one makes the user its owner."""

    serializer_class = s.OrganizationSerializer
    permission_classes = [IsAuthenticated]

    def get_queryset(self):
        return selectors.organizations_of_user(self.request.user)

    def get_serializer_context(self):
        context = super().get_serializer_context()
        if self.request.user.is_authenticated:
            context["roles"] = dict(
                selectors.memberships_of_user(self.request.user).values_list(
                    "organization_id", "role"
                )
            )
        return context

    def perform_create(self, serializer):
        organization = services.organization_create(
            name=serializer.validated_data["name"], owner=self.request.user
        )
        serializer.instance = organization
        serializer.context["roles"] = {organization.id: Role.OWNER}


class OrganizationDetailView(generics.GenericAPIView):
    """One organization: members read it, managers rename it, owners delete it
    (``?confirm=<name>`` must repeat the name)."""

    permission_classes = [OrgRolePermission]
    serializer_class = s.OrganizationSerializer
    write_roles = {"delete": Role.OWNER}

    @property
    def action(self) -> str:
        return self.request.method.lower()

    @extend_schema(responses=s.OrganizationSerializer)
    def get(self, request: Request, org: str) -> Response:
        data = s.OrganizationSerializer(
            self.organization, context={"roles": {self.organization.id: self.membership.role}}
        ).data
        return Response(data)

    @extend_schema(request=s.OrganizationSerializer, responses=s.OrganizationSerializer)
    def patch(self, request: Request, org: str) -> Response:
        data = s.OrganizationSerializer(self.organization, data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        if "name" in data.validated_data:
            services.organization_update(
                organization=self.organization, name=data.validated_data["name"]
            )
        return self.get(request, org)

    def delete(self, request: Request, org: str) -> Response:
        services.organization_delete(
            organization=self.organization, confirm_name=request.query_params.get("confirm", "")
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


class MemberViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    OrgScopedViewSet,
):
    """Members of an organization. Everyone reads; only owners add, change roles, remove."""

    model = Membership
    serializer_class = s.MemberSerializer
    write_role = Role.OWNER

    def scope(self, queryset):
        return queryset.select_related("user").order_by("user__username")

    @extend_schema(request=s.MemberCreateSerializer, responses={201: s.MemberSerializer})
    def create(self, request: Request, org: str) -> Response:
        data = s.MemberCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        membership = services.membership_add(organization=self.organization, **data.validated_data)
        return Response(s.MemberSerializer(membership).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=s.MemberUpdateSerializer, responses=s.MemberSerializer)
    def partial_update(self, request: Request, org: str, pk: str) -> Response:
        membership = self.get_object()
        data = s.MemberUpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        services.membership_change_role(membership=membership, role=data.validated_data["role"])
        return Response(s.MemberSerializer(membership).data)

    def perform_destroy(self, instance: Membership) -> None:
        services.membership_remove(membership=instance)


class InvitationViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin, OrgScopedViewSet
):
    """Open invitations. Owners invite by e-mail (sent after commit) and revoke."""

    model = Invitation
    serializer_class = s.InvitationSerializer
    write_role = Role.OWNER

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Invitation.objects.none()
        return selectors.invitations_open(self.organization)

    @extend_schema(request=s.InvitationCreateSerializer, responses={201: s.InvitationSerializer})
    def create(self, request: Request, org: str) -> Response:
        data = s.InvitationCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        invitation = services.invitation_create(
            organization=self.organization, invited_by=request.user, **data.validated_data
        )
        return Response(s.InvitationSerializer(invitation).data, status=status.HTTP_201_CREATED)

    def perform_destroy(self, instance: Invitation) -> None:
        services.invitation_revoke(invitation=instance)


class InvitationAcceptView(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(request=None, responses=s.MemberSerializer)
    def post(self, request: Request, token: str) -> Response:
        membership = services.invitation_accept(token=token, user=request.user)
        return Response(
            {"organization": membership.organization.slug, "role": membership.role},
            status=status.HTTP_200_OK,
        )
