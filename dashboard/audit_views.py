"""The audit page (administrators only): who viewed, exported or changed which patient's data.

Two sources, merged newest first:

- ``AuditEvent`` rows written by ``patients.audit.record`` for reads and exports
  (views and API call it);
- the simple-history tables of the patient-data models for every create, update and
  delete (with the user of the request that made it, and the change reason: a
  reviewer's override carries its reason there and on the cell itself).

Filters: ``?user=<username>``, ``?patient=<study id>``, ``?action=view|export|create|update|delete|...``,
``?since=YYYY-MM-DD``. At most ``LIMIT`` rows are shown; narrow the filters for older ones.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.dateparse import parse_date

from dashboard.views.common import base_context  # the shared page chrome (navigation, role flags)
from patients.audit import record
from patients.models import (
    AuditEvent,
    BloodDraw,
    CellEvent,
    ClinicalEvent,
    DrawSummary,
    ImagingUpload,
    Patient,
    TreatmentLine,
)
from patients.roles import Action, can

LIMIT = 200

#: Patient-data models with history, and the lookup from a history row to its patient id.
HISTORY_MODELS: list[tuple[type, str]] = [
    (Patient, "id"),
    (TreatmentLine, "patient_id"),
    (ClinicalEvent, "patient_id"),
    (BloodDraw, "patient_id"),
    (ImagingUpload, "draw__patient_id"),
    (CellEvent, "draw__patient_id"),
    (DrawSummary, "draw__patient_id"),
]
HISTORY_ACTIONS = {"+": "create", "~": "update", "-": "delete"}
CHANGE_ACTIONS = set(HISTORY_ACTIONS.values())


@dataclass
class Row:
    at: dt.datetime
    user: str
    action: str
    object_type: str
    object_id: str
    patient: str
    where: str
    detail: str
    history: Any = None  # the history row, for the change details computed after the cut


def _patient_ids_for_history(model: type, lookup: str, ids: list[int]) -> Q:
    """History rows keep foreign keys as plain ids; reach the patient through the live table."""
    if lookup == "id":
        return Q(id__in=ids)
    if lookup == "patient_id":
        return Q(patient_id__in=ids)
    # draw__patient_id: the history row has draw_id; map the patient's draws.
    return Q(draw_id__in=BloodDraw.objects.filter(patient_id__in=ids).values("pk"))


def _history_rows(user_q: Any, patient_ids: list[int] | None, action: str, since: dt.datetime | None) -> list[Row]:
    if action and action not in CHANGE_ACTIONS:
        return []
    rows: list[Row] = []
    study_ids: dict[int, str] = {}
    draw_patient: dict[int, int] = {}
    for model, lookup in HISTORY_MODELS:
        qs = model.history.model.objects.select_related("history_user")
        if user_q is not None:
            qs = qs.filter(history_user__in=user_q)
        if patient_ids is not None:
            qs = qs.filter(_patient_ids_for_history(model, lookup, patient_ids))
        if action:
            qs = qs.filter(history_type={v: k for k, v in HISTORY_ACTIONS.items()}[action])
        if since is not None:
            qs = qs.filter(history_date__gte=since)
        for h in qs.order_by("-history_date")[:LIMIT]:
            if lookup == "id":
                pid = h.id
            elif lookup == "patient_id":
                pid = h.patient_id
            else:
                if h.draw_id not in draw_patient:
                    draw_patient[h.draw_id] = (
                        BloodDraw.objects.filter(pk=h.draw_id).values_list("patient_id", flat=True).first() or 0
                    )
                pid = draw_patient[h.draw_id]
            rows.append(Row(
                at=h.history_date,
                user=h.history_user.get_username() if h.history_user else "(system)",
                action=HISTORY_ACTIONS.get(h.history_type, h.history_type),
                object_type=model.__name__,
                object_id=str(h.id),
                patient=str(pid or ""),
                where="",
                detail="",
                history=(model, h),
            ))
            if pid:
                study_ids.setdefault(pid, "")
    _label_patients(rows, study_ids)
    return rows


def _change_detail(model: type, h: Any) -> str:
    parts = []
    if h.history_change_reason:
        parts.append(h.history_change_reason)
    if model is CellEvent and h.reviewed_call:
        parts.append(f"reviewed as {h.reviewed_call}" + (f"; reason: {h.review_reason}" if h.review_reason else ""))
    if h.history_type == "~":
        prev = h.prev_record
        if prev is not None:
            try:
                changed = h.diff_against(prev).changed_fields
            except Exception:  # noqa: BLE001 - a diff is a convenience, never a reason to fail the page
                changed = []
            if changed:
                parts.append("changed: " + ", ".join(changed[:8]))
    return "; ".join(parts)


def _label_patients(rows: list[Row], study_ids: dict[int, str]) -> None:
    ids = [i for i in study_ids if i]
    names = dict(Patient.objects.filter(pk__in=ids).values_list("pk", "study_id"))
    for row in rows:
        if row.patient:
            row.patient = names.get(int(row.patient), f"#{row.patient} (deleted)")


def _event_rows(user_q: Any, patient_ids: list[int] | None, action: str, since: dt.datetime | None) -> list[Row]:
    qs = AuditEvent.objects.select_related("user", "patient")
    if user_q is not None:
        qs = qs.filter(user__in=user_q)
    if patient_ids is not None:
        qs = qs.filter(patient_id__in=patient_ids)
    if action:
        qs = qs.filter(action=action)
    if since is not None:
        qs = qs.filter(at__gte=since)
    return [
        Row(
            at=e.at,
            user=e.user.get_username() if e.user else "(anonymous)",
            action=e.action,
            object_type=e.object_type,
            object_id=e.object_id,
            patient=e.patient.study_id if e.patient else "",
            where=" ".join(x for x in (e.ip_address or "", e.path) if x),
            detail=", ".join(f"{k}={v}" for k, v in sorted(e.detail.items()))[:300] if e.detail else "",
        )
        for e in qs.order_by("-at")[:LIMIT]
    ]


@login_required
def audit_log(request: HttpRequest) -> HttpResponse:
    if not can(request.user, Action.AUDIT):
        raise PermissionDenied("The audit trail is for administrators.")
    # No name, study ID, action or date holds a NUL; PostgreSQL refuses one in a query (a 500).
    username, study_id, action, since_raw = (request.GET.get(k, "").replace("\x00", "").strip()
                                             for k in ("user", "patient", "action", "since"))

    valid_actions = set(AuditEvent.Action.values) | CHANGE_ACTIONS
    if action not in valid_actions:
        action = ""
    try:
        since_date = parse_date(since_raw) if since_raw else None
    except ValueError:  # the right shape, not a date (2026-02-30)
        since_date = None
    if since_raw and since_date is None:
        # Ignoring it silently showed every date as if filtered.
        messages.error(request, f"“{since_raw[:40]}” is not a date: give the date as YYYY-MM-DD. "
                                "The date filter is not applied.")
    since = (
        timezone.make_aware(dt.datetime.combine(since_date, dt.time.min)) if since_date is not None else None
    )
    user_q = get_user_model().objects.filter(username=username) if username else None
    patient_ids = list(Patient.objects.filter(study_id=study_id).values_list("pk", flat=True)) if study_id else None

    rows = _event_rows(user_q, patient_ids, action, since) + _history_rows(user_q, patient_ids, action, since)
    rows.sort(key=lambda r: r.at, reverse=True)
    rows = rows[:LIMIT]
    for row in rows:
        if row.history is not None:  # one query per shown change (the previous version), not per scanned row
            row.detail = _change_detail(*row.history)
    record(request, AuditEvent.Action.VIEW, object_type="AuditTrail",
           detail={k: v for k, v in {"user": username, "patient": study_id, "action": action,
                                      "since": since_raw}.items() if v})
    return render(request, "audit/audit_log.html", base_context(request, nav="audit", **{
        "rows": rows,
        "limit": LIMIT,
        "filters": {"user": username, "patient": study_id, "action": action, "since": since_raw},
        "actions": sorted(valid_actions),
    }))
