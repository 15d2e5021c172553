"""The demo cohort that `make run` shows."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.contrib.auth import authenticate
from django.core.management import call_command

from patients.models import BloodDraw, ImagingUpload, Patient, Trial

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def seeded(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        call_command("seed_demo", "--events-per-draw", "1", verbosity=0)
        yield
        Patient.objects.all().delete()


def test_cohort_spans_two_cancer_types_and_a_two_arm_trial(seeded):
    patients = Patient.objects.all()
    assert patients.count() >= 40
    assert patients.values("cancer_type").distinct().count() >= 2
    trial = Trial.objects.get(code="CTC-ARM-01")
    assert trial.arms.count() == 2
    assert {p.arm.code for p in patients.filter(trial=trial)} == {"A", "B"}


def test_each_patient_has_lines_events_and_four_to_eight_draws(seeded):
    for p in Patient.objects.exclude(study_id__startswith="DEMO-S"):
        assert 2 <= p.treatment_lines.count() <= 3, p
        assert p.clinical_events.exists(), p
        assert 4 <= p.draws.count() <= 9, p  # one patient has a same-day repeat draw


def test_outcome_cohort_for_the_survival_page(seeded):
    """Issue 14: >= 40 patients across two arms with outcomes; outcome-only patients carry 2-3 draws."""
    from patients.outcomes import check_outcomes, survival_records

    trial = Trial.objects.get(code="CTC-ARM-01")
    in_trial = Patient.objects.filter(trial=trial)
    assert Patient.objects.count() >= 40 and in_trial.count() >= 36
    assert in_trial.filter(arm__code="A").count() >= 18 and in_trial.filter(arm__code="B").count() >= 18
    synthetic = Patient.objects.filter(study_id__startswith="DEMO-S")
    assert synthetic.count() == 40
    for p in synthetic:
        assert 2 <= p.draws.count() <= 3, p
        assert p.last_follow_up is not None and p.outcome_recorded_by is not None
        check_outcomes(p)  # every seeded date passes the product's own checks
        assert "Synthetic demo outcome" in p.clinical_events.first().note  # labelled as synthetic
    assert synthetic.filter(death_date__isnull=False).count() >= 5
    assert synthetic.filter(progression_date__isnull=False).count() >= 10
    records = survival_records(Patient.objects.all())
    assert all(r.pfs_months is not None and r.os_months is not None for r in records)
    assert all(r.pfs_months <= r.os_months for r in records)


def test_every_draw_has_a_queued_event_gallery(seeded):
    assert BloodDraw.objects.count() >= 20
    assert ImagingUpload.objects.filter(kind="events").count() == BloodDraw.objects.count()
    assert not BloodDraw.objects.filter(uploads__isnull=True).exists()


def test_two_draws_on_one_day_exist_for_the_timeline(seeded):
    from django.db.models import Count
    from django.db.models.functions import TruncDate

    same_day = (BloodDraw.objects.annotate(day=TruncDate("drawn_at")).values("patient", "day")
                .annotate(n=Count("pk")).filter(n__gt=1))
    assert same_day.exists()


def test_demo_login_works_and_seeding_is_idempotent(seeded):
    assert authenticate(username="demo", password="demo-password") is not None
    before = (Patient.objects.count(), BloodDraw.objects.count())
    call_command("seed_demo", "--events-per-draw", "1", verbosity=0)
    assert (Patient.objects.count(), BloodDraw.objects.count()) == before


def test_demo_user_sees_the_whole_demo_cohort(seeded):
    from django.contrib.auth import get_user_model

    demo = get_user_model().objects.get(username="demo")
    assert Patient.objects.for_user(demo).count() == Patient.objects.count()


def test_the_demo_logins_belong_to_the_teams_the_readme_names_and_neither_opens_the_admin(seeded):
    """README, Quick start: demo is an oncologist in all three demo teams (and coordinates the demo
    trial), demo-admin an administrator of the same three, neither a Django superuser; a user of one
    team sees that team only."""
    from django.contrib.auth import get_user_model
    from django.test import Client

    from patients.demo import DEMO_ADMIN, DEMO_PASSWORD, DEMO_USER
    from patients.models import CareTeam, Role
    from tests import factories

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    teams = set(CareTeam.objects.values_list("name", flat=True))
    assert teams == {"Breast oncology", "GI oncology", "Partner lab (wide frames, no AF)"}
    assert "oncologist in all three demo care teams" in readme
    assert all(f'"{name}"' in readme for name in teams), teams
    for username, role in ((DEMO_USER, Role.ONCOLOGIST), (DEMO_ADMIN, Role.ADMIN)):
        user = get_user_model().objects.get(username=username)
        assert {(m.team.name, m.role) for m in user.memberships.select_related("team")} == {(t, role) for t in teams}
        assert not user.is_staff and not user.is_superuser
        browser = Client()
        assert browser.login(username=username, password=DEMO_PASSWORD)
        r = browser.get("/admin/patients/cancertype/")
        assert r.status_code == 302 and "/admin/login/" in r["Location"], username
    assert Trial.objects.get(code="CTC-ARM-01").coordinators.filter(username=DEMO_USER).exists()
    gi_only = factories.UserFactory(username="gi-only")
    factories.MembershipFactory(team=CareTeam.objects.get(name="GI oncology"), user=gi_only, role=Role.ONCOLOGIST)
    assert sorted(Patient.objects.for_user(gi_only).values_list("study_id", flat=True)) == [
        "DEMO-C01", "DEMO-C02", "DEMO-C03", "DEMO-C04"]
    gi_only.delete()


def test_a_superuser_edits_a_cut_off_in_the_admin():
    """README: cut-offs are editable in the Django admin by a superuser (createsuperuser / create_user --superuser)."""
    from django.contrib.auth import get_user_model
    from django.test import Client

    from tests import factories

    breast = factories.cancer_type("breast_early")
    get_user_model().objects.create_superuser("root", "root@example.org", "pw-for-tests-only")
    browser = Client()
    assert browser.login(username="root", password="pw-for-tests-only")
    url = f"/admin/patients/cancertype/{breast.pk}/change/"
    assert browser.get(url).status_code == 200
    r = browser.post(url, {"code": breast.code, "name": breast.name, "ctc_cutoff": 2,
                           "cutoff_reference": breast.cutoff_reference})
    assert r.status_code == 302, r.content.decode()[-2000:]
    breast.refresh_from_db()
    assert breast.ctc_cutoff == 2


def test_demo_galleries_hold_no_blank_images():
    """Every rendering the generator picks (8-bit, raw counts, float) must survive storage:
    float exports cast to integers became all-0/1 images, shown as black squares and counted."""
    import io
    import zipfile

    import numpy as np
    import tifffile

    from patients.demo import gallery_zip

    with zipfile.ZipFile(io.BytesIO(gallery_zip(np.random.default_rng(3), 10, 30))) as zf:
        images = [tifffile.imread(io.BytesIO(zf.read(name))) for name in zf.namelist()]
    assert len(images) == 40
    dtypes = set()
    for img in images:
        dtypes.add(img.dtype.kind)
        dapi = img[0].astype(np.float64)
        # A nucleus stands out from the background: at least 16 grey levels or counts, or 2 % of
        # a float image's [0, 1] (an integer-cast float export spans 0 or 1).
        assert np.ptp(dapi) > (0.02 if img.dtype.kind == "f" else 16), (img.dtype, dapi.min(), dapi.max())
    assert "f" in dtypes and "u" in dtypes  # the float exports are among them


def test_nothing_seeded_lies_in_the_future(seeded):
    from django.utils import timezone

    from patients.models import ClinicalEvent, TreatmentLine

    today = timezone.localdate()
    assert not ClinicalEvent.objects.filter(date__gt=today).exists()
    assert not TreatmentLine.objects.filter(start_date__gt=today).exists()
    assert not BloodDraw.objects.filter(drawn_at__gt=timezone.now()).exists()
