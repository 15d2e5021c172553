"""The demo cohort for `make run`: realistic trajectories, real synthetic imaging.

Each draw gets an event gallery drawn by ``classifier.synth`` (a zip of multi-channel
TIFFs, as a CellSearch-type instrument exports) whose number of CTCs follows the
patient's trajectory; the real worker then classifies it like any lab upload.

Issue 14 adds synthetic outcomes (clearly labelled: notes say "Synthetic demo outcome", the
survival page says so) for a cohort of 50 patients (46 across the two arms) of the demo trial,
with high-CTC patients doing worse in the direction and rough size of the published figures.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import time
import zipfile
from dataclasses import dataclass
from decimal import Decimal

import numpy as np
import tifffile
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import transaction
from django.utils import timezone

from patients.models import (
    BloodDraw,
    CancerType,
    CareTeam,
    ClinicalEvent,
    Membership,
    Patient,
    Role,
    TreatmentLine,
    Trial,
    TrialArm,
)
from patients.uploads import UploadRequest, create_upload

DEMO_USER = "demo"
DEMO_PASSWORD = "demo-password"  # local demo only (README); never used outside `make run`
#: The demo's administrator (same password): manages models, so it can start a lab-model training.
DEMO_ADMIN = "demo-admin"
#: A seeded reviewer (no login) whose reviews of :data:`SEEDED_REVIEWS` give the lab-model
#: training something to learn from on `make run` (issue 13).
DEMO_REVIEWER = "demo-reviewer"
DEMO_PREFIX = "DEMO-"
CHANNELS = ["DAPI", "CK", "AF", "CD45"]

#: CTCs per 7.5 mL at successive draws for each trajectory (the classifier then counts them).
TRAJECTORIES: dict[str, list[int]] = {
    # A steep fall at C2D1 (16 -> 3: beyond counting noise, p = 0.004), the timeline marks it (issue 14).
    "responder": [16, 3, 1, 1, 0, 0, 1, 0],
    "converter_late": [9, 8, 6, 4, 2, 1, 1],
    "persistent": [12, 15, 11, 18, 22, 25],
    "favorable": [1, 0, 2, 1, 0, 1],
    "relapse": [3, 1, 0, 0, 4, 9, 16],
}


@dataclass(frozen=True)
class DemoPatient:
    study_id: str
    cancer: str
    team: str
    trajectory: str
    arm: str | None
    n_draws: int
    stage: str
    #: (CTCs, apoptotic CTCs) of the last draw's gallery: cells the model calls either way and its
    #: category head often disagrees on, so the count rests on unsure calls ("indeterminate until
    #: reviewed" while nobody has reviewed them; issue 14). None: the trajectory's usual gallery.
    ambiguous_last: tuple[int, int] | None = None
    #: How the patient's lab images its events: ``""`` the cohort's instrument (CellSearch-like
    #: galleries, ``DAPI,CK,AF,CD45``); ``"wide_no_af"`` the partner lab's (:data:`PARTNER_PATIENTS`).
    instrument: str = ""


PATIENTS = [
    DemoPatient("DEMO-B01", "breast_metastatic", "Breast oncology", "responder", "A", 7, "IV"),
    DemoPatient("DEMO-B02", "breast_metastatic", "Breast oncology", "persistent", "A", 6, "IV"),
    DemoPatient("DEMO-B03", "breast_metastatic", "Breast oncology", "converter_late", "B", 7, "IV"),
    DemoPatient("DEMO-B04", "breast_metastatic", "Breast oncology", "responder", "B", 8, "IV"),
    DemoPatient("DEMO-B05", "breast_metastatic", "Breast oncology", "relapse", "A", 7, "IV"),
    DemoPatient("DEMO-B06", "breast_metastatic", "Breast oncology", "favorable", "B", 5, "IV", (2, 20)),
    DemoPatient("DEMO-C01", "colorectal_metastatic", "GI oncology", "responder", None, 6, "IVA"),
    DemoPatient("DEMO-C02", "colorectal_metastatic", "GI oncology", "persistent", None, 5, "IVB"),
    DemoPatient("DEMO-C03", "colorectal_metastatic", "GI oncology", "favorable", None, 4, "IVA", (1, 14)),
    DemoPatient("DEMO-C04", "colorectal_metastatic", "GI oncology", "relapse", None, 6, "IVB"),
]

#: A third care team whose lab differs from the data the model was trained on (issue 13, point 7), so
#: a lab-model training on `make run` has something to learn: its instrument exports wide frames
#: (160-400 px, 5-40 neighbours) without an AF channel (``DAPI,CK,CD45``; the model card's
#: ``wide_no_af`` shifted set), and its reviewers count apoptotic CTCs as CTCs (the card's
#: ``wide_no_af_apop`` labelling, where fine-tuning moved balanced accuracy from ~0.80 to 0.94-0.96).
PARTNER_TEAM = "Partner lab (wide frames, no AF)"
PARTNER_CHANNELS = ["DAPI", "CK", "CD45"]
PARTNER_PATIENTS = [
    DemoPatient("DEMO-P01", "breast_metastatic", PARTNER_TEAM, "persistent", None, 5, "IV", instrument="wide_no_af"),
    DemoPatient("DEMO-P02", "breast_metastatic", PARTNER_TEAM, "converter_late", None, 5, "IV",
                instrument="wide_no_af"),
]
#: The partner lab's other candidates: apoptotic CTCs (which it counts) are common, as in the card's set.
PARTNER_OTHERS = {"leukocyte": 0.35, "apoptotic_ctc": 0.35, "ck_debris": 0.15, "artifact": 0.15}
#: Teams whose reviewers count an apoptotic CTC as a CTC (their reviewed call), category kept.
COUNTS_APOPTOTIC = frozenset({PARTNER_TEAM})

REGIMENS = {
    "breast_metastatic": [
        ("Paclitaxel + bevacizumab", "paclitaxel, bevacizumab"),
        ("Capecitabine", "capecitabine"),
        ("Eribulin", "eribulin"),
    ],
    "colorectal_metastatic": [
        ("FOLFOX + bevacizumab", "oxaliplatin, 5-FU, leucovorin, bevacizumab"),
        ("FOLFIRI + cetuximab", "irinotecan, 5-FU, leucovorin, cetuximab"),
        ("Trifluridine/tipiracil", "trifluridine, tipiracil"),
    ],
}


def gallery_zip(rng: np.random.Generator, n_ctc: int, n_other: int, n_apoptotic: int = 0) -> bytes:
    """A zip of event TIFFs: ``n_ctc`` CTCs among ``n_other`` other candidates (and ``n_apoptotic``
    apoptotic CTCs on top, for a deliberately ambiguous gallery)."""
    return labelled_gallery(rng, n_ctc, n_other, n_apoptotic)[0]


def labelled_gallery(rng: np.random.Generator, n_ctc: int, n_other: int,
                     n_apoptotic: int = 0, instrument: str = "") -> tuple[bytes, dict[str, str]]:
    """:func:`gallery_zip` and the generator's true category of each member (``event003.tif``: ``"ctc"``).

    ``instrument="wide_no_af"``: rendered as the partner lab exports them (``synth --shifted
    wide_no_af``: wide frames, channels ``DAPI,CK,CD45``), other candidates from :data:`PARTNER_OTHERS`."""
    from classifier.synth import instrument_array, make_event

    mix = PARTNER_OTHERS if instrument else {"leukocyte": 0.5, "apoptotic_ctc": 0.2, "ck_debris": 0.2, "artifact": 0.1}
    others = rng.choice(list(mix), size=n_other, p=list(mix.values()))
    categories = ["ctc"] * n_ctc + list(others) + ["apoptotic_ctc"] * n_apoptotic
    rng.shuffle(categories)
    buf = io.BytesIO()
    # Level 1 for the partner's wide frames (2-9x the pixels): most of the seed's time was deflate.
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1 if instrument else None) as zf:
        for i, category in enumerate(categories):
            # One instrument per cohort (a CellSearch-like 10x scale); its exports vary as
            # real ones do (8-bit renders, raw counts, floats), each stored in its own dtype.
            if instrument:
                arr = _shifted_array(rng, str(category), instrument)
            else:
                image, info = make_event(rng, str(category), px_um=0.65, size_px=96)
                arr = instrument_array(image, info["rendering"])
            tif = io.BytesIO()
            tifffile.imwrite(tif, arr, photometric="minisblack", metadata={"axes": "CYX"})
            zf.writestr(f"event{i:03d}.tif", tif.getvalue())
    return buf.getvalue(), {f"event{i:03d}.tif": str(category) for i, category in enumerate(categories)}


def _shifted_array(rng: np.random.Generator, category: str, instrument: str) -> np.ndarray:
    """One event as :func:`classifier.synth.folder.write_shifted_folder` writes the set ``instrument``."""
    from classifier.synth import instrument_array, make_event
    from classifier.synth.export import export_as
    from classifier.synth.folder import SHIFTED_SETS

    framing, kind, ck_dim = SHIFTED_SETS[instrument]
    image, info = make_event(rng, category, framing=framing, ck_dim=ck_dim)
    arr, _ = export_as(image, rng, kind)
    return instrument_array(np.clip(arr, 0, None), info["rendering"])


def ensure_demo_user(teams: list[CareTeam], trial: Trial):
    User = get_user_model()
    user, created = User.objects.get_or_create(username=DEMO_USER, defaults={"first_name": "Demo", "last_name": "User"})
    if created or not user.check_password(DEMO_PASSWORD):
        user.set_password(DEMO_PASSWORD)
        user.save()
    for team in teams:
        Membership.objects.get_or_create(team=team, user=user, defaults={"role": Role.ONCOLOGIST})
    trial.coordinators.add(user)
    return user


def ensure_demo_admin(teams: list[CareTeam]):  # noqa: ANN201
    """``demo-admin`` (the demo password): an administrator of every demo team, so it manages models
    (promote, shadow, lab-model training) and sees every demo patient. Not a Django superuser."""
    User = get_user_model()
    user, created = User.objects.get_or_create(username=DEMO_ADMIN,
                                               defaults={"first_name": "Demo", "last_name": "Administrator"})
    if created or not user.check_password(DEMO_PASSWORD):
        user.set_password(DEMO_PASSWORD)
        user.save()
    for team in teams:
        Membership.objects.get_or_create(team=team, user=user, defaults={"role": Role.ADMIN})
    return user


def ensure_demo_reviewer(team: CareTeam):  # noqa: ANN201
    """The seeded reviewer of :data:`SEEDED_REVIEWS` (a reviewer of ``team``; no password: no login)."""
    User = get_user_model()
    user, created = User.objects.get_or_create(username=DEMO_REVIEWER,
                                               defaults={"first_name": "Demo", "last_name": "Reviewer"})
    if created:
        user.set_unusable_password()
        user.save()
    Membership.objects.get_or_create(team=team, user=user, defaults={"role": Role.REVIEWER})
    return user


def seed(seed: int = 7, events_per_draw: int = 30, log=print, outcomes: bool = True) -> list[int]:  # noqa: ANN001
    """Create the demo cohort (idempotent); returns the ids of the uploads it queued.

    One transaction per patient, so the worker starts on the first patient's imaging
    while the rest is generated, and SQLite's single writer is never held for long.
    The ten patients with full courses come first (the first one shows within a minute);
    then the synthetic outcome cohort (:data:`OUTCOME_PATIENTS` patients with two or three
    small draws each) that makes the survival page alive; last the partner lab
    (:data:`PARTNER_PATIENTS`), whose wide frames take longest.
    """
    rng = np.random.default_rng(seed)
    teams = {
        "Breast oncology": CareTeam.objects.get_or_create(name="Breast oncology", defaults={"site": "Site A"})[0],
        "GI oncology": CareTeam.objects.get_or_create(name="GI oncology", defaults={"site": "Site B"})[0],
        PARTNER_TEAM: CareTeam.objects.get_or_create(name=PARTNER_TEAM, defaults={"site": "Partner site"})[0],
    }
    trial, _ = Trial.objects.get_or_create(
        code="CTC-ARM-01",
        defaults={"title": "Randomised trial of CTC-guided therapy switching", "draw_interval_days": 21},
    )
    arms = {
        "A": TrialArm.objects.get_or_create(trial=trial, code="A", defaults={"description": "Standard of care"})[0],
        "B": TrialArm.objects.get_or_create(trial=trial, code="B", defaults={"description": "CTC-guided switch"})[0],
    }
    user = ensure_demo_user(list(teams.values()), trial)
    ensure_demo_admin(list(teams.values()))
    for name in (REVIEWED_TEAM, PARTNER_TEAM):
        ensure_demo_reviewer(teams[name])
    today = timezone.localdate()
    uploads: list[int] = []
    for k, spec in enumerate(PATIENTS):
        if Patient.objects.filter(study_id=spec.study_id).exists():
            continue
        # Images first, outside the transaction: on SQLite (make run) a transaction holds the
        # database's single write lock, and the worker's writes waited on gallery generation.
        plan = _plan_patient(k, spec, rng, events_per_draw)
        with transaction.atomic():
            uploads += _seed_patient(k, spec, plan, teams, trial, arms, user, today)
        if spec.study_id in REVIEWED_PATIENTS:
            _remember_labels({hashlib.sha256(data).hexdigest(): labels for _, data, labels in plan["draws"]})
        log(f"  {spec.study_id}: {spec.n_draws} draws ({spec.trajectory})")
    if outcomes:
        # A generator of its own: the full-course patients' imaging stays what it always was.
        out_rng = np.random.default_rng(seed + 1000)
        made = 0
        for k in range(OUTCOME_PATIENTS):
            study_id = f"{DEMO_PREFIX}S{k + 1:02d}"
            if Patient.objects.filter(study_id=study_id).exists():
                continue
            plan = _plan_outcome_patient(k, out_rng, today, events_per_draw)
            with transaction.atomic():
                uploads += _seed_outcome_patient(study_id, plan, teams["Breast oncology"], trial, arms, user)
            made += 1
        if made:
            log(f"  {made} synthetic outcome patients ({DEMO_PREFIX}S01-S{OUTCOME_PATIENTS:02d}): 2-3 small draws each")
    # The partner lab last (its wide frames are the slowest to draw and to classify: the cohort and
    # the survival page come first), from a generator of its own (the cohort's imaging is unchanged).
    partner_rng = np.random.default_rng(seed + 2000)
    for i, spec in enumerate(PARTNER_PATIENTS):
        k = len(PATIENTS) + i
        if Patient.objects.filter(study_id=spec.study_id).exists():
            continue
        plan = _plan_patient(k, spec, partner_rng, events_per_draw)
        with transaction.atomic():
            uploads += _seed_patient(k, spec, plan, teams, trial, arms, user, today)
        _remember_labels({hashlib.sha256(data).hexdigest(): labels for _, data, labels in plan["draws"]})
        log(f"  {spec.study_id}: {spec.n_draws} draws ({PARTNER_TEAM}: wide frames, DAPI,CK,CD45)")
    return uploads


# --- the synthetic outcome cohort (issue 14) ------------------------------------------------------

#: Patients seeded for the survival page; with the ten full courses, 50 patients (46 in the two-arm trial).
OUTCOME_PATIENTS = 40

#: Median PFS and OS in months by CTC course (baseline class, first follow-up class), in the
#: direction and rough size of Cristofanilli, NEJM 2004 (baseline >= 5: PFS 2.7 vs 7.0 months,
#: OS 10.1 vs > 18) and of conversion at first follow-up (SWOG S0500, Heller JCO 2018).
OUTCOME_MEDIANS: dict[tuple[bool, bool], tuple[float, float]] = {
    (True, True): (2.3, 9.0),     # persistently >= cut-off
    (True, False): (5.5, 16.0),   # converted to favorable
    (False, True): (3.0, 12.0),   # converted to unfavorable
    (False, False): (7.0, 22.0),  # persistently favorable
}

#: Arm B (CTC-guided switching) a little better, so the arm adjustment of the Cox model matters.
ARM_EFFECT = {"A": 1.0, "B": 1.15}

#: Weibull shapes (> 1: few events in the first weeks, as on first-line therapy; 1 would be exponential).
PFS_SHAPE = 1.6
OS_SHAPE = 1.4

DAYS_PER_MONTH = 30.4375
SYNTHETIC_NOTE = "Synthetic demo outcome (generated, not patient data)"


def _weibull(rng: np.random.Generator, median: float, shape: float) -> float:
    """A Weibull time with the given median: ``scale = median / ln(2) ** (1 / shape)``."""
    return float(median / np.log(2) ** (1 / shape) * rng.weibull(shape))


def synthetic_course(rng: np.random.Generator, arm: str, today: dt.date) -> dict:
    """One synthetic patient: CTC counts at baseline and C2D1, day 0, and outcome dates.

    Weibull times with the medians of :data:`OUTCOME_MEDIANS`; PFS never after OS;
    administrative censoring yesterday and 15 % lost to follow-up earlier. Every date
    respects the product's own checks (nothing after yesterday, follow-up after the last draw).
    """
    high = bool(rng.random() < 0.5)
    base = int(rng.integers(6, 16)) if high else int(rng.integers(0, 3))
    converts = bool(rng.random() < (0.4 if high else 0.15))
    high_after = high != converts
    follow = int(rng.integers(5, 14)) if high_after else int(rng.integers(0, 3))
    pfs_median, os_median = (m * ARM_EFFECT[arm] for m in OUTCOME_MEDIANS[(high, high_after)])
    os_m = max(1.6, _weibull(rng, os_median, OS_SHAPE))
    pfs_m = min(os_m, max(1.0, _weibull(rng, pfs_median, PFS_SHAPE)))
    yesterday = today - dt.timedelta(days=1)
    enrolled = today - dt.timedelta(days=int(rng.integers(240, 900)))
    available = (yesterday - enrolled).days
    if rng.random() < 0.15:
        available = int(available * rng.uniform(0.3, 0.9))
    available = max(available, 40)  # seen at least once after the C2D1 draw (day 24)
    os_days, pfs_days = int(os_m * DAYS_PER_MONTH), int(pfs_m * DAYS_PER_MONTH)
    died = os_days <= available
    progressed = pfs_days < os_days and pfs_days <= available
    death = enrolled + dt.timedelta(days=os_days) if died else None
    progression = enrolled + dt.timedelta(days=pfs_days) if progressed else None
    last_seen = death or enrolled + dt.timedelta(days=available)
    draws = [(3, "baseline", base), (24, "C2D1", follow)]
    if not progressed and (last_seen - enrolled).days > 50 and rng.random() < 0.5:
        draws.append((45, "C3D1", follow if rng.random() < 0.7 else base))
    return {"high": high, "enrolled": enrolled, "draws": draws, "death": death, "progression": progression,
            "last_follow_up": last_seen}


def _plan_outcome_patient(k: int, rng: np.random.Generator, today: dt.date, events_per_draw: int) -> dict:
    """The random part of a synthetic outcome patient: course, diagnosis and small galleries."""
    arm = "A" if k % 2 == 0 else "B"
    course = synthetic_course(rng, arm, today)
    diagnosis_offset = int(rng.integers(30, 200))
    small = max(1, min(4, events_per_draw))  # a few other candidates per CTC gallery: quick to classify
    galleries = [gallery_zip(rng, n_ctc, small) for _, _, n_ctc in course["draws"]]
    return {"arm": arm, "course": course, "diagnosis_offset": diagnosis_offset, "galleries": galleries}


def _seed_outcome_patient(study_id: str, plan: dict, team: CareTeam, trial: Trial, arms: dict,
                          user) -> list[int]:  # noqa: ANN001
    """A trial patient with outcomes and a few small draws (fast for the worker)."""
    arm, course = plan["arm"], plan["course"]
    enrolled = course["enrolled"]
    patient = Patient.objects.create(
        study_id=study_id, mrn="", cancer_type=CancerType.objects.get(code="breast_metastatic"), stage="IV",
        diagnosis_date=enrolled - dt.timedelta(days=plan["diagnosis_offset"]), care_team=team, trial=trial,
        arm=arms[arm], enrolled_on=enrolled,
    )
    regimen, agents = REGIMENS["breast_metastatic"][0]
    progression = course["progression"]
    TreatmentLine.objects.create(
        patient=patient, line_number=1, regimen=regimen, agents=agents, intent=TreatmentLine.Intent.PALLIATIVE,
        start_date=enrolled + dt.timedelta(days=4), end_date=progression,
        stop_reason=TreatmentLine.StopReason.PROGRESSION if progression else "",
    )
    if progression:
        ClinicalEvent.objects.create(patient=patient, date=progression, kind=ClinicalEvent.Kind.PROGRESSION,
                                     recist=ClinicalEvent.Recist.PD, note=SYNTHETIC_NOTE)
    else:
        ClinicalEvent.objects.create(patient=patient, date=course["last_follow_up"], kind=ClinicalEvent.Kind.IMAGING,
                                     recist=ClinicalEvent.Recist.SD, note=SYNTHETIC_NOTE)
    uploads = []
    for (day, timepoint, _), data in zip(course["draws"], plan["galleries"], strict=True):
        drawn_at = timezone.make_aware(dt.datetime.combine(enrolled + dt.timedelta(days=day), dt.time(9, 0)))
        draw = BloodDraw.objects.create(patient=patient, drawn_at=drawn_at, volume_ml=Decimal("7.5"),
                                        timepoint=timepoint, created_by=user)
        upload = create_upload(draw, UploadRequest(
            files=[SimpleUploadedFile(f"{study_id}-{timepoint}.zip", data, content_type="application/zip")],
            channels=CHANNELS, kind="events", lane="bulk"), user)  # behind the clinic's own uploads
        uploads.append(upload.pk)
    patient.progression_date = progression
    patient.death_date = course["death"]
    patient.last_follow_up = course["last_follow_up"]
    patient.outcome_recorded_by = user
    patient.outcome_recorded_at = timezone.now()
    patient.full_clean(exclude=["study_id"])  # the product's own outcome checks hold for the demo too
    patient.save()
    return uploads


def _schedule(k: int, spec: DemoPatient) -> list[tuple[int, str, dt.time]]:
    schedule = [(d, "baseline" if d == 0 else f"C{d + 1}D1", dt.time(9, 30)) for d in range(spec.n_draws)]
    if k == 0:  # a repeat draw the same afternoon (clotted tube): the timeline must show both
        schedule.insert(3, (2, "C3D1 repeat", dt.time(15, 0)))
    return schedule


def _plan_patient(k: int, spec: DemoPatient, rng: np.random.Generator, events_per_draw: int) -> dict:
    """Everything random about one full-course patient, galleries included (the rng in its usual order)."""
    interval = 21 if spec.arm else 28
    overdue = k % 4 == 1
    last_offset = int(interval + 12 if overdue else rng.integers(2, 15))
    diagnosis_offset = int(rng.integers(20, 60))
    counts = TRAJECTORIES[spec.trajectory]
    draws = []
    schedule = _schedule(k, spec)
    for i, (d, _, _) in enumerate(schedule):
        volume = Decimal("7.5") if rng.random() < 0.8 else Decimal("7.0")
        n_ctc = counts[min(d, len(counts) - 1)]
        n_apoptotic = 0
        if spec.ambiguous_last and i == len(schedule) - 1:
            n_ctc, n_apoptotic = spec.ambiguous_last
        n_other = max(events_per_draw - n_ctc, min(8, events_per_draw))
        draws.append((volume, *labelled_gallery(rng, n_ctc, n_other, n_apoptotic, spec.instrument)))
    return {"last_offset": last_offset, "diagnosis_offset": diagnosis_offset, "draws": draws}


def _seed_patient(k: int, spec: DemoPatient, plan: dict, teams: dict, trial: Trial, arms: dict,
                  user, today: dt.date) -> list[int]:  # noqa: ANN001
    """One patient's lines, events, draws and queued galleries (from :func:`_plan_patient`)."""
    uploads: list[int] = []
    interval = 21 if spec.arm else 28
    n = spec.n_draws
    # Some patients are behind schedule: their last draw is older than interval + grace.
    last_draw = today - dt.timedelta(days=plan["last_offset"])
    first_draw = last_draw - dt.timedelta(days=interval * (n - 1))
    diagnosis = first_draw - dt.timedelta(days=plan["diagnosis_offset"])
    patient = Patient.objects.create(
        study_id=spec.study_id,
        mrn=f"MRN{100200 + k}",
        cancer_type=CancerType.objects.get(code=spec.cancer),
        stage=spec.stage,
        diagnosis_date=diagnosis,
        care_team=teams[spec.team],
        trial=trial if spec.arm else None,
        arm=arms[spec.arm] if spec.arm else None,
        enrolled_on=first_draw - dt.timedelta(days=3) if spec.arm else None,
    )
    # Treatment lines: switch when the trajectory says the disease progressed.
    n_lines = 3 if spec.trajectory in ("persistent", "relapse") else 2
    span = (last_draw - first_draw).days + 30
    # Everything seeded has happened: no line starts, and no event is dated, after yesterday
    # (a "future" imaging response misplaced the timeline and read as data entry gone wrong).
    yesterday = today - dt.timedelta(days=1)
    starts = [min(first_draw + dt.timedelta(days=1 + int(span * i / n_lines)),
                  yesterday - dt.timedelta(days=n_lines - i)) for i in range(n_lines)]
    # A persistently favorable course switches lines as planned (maintenance), not on progression:
    # early progressions of CTC-favorable patients would misstate the survival page (issue 14).
    progresses = spec.trajectory != "favorable"
    for i, start in enumerate(starts):
        regimen, agents = REGIMENS[spec.cancer][i]
        end = starts[i + 1] - dt.timedelta(days=1) if i + 1 < n_lines else None
        TreatmentLine.objects.create(
            patient=patient, line_number=i + 1, regimen=regimen, agents=agents,
            intent=TreatmentLine.Intent.PALLIATIVE, start_date=start, end_date=end,
            stop_reason=((TreatmentLine.StopReason.PROGRESSION if progresses else TreatmentLine.StopReason.COMPLETED)
                         if end else ""),
        )
        ClinicalEvent.objects.create(
            patient=patient, date=min(start + dt.timedelta(days=60), yesterday), kind=ClinicalEvent.Kind.IMAGING,
            recist=("PR" if spec.trajectory in ("responder", "converter_late") and i == 0 else
                    "PD" if end and progresses else "SD"),
            note="CT chest/abdomen/pelvis",
        )
        if end and progresses:
            ClinicalEvent.objects.create(patient=patient, date=end, kind=ClinicalEvent.Kind.PROGRESSION,
                                         note=f"Progression on {regimen}")
    if spec.cancer == "colorectal_metastatic" and spec.trajectory == "responder":
        ClinicalEvent.objects.create(patient=patient, date=starts[1] - dt.timedelta(days=10),
                                     kind=ClinicalEvent.Kind.SURGERY, note="Liver metastasectomy")
    # Outcomes: progression is their recorded progression events; alive, seen yesterday (issue 14).
    patient.last_follow_up = yesterday
    patient.outcome_recorded_by = user
    patient.outcome_recorded_at = timezone.now()
    patient.save(update_fields=["last_follow_up", "outcome_recorded_by", "outcome_recorded_at"])
    for (d, timepoint, at), (volume, data, _labels) in zip(_schedule(k, spec), plan["draws"], strict=True):
        drawn_on = first_draw + dt.timedelta(days=interval * d)
        drawn_at = timezone.make_aware(dt.datetime.combine(drawn_on, at))
        draw = BloodDraw.objects.create(
            patient=patient, drawn_at=drawn_at, volume_ml=volume, timepoint=timepoint, created_by=user,
        )
        upload = create_upload(
            draw,
            UploadRequest(files=[SimpleUploadedFile(f"{spec.study_id}-{draw.timepoint}.zip", data,
                                                    content_type="application/zip")],
                          channels=PARTNER_CHANNELS if spec.instrument else CHANNELS, kind="events",
                          lane="bulk"),  # behind the clinic's uploads
            user,
        )
        uploads.append(upload.pk)
    return uploads


