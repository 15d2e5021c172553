"""Issue 14 through the API: count intervals on the draw resource and in FHIR, the model's range
("indeterminate until reviewed"), outcome dates (validated, audited), and /api/cohort/survival/."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.observation import Observation

from patients.models import DrawSummary, SummaryStatus
from patients.summary import recompute_summary
from tests import factories

pytestmark = pytest.mark.django_db

THRESHOLD = 0.163  # the shipped model's operating point: margins are measured from it


def _cell(upload, p, category, call=None):
    return factories.CellEventFactory(upload=upload, ctc_probability=p, margin=abs(p - THRESHOLD),
                                      call=call or ("ctc" if p >= THRESHOLD else "non_ctc"), category=category)


def test_draw_summary_carries_garwood_intervals(as_alice, patient):
    draw = factories.BloodDrawFactory(patient=patient, volume_ml=Decimal("3.75"))
    up = factories.ImagingUploadFactory(draw=draw)
    for _ in range(5):
        _cell(up, 0.95, "ctc")
    for _ in range(3):
        _cell(up, 0.01, "leukocyte")
    recompute_summary(draw)
    body = as_alice.get(f"/api/draws/{draw.pk}/").json()
    assert body["summary"]["ctc_count"] == 5
    assert body["summary"]["ctc_count_ci95"] == [1.62, 11.67]
    # Half a tube: "10 CTC/7.5 mL", with twice the count's interval.
    assert body["summary"]["ctc_per_7_5ml"] == 10.0
    assert body["summary"]["ctc_per_7_5ml_ci95"] == [3.25, 23.34]
    assert body["ctc_per_7_5ml_ci95"] == [3.25, 23.34]
    assert body["summary"]["ctc_count_range"] == [5, 5]  # every call confident
    assert body["summary"]["interval_note"] == "indeterminate at this volume"  # 3.25-23.34 straddles 5
    rows = as_alice.get(f"/api/summaries/?patient={patient.pk}").json()["results"]
    assert rows[0]["ctc_count_ci95"] == [1.62, 11.67]


def test_confident_calls_on_shifted_images_are_not_settled_until_reviewed(as_alice, bob, patient):
    """An upload whose images differ from the validated domain ("review every call"): 1 CTC call
    and 9 confident non-CTC calls read favorable at a cut-off of 5, but any of them may be wrong,
    so the model range spans them all and the status waits for review, on the API and in FHIR."""
    from patients.review import review_event

    draw = factories.BloodDrawFactory(patient=patient, timepoint="C3D1")
    up = factories.ImagingUploadFactory(draw=draw, domain_check={"status": "shifted", "score": 1.0,
                                                                  "reasons": ["no AF channel"]})
    _cell(up, 0.97, "ctc")
    others = [_cell(up, 0.01, "leukocyte") for _ in range(9)]
    s = recompute_summary(draw)
    assert (s.ctc_count, s.ctc_count_min, s.ctc_count_max) == (1, 0, 10)
    summary = as_alice.get(f"/api/draws/{draw.pk}/").json()["summary"]
    assert summary["ctc_status"] == "indeterminate until reviewed"
    # the same calls on validated-looking images are settled
    plain = factories.BloodDrawFactory(patient=patient, timepoint="C4D1")
    up2 = factories.ImagingUploadFactory(draw=plain, domain_check={"status": "in_domain", "score": 0.0, "reasons": []})
    _cell(up2, 0.97, "ctc")
    for _ in range(9):
        _cell(up2, 0.01, "leukocyte")
    s2 = recompute_summary(plain)
    assert (s2.ctc_count_min, s2.ctc_count_max) == (1, 1)
    assert as_alice.get(f"/api/draws/{plain.pk}/").json()["summary"]["ctc_status"] == "favorable"
    # reviewed cells are certain whatever the images looked like
    for e in others:
        review_event(e, bob, "non_ctc", reason="CD45+ on review")
    s = recompute_summary(draw)
    assert (s.ctc_count_min, s.ctc_count_max) == (0, 1)


def test_count_resting_on_unsure_cells_is_indeterminate_until_reviewed(as_alice, bob, patient):
    """The issue's C7D1 draw: 6 CTC calls at P 0.17, 0.35, 0.43, 0.50, 0.94, 0.99, the first four unsure."""
    from patients.review import review_event

    draw = factories.BloodDrawFactory(patient=patient, timepoint="C7D1")
    up = factories.ImagingUploadFactory(draw=draw)
    unsure = [_cell(up, 0.17, "ctc"), _cell(up, 0.35, "leukocyte"), _cell(up, 0.43, "ck_debris"),
              _cell(up, 0.50, "artifact")]
    _cell(up, 0.94, "ctc")
    _cell(up, 0.99, "ctc")
    for _ in range(10):
        _cell(up, 0.01, "leukocyte")
    s = recompute_summary(draw)
    assert (s.ctc_count, s.ctc_count_min, s.ctc_count_max) == (6, 2, 6)
    summary = as_alice.get(f"/api/draws/{draw.pk}/").json()["summary"]
    assert summary["ctc_count_range"] == [2, 6]
    assert summary["ctc_status"] == "indeterminate until reviewed"
    # the summaries list gives the bare comparison (6 CTC in the draw's volume against a cut-off of 5)
    # beside the status to report, so a client cannot mistake one for the other
    row = next(r for r in as_alice.get(f"/api/summaries/?patient={patient.pk}").json()["results"]
               if r["draw"] == draw.pk)
    assert (row["unfavorable"], row["ctc_status"]) == (True, "indeterminate until reviewed")
    bundle = as_alice.get(f"/api/draws/{draw.pk}/fhir/").json()
    Bundle.model_validate(bundle)
    obs = next(e["resource"] for e in bundle["entry"] if e["resource"]["id"].startswith("")
               and e["resource"]["resourceType"] == "Observation"
               and e["resource"]["code"]["coding"][0]["code"] == "ctc-per-7.5ml")
    Observation.model_validate(obs)
    assert obs["interpretation"][0]["coding"][0]["code"] == "IND"
    ranges = {c["code"]["coding"][0]["code"]: c["valueRange"] for c in obs["component"] if "valueRange" in c}
    assert ranges["ctc-count-ci95"]["low"]["value"] == pytest.approx(2.2, abs=0.01)  # Garwood for 6: 2.20-13.06
    assert ranges["ctc-count-ci95"]["high"]["value"] == pytest.approx(13.06, abs=0.01)
    assert ranges["ctc-count-model-range"]["low"]["value"] == 2.0
    # Reviewed: the reviewer rejects the four; the count is 2 and settled.
    for e in unsure:
        review_event(e, bob, "non_ctc", reason="CK-negative on review")
    summary = as_alice.get(f"/api/draws/{draw.pk}/").json()["summary"]
    assert summary["ctc_count"] == 2 and summary["ctc_count_range"] == [2, 2]
    assert summary["ctc_status"] == "favorable"


