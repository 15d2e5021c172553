"""What the API reads and writes. Validation messages are meant for the person at the client."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import models
from django.utils import timezone
from django.utils.functional import cached_property
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.reverse import reverse

from patients import drawdomain
from patients.drawdomain import DrawDomain
from patients.models import (
    BloodDraw,
    Call,
    CancerType,
    CareTeam,
    CellEvent,
    ClassifierVersion,
    ClinicalEvent,
    DrawSummary,
    ImagingUpload,
    LabTraining,
    Patient,
    Role,
    SummaryStatus,
    TreatmentLine,
    Trial,
    TrialArm,
)
from patients.outcomes import check_outcomes
from patients.review import CATEGORIES
from patients.roles import Action, role_allows
from patients.schedule import at_or_above_cutoff
from patients.scoping import is_admin
from patients.stats import count_ci, per_7_5ml_ci
from patients.summary import summary_status
from patients.validation import check_drawn_at, check_event_date, check_study_id, check_timepoint

#: Outcome dates (issue 14): progression-free and overall survival derive from them.
OUTCOME_FIELDS = ("progression_date", "death_date", "last_follow_up")

#: One answer for a care team that does not exist and one the user is not a member of: the
#: second must not confirm that the id exists, nor name the team (docs/security.md).
_NO_SUCH_TEAM = "No care team {pk_value} among yours: give the id of a care team you belong to."
#: One answer for a study ID already in use, whether or not the user can see that patient.
_STUDY_ID_TAKEN = ("Study ID {value} cannot be used: study IDs are unique across the site (compared without "
                   "case). Check the ID issued for this patient, or ask an administrator.")


class CodeRelatedField(serializers.SlugRelatedField):
    """A related object by its code; a value PostgreSQL cannot compare (a NUL) is simply not a code.

    DRF's ``SlugRelatedField`` sends the raw string to the database; one with a NUL character
    raised a DataError there (a 500, found by tests/api/test_fuzz.py).
    """

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, str) and "\x00" in data:
            self.fail("does_not_exist", slug_name=self.slug_field, value=data.replace("\x00", "\\x00"))
        return super().to_internal_value(data)


def _check(check: Any, value: Any) -> None:
    """Run a ``patients.validation`` check; its Django ValidationError becomes DRF's (a 400 on the field)."""
    try:
        check(value)
    except DjangoValidationError as err:
        raise serializers.ValidationError(err.messages) from err


def _user(serializer: serializers.Serializer) -> Any:
    return serializer.context["request"].user


def _url(serializer: serializers.Serializer, name: str, pk: int) -> str:
    return reverse(name, args=[pk], request=serializer.context.get("request"))


class ListedIdentityField(serializers.HyperlinkedIdentityField):
    """A hyperlink to the object that resolves its route once per request, not once per row.

    A list page of 50 draws carries four links each: 200 ``reverse()`` +
    ``build_absolute_uri`` calls were a fifth of ``/api/draws/``. The URL differs between
    rows only by the pk, so the first row's URL, made with a placeholder pk, is a template
    for the others (same scheme, host, prefix and route as ``reverse`` would give).
    """

    _PLACEHOLDER = "2147483646"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._template: tuple[Any, str, str] | None = None  # (request, before pk, after pk)

    def get_url(self, obj: Any, view_name: str, request: Any, format: str | None) -> str | None:  # noqa: A002
        pk = getattr(obj, self.lookup_field, None)
        if pk in (None, "") or format:
            return super().get_url(obj, view_name, request, format)
        if self._template is None or self._template[0] is not request:
            url = self.reverse(view_name, kwargs={self.lookup_url_kwarg: self._PLACEHOLDER}, request=request)
            marker = f"/{self._PLACEHOLDER}/"
            if url.count(marker) != 1:  # a route that does not end in /<pk>/...: no shortcut
                return super().get_url(obj, view_name, request, format)
            before, after = url.split(marker)
            self._template = (request, before, after)
        _, before, after = self._template
        return f"{before}/{pk}/{after}"


# --- reference data ------------------------------------------------------------------------------

class CancerTypeSerializer(serializers.ModelSerializer):
    class Meta:
        model = CancerType
        fields = ["code", "name", "ctc_cutoff", "cutoff_reference"]


class CareTeamSerializer(serializers.ModelSerializer):
    role = serializers.SerializerMethodField(help_text="Your role in this team (null: not a member)")

    class Meta:
        model = CareTeam
        fields = ["id", "name", "site", "role"]

    @extend_schema_field(serializers.ChoiceField(choices=Role.choices, allow_null=True))
    def get_role(self, team: CareTeam) -> str | None:
        roles = self.context.get("roles_by_team", {})
        return roles.get(team.pk)


