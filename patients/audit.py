"""The access trail: who viewed or exported what, when, from where.

Changes to patient data are recorded by django-simple-history (the ``history``
tables, with the request's user); this module records *reads* and exports, which
history cannot see. Views and API call :func:`record` once per response.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from patients.models import AuditEvent, Patient


def client_ip(request: HttpRequest) -> str | None:
    # REMOTE_ADDR only: X-Forwarded-For is client-controlled unless a trusted proxy sets it,
    # and deployments behind a proxy configure that in the proxy (see docs/security.md).
    return request.META.get("REMOTE_ADDR") or None


def record(
    request: HttpRequest,
    action: str,
    obj: Any = None,
    *,
    patient: Patient | None = None,
    object_type: str | None = None,
    detail: dict | None = None,
) -> AuditEvent:
    user = getattr(request, "user", None)
    return AuditEvent.objects.create(
        user=user if user is not None and user.is_authenticated else None,
        action=action,
        object_type=object_type or (type(obj).__name__ if obj is not None else ""),
        object_id=str(getattr(obj, "pk", "") or ""),
        patient=patient if patient is not None else (obj if isinstance(obj, Patient) else None),
        ip_address=client_ip(request),
        path=request.get_full_path()[:300],
        detail=detail or {},
    )
