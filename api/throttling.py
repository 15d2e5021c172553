"""Throttles that identify the client by the same rule as the audit trail and the lockout.

DRF's own ``get_ident`` takes the whole ``X-Forwarded-For`` header as the client's
identity when ``NUM_PROXIES`` is unset: a script that sent a new header with every
request was never throttled. Here the address is ``patients.audit.client_ip``: the
``CTC_TRUSTED_PROXIES``-th address from the right of ``X-Forwarded-For`` behind that many
trusted proxies, ``REMOTE_ADDR`` with none (the default) -- one rule for DRF throttles,
django-axes (``AXES_CLIENT_IP_CALLABLE``) and the audit rows.
"""

from __future__ import annotations

from typing import Any

from rest_framework.throttling import ScopedRateThrottle

from patients.audit import client_ip


class ClientScopedRateThrottle(ScopedRateThrottle):
    """``ScopedRateThrottle`` keyed on :func:`patients.audit.client_ip`."""

    def get_ident(self, request: Any) -> str:
        return client_ip(request) or "unknown"
