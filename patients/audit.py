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
        detail=_jsonb_safe(detail or {}),
    )
