"""Request-level helpers shared by the dashboard views: roles once per request, scoping, audit.

Buttons are drawn from what the user may do anywhere (:func:`actions_for`); the server checks
the right on the patient acted on (:func:`require_on`, :func:`patient_for`, :func:`record_for`):
rights are per care team (``patients.roles.can_on``).
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest
from django.shortcuts import get_object_or_404

from patients.models import Patient
from patients.roles import Action, actions_of, can_on


def actions_for(request: HttpRequest) -> frozenset[Action]:
    """What the signed-in user may do in at least one of their teams (:func:`patients.roles.actions_of`),
    asked once per request: templates ask it for every button they show, and :func:`require` enforces
    the same answer. Whether the action is allowed on one patient is :func:`require_on`."""
    cached = getattr(request, "_dashboard_actions", None)
    if cached is None:
        cached = request._dashboard_actions = actions_of(request.user)
    return cached


def require(request: HttpRequest, action: Action) -> None:
    """403 unless the user may take ``action`` somewhere (the same answer the page's buttons were drawn from).

    Enough for pages that act on no single patient; a multi-patient export also keeps only the
    patients the action is allowed on (``patients.roles.patients_for_action``)."""
    if action not in actions_for(request):
        raise PermissionDenied(f"Your role does not allow this action ({action.value}).")


def require_on(request: HttpRequest, action: Action, record: Any) -> None:
    """403 unless ``action`` is allowed on the patient of ``record`` (a patient, or a draw, upload,
    cell ... of one): the user's role in that patient's care team, or as its trial's coordinator."""
    require(request, action)
    if not can_on(request.user, action, record):
        raise PermissionDenied(f"Your role in this patient's care team does not allow this action ({action.value}).")


def patient_for(request: HttpRequest, pk: int, action: Action) -> Patient:
    """The patient a page acts on: 404 unless the user may see it (scoping first, so another
    team's patient stays unknown rather than forbidden), then 403 unless ``action`` is allowed
    on *this* patient."""
    patient = get_object_or_404(Patient.objects.for_user(request.user), pk=pk)
    require_on(request, action, patient)
    return patient


def record_for(request: HttpRequest, queryset: QuerySet, pk: int, action: Action) -> Any:
    """The draw, upload or cell a page acts on (``queryset`` of a scoped model): 404 unless the user
    may see it, then 403 unless ``action`` is allowed on its patient (as :func:`patient_for`)."""
    record = get_object_or_404(queryset.for_user(request.user), pk=pk)
    require_on(request, action, record)
    return record
