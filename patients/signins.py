"""Sign-ins, sign-outs and failed sign-ins in the audit trail (``AuditEvent``).

Django's auth signals cover the dashboard's login form (and any ``authenticate`` call:
the API token endpoint fails through it too); the token endpoint records its own
successful login (api/views.py). A failed attempt records the username tried, never the
password. Wired in ``PatientsConfig.ready``.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed

from patients.audit import record
from patients.models import AuditEvent


def on_logged_in(sender: Any, request: Any = None, user: Any = None, **kwargs: Any) -> None:
    if request is None:  # Client.force_login in tests, shell sessions: no sign-in took place
        return
    record(request, AuditEvent.Action.LOGIN, user=user, object_type="Session", detail={"via": "web"})


def on_logged_out(sender: Any, request: Any = None, user: Any = None, **kwargs: Any) -> None:
    if user is None:  # signing out without a session: nothing to record
        return
    record(request, AuditEvent.Action.LOGOUT, user=user, object_type="Session", detail={"via": "web"})


def on_login_failed(sender: Any, credentials: dict | None = None, request: Any = None, **kwargs: Any) -> None:
    # ``credentials`` has the password already masked by Django; keep only the username.
    username = str((credentials or {}).get("username", ""))[:150]
    record(request, AuditEvent.Action.LOGIN_FAILED, user=None, object_type="Session",
           detail={"username": username})


def connect_signals() -> None:
    user_logged_in.connect(on_logged_in, dispatch_uid="patients.signins.logged_in")
    user_logged_out.connect(on_logged_out, dispatch_uid="patients.signins.logged_out")
    user_login_failed.connect(on_login_failed, dispatch_uid="patients.signins.login_failed")
