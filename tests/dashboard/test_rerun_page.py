"""The draw page's re-run form (issue 13, point 5): administrators only, audited, the count unchanged."""

from __future__ import annotations

import pytest
from django.test import Client

from patients.models import AuditEvent, ClassifierVersion, DrawSummary, Role, ShadowCall
from tests import factories
from tests.dashboard.builders import add_cells

pytestmark = pytest.mark.django_db


def _client(user) -> Client:  # noqa: ANN001
    c = Client()
    c.force_login(user)
    return c


def test_only_an_administrator_gets_the_form_and_a_rerun_is_audited_with_the_count_unchanged(
        team, alice, charlie, draw):
    add_cells(draw, 2, 3, seed=9, with_images=False)
    before = DrawSummary.objects.values("ctc_count", "status", "model_version").get(draw=draw)
    other = ClassifierVersion.objects.create(version="lab-rerun-page", metadata={"candidate": True})
    admin = factories.UserFactory(username="root")
    factories.MembershipFactory(team=team, user=admin, role=Role.ADMIN)
    url = f"/draws/{draw.pk}/rerun/"

    assert 'data-testid="rerun-form"' not in _client(alice).get(f"/draws/{draw.pk}/").content.decode()
    assert _client(alice).post(url, {"version": other.pk}).status_code == 403
    assert _client(charlie).post(url, {"version": other.pk}).status_code == 404
    page = _client(admin).get(f"/draws/{draw.pk}/").content.decode()
    assert 'data-testid="rerun-form"' in page and "lab-rerun-page (candidate)" in page
    assert "The count comes from test-model" in page

    r = _client(admin).post(url, {"version": other.pk}, follow=True)
    assert r.redirect_chain[-1][0].endswith(f"/draws/{draw.pk}/#rerun")
    assert "Re-run with lab-rerun-page queued (1 upload, bulk lane)" in r.content.decode()
    audit = AuditEvent.objects.get(detail__action="rerun")
    assert audit.user == admin and audit.detail["version"] == "lab-rerun-page" and audit.ip_address
    assert DrawSummary.objects.values("ctc_count", "status", "model_version").get(draw=draw) == before

    # Results of another version (what the worker stores) are listed for everyone who sees the draw.
    for cell in draw.events.all():
        ShadowCall.objects.create(event=cell, version="lab-rerun-page", call="ctc", ctc_probability=0.9)
    page = _client(alice).get(f"/draws/{draw.pk}/").content.decode()
    assert 'data-rerun-version="lab-rerun-page"' in page and "5 of 5" in page and "0.400" in page