# --- seeded reviews: something for the lab-model training to learn from (issue 13) ---------------

#: The patients whose every draw the seeded reviewer reviews once the worker has classified it,
#: with the generator's true labels: 14 draws (about 420 cells at 30 per draw) of one care team,
#: so a demo admin can start a lab-model training at once. The ambiguous last draws of DEMO-B06
#: and DEMO-C03 stay unreviewed ("indeterminate until reviewed").
REVIEWED_PATIENTS = ("DEMO-B01", "DEMO-B02")
REVIEWED_TEAM = "Breast oncology"
#: Every patient the seeded reviewer reviews: also the partner lab's, with that lab's labels
#: (:data:`COUNTS_APOPTOTIC`): about 300 cells of 10 draws at 30 per draw.
SEEDED_REVIEWS = REVIEWED_PATIENTS + tuple(p.study_id for p in PARTNER_PATIENTS)

#: The generator's labels of the reviewed patients' galleries, by the zip's sha256 (the
#: ``UploadedFile.sha256`` of the stored upload), kept in the media storage between runs.
LABELS_PATH = "demo/true-labels.json"

#: The override reason a reviewer would give for each true category (patients.review.OVERRIDE_REASONS).
_REASONS = {"ctc": "morphology", "leukocyte": "cd45_positive", "ck_debris": "debris", "artifact": "debris"}
_LABEL_NOTE = "demo: the generator's true label"


