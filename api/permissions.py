"""Which role may take which action through the API (``patients.roles.can``).

Seeing an object is decided by the querysets (``for_user``: out of scope is a 404);
this permission decides whether a user who sees it may change it. A view names the
action needed per HTTP method in ``required_actions`` (reads need none).
"""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import SAFE_METHODS, BasePermission

from patients.roles import Action, can


class RoleActionPermission(BasePermission):
    message = "Your role does not allow this action."

    def has_permission(self, request: Any, view: Any) -> bool:
        action = required_action(request, view)
        return action is None or can(request.user, action)


def required_action(request: Any, view: Any) -> Action | None:
    # Reads need no action (what is visible is the queryset's business). A write through
    # an @action may name its own action; other writes need the view's ``write_action``.
    if request.method in SAFE_METHODS:
        return None
    per_action: dict[str, Action] = getattr(view, "action_permissions", {}) or {}
    name = getattr(view, "action", None)
    if name in per_action:
        return per_action[name]
    return getattr(view, "write_action", None)