class TrialArmSerializer(serializers.ModelSerializer):
    class Meta:
        model = TrialArm
        fields = ["id", "code", "description"]


class TrialSerializer(serializers.ModelSerializer):
    arms = TrialArmSerializer(many=True, read_only=True)

    class Meta:
        model = Trial
        fields = ["id", "code", "title", "draw_interval_days", "arms"]


class ClassifierVersionSerializer(serializers.ModelSerializer):
    class Meta:
        model = ClassifierVersion
        fields = ["id", "version", "sha256", "metadata", "is_active", "retired", "created_at"]


# --- patients and their records ------------------------------------------------------------------

class PatientSerializer(serializers.ModelSerializer):
    url = serializers.HyperlinkedIdentityField(view_name="api:patient-detail")
    cancer_type = CodeRelatedField(
        slug_field="code", queryset=CancerType.objects.all(),
        help_text="breast_metastatic, prostate_crpc, colorectal_metastatic or breast_early",
    )
    care_team = serializers.PrimaryKeyRelatedField(
        queryset=CareTeam.objects.all(), required=False,
        help_text="Care team id; optional when you belong to exactly one team",
        error_messages={"does_not_exist": _NO_SUCH_TEAM},
    )
    # Declared, not generated: the model's unique=True would add a validator whose message ("already
    # exists") differs from ours; uniqueness is checked in validate_study_id with one message.
    study_id = serializers.CharField(max_length=40, help_text="Pseudonymous study ID: letters A-Z, digits, "
                                                              "'.', '_', '-' (patients.validation.STUDY_ID_RE)")
    trial = CodeRelatedField(slug_field="code", queryset=Trial.objects.all(), required=False,
                             allow_null=True, help_text="Trial code")
    arm = serializers.CharField(source="arm.code", required=False, allow_null=True, allow_blank=True,
                                help_text="Arm code within the trial")
    outcome_recorded_by = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True,
                                                       help_text="Who last recorded the outcome dates")

    class Meta:
        model = Patient
        fields = ["id", "url", "study_id", "mrn", "cancer_type", "stage", "diagnosis_date", "care_team", "trial",
                  "arm", "enrolled_on", "created_at", *OUTCOME_FIELDS, "outcome_recorded_by", "outcome_recorded_at"]
        read_only_fields = ["created_at", "outcome_recorded_at"]

    def validate_care_team(self, team: CareTeam) -> CareTeam:
        user = _user(self)
        if is_admin(user):
            return team
        role = team.memberships.filter(user=user).values_list("role", flat=True).first()
        if role is None:  # the same words as for an id that does not exist
            raise serializers.ValidationError(_NO_SUCH_TEAM.format(pk_value=team.pk))
        if not role_allows(role, Action.EDIT_RECORDS):  # the role in *this* team: patients.roles
            raise serializers.ValidationError(f"Your role in {team.name} ({role}) may not add or move patients.")
        return team

    def validate_study_id(self, value: str) -> str:
        _check(check_study_id, value)
        clash = Patient.objects.filter(study_id__iexact=value)
        if self.instance is not None:
            clash = clash.exclude(pk=self.instance.pk)
        if clash.exists():  # all patients, visible or not: one message either way
            raise serializers.ValidationError(_STUDY_ID_TAKEN.format(value=value))
        return value

    def validate_diagnosis_date(self, value: dt.date | None) -> dt.date | None:
        if value and value > timezone.localdate():
            raise serializers.ValidationError("The diagnosis date is in the future.")
        return value

    def validate(self, attrs: dict) -> dict:
        user = _user(self)
        if "care_team" not in attrs and self.instance is None:
            teams = list(CareTeam.objects.filter(memberships__user=user).distinct()[:2])
            if len(teams) != 1:
                raise serializers.ValidationError(
                    {"care_team": ["Give the care team id: you belong to "
                                   + ("no care team." if not teams else "several care teams.")]}
                )
            attrs["care_team"] = self.validate_care_team(teams[0])
        trial = attrs.get("trial", getattr(self.instance, "trial", None))
        arm_given = "arm" in attrs
        arm_code = (attrs.pop("arm") or {}).get("code") if arm_given else None
        if arm_code:
            if trial is None:
                raise serializers.ValidationError({"arm": ["An arm needs a trial: give `trial` too."]})
            arm = TrialArm.objects.filter(trial=trial, code=arm_code).first()
            if arm is None:
                codes = ", ".join(trial.arms.values_list("code", flat=True)) or "none"
                raise serializers.ValidationError(
                    {"arm": [f"Trial {trial.code} has no arm {arm_code!r} (arms: {codes})."]}
                )
            attrs["arm"] = arm
        elif arm_given or ("trial" in attrs and self.instance is not None and self.instance.trial != trial):
            attrs["arm"] = None
        if attrs.get("enrolled_on") and trial is None:
            raise serializers.ValidationError({"enrolled_on": ["An enrolment date needs a trial."]})
        if any(name in attrs for name in OUTCOME_FIELDS):
            # The same checks as the admin and the dashboard form (patients/outcomes.py).
            probe = Patient(pk=getattr(self.instance, "pk", None))
            for name in (*OUTCOME_FIELDS, "diagnosis_date"):
                setattr(probe, name, attrs.get(name, getattr(self.instance, name, None)))
            try:
                check_outcomes(probe)
            except DjangoValidationError as err:
                raise serializers.ValidationError(err.message_dict) from err
            attrs["outcome_recorded_by"] = user
            attrs["outcome_recorded_at"] = timezone.now()
        return attrs