def test_outcome_dates_are_validated_and_record_who(as_alice, alice, patient):
    factories.BloodDrawFactory(patient=patient, drawn_at=dt.datetime(2025, 6, 1, 10, tzinfo=dt.UTC))
    url = f"/api/patients/{patient.pk}/"
    r = as_alice.patch(url, {"death_date": "2024-12-01"}, format="json")  # diagnosis 2025-01-15
    assert r.status_code == 400 and "before the diagnosis" in r.json()["death_date"][0]
    r = as_alice.patch(url, {"progression_date": (dt.date.today() + dt.timedelta(days=5)).isoformat()},
                       format="json")
    assert r.status_code == 400 and "in the future" in r.json()["progression_date"][0]
    r = as_alice.patch(url, {"last_follow_up": "2025-05-01"}, format="json")
    assert r.status_code == 400 and "before the last blood draw" in r.json()["last_follow_up"][0]
    r = as_alice.patch(url, {"progression_date": "2025-07-01", "last_follow_up": "2025-08-01"}, format="json")
    assert r.status_code == 200, r.content
    body = r.json()
    assert body["outcome_recorded_by"] == "alice" and body["outcome_recorded_at"]
    patient.refresh_from_db()
    assert patient.history.first().progression_date == dt.date(2025, 7, 1)  # audited by simple-history
    assert patient.history.first().history_user == alice


