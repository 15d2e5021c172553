"""The server log: an ordinary refusal (403, 400) is one warning line; a server error keeps its traceback.

Django attaches the exception to ``django.request``'s warning for a ``PermissionDenied`` raised by a
view; ``config.logging_filters`` (wired in ``LOGGING``) drops it for 4xx answers only."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest
from django.core.exceptions import PermissionDenied
from django.test import Client
from django.urls import include, path
from rest_framework.authtoken.models import Token

pytestmark = pytest.mark.django_db


def _denied(request):  # noqa: ANN001, ANN202
    raise PermissionDenied("Your role does not allow this action (export).")


def _crash(request):  # noqa: ANN001, ANN202
    raise RuntimeError("a real fault")


#: The project's URLconf and two views (``pytest.mark.urls`` below): a refusal and a crash.
urlpatterns = [path("denied/", _denied), path("crash/", _crash), path("", include("config.urls"))]


@pytest.fixture
def server_log() -> Iterator[io.StringIO]:
    """What the server's console handler would print for ``django.request`` (the project's format)."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("django.request")
    logger.addHandler(handler)
    try:
        yield out
    finally:
        logger.removeHandler(handler)


def test_a_dashboard_permission_denial_is_one_warning_line(bob, server_log):
    browser = Client(raise_request_exception=False)
    browser.force_login(bob)  # a reviewer: the audit page is for administrators
    assert browser.get("/audit/").status_code == 403
    lines = server_log.getvalue().splitlines()
    assert len(lines) == 1, server_log.getvalue()
    assert "WARNING django.request: Forbidden (Permission denied): /audit/" in lines[0]
    assert "The audit trail is for administrators." in lines[0]  # the reason stays, the traceback goes
    assert "Traceback" not in server_log.getvalue()


def test_api_refusals_and_unknown_ids_are_one_line_each(bob, draw, server_log):
    as_bob = Client(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=bob).key}")
    assert as_bob.get(f"/api/draws/{draw.pk}/fhir/").status_code == 403
    assert as_bob.get("/api/draws/999999/").status_code == 404
    lines = server_log.getvalue().splitlines()
    assert len(lines) == 2 and "Traceback" not in server_log.getvalue(), server_log.getvalue()
    assert "Forbidden: /api/draws/" in lines[0] and "Not Found: /api/draws/999999/" in lines[1]


@pytest.mark.urls(__name__)
def test_the_filter_drops_the_traceback_of_a_refusal_but_a_server_error_keeps_it(alice, server_log):
    browser = Client(raise_request_exception=False)
    assert browser.get("/denied/").status_code == 403
    refused = server_log.getvalue()
    assert refused.count("\n") == 1 and "Traceback" not in refused, refused
    assert "Forbidden (Permission denied): /denied/ (Your role does not allow this action (export).)" in refused
    assert browser.get("/crash/").status_code == 500
    crashed = server_log.getvalue()[len(refused):]
    assert "ERROR django.request: Internal Server Error: /crash/" in crashed
    assert "Traceback (most recent call last)" in crashed and "RuntimeError: a real fault" in crashed