class TreatmentLineSerializer(serializers.ModelSerializer):
    patient = serializers.PrimaryKeyRelatedField(queryset=Patient.objects.none())

    class Meta:
        model = TreatmentLine
        fields = ["id", "patient", "line_number", "regimen", "agents", "intent", "start_date", "end_date",
                  "stop_reason"]
        validators: list = []  # the unique (patient, line_number) check is done in validate() with a clear message

    def get_fields(self) -> dict:
        fields = super().get_fields()
        if "request" in self.context:
            fields["patient"].queryset = Patient.objects.for_user(_user(self))
        return fields

    def validate(self, attrs: dict) -> dict:
        start = attrs.get("start_date", getattr(self.instance, "start_date", None))
        end = attrs.get("end_date", getattr(self.instance, "end_date", None))
        if start and end and end < start:
            raise serializers.ValidationError({"end_date": ["The end date is before the start date."]})
        patient = attrs.get("patient", getattr(self.instance, "patient", None))
        number = attrs.get("line_number", getattr(self.instance, "line_number", None))
        clash = TreatmentLine.objects.filter(patient=patient, line_number=number)
        if self.instance is not None:
            clash = clash.exclude(pk=self.instance.pk)
        if clash.exists():
            raise serializers.ValidationError({"line_number": [f"Line {number} already exists for this patient."]})
        return attrs


class ClinicalEventSerializer(serializers.ModelSerializer):
    patient = serializers.PrimaryKeyRelatedField(queryset=Patient.objects.none())

    class Meta:
        model = ClinicalEvent
        fields = ["id", "patient", "date", "kind", "recist", "note"]

    def get_fields(self) -> dict:
        fields = super().get_fields()
        if "request" in self.context:
            fields["patient"].queryset = Patient.objects.for_user(_user(self))
        return fields

    def validate_date(self, value: dt.date) -> dt.date:
        try:
            check_event_date(value)
        except DjangoValidationError as err:
            raise serializers.ValidationError(err.messages) from err
        return value

    def validate(self, attrs: dict) -> dict:
        kind = attrs.get("kind", getattr(self.instance, "kind", None))
        recist = attrs.get("recist", getattr(self.instance, "recist", ""))
        if recist and kind != ClinicalEvent.Kind.IMAGING:
            raise serializers.ValidationError({"recist": ["A RECIST category belongs to an imaging response."]})
        return attrs


# --- draws, summaries, uploads, events ------------------------------------------------------------

class DrawSummarySerializer(serializers.ModelSerializer):
    # Issue 14: how sure the count is (patients/summary.py, patients/stats.py). Appended fields.
    ctc_count_ci95 = serializers.SerializerMethodField(
        help_text="Exact (Garwood) 95 % Poisson interval of the count, [low, high] cells")
    ctc_per_7_5ml_ci95 = serializers.SerializerMethodField(
        help_text="The count's 95 % Poisson interval carried to CTC/7.5 mL through the analysed volume, [low, high]")
    ctc_count_range = serializers.SerializerMethodField(
        help_text="Model uncertainty: [count without unsure unreviewed CTC calls, count with unsure non-CTC calls]")
    ctc_status = serializers.SerializerMethodField(
        help_text="favorable | unfavorable | indeterminate until reviewed (preliminary and the model range "
                  "straddles the cut-off)")
    interval_note = serializers.SerializerMethodField(
        help_text="'indeterminate at this volume' when the Poisson interval straddles the cut-off, else "
                  "'95% CI wholly at or above the cut-off' / '95% CI wholly below the cut-off'")

    class Meta:
        model = DrawSummary
        fields = ["events_analysed", "ctc_count", "ctc_per_7_5ml", "malignant_fraction", "reviewed_events",
                  "status", "model_version", "updated_at", "ctc_count_ci95", "ctc_per_7_5ml_ci95",
                  "ctc_count_range", "ctc_status", "interval_note"]

    @extend_schema_field(serializers.ListField(child=serializers.FloatField(), min_length=2, max_length=2))
    def get_ctc_count_ci95(self, s: DrawSummary) -> list[float]:
        return list(count_ci(s.ctc_count))

    @extend_schema_field(serializers.ListField(child=serializers.FloatField(), min_length=2, max_length=2))
    def get_ctc_per_7_5ml_ci95(self, s: DrawSummary) -> list[float]:
        return list(per_7_5ml_ci(s.ctc_count, float(s.draw.volume_ml)))

    @extend_schema_field(serializers.ListField(child=serializers.IntegerField(), min_length=2, max_length=2))
    def get_ctc_count_range(self, s: DrawSummary) -> list[int]:
        return [s.ctc_count if s.ctc_count_min is None else s.ctc_count_min,
                s.ctc_count if s.ctc_count_max is None else s.ctc_count_max]

    def _status(self, s: DrawSummary) -> tuple[str | None, str]:
        return summary_status(s.draw, s)

    @extend_schema_field(OpenApiTypes.STR)
    def get_ctc_status(self, s: DrawSummary) -> str | None:
        return self._status(s)[0]

    @extend_schema_field(OpenApiTypes.STR)
    def get_interval_note(self, s: DrawSummary) -> str:
        return self._status(s)[1]