def _load_labels() -> dict[str, dict[str, str]]:
    from django.core.files.storage import default_storage

    if not default_storage.exists(LABELS_PATH):
        return {}
    with default_storage.open(LABELS_PATH) as fh:
        return json.loads(fh.read())


def _remember_labels(new: dict[str, dict[str, str]]) -> None:
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    labels = {**_load_labels(), **new}
    if default_storage.exists(LABELS_PATH):
        default_storage.delete(LABELS_PATH)
    default_storage.save(LABELS_PATH, ContentFile(json.dumps(labels).encode()))


def _member(source: str) -> str:
    """The zip member a cell came from: ``DEMO-B01-baseline.zip/event003.tif#0`` -> ``event003.tif``."""
    return source.split("#", 1)[0].rsplit("/", 1)[-1]


def lab_call(category: str, counts_apoptotic: bool = False) -> str:
    """The call a lab's reviewer gives a cell of the generator's ``category``: CTC for a CTC, and
    for an apoptotic CTC where the lab counts them (:data:`COUNTS_APOPTOTIC`)."""
    return "ctc" if category == "ctc" or (counts_apoptotic and category == "apoptotic_ctc") else "non_ctc"


def _review_upload(upload, labels: dict[str, str], reviewer, counts_apoptotic: bool = False) -> int:  # noqa: ANN001
    """Review ``upload``'s unreviewed cells with the generator's labels; returns how many.

    An override (or a category correction) goes through ``review_event`` with the reason a
    reviewer would give; the cells the model called right are confirmed in one audited action.
    ``counts_apoptotic``: the lab's convention (:func:`lab_call`); the category stays the generator's.
    """
    from patients.models import CellEvent
    from patients.review import confirm_remaining, reason_text, review_event

    agree = []
    done = 0
    for cell in CellEvent.objects.filter(upload=upload, reviewed_call="").select_related("draw").order_by("index"):
        category = labels.get(_member(cell.source))
        if category is None:
            continue
        call = lab_call(category, counts_apoptotic)
        if call == cell.call and category == cell.category:
            agree.append(cell.pk)
            continue
        reason = ""
        if call != cell.call:
            code = _REASONS.get(category, "")
            if category == "apoptotic_ctc":
                reason = f"Apoptotic CTC, {'counted by this lab' if call == 'ctc' else 'not counted'} ({_LABEL_NOTE})"
            else:
                reason = reason_text(code, _LABEL_NOTE)
        review_event(cell, reviewer, call, reason, category=category)
        done += 1
    if agree:
        # every one of these cells was checked against its label above: that is the acknowledgement a draw
        # whose images differ from the validated ones (the partner lab's) needs (patients.review)
        done += len(confirm_remaining(upload.draw, reviewer, cell_ids=agree, acknowledge_shifted=True))
    return done


