"""The partner lab of the demo (issue 13, point 7 on `make run`): a third care team whose instrument
exports wide frames without an AF channel and whose reviewers count apoptotic CTCs as CTCs, so the
lab-model training has a domain to learn (the model card's ``wide_no_af_apop`` check)."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
import tifffile

from patients.models import CellEvent, LabTraining, Membership, Role

pytestmark = pytest.mark.django_db


def _seed_partner(monkeypatch, events_per_draw: int) -> None:
    from patients import demo
    from patients.models import CancerType

    # A transactional test before this one may have flushed the data migration's cancer types.
    CancerType.objects.get_or_create(code="breast_metastatic", defaults={"name": "Metastatic breast cancer",
                                                                          "ctc_cutoff": 5})
    monkeypatch.setattr(demo, "PATIENTS", [])  # the partner lab alone keeps the test quick
    demo.seed(events_per_draw=events_per_draw, outcomes=False, log=lambda *_: None)


def _classify_and_review() -> int:
    from patients import demo
    from patients.models import ImagingUpload
    from patients.pipeline import run_upload

    partner = ImagingUpload.objects.filter(draw__patient__care_team__name=demo.PARTNER_TEAM)
    for pk in partner.values_list("pk", flat=True):
        assert run_upload(pk) == "done"  # the real pipeline, as the worker runs it
    return demo.review_seeded(wait_s=0)


def test_the_partner_lab_gallery_is_the_shifted_form_without_af():
    from patients.demo import PARTNER_OTHERS, labelled_gallery

    data, labels = labelled_gallery(np.random.default_rng(3), 2, 6, instrument="wide_no_af")
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        arrays = [tifffile.imread(io.BytesIO(zf.read(name))) for name in zf.namelist()]
    assert len(arrays) == len(labels) == 8 and list(labels.values()).count("ctc") == 2
    assert all(a.ndim == 3 and a.shape[0] == 3 for a in arrays)  # DAPI, CK, CD45: no AF plane
    assert all(160 <= a.shape[1] <= 400 for a in arrays)  # wide frames, not the cohort's 96 px
    assert set(labels.values()) <= {"ctc", *PARTNER_OTHERS}


def test_the_partner_lab_is_seeded_with_its_own_instrument_and_its_labelling(monkeypatch):
    """Seeded: the team (demo-admin administers it), two patients whose draws are uploaded as
    ``DAPI,CK,CD45``; once classified, every cell is reviewed by the seeded reviewer with that lab's
    labels: an apoptotic CTC is reviewed as a CTC (category kept), nothing else changes."""
    from patients import demo

    _seed_partner(monkeypatch, events_per_draw=3)
    team = demo.CareTeam.objects.get(name=demo.PARTNER_TEAM)
    assert Membership.objects.get(team=team, user__username=demo.DEMO_ADMIN).role == Role.ADMIN
    patients = team.patients.all()
    assert sorted(p.study_id for p in patients) == ["DEMO-P01", "DEMO-P02"]
    uploads = [u for p in patients for d in p.draws.all() for u in d.uploads.all()]
    assert len(uploads) == sum(p.draws.count() for p in patients) >= 10
    assert all(list(u.channels) == ["DAPI", "CK", "CD45"] for u in uploads)
    reviewed = _classify_and_review()
    cells = CellEvent.objects.filter(draw__patient__care_team=team)
    assert reviewed == cells.count() >= 36 and not cells.filter(reviewed_call="").exists()
    assert set(cells.values_list("reviewed_by__username", flat=True)) == {demo.DEMO_REVIEWER}
    labels = demo._load_labels()
    truth = {}
    for u in uploads:
        truth.update({(u.pk, m): c for m, c in labels[u.files.get().sha256].items()})
    apoptotic = 0
    for cell in cells:
        category = truth[(cell.upload_id, demo._member(cell.source))]
        assert cell.final_category == category
        assert cell.reviewed_call == ("ctc" if category in ("ctc", "apoptotic_ctc") else "non_ctc"), category
        apoptotic += category == "apoptotic_ctc"
    assert apoptotic > 0  # the lab's convention is exercised
    # The cohort's own reviews keep the cohort's convention.
    assert demo.lab_call("apoptotic_ctc") == "non_ctc" and demo.lab_call("apoptotic_ctc", True) == "ctc"


@pytest.mark.django_db(transaction=True)
def test_a_training_of_the_partner_lab_beats_the_active_model_on_its_held_out_draws(monkeypatch, capsys):
    """The demo as `make run` seeds it (30 events a draw), classified and reviewed, then a training
    as the Models page starts one: the candidate's balanced accuracy on the held-out draws is above
    the active version's (the card's wide_no_af_apop: ~0.80 -> 0.94-0.96)."""
    import time

    from patients import demo, labmodel

    t0 = time.monotonic()
    _seed_partner(monkeypatch, events_per_draw=30)
    reviewed = _classify_and_review()
    assert reviewed >= 300  # 10 draws (11 here: the first patient's same-day repeat) of 30
    team = demo.CareTeam.objects.get(name=demo.PARTNER_TEAM)
    admin = demo.get_user_model().objects.get(username=demo.DEMO_ADMIN)
    t1 = time.monotonic()
    job = labmodel.run_training(LabTraining.objects.create(team=team, requested_by=admin))
    t2 = time.monotonic()
    assert job.status == "done", job.error
    active, candidate = job.result["active"], job.result["candidate"]
    with capsys.disabled():
        print(f"\nseed+classify+review {t1 - t0:.0f} s, training {t2 - t1:.0f} s; {reviewed} reviewed cells")
        for key in sorted(set(active) | set(candidate)):
            print(f"  {key:24s} active {active.get(key)!s:24s} candidate {candidate.get(key)!s}")
        print("  mcnemar_p", job.result.get("mcnemar_p"), "adaptation", job.result.get("adaptation"))
    assert candidate["balanced_accuracy"] > active["balanced_accuracy"]