class DomainCheckSerializer(serializers.Serializer):
    """Whether an upload's images look like what the model was validated on (classifier.domain)."""

    status = serializers.ChoiceField(choices=[("in_domain", "in_domain"), ("shifted", "shifted")],
                                     help_text="shifted: these images differ from the validated domain; review every "
                                               "call")
    score = serializers.FloatField(min_value=0.0, max_value=1.0,
                                   help_text="0 = like the validated images, 1 = clearly different; shifted from 0.5")
    reasons = serializers.ListField(child=serializers.CharField(), help_text="Plain-language reasons")


class DrawDomainCheckSerializer(DomainCheckSerializer):
    """A draw's domain check: its finished uploads' checks merged (patients.drawdomain)."""

    status = serializers.ChoiceField(choices=[("in_domain", "in_domain"), ("shifted", "shifted")],
                                     help_text="shifted: any finished upload of the draw is shifted; review every "
                                               "call")
    score = serializers.FloatField(min_value=0.0, max_value=1.0, allow_null=True,
                                   help_text="The worst (highest) score of the finished uploads; null when none "
                                             "stored one")
    reasons = serializers.ListField(child=serializers.CharField(),
                                    help_text="The reasons of the shifted uploads (of all, when none is shifted), "
                                              "each once, at most 10")


DRAW_DOMAIN_HELP = ("The domain check of the images behind the count: the checks of the draw's finished uploads "
                    "merged (withdrawn and failed uploads do not count); null when none carries a check")


def _domain_dict(domain: DrawDomain | None) -> dict | None:
    if domain is None:
        return None
    return {"status": domain.status, "score": domain.score, "reasons": list(domain.reasons)}


class DrawDomainListSerializer(serializers.ListSerializer):
    """Many draws (or summaries): the domain checks of the whole page in one query
    (:func:`patients.drawdomain.for_draws`), not one per row."""

    def to_representation(self, data: Any) -> list:
        rows = list(data.all() if isinstance(data, models.manager.BaseManager) else data)
        ids = {self.child.draw_id_of(row) for row in rows}
        self.child.domains = (ids, drawdomain.for_draws(ids))
        return super().to_representation(rows)


class DrawDomainMixin:
    """``domain_check`` of a draw (``draw_id_of`` says which): from the list's bulk read when there is
    one, else read for this draw alone (a detail, a create: one query)."""

    #: (draw ids read in bulk, their checks) set by DrawDomainListSerializer
    domains: tuple[set[int], dict[int, DrawDomain]] | None = None

    def draw_id_of(self, obj: Any) -> int:
        raise NotImplementedError

    @extend_schema_field(DrawDomainCheckSerializer(allow_null=True))
    def get_domain_check(self, obj: Any) -> dict | None:
        draw_id = self.draw_id_of(obj)
        if self.domains is not None and draw_id in self.domains[0]:
            return _domain_dict(self.domains[1].get(draw_id))
        return _domain_dict(drawdomain.for_draws([draw_id]).get(draw_id))