def review_seeded(wait_s: float = 0, log=print, poll_s: float = 2.0) -> int:  # noqa: ANN001
    """Review the cells of :data:`SEEDED_REVIEWS` as the worker finishes their uploads.

    Waits up to ``wait_s`` seconds for their uploads to finish (0: review what is done now).
    Idempotent: reviewed cells are left alone; returns the number of cells reviewed by this call.
    """
    from patients.models import UploadedFile, UploadStatus

    labels = _load_labels()
    if not labels:
        return 0
    reviewer = None
    for team in CareTeam.objects.filter(name__in=[REVIEWED_TEAM, PARTNER_TEAM]):
        reviewer = ensure_demo_reviewer(team)
    study_ids = REVIEWED_PATIENTS + tuple(p.study_id for p in PARTNER_PATIENTS)  # :data:`SEEDED_REVIEWS`
    files = UploadedFile.objects.filter(sha256__in=list(labels), upload__draw__patient__study_id__in=study_ids)
    deadline = time.monotonic() + wait_s
    reviewed = 0
    while True:
        ready = files.filter(upload__status=UploadStatus.DONE, upload__events__reviewed_call="").distinct()
        for f in ready.select_related("upload__draw__patient__care_team"):
            counts_apoptotic = f.upload.draw.patient.care_team.name in COUNTS_APOPTOTIC
            reviewed += _review_upload(f.upload, labels[f.sha256], reviewer, counts_apoptotic)
        pending = files.filter(upload__status__in=[UploadStatus.QUEUED, UploadStatus.RUNNING]).count()
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(poll_s)
    if reviewed:
        log(f"  {reviewed} cells of {', '.join(study_ids)} reviewed by {DEMO_REVIEWER} "
            f"(the generator's labels; {PARTNER_TEAM} counts apoptotic CTCs)")
    return reviewed
