"""The cohort page's cache: reused while nothing changed, stale never, and never shared across scopes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from django.core.cache import cache
from django.utils import timezone

from patients import cohort
from patients.cache import data_stamp
from patients.models import DrawSummary, Patient
from tests import factories
from tests.dashboard.builders import add_cells, course_patient


@pytest.fixture(autouse=True)
def _empty_cache() -> Iterator[None]:
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def as_alice(client, alice):
    client.force_login(alice)
    return client


@pytest.fixture
def builds(monkeypatch) -> list[int]:
    """How many times the page built its courses (a cache miss), in request order."""
    calls: list[int] = []
    real = cohort.patient_courses

    def counting(patients, with_lines=False):  # noqa: ANN001, ANN202
        calls.append(1)
        return real(patients, with_lines=with_lines)

    monkeypatch.setattr(cohort, "patient_courses", counting)
    return calls


# The course (tests/dashboard/builders.py): baseline 9 CTC (unfavorable), follow-up "C5D1 repeat" 6 CTC
# (unfavorable, cut-off 5 for metastatic breast): persistently unfavorable, no conversion yet.
NOT_CONVERTED = "0 of 1 unfavorable at baseline"
CONVERTED = "1 of 1 unfavorable at baseline"


def test_second_request_is_served_from_the_cache(as_alice, course, team, builds):
    course_patient(team, study_id="PT-NO-TRIAL", images=False)
    first = as_alice.get("/cohort/").content.decode()
    second = as_alice.get("/cohort/").content.decode()
    assert builds == [1]
    assert NOT_CONVERTED in first and NOT_CONVERTED in second
    assert "fig-waterfall" in second and "PT-DEMO-01" in second and "PT-NO-TRIAL" in second
    # A filter that leaves fewer patients is another cohort: built, not taken from the unfiltered entry.
    filtered = as_alice.get("/cohort/", {"trial": "BRC-01"}).content.decode()
    assert builds == [1, 1]
    assert "PT-DEMO-01" in filtered and "PT-NO-TRIAL" not in filtered


def test_a_new_draw_summary_shows_at_once(as_alice, course, builds):
    _, draws = course
    assert NOT_CONVERTED in as_alice.get("/cohort/").content.decode()
    # The pending draw is analysed: 0 CTC, now the latest follow-up -> converted to favorable.
    add_cells(draws["pending"], 0, 10, seed=9, with_images=False)
    assert CONVERTED in as_alice.get("/cohort/").content.decode()
    assert builds == [1, 1]


def test_a_summary_written_without_signals_shows_at_once(as_alice, course, builds):
    """What the worker process does, seen from the web process: no signal here, only the database moved."""
    _, draws = course
    assert NOT_CONVERTED in as_alice.get("/cohort/").content.decode()
    DrawSummary.objects.filter(draw=draws["repeat"]).update(
        ctc_count=0, ctc_per_7_5ml=0.0, updated_at=timezone.now() + dt.timedelta(seconds=1))
    assert CONVERTED in as_alice.get("/cohort/").content.decode()


def test_an_edit_that_changes_no_count_shows_at_once(as_alice, course, builds):
    patient, _ = course
    assert NOT_CONVERTED in as_alice.get("/cohort/").content.decode()
    # A higher cut-off: the baseline (9/7.5 mL) is favorable now, nobody is unfavorable at baseline.
    ctype = patient.cancer_type
    ctype.ctc_cutoff = 10
    ctype.save()
    body = as_alice.get("/cohort/").content.decode()
    assert "0 of 0 unfavorable at baseline" in body
    assert builds == [1, 1]


def test_another_scope_never_gets_the_cached_page(client, alice, charlie, team, other_team, trial_arm, builds):
    trial, arm = trial_arm
    course_patient(team, study_id="PT-ALICE-01", trial=trial, arm=arm, images=False)
    course_patient(other_team, study_id="PT-CHARLIE-01", trial=trial, arm=arm, images=False)
    client.force_login(alice)
    for_alice = client.get("/cohort/").content.decode()
    client.force_login(charlie)
    for_charlie = client.get("/cohort/").content.decode()
    assert "PT-ALICE-01" in for_alice and "PT-CHARLIE-01" not in for_alice
    assert "PT-CHARLIE-01" in for_charlie and "PT-ALICE-01" not in for_charlie
    assert builds == [1, 1]  # same filters, same data: only the visible patients differ
    # And back: alice's entry is still hers.
    client.force_login(alice)
    assert "PT-CHARLIE-01" not in client.get("/cohort/").content.decode()


def test_cached_is_keyed_by_the_patients_and_the_data(team, other_team):
    mine = factories.PatientFactory(care_team=team)
    theirs = factories.PatientFactory(care_team=other_team)
    made: list[str] = []

    def build(label: str):  # noqa: ANN202
        return lambda: made.append(label) or label

    ours = Patient.objects.filter(pk=mine.pk)
    assert cohort.cached(ours, "t", build("a")) == "a"
    assert cohort.cached(Patient.objects.filter(pk=mine.pk), "t", build("b")) == "a"  # same patients: a hit
    assert cohort.cached(Patient.objects.filter(pk=theirs.pk), "t", build("c")) == "c"
    assert cohort.cached(ours, "other part", build("d")) == "d"
    before = data_stamp()
    factories.TreatmentLineFactory(patient=mine, line_number=1)
    assert data_stamp() != before
    assert cohort.cached(ours, "t", build("e")) == "e"
    assert made == ["a", "c", "d", "e"]


def test_cohort_page_query_count_on_a_hit(as_alice, course, team, django_assert_max_num_queries):
    for i in range(3):
        course_patient(team, study_id=f"PT-MORE-{i}", images=False)
    as_alice.get("/cohort/")
    # Auth, roles and the filter form's choices, plus the data stamp and the visible ids: no per-patient query.
    with django_assert_max_num_queries(16):
        assert as_alice.get("/cohort/").status_code == 200


def test_review_agreement_counts_a_new_review_at_once(as_alice, bob, course):
    from patients.models import CellEvent
    from patients.review import review_event

    _, draws = course
    body = as_alice.get("/review/").content.decode()
    assert "reviewed cells kept the model" not in body  # nothing reviewed yet
    pending = CellEvent.objects.filter(draw=draws["baseline"], reviewed_call="").order_by("pk")
    first, second = pending[0], pending[1]
    review_event(first, bob, first.call)
    assert "1 of 1 reviewed cells kept the model" in as_alice.get("/review/").content.decode()
    other = "non_ctc" if second.call == "ctc" else "ctc"
    review_event(second, bob, other, "looks like debris")
    assert "1 of 2 reviewed cells kept the model" in as_alice.get("/review/").content.decode()
    # Per draw is its own entry: the other draws have no reviews.
    assert "reviewed cells kept the model" not in as_alice.get("/review/", {"draw": draws["c3"].pk}).content.decode()