class DrawSummaryListSerializer(DrawDomainMixin, DrawSummarySerializer):
    """A summary row with its draw and patient, for ``/api/summaries/``."""

    draw = serializers.PrimaryKeyRelatedField(read_only=True)
    patient = serializers.IntegerField(source="draw.patient_id", read_only=True)
    study_id = serializers.CharField(source="draw.patient.study_id", read_only=True)
    drawn_at = serializers.DateTimeField(source="draw.drawn_at", read_only=True)
    timepoint = serializers.CharField(source="draw.timepoint", read_only=True)
    unfavorable = serializers.SerializerMethodField(
        help_text="The count itself at or above the cancer type's cut-off (the red of the pages), whatever "
                  "ctc_status reads: while that is 'indeterminate until reviewed' this may be true or false. "
                  "ctc_status is the status to report")
    domain_check = serializers.SerializerMethodField(help_text=DRAW_DOMAIN_HELP)

    class Meta(DrawSummarySerializer.Meta):
        fields = ["draw", "patient", "study_id", "drawn_at", "timepoint", *DrawSummarySerializer.Meta.fields,
                  "unfavorable", "domain_check"]
        list_serializer_class = DrawDomainListSerializer

    def draw_id_of(self, s: DrawSummary) -> int:
        return s.draw_id

    def get_unfavorable(self, s: DrawSummary) -> bool:
        return at_or_above_cutoff(s.ctc_per_7_5ml, s.draw.patient.cancer_type.ctc_cutoff)


class DrawSerializer(DrawDomainMixin, serializers.ModelSerializer):
    url = ListedIdentityField(view_name="api:draw-detail")
    patient = serializers.PrimaryKeyRelatedField(queryset=Patient.objects.none())
    study_id = serializers.CharField(source="patient.study_id", read_only=True)
    volume_ml = serializers.DecimalField(max_digits=5, decimal_places=2, coerce_to_string=False,
                                         min_value=Decimal("0.1"), max_value=Decimal("100"),
                                         help_text="Blood volume analysed, mL")
    summary = serializers.SerializerMethodField(help_text="Null until an upload of this draw has been analysed")
    # The summary's key numbers again at the top level, for clients that want one lookup.
    ctc_count = serializers.SerializerMethodField()
    ctc_per_7_5ml = serializers.SerializerMethodField()
    events_analysed = serializers.SerializerMethodField()
    status = serializers.SerializerMethodField(help_text="Summary status (null before analysis)")
    ctc_count_ci95 = serializers.SerializerMethodField(help_text="As in summary (null before analysis)")
    ctc_per_7_5ml_ci95 = serializers.SerializerMethodField(help_text="As in summary (null before analysis)")
    uploads_url = ListedIdentityField(view_name="api:draw-uploads")
    events_url = ListedIdentityField(view_name="api:draw-events")
    fhir_url = ListedIdentityField(view_name="api:draw-fhir")
    domain_check = serializers.SerializerMethodField(help_text=DRAW_DOMAIN_HELP)

    class Meta:
        model = BloodDraw
        fields = ["id", "url", "patient", "study_id", "drawn_at", "volume_ml", "timepoint", "assay", "summary",
                  "ctc_count", "ctc_per_7_5ml", "events_analysed", "status", "uploads_url", "events_url", "fhir_url",
                  "created_at", "ctc_count_ci95", "ctc_per_7_5ml_ci95", "domain_check"]
        read_only_fields = ["created_at"]
        list_serializer_class = DrawDomainListSerializer

    def draw_id_of(self, draw: BloodDraw) -> int:
        return draw.pk

    def get_fields(self) -> dict:
        fields = super().get_fields()
        if "request" in self.context:
            fields["patient"].queryset = Patient.objects.for_user(_user(self))
        return fields

    @cached_property
    def _summary_serializer(self) -> DrawSummarySerializer:
        # One nested serializer for the whole list: a new one per row rebuilt its fields
        # from the model each time, the largest single cost of /api/draws/.
        return DrawSummarySerializer(context=self.context)

    @extend_schema_field(DrawSummarySerializer(allow_null=True))
    def get_summary(self, draw: BloodDraw) -> dict | None:
        s = draw.summary_or_none
        return self._summary_serializer.to_representation(s) if s is not None else None

    @extend_schema_field(OpenApiTypes.INT)
    def get_ctc_count(self, draw: BloodDraw) -> int | None:
        s = draw.summary_or_none
        return s.ctc_count if s else None

    @extend_schema_field(OpenApiTypes.FLOAT)
    def get_ctc_per_7_5ml(self, draw: BloodDraw) -> float | None:
        s = draw.summary_or_none
        return s.ctc_per_7_5ml if s else None

    @extend_schema_field(OpenApiTypes.INT)
    def get_events_analysed(self, draw: BloodDraw) -> int | None:
        s = draw.summary_or_none
        return s.events_analysed if s else None

    @extend_schema_field(serializers.ChoiceField(choices=SummaryStatus.choices, allow_null=True))
    def get_status(self, draw: BloodDraw) -> str | None:
        s = draw.summary_or_none
        return s.status if s else None

    @extend_schema_field(serializers.ListField(child=serializers.FloatField(), allow_null=True))
    def get_ctc_count_ci95(self, draw: BloodDraw) -> list[float] | None:
        s = draw.summary_or_none
        return list(count_ci(s.ctc_count)) if s else None

    @extend_schema_field(serializers.ListField(child=serializers.FloatField(), allow_null=True))
    def get_ctc_per_7_5ml_ci95(self, draw: BloodDraw) -> list[float] | None:
        s = draw.summary_or_none
        return list(per_7_5ml_ci(s.ctc_count, float(draw.volume_ml))) if s else None

    def validate_timepoint(self, value: str) -> str:
        _check(check_timepoint, value)  # the documented character set (patients/validation.py)
        return value

    def validate_drawn_at(self, value: dt.datetime) -> dt.datetime:
        try:
            check_drawn_at(value)  # the same rule as the dashboard's form (patients/validation.py)
        except DjangoValidationError as err:
            raise serializers.ValidationError(err.messages) from err
        return value

    def validate(self, attrs: dict) -> dict:
        if self.instance is not None and "patient" in attrs and attrs["patient"] != self.instance.patient:
            raise serializers.ValidationError({"patient": ["A draw cannot move to another patient."]})
        return attrs


