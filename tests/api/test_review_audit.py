"""A review leaves the same ``review`` audit row from the API as from the dashboard (issue 12 leftovers,
point 1): both go through ``patients.review.review_event``, which writes it via ``patients.audit.record``.

Before, the dashboard's view wrote the row after calling ``review_event`` and the API's review action
wrote none for a first review (only a change of a review was audited)."""

from __future__ import annotations

import pytest
from django.test import Client

from patients.models import AuditEvent
from patients.summary import recompute_summary
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def cells(draw):
    upload = factories.ImagingUploadFactory(draw=draw)
    evs = [factories.CellEventFactory(upload=upload, index=i, call=c, ctc_probability=p,
                                      category="ctc" if c == "ctc" else "leukocyte")
           for i, (c, p) in enumerate([("ctc", 0.9), ("ctc", 0.8), ("non_ctc", 0.2), ("non_ctc", 0.1)])]
    recompute_summary(draw)
    return evs


def _dashboard(bob) -> Client:
    c = Client()
    c.force_login(bob)
    return c


def _row(event) -> dict:  # noqa: ANN001
    rows = list(AuditEvent.objects.filter(action="review", object_type="CellEvent", object_id=str(event.pk)))
    assert len(rows) == 1, f"expected one review audit row for cell {event.pk}, found {len(rows)}"
    row = rows[0]
    assert row.ip_address and row.path  # written from the request, not by hand
    return {"user": row.user, "patient": row.patient_id, "detail": row.detail}


@pytest.mark.parametrize("override", [False, True], ids=["confirm", "override"])
def test_an_api_review_leaves_the_same_audit_row_as_a_dashboard_review(as_bob, bob, patient, cells, override):
    by_page, by_api = (cells[0], cells[1]) if not override else (cells[2], cells[3])
    call = "non_ctc" if by_page.call == "ctc" else "ctc"
    call = call if override else by_page.call
    form = {"call": call, "reason": "CK+ with a nucleus" if override else ""}
    assert _dashboard(bob).post(f"/events/{by_page.pk}/review/", form).status_code == 302
    r = as_bob.post(f"/api/events/{by_api.pk}/review/", form, format="json")
    assert r.status_code == 200, r.content
    page_row, api_row = _row(by_page), _row(by_api)
    assert page_row == api_row
    assert api_row == {"user": bob, "patient": patient.pk,
                       "detail": {"call": call, "model_call": by_api.call, "category": "", "kind": "first"}}


def test_with_two_reviewers_each_review_is_audited_alike(as_bob, client_for, bob, team, patient, cells):
    dave = factories.MembershipFactory(team=team, user__username="dave", role="reviewer").user
    team.second_review = True
    team.save()
    cell = cells[0]
    assert _dashboard(bob).post(f"/events/{cell.pk}/review/", {"call": cell.call}).status_code == 302
    assert client_for(dave).post(f"/api/events/{cell.pk}/review/", {"call": cell.call},
                                 format="json").status_code == 200
    rows = AuditEvent.objects.filter(action="review", object_id=str(cell.pk)).order_by("at", "pk")
    assert [(r.user.username, r.detail["kind"], r.detail["call"]) for r in rows] == [
        ("bob", "first", cell.call), ("dave", "second", cell.call)]


def test_a_change_of_a_review_writes_its_own_row_and_no_first_review_row(as_bob, bob, cells):
    cell = cells[2]
    assert as_bob.post(f"/api/events/{cell.pk}/review/", {"call": cell.call}, format="json").status_code == 200
    r = as_bob.post(f"/api/events/{cell.pk}/review/", {"call": "ctc", "change": True, "reason": "CK+ faint"},
                    format="json")
    assert r.status_code == 200
    rows = list(AuditEvent.objects.filter(action="review", object_id=str(cell.pk)).order_by("at", "pk"))
    assert [("change" in r.detail, r.detail.get("kind")) for r in rows] == [(False, "first"), (True, None)]
    assert rows[1].detail["old"]["call"] == "non_ctc" and rows[1].detail["new"]["call"] == "ctc"
