"""Two reviewers per draw, adjudication, and Cohen's kappa per reviewer (issue 13, point 2)."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.test import Client

from patients.adjudication import agreement_by_reviewer, cohen_kappa
from patients.models import CellEvent, CellReview, Role, SummaryStatus
from patients.review import confirm_remaining, review_event
from tests import factories
from tests.dashboard.test_review import _cells_at

pytestmark = pytest.mark.django_db


def _client(user) -> Client:
    c = Client()
    c.force_login(user)
    return c


@pytest.fixture
def dave(team):
    user = factories.UserFactory(username="dave")
    factories.MembershipFactory(team=team, user=user, role=Role.REVIEWER)
    return user


@pytest.fixture
def erin(team):
    user = factories.UserFactory(username="erin")
    factories.MembershipFactory(team=team, user=user, role=Role.REVIEWER)
    return user


def test_cohen_kappa_matches_the_textbook_example():
    # 50 items: both yes 20, A yes/B no 5, A no/B yes 10, both no 15 -> p_o 0.7, p_e 0.5, kappa 0.4.
    a = ["ctc"] * 25 + ["non_ctc"] * 25
    b = ["ctc"] * 20 + ["non_ctc"] * 5 + ["ctc"] * 10 + ["non_ctc"] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert cohen_kappa(a, a) == pytest.approx(1.0)
    assert cohen_kappa(["ctc"] * 3, ["ctc"] * 3) == 1.0 and cohen_kappa([], []) is None


def test_a_team_requiring_two_reviewers_counts_a_call_only_when_two_agree_else_adjudication(
        bob, dave, erin, charlie, team, draw):
    team.second_review = True
    team.save()
    a, b, c = _cells_at(draw, [0.3, 0.1, 0.9])
    first = review_event(a, bob, a.call)
    assert first.reviewed_call == "" and first.review_kind == "first"
    with pytest.raises(ValidationError, match="someone else"):
        review_event(a, bob, a.call)
    assert review_event(a, dave, a.call).reviewed_call == a.call  # agreement: the call counts
    # Disagreement: the cell goes to the adjudication list, the draw stays preliminary.
    review_event(b, bob, b.call)
    disputed = review_event(b, dave, "ctc", "CK+ with a clear nucleus")
    assert disputed.reviewed_call == "" and disputed.adjudication_pending
    assert [e.pk for e in CellEvent.objects.filter(adjudication_pending=True)] == [b.pk]
    as_erin = _client(erin)
    page = as_erin.get("/review/adjudication/")
    assert [x.pk for x in page.context["cells"]] == [b.pk]
    assert "first: not CTC (bob) · second: CTC (dave)" in page.content.decode()
    assert _client(charlie).get("/review/adjudication/").context["cells"] == []  # scoped
    # "Confirm the remaining" is each reviewer's own review; the disputed cell needs a decision.
    assert confirm_remaining(draw, bob) == [c.pk]
    draw.summary.refresh_from_db()
    assert draw.summary.status == SummaryStatus.PRELIMINARY and draw.summary.reviewed_events == 1
    assert confirm_remaining(draw, dave) == [c.pk]
    r = as_erin.post(f"/events/{b.pk}/review/", {"call": "non_ctc"}, HTTP_ACCEPT="application/json")
    assert r.status_code == 200, r.content
    b.refresh_from_db()
    assert (b.reviewed_call, b.adjudication_pending, b.reviewed_by.username) == ("non_ctc", False, "erin")
    assert set(CellReview.objects.filter(event=b).values_list("kind", "reviewer__username")) == {
        ("first", "bob"), ("second", "dave"), ("adjudication", "erin")}
    draw.summary.refresh_from_db()
    assert draw.summary.status == SummaryStatus.FINAL


def test_the_trial_setting_asks_for_two_reviewers_too(bob, dave, team, patient, draw):
    trial = factories.TrialFactory(second_review=True)
    patient.trial = trial
    patient.save()
    (a,) = _cells_at(draw, [0.3])
    assert review_event(a, bob, a.call).reviewed_call == ""
    assert _client(bob).get(f"/draws/{draw.pk}/review/").context["second_review"] is True
    assert review_event(a, dave, a.call).reviewed_call == a.call


def test_kappa_per_reviewer_on_the_review_and_model_pages(bob, dave, alice, team, draw):
    team.second_review = True
    team.save()
    cells = _cells_at(draw, [0.9, 0.8, 0.1, 0.05])  # model: ctc, ctc, non_ctc, non_ctc
    # bob agrees with the model on all four; dave calls the third cell CTC.
    for cell in cells:
        review_event(cell, bob, cell.call)
    for cell, call in zip(cells, ["ctc", "ctc", "ctc", "non_ctc"], strict=True):
        review_event(cell, dave, call, "" if call == cell.call else "CK+ on review")
    rows = {r.reviewer: r for r in agreement_by_reviewer(CellReview.objects.all())}
    assert rows["bob"].kappa_model == pytest.approx(1.0)
    expected = cohen_kappa(["ctc", "ctc", "ctc", "non_ctc"], ["ctc", "ctc", "non_ctc", "non_ctc"])
    assert expected == pytest.approx(0.5)
    assert rows["dave"].kappa_model == pytest.approx(expected)
    assert rows["bob"].kappa_reviewers == rows["dave"].kappa_reviewers == pytest.approx(expected)
    assert rows["bob"].paired == 4
    for url in ["/review/", "/models/"]:
        body = _client(alice).get(url).content.decode()
        assert 'data-kappa-model="bob">1.00' in body and 'data-kappa-model="dave">0.50' in body
        assert 'data-kappa-reviewers="dave">0.50' in body
        assert 'data-testid="adjudication-link"' in body  # one disputed cell


def test_the_migration_backfills_existing_reviews_as_first_reviews(bob, draw):
    import importlib

    from django.apps import apps
    from django.db import connection

    a, b = _cells_at(draw, [0.3, 0.1])
    review_event(a, bob, "non_ctc", "debris")
    CellReview.objects.all().delete()
    backfill = importlib.import_module("patients.migrations.0010_review_second_reviewer").backfill
    with connection.schema_editor() as editor:
        backfill(apps, editor)
    (row,) = CellReview.objects.all()
    assert (row.event_id, row.reviewer, row.kind, row.call, row.reason) == (a.pk, bob, "first", "non_ctc", "debris")