class UploadSerializer(serializers.ModelSerializer):
    url = serializers.HyperlinkedIdentityField(view_name="api:upload-detail")
    files = serializers.SerializerMethodField(help_text="Original file names, in upload order")
    events_url = serializers.SerializerMethodField()
    domain_check = DomainCheckSerializer(read_only=True, allow_null=True,
                                         help_text="Null until the upload is analysed")

    class Meta:
        model = ImagingUpload
        fields = ["id", "url", "draw", "kind", "channels", "pixel_size_um", "status", "progress", "stage", "error",
                  "model_version", "device", "files", "events_url", "created_at", "started_at", "finished_at",
                  "withdrawn_at", "withdraw_reason", "domain_check"]
        read_only_fields = fields

    def get_files(self, upload: ImagingUpload) -> list[str]:
        return [f.original_name for f in upload.files.all()]

    def get_events_url(self, upload: ImagingUpload) -> str:
        return _url(self, "api:draw-events", upload.draw_id) + f"?upload={upload.pk}"


class UploadCreatedSerializer(UploadSerializer):
    """The 202 answer to an upload: the upload, and warnings that did not stop it."""

    warnings = serializers.ListField(child=serializers.CharField(), read_only=True,
                                     help_text="E.g. the draw was final (now preliminary again), a file is identical "
                                               "to one already uploaded to this draw")

    class Meta(UploadSerializer.Meta):
        fields = [*UploadSerializer.Meta.fields, "warnings"]
        read_only_fields = fields


class WithdrawSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=2000, help_text="Why the upload is withdrawn (required)")


class UploadCreateSerializer(serializers.Serializer):
    """The multipart form of ``POST /api/draws/{id}/uploads/`` (documentation and parsing)."""

    file = serializers.ListField(
        child=serializers.FileField(), allow_empty=False,
        help_text="One or more TIFF/PNG/JPEG files, or a zip of them (repeat the `file` part)",
    )
    channels = serializers.CharField(help_text="Channel names in file order, comma-separated, e.g. DAPI,CK,AF,CD45")
    kind = serializers.ChoiceField(choices=ImagingUpload.Kind.choices, default=ImagingUpload.Kind.EVENTS)
    pixel_size_um = serializers.FloatField(required=False, allow_null=True, min_value=0.01, max_value=50)


class CellEventSerializer(serializers.ModelSerializer):
    url = serializers.HyperlinkedIdentityField(view_name="api:event-detail")
    thumbnail_url = serializers.HyperlinkedIdentityField(view_name="api:event-thumbnail",
                                                         help_text="PNG strip, one tile per channel")
    final_call = serializers.CharField(read_only=True, help_text="The reviewed call if any, else the model's")
    # Null before a review, "" for reviewed_call: the schema says so (the fuzzer in tests/api/test_fuzz.py checks).
    reviewed_by = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)
    reviewed_call = serializers.ChoiceField(choices=Call.choices, allow_blank=True, read_only=True,
                                            help_text="The reviewer's call; empty before a review")
    # Issue 13: the reviewer's category correction (a training label), and the category that stands.
    reviewed_category = serializers.CharField(read_only=True, allow_blank=True,
                                              help_text="The reviewer's category; empty unless corrected")
    final_category = serializers.CharField(read_only=True, help_text="The reviewed category if any, else the model's")

    class Meta:
        model = CellEvent
        fields = ["id", "url", "upload", "draw", "index", "source", "x", "y", "call", "ctc_probability", "category",
                  "category_probabilities", "reviewed_call", "final_call", "reviewed_by", "review_reason",
                  "reviewed_at", "thumbnail_url", "reviewed_category", "final_category"]
        read_only_fields = fields


