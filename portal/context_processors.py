"""Navigation context for the UI shell: the user's organizations for the switcher."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from portal.selectors import memberships_of_user


def navigation(request: HttpRequest) -> dict[str, Any]:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    # Evaluated lazily by the template; one query for the switcher.
    return {"nav_memberships": memberships_of_user(user).order_by("organization__name")}
