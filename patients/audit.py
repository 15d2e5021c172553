"""The access trail: who viewed or exported what, when, from where.

Changes to patient data are recorded by django-simple-history (the ``history``
tables, with the request's user); this module records *reads* and exports, which
history cannot see. Views and API call :func:`record` once per response.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from django.http import HttpRequest

from patients.models import AuditEvent, Patient


def client_ip(request: HttpRequest) -> str | None:
    """The client's address: one rule for the audit trail, django-axes and the API throttles.

    With ``CTC_TRUSTED_PROXIES = 0`` (the default) it is ``REMOTE_ADDR``: ``X-Forwarded-For``
    is written by the client and proves nothing. Behind ``n`` trusted proxies, each of which
    appends the address it saw, the client is the ``n``-th entry from the right (what the
    first trusted proxy saw); entries further left are the client's own and are ignored.
    A header shorter than that falls back to its leftmost entry, like DRF's ``NUM_PROXIES``.
    """
    from django.conf import settings

    proxies = int(getattr(settings, "CTC_TRUSTED_PROXIES", 0) or 0)
    if proxies > 0:
        hops = [h.strip() for h in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if h.strip()]
        if hops:
            hop = hops[-min(proxies, len(hops))]
            try:  # the audit row and axes store it as an IP address: anything else is not one
                return str(ipaddress.ip_address(hop))
            except ValueError:
                pass
    return request.META.get("REMOTE_ADDR") or None


def _jsonb_safe(value: Any) -> Any:
    """``value`` with NUL characters shown as ``\\x00``: PostgreSQL's jsonb refuses U+0000.

    The detail of a read records the query string as the client sent it; a NUL in a
    parameter (name or value) made the audit insert, and so the request, fail with a 500.
    """
    if isinstance(value, str):
        return value.replace("\x00", "\\x00")
    if isinstance(value, dict):
        return {_jsonb_safe(k): _jsonb_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonb_safe(v) for v in value]
    return value


#: ``record(..., user=...)`` left out: the user is the request's (nobody outside a request).
_REQUEST_USER: Any = object()


def record(
    request: HttpRequest | None,
    action: str,
    obj: Any = None,
    *,
    user: Any = _REQUEST_USER,
    patient: Patient | None = None,
    patient_id: int | None = None,
    object_type: str | None = None,
    object_id: Any = None,
    path: str = "",
    detail: dict | None = None,
) -> AuditEvent:
    """Write one row of the access trail: the only place an ``AuditEvent`` is built.

    ``request`` is None outside a web request (a management command, a Celery task, a
    signal without one): the row then has no address and ``path`` (default "") says where
    it came from. ``user`` defaults to the request's signed-in user; pass it where the
    request does not know it yet (a sign-in, a token) or where there is no request, and
    ``user=None`` for nobody (a failed sign-in). ``object_type``/``object_id`` default to
    ``obj``'s class name and key; the patient to ``obj`` when it is one, else ``patient``
    or ``patient_id``.
    """
    if user is _REQUEST_USER:
        user = getattr(request, "user", None)
    if user is not None and not user.is_authenticated:
        user = None
    if object_id is None:
        object_id = getattr(obj, "pk", "") or ""
    if patient is None and isinstance(obj, Patient):
        patient = obj
    return AuditEvent.objects.create(
        user=user,
        action=action,
        object_type=object_type or (type(obj).__name__ if obj is not None else ""),
        object_id=str(object_id),
        patient_id=patient.pk if patient is not None else patient_id,
        ip_address=client_ip(request) if request is not None else None,
        path=(request.get_full_path() if request is not None else path)[:300],
        detail=_jsonb_safe(detail or {}),
    )