class CellEventDetailSerializer(CellEventSerializer):
    class Meta(CellEventSerializer.Meta):
        fields = [*CellEventSerializer.Meta.fields, "explanation"]
        read_only_fields = fields


class ReviewSerializer(serializers.Serializer):
    call = serializers.ChoiceField(choices=Call.choices, help_text="Your call for this cell")
    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000,
                                   help_text="Required when your call differs from the model's, or to change a review")
    change = serializers.BooleanField(
        required=False, default=False,
        help_text="Change an existing review (needs a reason); without it a reviewed cell answers 409")
    category = serializers.ChoiceField(
        choices=[(c, c) for c in CATEGORIES], required=False, allow_blank=True, default="",
        help_text="Correct the cell's category (a training label) when the model's is wrong; empty: keep it")


class ConfirmRemainingSerializer(serializers.Serializer):
    cells = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=2**63 - 1), required=False, max_length=100_000,
        help_text="The unreviewed cells your client showed (only these are confirmed, so a cell that arrived "
                  "since is never confirmed unseen); omit to confirm every unreviewed cell of the draw")
    acknowledge_shifted = serializers.BooleanField(
        required=False, default=False,
        help_text="Required (true) when the draw's images differ from the validated ones (its domain_check is "
                  "shifted): the reviewer has looked at them; without it the request is refused (400)")


class ConfirmedSerializer(serializers.Serializer):
    confirmed = serializers.ListField(child=serializers.IntegerField(), help_text="The cells confirmed")
    summary = DrawSummarySerializer(allow_null=True, help_text="The draw's summary after the action")


# --- re-running a draw with another version, lab-model training (issue 13, points 4 and 5) --------

class RerunSerializer(serializers.Serializer):
    version = serializers.CharField(max_length=80, help_text="The classifier version to re-run the draw with "
                                                             "(its name in /api/models/)")


class RerunQueuedSerializer(serializers.Serializer):
    draw = serializers.IntegerField()
    version = serializers.CharField()
    uploads = serializers.ListField(child=serializers.IntegerField(), help_text="The uploads queued (bulk lane)")
    counted_version = serializers.ListField(child=serializers.CharField(),
                                            help_text="The version the draw's count comes from (unchanged)")


class RerunResultSerializer(serializers.Serializer):
    version = serializers.CharField()
    cells = serializers.IntegerField(help_text="Cells this version has called")
    of = serializers.IntegerField(help_text="Counted cells of the draw")
    complete = serializers.BooleanField()
    ctc = serializers.IntegerField(help_text="CTC calls of this version")
    ctc_counted = serializers.IntegerField(help_text="CTC calls of the counted version on the same cells")
    agree = serializers.FloatField(allow_null=True, help_text="Fraction of cells where both calls agree")
    kappa = serializers.FloatField(allow_null=True, help_text="Cohen's kappa with the counted calls")


class LabTrainingSerializer(serializers.ModelSerializer):
    url = serializers.HyperlinkedIdentityField(view_name="api:labtraining-detail")
    team = serializers.PrimaryKeyRelatedField(read_only=True)
    requested_by = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)
    candidate = serializers.SlugRelatedField(slug_field="version", read_only=True, allow_null=True,
                                             help_text="The registered candidate version (never active by itself)")

    class Meta:
        model = LabTraining
        fields = ["id", "url", "team", "requested_by", "status", "progress", "stage", "error", "base_version",
                  "candidate", "result", "created_at", "finished_at"]
        read_only_fields = fields


class LabTrainingCreateSerializer(serializers.Serializer):
    # An id, looked up by the view (an id past bigint is "no such team", not a database error).
    team = serializers.IntegerField(min_value=1, max_value=2**63 - 1,
                                    help_text="The care team whose reviewed cells train the lab model")


# --- cohort ---------------------------------------------------------------------------------------

