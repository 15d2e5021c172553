"""Request-level helpers shared by the dashboard views: roles once per request, scoping, audit."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest

from patients.roles import PERMISSIONS, Action, can, roles_of
from patients.scoping import is_admin


def actions_for(request: HttpRequest) -> frozenset[Action]:
    """What the signed-in user may do, computed once per request.

    The same rule as :func:`patients.roles.can` (admins may do everything, others what
    their roles allow), evaluated with three queries instead of three per action:
    templates ask it for every button they show.
    """
    cached = getattr(request, "_dashboard_actions", None)
    if cached is not None:
        return cached
    user = request.user
    if is_admin(user):
        allowed = frozenset(Action)
    else:
        allowed = frozenset(a for role in roles_of(user) for a in PERMISSIONS.get(role, ()))
    request._dashboard_actions = allowed
    return allowed


def require(request: HttpRequest, action: Action) -> None:
    """403 unless the user may take ``action`` (checked with :func:`patients.roles.can`)."""
    if not can(request.user, action):
        raise PermissionDenied(f"Your role does not allow this action ({action.value}).")
