from __future__ import annotations

from rest_framework import serializers

from portal.models import Invitation, Membership, Organization, Role, User


class UserSerializer(serializers.ModelSerializer):
    account_name = serializers.CharField(source="username", read_only=True)

    class Meta:
        model = User
        fields = ["id", "account_name", "email", "first_name", "last_name"]
        read_only_fields = ["id", "account_name", "email"]


class TokenRequestSerializer(serializers.Serializer):
    email = serializers.EmailField()
    password = serializers.CharField(style={"input_type": "password"}, trim_whitespace=False)


class TokenSerializer(serializers.Serializer):
    token = serializers.CharField()


class OrganizationSerializer(serializers.ModelSerializer):
    role = serializers.SerializerMethodField()

    class Meta:
        model = Organization
        fields = ["slug", "name", "created_at", "role"]
        read_only_fields = ["slug", "created_at", "role"]

    def get_role(self, organization: Organization) -> str | None:
        roles = self.context.get("roles") or {}
        return roles.get(organization.id)


class MemberSerializer(serializers.ModelSerializer):
    account_name = serializers.CharField(source="user.username", read_only=True)
    email = serializers.EmailField(source="user.email", read_only=True)

    class Meta:
        model = Membership
        fields = ["id", "account_name", "email", "role", "created_at"]
        read_only_fields = ["id", "account_name", "email", "created_at"]


class MemberCreateSerializer(serializers.Serializer):
    account_name = serializers.CharField(max_length=40)
    role = serializers.ChoiceField(choices=Role.choices, default=Role.VIEWER)


class MemberUpdateSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=Role.choices)


class InvitationSerializer(serializers.ModelSerializer):
    invited_by = serializers.CharField(source="invited_by.username", read_only=True, default=None)

    class Meta:
        model = Invitation
        fields = ["id", "email", "role", "invited_by", "created_at", "expires_at"]
        read_only_fields = ["id", "invited_by", "created_at", "expires_at"]


class InvitationCreateSerializer(serializers.Serializer):
    email = serializers.EmailField()
    role = serializers.ChoiceField(choices=Role.choices, default=Role.VIEWER)