class CohortArmSerializer(serializers.Serializer):
    """One (trial, arm): baseline/follow-up status and CTC conversion (patients.cohort.ArmSummary)."""

    trial = serializers.CharField()
    arm = serializers.CharField()
    label = serializers.CharField()
    patients = serializers.IntegerField()
    with_baseline = serializers.IntegerField()
    baseline_unfavorable = serializers.IntegerField()
    with_follow_up = serializers.IntegerField()
    follow_up_unfavorable = serializers.IntegerField()
    to_favorable = serializers.IntegerField()
    to_unfavorable = serializers.IntegerField()
    persistent_unfavorable = serializers.IntegerField()
    persistent_favorable = serializers.IntegerField()
    conversion_rate = serializers.FloatField(allow_null=True,
                                             help_text="Unfavorable at baseline -> favorable at follow-up, share")
    reverse_rate = serializers.FloatField(allow_null=True,
                                          help_text="Favorable at baseline -> unfavorable at follow-up, share")
    # Issue 14: exact (Clopper-Pearson) 95 % intervals of the two rates ([low, high] shares; null without patients).
    conversion_ci = serializers.ListField(child=serializers.FloatField(), allow_null=True, min_length=2, max_length=2)
    reverse_ci = serializers.ListField(child=serializers.FloatField(), allow_null=True, min_length=2, max_length=2)
    # A baseline or follow-up "indeterminate until reviewed" (preliminary, the model range straddling the
    # cut-off) is neither side of it: counted here, in no conversion class and in neither rate.
    indeterminate = serializers.IntegerField(
        help_text="Patients with a follow-up whose baseline or follow-up is indeterminate until reviewed: no "
                  "conversion class, left out of both rates and their intervals")
    baseline_indeterminate = serializers.IntegerField(
        help_text="Of with_baseline: baseline indeterminate until reviewed (not in baseline_unfavorable)")
    follow_up_indeterminate = serializers.IntegerField(
        help_text="Of with_follow_up: follow-up indeterminate until reviewed (not in follow_up_unfavorable)")


class WaterfallBarSerializer(serializers.Serializer):
    study_id = serializers.CharField()
    arm = serializers.CharField()
    change_pct = serializers.FloatField(help_text="CTC/7.5 mL change from baseline, percent (capped)")
    conversion = serializers.CharField(
        help_text="to_favorable | to_unfavorable | persistent_unfavorable | persistent_favorable | indeterminate "
                  "(the baseline or follow-up is indeterminate until reviewed)")


class CohortSerializer(serializers.Serializer):
    patients = serializers.IntegerField()
    arms = CohortArmSerializer(many=True)
    waterfall = WaterfallBarSerializer(many=True)


# --- cohort survival (issue 14) --------------------------------------------------------------------

class SurvivalGroupSerializer(serializers.Serializer):
    """One Kaplan–Meier curve (patients.outcomes.survival_analysis)."""

    key = serializers.CharField(help_text="Group code, e.g. unfavorable, ctc0, to_favorable")
    name = serializers.CharField()
    n = serializers.IntegerField()
    events = serializers.IntegerField()
    median = serializers.FloatField(allow_null=True, help_text="Median, months; null: not reached")
    median_ci95 = serializers.ListField(child=serializers.FloatField(allow_null=True), min_length=2, max_length=2,
                                        help_text="[low, high] months; null: not reached / not estimable")
    times = serializers.ListField(child=serializers.FloatField(), help_text="Step times, months (first is 0)")
    survival = serializers.ListField(child=serializers.FloatField(), help_text="S(t) at each of `times`")
    censored_times = serializers.ListField(child=serializers.FloatField(), help_text="Censoring ticks, months")
    at_risk = serializers.ListField(child=serializers.IntegerField(), help_text="At risk at each `at_risk_times`")
    reliable = serializers.BooleanField(help_text="At least 10 patients and 5 events")


class SurvivalCoxSerializer(serializers.Serializer):
    hr = serializers.FloatField(allow_null=True, help_text="Hazard ratio, unfavorable vs favorable baseline")
    ci95 = serializers.ListField(child=serializers.FloatField(allow_null=True), min_length=2, max_length=2)
    p = serializers.FloatField(allow_null=True)
    adjusted_for = serializers.ListField(child=serializers.CharField())
    covariate = serializers.CharField()


class SurvivalSerializer(serializers.Serializer):
    endpoint = serializers.ChoiceField(choices=["pfs", "os"])
    endpoint_label = serializers.CharField()
    by = serializers.ChoiceField(choices=["baseline", "ctc0", "conversion"])
    by_label = serializers.CharField()
    time_unit = serializers.CharField()
    at_risk_times = serializers.ListField(child=serializers.FloatField())
    groups = SurvivalGroupSerializer(many=True)
    logrank_p = serializers.FloatField(allow_null=True)
    cox = SurvivalCoxSerializer(allow_null=True)
    c_index = serializers.FloatField(allow_null=True, help_text="Harrell's c-index of the Cox model")
    patients = serializers.IntegerField(help_text="Patients in the filtered cohort")
    notes = serializers.ListField(child=serializers.CharField())
    follow_up = serializers.CharField(help_text="Landmark timepoint of the first follow-up ('' = first after baseline)")
    data = serializers.ListField(child=serializers.DictField(), required=False,
                                 help_text="Per patient (time, event, groups), with ?data=1")