def _cohort_patient(team, arm, baseline_count, months, event, follow_count=None, died=False):
    start = dt.date(2024, 1, 10)
    p = factories.PatientFactory(care_team=team, trial=arm.trial, arm=arm, enrolled_on=start,
                                 diagnosis_date=dt.date(2023, 12, 1))
    for i, (tp, n) in enumerate([("baseline", baseline_count), ("C2D1", follow_count)]):
        if n is None:
            continue
        d = factories.BloodDrawFactory(patient=p, timepoint=tp,
                                       drawn_at=dt.datetime(2024, 1, 12, 9, tzinfo=dt.UTC) + dt.timedelta(days=21 * i))
        DrawSummary.objects.create(draw=d, ctc_count=n, ctc_per_7_5ml=float(n), events_analysed=40,
                                   reviewed_events=40, status=SummaryStatus.FINAL)
    end = start + dt.timedelta(days=int(months * 30.4375))
    if event and died:
        p.death_date = end
    elif event:
        factories.ClinicalEventFactory(patient=p, date=end, kind="progression", recist="PD")
    p.last_follow_up = max(end, dt.date(2024, 2, 2))
    p.save()
    return p


@pytest.fixture
def cohort(team, other_team):
    arm_a = factories.TrialArmFactory(code="A")
    arm_b = factories.TrialArmFactory(code="B", trial=arm_a.trial)
    mine = []
    for i in range(12):  # unfavorable at baseline: progress early
        mine.append(_cohort_patient(team, arm_a if i % 2 else arm_b, 12, 2 + i * 0.4, event=i < 10,
                                    follow_count=0 if i % 3 == 0 else 6))
    for i in range(12):  # favorable: late, fewer events
        mine.append(_cohort_patient(team, arm_a if i % 2 else arm_b, 1, 6 + i * 0.6, event=i < 6,
                                    follow_count=0 if i % 4 else 2, died=i == 0))
    theirs = [_cohort_patient(other_team, arm_a, 30, 0.5, event=True, follow_count=30) for _ in range(3)]
    return arm_a.trial, mine, theirs


def test_survival_endpoint_contract_and_scoping(as_alice, as_charlie, cohort, django_assert_max_num_queries):
    trial, mine, theirs = cohort
    with django_assert_max_num_queries(15):
        r = as_alice.get(f"/api/cohort/survival/?endpoint=pfs&by=baseline&trial={trial.code}")
    assert r.status_code == 200, r.content
    body = r.json()
    assert body["endpoint"] == "pfs" and body["by"] == "baseline"
    groups = {g["key"]: g for g in body["groups"]}
    assert groups["unfavorable"]["n"] == 12 and groups["favorable"]["n"] == 12
    assert groups["unfavorable"]["events"] == 10 and groups["favorable"]["events"] == 6
    # Another team's patients (3 more unfavorable, all progressing at two weeks) never enter a curve.
    assert sum(g["n"] for g in body["groups"]) == len(mine)
    assert min(groups["unfavorable"]["times"][1:]) > 1.0
    for g in body["groups"]:
        assert {"name", "n", "events", "median", "median_ci95", "times", "survival", "at_risk"} <= set(g)
        assert len(g["at_risk"]) == len(body["at_risk_times"]) and g["at_risk"][0] == g["n"]
    assert groups["unfavorable"]["median"] < groups["favorable"]["median"]
    assert body["logrank_p"] < 0.05
    assert body["cox"]["hr"] > 1 and body["cox"]["adjusted_for"] == ["arm"]
    assert len(body["cox"]["ci95"]) == 2 and 0 <= body["cox"]["p"] <= 1
    assert 0.5 < body["c_index"] <= 1
    assert isinstance(body["notes"], list)
    theirs_body = as_charlie.get("/api/cohort/survival/").json()
    assert sum(g["n"] for g in theirs_body["groups"]) == len(theirs)


