"""The domain model: cut-offs as data, summaries per 7.5 mL, review status transitions."""

from __future__ import annotations

from decimal import Decimal

import pytest

from patients.models import CancerType, SummaryStatus
from patients.summary import per_7_5ml, recompute_summary
from tests import factories

pytestmark = pytest.mark.django_db


def test_cutoffs_are_data_per_cancer_type():
    cutoffs = dict(CancerType.objects.values_list("code", "ctc_cutoff"))
    assert cutoffs == {"breast_metastatic": 5, "prostate_crpc": 5, "colorectal_metastatic": 3, "breast_early": 1}


def test_per_7_5ml_normalises_by_volume():
    assert per_7_5ml(3, 7.5) == 3
    assert per_7_5ml(3, 3.75) == 6
    with pytest.raises(ValueError):
        per_7_5ml(1, 0)


def _events(draw, calls):
    upload = factories.ImagingUploadFactory(draw=draw)
    return [
        factories.CellEventFactory(upload=upload, call=c, ctc_probability=0.9 if c == "ctc" else 0.1) for c in calls
    ]


def test_summary_counts_ctcs_per_7_5ml_and_fraction(patient):
    draw = factories.BloodDrawFactory(patient=patient, volume_ml=Decimal("5.0"))
    _events(draw, ["ctc", "ctc", "non_ctc", "non_ctc"])
    s = recompute_summary(draw)
    assert (s.events_analysed, s.ctc_count) == (4, 2)
    assert s.ctc_per_7_5ml == 3.0
    assert s.malignant_fraction == 0.5
    assert s.status == SummaryStatus.PRELIMINARY


def test_summary_ignores_events_of_unfinished_uploads(patient):
    draw = factories.BloodDrawFactory(patient=patient)
    _events(draw, ["ctc"])
    running = factories.ImagingUploadFactory(draw=draw, status="running")
    factories.CellEventFactory(upload=running, call="ctc")
    assert recompute_summary(draw).ctc_count == 1


def test_review_overrides_count_and_completes_to_final_then_amended(patient, bob):
    draw = factories.BloodDrawFactory(patient=patient)
    a, b = _events(draw, ["ctc", "non_ctc"])
    a.reviewed_call, a.reviewed_by = "ctc", bob
    a.save()
    assert recompute_summary(draw).status == SummaryStatus.PRELIMINARY
    b.reviewed_call, b.reviewed_by = "ctc", bob
    b.save()
    s = recompute_summary(draw)
    assert (s.status, s.ctc_count, s.reviewed_events) == (SummaryStatus.FINAL, 2, 2)
    b.reviewed_call = "non_ctc"
    b.save()
    s = recompute_summary(draw)
    assert (s.status, s.ctc_count) == (SummaryStatus.AMENDED, 1)


def test_scoping_hides_other_teams_patients(alice, charlie, patient):
    from patients.models import BloodDraw, Patient

    factories.BloodDrawFactory(patient=patient)
    assert list(Patient.objects.for_user(alice)) == [patient]
    assert not Patient.objects.for_user(charlie).exists()
    assert BloodDraw.objects.for_user(alice).count() == 1
    assert not BloodDraw.objects.for_user(charlie).exists()


def test_trial_coordinator_sees_enrolled_patients_of_other_teams(other_team, patient):
    from patients.models import Patient

    trial = factories.TrialFactory()
    coordinator = factories.UserFactory(username="cora")
    trial.coordinators.add(coordinator)
    enrolled = factories.PatientFactory(care_team=other_team, trial=trial)
    assert list(Patient.objects.for_user(coordinator)) == [enrolled]


def test_anonymous_sees_nothing(patient):
    from django.contrib.auth.models import AnonymousUser

    from patients.models import Patient

    assert not Patient.objects.for_user(AnonymousUser()).exists()


def test_override_requires_a_reason_and_updates_the_summary(patient, bob):
    from django.core.exceptions import ValidationError

    from patients.review import review_event

    draw = factories.BloodDrawFactory(patient=patient)
    (event,) = _events(draw, ["non_ctc"])
    with pytest.raises(ValidationError):
        review_event(event, bob, "ctc", "")
    reviewed = review_event(event, bob, "ctc", "intact nucleus, CK+ CD45-")
    assert (reviewed.reviewed_call, reviewed.reviewed_by) == ("ctc", bob)
    assert draw.summary.ctc_count == 1 and draw.summary.status == SummaryStatus.FINAL
    assert reviewed.history.first().history_change_reason.startswith("review: ctc")


def test_a_stale_second_review_is_refused_and_an_explicit_change_is_audited(patient, bob):
    from django.core.exceptions import ValidationError

    from patients.models import AuditEvent
    from patients.review import AlreadyReviewed, review_event

    draw = factories.BloodDrawFactory(patient=patient)
    (event,) = _events(draw, ["non_ctc"])
    review_event(event, bob, "non_ctc")
    other = factories.UserFactory(username="rita")
    factories.MembershipFactory(team=patient.care_team, user=other, role="reviewer")
    with pytest.raises(AlreadyReviewed, match="Already reviewed by bob at .* as Not CTC"):
        review_event(event, other, "ctc", "CK+")  # the page still showed the cell as pending
    event.refresh_from_db()
    assert (event.reviewed_call, event.reviewed_by) == ("non_ctc", bob)
    # bob's review is audited; the refused stale one adds no row.
    assert draw.summary.ctc_count == 0 and [(a.user, a.detail["kind"]) for a in AuditEvent.objects.all()] == [
        (bob, "first")]
    with pytest.raises(ValidationError, match="reason"):
        review_event(event, other, "non_ctc", "", change=True)
    changed = review_event(event, other, "ctc", "CK+ on the second channel", change=True)
    assert (changed.reviewed_call, changed.reviewed_by) == ("ctc", other)
    draw.summary.refresh_from_db()
    assert draw.summary.ctc_count == 1 and draw.summary.status == SummaryStatus.AMENDED
    assert changed.history.first().history_change_reason.startswith("review changed: ctc")
    assert changed.history.all()[1].reviewed_call == "non_ctc"  # simple-history keeps bob's review
    audit = AuditEvent.objects.get(detail__change=True)
    assert audit.detail["old"]["call"] == "non_ctc" and audit.detail["new"]["call"] == "ctc"


def test_outsider_without_review_role_cannot_review(patient):
    from django.core.exceptions import PermissionDenied

    from patients.models import Role
    from patients.review import review_event

    member = factories.UserFactory(username="mo")
    factories.MembershipFactory(team=patient.care_team, user=member, role=Role.MEMBER)
    (event,) = _events(factories.BloodDrawFactory(patient=patient), ["ctc"])
    with pytest.raises(PermissionDenied):
        review_event(event, member, "ctc")
