"""Request-level helpers shared by the dashboard views: roles once per request, scoping, audit."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django.shortcuts import get_object_or_404

from patients.models import Patient
from patients.roles import Action, actions_of


def actions_for(request: HttpRequest) -> frozenset[Action]:
    """What the signed-in user may do (:func:`patients.roles.actions_of`), asked once per request:
    templates ask it for every button they show, and :func:`require` enforces the same answer."""
    cached = getattr(request, "_dashboard_actions", None)
    if cached is None:
        cached = request._dashboard_actions = actions_of(request.user)
    return cached


def require(request: HttpRequest, action: Action) -> None:
    """403 unless the user may take ``action`` (the same answer the page's buttons were drawn from)."""
    if action not in actions_for(request):
        raise PermissionDenied(f"Your role does not allow this action ({action.value}).")


def patient_for(request: HttpRequest, pk: int, action: Action) -> Patient:
    """The patient a page acts on: 404 unless the user may see it (scoping first, so another
    team's patient stays unknown rather than forbidden), then 403 unless ``action`` is allowed."""
    patient = get_object_or_404(Patient.objects.for_user(request.user), pk=pk)
    require(request, action)
    return patient
