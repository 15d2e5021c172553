"""Which role may take which action through the API (``patients.roles``).

Seeing an object is decided by the querysets (``for_user``: out of scope is a 404);
this permission decides whether a user who sees it may change it. A view names the
action needed per HTTP method in ``required_actions`` (reads need none).

Rights are per care team. Two checks, in this order:

1. ``has_permission``, before any id is looked up: a user whose role allows the action in
   *no* team gets 403, the same answer for every id (``patients.roles.can``);
2. ``has_object_permission``, on the record the view found (404 when out of sight): 403 unless
   the user's role on *that record's patient* allows it (``patients.roles.can_on``: the role in
   the patient's care team, or as its trial's coordinator). Records with no patient (classifier
   versions, trainings) need only the first check.

A new record names its patient in the body; the views check it with :func:`check_on`.
"""

from __future__ import annotations

from typing import Any

from rest_framework.exceptions import PermissionDenied
from rest_framework.permissions import SAFE_METHODS, BasePermission

from patients.roles import Action, can, can_on, patient_of

PER_PATIENT_MESSAGE = "Your role in this patient's care team does not allow this action."


class RoleActionPermission(BasePermission):
    message = "Your role does not allow this action."

    def has_permission(self, request: Any, view: Any) -> bool:
        action = required_action(request, view)
        return action is None or can(request.user, action)

    def has_object_permission(self, request: Any, view: Any, obj: Any) -> bool:
        action = required_action(request, view)
        if action is None or patient_of(obj) is None:
            return True
        if can_on(request.user, action, obj):
            return True
        self.message = PER_PATIENT_MESSAGE  # DRF reads it from this instance (one per request)
        return False


def check_on(request: Any, action: Action, record: Any, message: str = PER_PATIENT_MESSAGE) -> None:
    """403 unless ``action`` is allowed on the patient of ``record`` (the views' explicit check:
    a read that is an export, or a new record's patient named in the body)."""
    if record is not None and not can_on(request.user, action, record):
        raise PermissionDenied(message)


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