def test_survival_groupings_endpoints_and_exports(as_alice, as_bob, cohort):
    trial, mine, _ = cohort
    ctc0 = as_alice.get("/api/cohort/survival/?by=ctc0&endpoint=os").json()
    assert {g["key"] for g in ctc0["groups"]} == {"ctc0", "ctc_pos"}
    assert sum(g["n"] for g in ctc0["groups"]) == len(mine)
    conv = as_alice.get("/api/cohort/survival/?by=conversion&follow_up=C2D1").json()
    assert {g["key"] for g in conv["groups"]} <= {"persistent_favorable", "to_favorable", "to_unfavorable",
                                                   "persistent_unfavorable"}
    # Landmark with no such draw: nobody has a follow-up, and the notes say why.
    none = as_alice.get("/api/cohort/survival/?by=conversion&follow_up=C9D1").json()
    assert none["groups"] == [] and any("first follow-up" in n for n in none["notes"])
    assert as_alice.get("/api/cohort/survival/?endpoint=dfs").status_code == 400
    assert as_bob.get("/api/cohort/survival/").status_code == 403  # reviewers have no cohort view
    csv = as_alice.get("/api/cohort/survival/?format=csv")
    assert csv.status_code == 200 and csv["Content-Type"].startswith("text/csv")
    lines = csv.content.decode().strip().splitlines()
    assert lines[0].startswith("study_id,trial,arm,day0,day0_source,pfs_months,pfs_event,os_months,os_event")
    assert len(lines) == 1 + len(mine)
    data = as_alice.get("/api/cohort/survival/?data=1").json()["data"]
    assert {d["study_id"] for d in data} == {p.study_id for p in mine}


def test_survival_endpoint_is_in_the_schema(as_alice):
    schema = as_alice.get("/api/schema/?format=json").json()
    assert "/api/cohort/survival/" in schema["paths"]
    draw_summary = schema["components"]["schemas"]["DrawSummary"]["properties"]
    assert {"ctc_count_ci95", "ctc_per_7_5ml_ci95"} <= set(draw_summary)


def test_patient_list_with_outcomes_costs_no_query_per_patient(as_alice, alice, team):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def count() -> int:
        with CaptureQueriesContext(connection) as ctx:
            assert as_alice.get("/api/patients/").status_code == 200
        return len(ctx.captured_queries)

    factories.PatientFactory(care_team=team, last_follow_up=dt.date(2025, 6, 1), outcome_recorded_by=alice)
    one = count()
    for _ in range(4):
        factories.PatientFactory(care_team=team, last_follow_up=dt.date(2025, 6, 1), outcome_recorded_by=alice)
    assert count() == one


def test_cohort_api_landmark_and_conversion_intervals(as_alice, team):
    arm = factories.TrialArmFactory(code="A")
    for counts in ((8, 1, 9), (7, 0, 0)):  # P1: favorable at C2D1, unfavorable again at C5D1
        p = factories.PatientFactory(care_team=team, trial=arm.trial, arm=arm)
        for i, (tp, n) in enumerate(zip(("baseline", "C2D1", "C5D1"), counts, strict=True)):
            at = dt.datetime(2025, 1, 5, 9, tzinfo=dt.UTC) + dt.timedelta(days=21 * i)
            d = factories.BloodDrawFactory(patient=p, timepoint=tp, drawn_at=at)
            DrawSummary.objects.create(draw=d, ctc_count=n, ctc_per_7_5ml=float(n), events_analysed=20,
                                       reviewed_events=20, status=SummaryStatus.FINAL)
    latest = as_alice.get("/api/cohort/").json()["arms"][0]
    c2 = as_alice.get("/api/cohort/?follow_up=C2D1").json()["arms"][0]
    assert (latest["to_favorable"], c2["to_favorable"]) == (1, 2)
    assert c2["conversion_rate"] == 1.0
    low, high = c2["conversion_ci"]  # 2 of 2: Clopper-Pearson 15.8 %-100 %
    assert low == pytest.approx(0.158, abs=0.001) and high == 1.0
