"""factory_boy factories for the clinical domain."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from importlib import import_module

import factory
from django.contrib.auth import get_user_model
from django.utils import timezone

from patients import models


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.django.Password("pw-for-tests-only")


class CareTeamFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.CareTeam

    name = factory.Sequence(lambda n: f"Team {n}")
    site = "Site A"


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.Membership

    team = factory.SubFactory(CareTeamFactory)
    user = factory.SubFactory(UserFactory)
    role = models.Role.ONCOLOGIST


def cancer_type(code: str = "breast_metastatic") -> models.CancerType:
    """The cancer types of the data migration (recreated after a transactional test's flush)."""
    rows = {c[0]: c for c in import_module("patients.migrations.0002_cancer_types").CANCER_TYPES}
    _, name, cutoff, ref = rows[code]
    return models.CancerType.objects.get_or_create(
        code=code, defaults={"name": name, "ctc_cutoff": cutoff, "cutoff_reference": ref}
    )[0]


class TrialFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.Trial

    code = factory.Sequence(lambda n: f"trial-{n}")
    title = "A randomised trial"


class TrialArmFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.TrialArm

    trial = factory.SubFactory(TrialFactory)
    code = factory.Sequence(lambda n: f"ARM{n}")


class PatientFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.Patient

    study_id = factory.Sequence(lambda n: f"PT-{n:04d}")
    cancer_type = factory.LazyFunction(cancer_type)
    stage = "IV"
    diagnosis_date = dt.date(2025, 1, 15)
    care_team = factory.SubFactory(CareTeamFactory)


class TreatmentLineFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.TreatmentLine

    patient = factory.SubFactory(PatientFactory)
    line_number = factory.Sequence(lambda n: n + 1)
    regimen = "Paclitaxel"
    agents = "paclitaxel"
    start_date = dt.date(2025, 2, 1)


class ClinicalEventFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.ClinicalEvent

    patient = factory.SubFactory(PatientFactory)
    date = dt.date(2025, 4, 1)
    kind = models.ClinicalEvent.Kind.IMAGING
    recist = models.ClinicalEvent.Recist.PR


class BloodDrawFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.BloodDraw

    patient = factory.SubFactory(PatientFactory)
    drawn_at = factory.LazyFunction(lambda: timezone.now() - dt.timedelta(days=3))
    volume_ml = Decimal("7.5")
    timepoint = "baseline"


class ImagingUploadFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.ImagingUpload

    draw = factory.SubFactory(BloodDrawFactory)
    channels = ["DAPI", "CK", "AF", "CD45"]
    status = models.UploadStatus.DONE
    progress = 100
    model_version = "test-model"


class CellEventFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.CellEvent

    upload = factory.SubFactory(ImagingUploadFactory)
    draw = factory.LazyAttribute(lambda o: o.upload.draw)
    index = factory.Sequence(lambda n: n)
    source = factory.LazyAttribute(lambda o: f"event{o.index:03d}.tif")
    x = 80.0
    y = 80.0
    call = models.Call.NON_CTC
    ctc_probability = 0.1
    margin = factory.LazyAttribute(lambda o: abs(o.ctc_probability - 0.5))
    # A CTC call comes with the CTC category unless a test says otherwise: a disagreement makes the call
    # "unsure" and its draw "indeterminate until reviewed" (issue 14, patients/summary.py).
    category = factory.LazyAttribute(lambda o: "ctc" if o.call == models.Call.CTC else "leukocyte")
