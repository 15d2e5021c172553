"""The clinical domain: who the patients are, what was drawn, what the classifier found.

Everything a clinician can see hangs off ``Patient.care_team``; visibility is decided
in one place for views and API alike: the rule in ``patients.scoping`` (``patient_filter``),
applied to every scoped model by ``ScopedQuerySet.for_user`` here (``Model.objects.for_user``).
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.urls import reverse
from django.utils import timezone
from simple_history.models import HistoricalRecords

from patients.scoping import patient_filter
from patients.validation import check_drawn_at, check_event_date, check_outcomes

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser, AnonymousUser


class ScopedQuerySet(models.QuerySet):
    """The queryset (as manager: ``objects``) of every model a clinician sees: ``Model.objects.for_user(user)``.

    Each scoped model names the lookup path to its patient (``scope_path``); who may see which
    patient is ``patients.scoping.patient_filter``."""

    def for_user(self, user: AbstractBaseUser | AnonymousUser) -> ScopedQuerySet:
        if not user.is_authenticated or not user.is_active:
            return self.none()
        q = patient_filter(user)
        if q is None:
            return self
        # The visible patients as a subquery (the OR over two joins can repeat a patient; in an
        # IN list that is harmless, so no distinct()). Filtering each model on its patient, not
        # on its own ids, lets PostgreSQL use the patient_id/draw_id indexes instead of
        # semi-joining the whole table with itself (CellEvent: 1.2 s -> 50 ms, docs/performance.md).
        visible = Patient._default_manager.filter(q).values("pk")
        path = getattr(self.model, "scope_path", "")
        return self.filter(pk__in=visible) if not path else self.filter(**{f"{path}in": visible})


class Role(models.TextChoices):
    ONCOLOGIST = "oncologist", "Oncologist"
    COORDINATOR = "coordinator", "Trial coordinator"
    MEMBER = "member", "Care-team member"
    REVIEWER = "reviewer", "Reviewer"
    ADMIN = "admin", "Administrator"


class CancerType(models.Model):
    """A cancer type with its prognostic CTC cut-off (data, not a constant in code)."""

    code = models.SlugField(max_length=40, unique=True)
    name = models.CharField(max_length=120)
    ctc_cutoff = models.PositiveSmallIntegerField(
        help_text="Unfavorable when CTC per 7.5 mL is at or above this value."
    )
    cutoff_reference = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class CareTeam(models.Model):
    name = models.CharField(max_length=120, unique=True)
    site = models.CharField(max_length=120, blank=True, help_text="Hospital or trial site")
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, through="Membership", related_name="care_teams")
    # Review (issue 13): every cell of this team's draws is reviewed by two people (patients/adjudication.py).
    second_review = models.BooleanField(
        default=False, help_text="Two reviewers per draw; disagreements go to adjudication")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    team = models.ForeignKey(CareTeam, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=20, choices=Role.choices, default=Role.MEMBER)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["team", "user"], name="one_membership_per_team")]

    def __str__(self) -> str:
        return f"{self.user} in {self.team} ({self.get_role_display()})"


class Trial(models.Model):
    code = models.SlugField(max_length=40, unique=True)
    title = models.CharField(max_length=200)
    draw_interval_days = models.PositiveSmallIntegerField(
        default=21, help_text="Planned days between blood draws (the visit schedule)."
    )
    coordinators = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="coordinated_trials")
    # Review (issue 13): the trial's protocol asks for two reviewers per draw (patients/adjudication.py).
    second_review = models.BooleanField(
        default=False, help_text="Two reviewers per draw; disagreements go to adjudication")

    class Meta:
        ordering = ["code"]

    def __str__(self) -> str:
        return self.code


class TrialArm(models.Model):
    trial = models.ForeignKey(Trial, on_delete=models.CASCADE, related_name="arms")
    code = models.CharField(max_length=20)
    description = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["trial", "code"]
        constraints = [models.UniqueConstraint(fields=["trial", "code"], name="unique_arm_per_trial")]

    def __str__(self) -> str:
        return f"{self.trial.code} / {self.code}"


class Patient(models.Model):
    study_id = models.CharField(max_length=40, unique=True, help_text="Pseudonymous study ID")
    mrn = models.CharField("MRN", max_length=40, blank=True, help_text="Hospital record number (optional)")
    cancer_type = models.ForeignKey(CancerType, on_delete=models.PROTECT, related_name="patients")
    stage = models.CharField(max_length=20, blank=True)
    diagnosis_date = models.DateField(null=True, blank=True)
    care_team = models.ForeignKey(CareTeam, on_delete=models.PROTECT, related_name="patients")
    trial = models.ForeignKey(Trial, on_delete=models.PROTECT, null=True, blank=True, related_name="patients")
    arm = models.ForeignKey(TrialArm, on_delete=models.PROTECT, null=True, blank=True, related_name="patients")
    enrolled_on = models.DateField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # --- Outcomes (issue 14): progression-free and overall survival derive from these and day 0
    # (patients/outcomes.py). Nullable without a database default: bench/ COPY generators stay valid.
    progression_date = models.DateField(
        null=True, blank=True, help_text="Date of progression (RECIST or clinical); empty: none so far"
    )
    death_date = models.DateField(null=True, blank=True, help_text="Date of death; empty: alive at last follow-up")
    last_follow_up = models.DateField(
        "Last follow-up", null=True, blank=True, help_text="Last date the patient was known alive and assessed"
    )
    outcome_recorded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    outcome_recorded_at = models.DateTimeField(null=True, blank=True)
    history = HistoricalRecords()

    objects = ScopedQuerySet.as_manager()
    scope_path = ""

    class Meta:
        ordering = ["study_id"]

    def __str__(self) -> str:
        return self.study_id

    def get_absolute_url(self) -> str:
        return reverse("dashboard:patient", args=[self.pk])

    def clean(self) -> None:
        if self.pk or self.progression_date or self.death_date or self.last_follow_up:
            check_outcomes(self)  # future dates, death before diagnosis, follow-up before the last draw


class TreatmentLine(models.Model):
    class Intent(models.TextChoices):
        CURATIVE = "curative", "Curative"
        NEOADJUVANT = "neoadjuvant", "Neoadjuvant"
        ADJUVANT = "adjuvant", "Adjuvant"
        PALLIATIVE = "palliative", "Palliative"
        MAINTENANCE = "maintenance", "Maintenance"

    class StopReason(models.TextChoices):
        NONE = "", "—"
        COMPLETED = "completed", "Completed as planned"
        PROGRESSION = "progression", "Progression"
        TOXICITY = "toxicity", "Toxicity"
        PATIENT_CHOICE = "patient_choice", "Patient choice"
        OTHER = "other", "Other"

    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="treatment_lines")
    line_number = models.PositiveSmallIntegerField()
    regimen = models.CharField(max_length=120)
    agents = models.CharField(max_length=300, blank=True, help_text="Comma-separated agents")
    intent = models.CharField(max_length=20, choices=Intent.choices, default=Intent.PALLIATIVE)
    start_date = models.DateField()
    end_date = models.DateField(null=True, blank=True)
    stop_reason = models.CharField(max_length=20, choices=StopReason.choices, blank=True)
    history = HistoricalRecords()

    objects = ScopedQuerySet.as_manager()
    scope_path = "patient__"

    class Meta:
        ordering = ["patient", "line_number"]
        constraints = [models.UniqueConstraint(fields=["patient", "line_number"], name="unique_line_number")]

    def __str__(self) -> str:
        return f"L{self.line_number} {self.regimen}"


class ClinicalEvent(models.Model):
    class Kind(models.TextChoices):
        IMAGING = "imaging", "Imaging response"
        SURGERY = "surgery", "Surgery"
        PROGRESSION = "progression", "Progression"
        OTHER = "other", "Other"

    class Recist(models.TextChoices):
        NONE = "", "—"
        CR = "CR", "Complete response"
        PR = "PR", "Partial response"
        SD = "SD", "Stable disease"
        PD = "PD", "Progressive disease"
        NE = "NE", "Not evaluable"

    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="clinical_events")
    date = models.DateField()
    kind = models.CharField(max_length=20, choices=Kind.choices)
    recist = models.CharField("RECIST", max_length=2, choices=Recist.choices, blank=True)
    note = models.TextField(blank=True)
    history = HistoricalRecords()

    objects = ScopedQuerySet.as_manager()
    scope_path = "patient__"

    class Meta:
        ordering = ["patient", "date"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.date}"

    def clean(self) -> None:
        try:
            check_event_date(self.date)  # forms on the model (admin) refuse future events too
        except ValidationError as err:
            raise ValidationError({"date": err.messages}) from err


class BloodDraw(models.Model):
    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="draws")
    drawn_at = models.DateTimeField()
    volume_ml = models.DecimalField(
        max_digits=5,
        decimal_places=2,
        validators=[MinValueValidator(Decimal("0.1")), MaxValueValidator(Decimal("100"))],
        help_text="Blood volume analysed, mL",
    )
    timepoint = models.CharField(max_length=40, help_text="e.g. baseline, C3D1")
    assay = models.CharField(max_length=120, default="CTC enumeration (DAPI/CK/CD45)")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    history = HistoricalRecords()

    objects = ScopedQuerySet.as_manager()
    scope_path = "patient__"

    class Meta:
        ordering = ["patient", "drawn_at", "pk"]
        indexes = [models.Index(fields=["patient", "drawn_at"])]

    def __str__(self) -> str:
        return f"{self.patient} {self.timepoint} {self.drawn_at:%Y-%m-%d}"

    def get_absolute_url(self) -> str:
        return reverse("dashboard:draw", args=[self.pk])

    @property
    def summary_or_none(self) -> DrawSummary | None:
        """This draw's :class:`DrawSummary`, or None before any of its uploads was analysed.

        A draw with a summary row is *analysed*: at least one cell of a finished upload was
        classified (a draw whose uploads were all withdrawn, or found no cell, has none; see
        ``patients.summary.recompute_summary``); no query when ``summary`` was selected or prefetched.
        """
        try:
            return self.summary
        except DrawSummary.DoesNotExist:
            return None

    def clean(self) -> None:
        try:
            check_drawn_at(self.drawn_at)  # forms on the model (admin) refuse future draws too
        except ValidationError as err:
            raise ValidationError({"drawn_at": err.messages}) from err


class ClassifierVersion(models.Model):
    """A model version known to the registry; results record which one produced them."""

    version = models.CharField(max_length=80, unique=True)
    weights_path = models.CharField(max_length=300, blank=True, help_text="Empty: the weights shipped in the package")
    sha256 = models.CharField(max_length=64, blank=True)
    metadata = models.JSONField(default=dict, blank=True, help_text="Contract, training data, metrics")
    is_active = models.BooleanField(default=False)
    retired = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.version


class UploadStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"
    #: Taken back by a user (wrong channel order, duplicate files): its events leave the count;
    #: files and rows stay for the audit trail.
    WITHDRAWN = "withdrawn", "Withdrawn"


class Lane(models.TextChoices):
    """Which Celery queue an upload's job goes to (settings.CELERY_QUEUE / CELERY_BULK_QUEUE)."""

    INTERACTIVE = "interactive", "Interactive"
    BULK = "bulk", "Bulk"


class ImagingUpload(models.Model):
    class Kind(models.TextChoices):
        EVENTS = "events", "Event gallery"
        FIELD = "field", "Field images"

    draw = models.ForeignKey(BloodDraw, on_delete=models.CASCADE, related_name="uploads")
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.EVENTS)
    channels = models.JSONField(help_text="Channel names in file order, e.g. ['DAPI','CK','CD45']")
    pixel_size_um = models.FloatField(
        null=True, blank=True, validators=[MinValueValidator(0.01), MaxValueValidator(50)]
    )
    status = models.CharField(max_length=10, choices=UploadStatus.choices, default=UploadStatus.QUEUED)
    progress = models.PositiveSmallIntegerField(default=0, validators=[MaxValueValidator(100)])
    stage = models.CharField(max_length=40, blank=True)
    error = models.TextField(blank=True)
    model_version = models.CharField(max_length=80, blank=True)
    device = models.CharField(max_length=20, blank=True)
    timings = models.JSONField(default=dict, blank=True)
    result_channels = models.JSONField(default=list, blank=True, help_text="Channel order of stored thumbnails")
    # domain check (classifier.domain): {"status": "in_domain" | "shifted", "score", "reasons"}; null until analysed
    domain_check = models.JSONField(null=True, blank=True,
                                    help_text="Whether the images look like what the model was validated on")
    attempts = models.PositiveSmallIntegerField(default=0)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    withdrawn_at = models.DateTimeField(null=True, blank=True)
    withdrawn_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    withdraw_reason = models.TextField(blank=True)
    # Operations (issue 15): the Celery queue the job goes to (interactive ahead of bulk), and the
    # worker process running it ({"worker", "host", "pid", "start"}), so any worker can tell that
    # the owner is gone and reclaim the job without a scheduler (patients.pipeline.reclaim).
    lane = models.CharField(max_length=12, choices=Lane.choices, default=Lane.INTERACTIVE)
    owner = models.JSONField(null=True, blank=True)
    history = HistoricalRecords(excluded_fields=["progress", "stage", "heartbeat_at", "owner"])

    objects = ScopedQuerySet.as_manager()
    scope_path = "draw__patient__"

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "heartbeat_at"])]

    def __str__(self) -> str:
        return f"Upload {self.pk} ({self.get_status_display()})"


def upload_file_path(instance: UploadedFile, filename: str) -> str:
    return f"uploads/{instance.upload.draw_id}/{instance.upload_id}/{filename}"


class UploadedFile(models.Model):
    upload = models.ForeignKey(ImagingUpload, on_delete=models.CASCADE, related_name="files")
    file = models.FileField(upload_to=upload_file_path, max_length=300)
    original_name = models.CharField(max_length=255)
    size = models.PositiveBigIntegerField(default=0)
    sha256 = models.CharField(max_length=64, blank=True)
    position = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["upload", "position"]

    def __str__(self) -> str:
        return self.original_name


class Call(models.TextChoices):
    CTC = "ctc", "CTC"
    NON_CTC = "non_ctc", "Not CTC"


class CellEvent(models.Model):
    upload = models.ForeignKey(ImagingUpload, on_delete=models.CASCADE, related_name="events")
    draw = models.ForeignKey(BloodDraw, on_delete=models.CASCADE, related_name="events")
    index = models.PositiveIntegerField()
    source = models.CharField(max_length=300, help_text="File name in the upload; name#k for field objects")
    x = models.FloatField()
    y = models.FloatField()
    call = models.CharField(max_length=10, choices=Call.choices)
    ctc_probability = models.FloatField()
    #: |p - threshold| of the version that made the call: small means uncertain (review_rank orders the queue).
    margin = models.FloatField(db_index=True)
    category = models.CharField(max_length=20)
    category_probabilities = models.JSONField(default=dict)
    explanation = models.JSONField(default=dict, help_text="branch_contributions, top_attributes, embedding")
    thumbnail = models.BinaryField(blank=True, help_text="PNG strip: one greyscale tile per channel")
    heatmap = models.BinaryField(blank=True, help_text="PNG, greyscale heat map of the spatial branch")
    reviewed_call = models.CharField(max_length=10, choices=Call.choices, blank=True)
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    review_reason = models.TextField(blank=True)
    reviewed_at = models.DateTimeField(null=True, blank=True)
    # Review (issue 13): the reviewer's category (a training label) when the model's is wrong,
    # and the uncertainty that orders review: |logit(p) - logit(threshold)| (patients/review.py),
    # so P 0.01 (sure, not CTC) no longer comes before counted cells at 0.35-0.50.
    reviewed_category = models.CharField(max_length=20, blank=True)
    review_rank = models.FloatField(null=True, blank=True)
    #: Two-reviewer mode: the two reviewers disagree and an adjudicator has not decided yet.
    adjudication_pending = models.BooleanField(default=False)
    history = HistoricalRecords(excluded_fields=["thumbnail", "heatmap", "explanation", "category_probabilities"])

    objects = ScopedQuerySet.as_manager()
    scope_path = "draw__patient__"

    class Meta:
        ordering = ["upload", "index"]
        constraints = [models.UniqueConstraint(fields=["upload", "index"], name="unique_event_index")]
        indexes = [
            models.Index(fields=["draw", "reviewed_call", "margin"]),
            # Review queue across draws: pending events, most uncertain first (docs/performance.md).
            models.Index(fields=["margin", "id"], condition=models.Q(reviewed_call=""),
                         name="cellevent_pending_margin"),
            # Reviewed events (a few percent): recent reviews, agreement per reviewer, index-only.
            models.Index(fields=["reviewed_at"], condition=~models.Q(reviewed_call=""),
                         include=["id", "reviewed_by", "call", "reviewed_call", "upload", "draw"],
                         name="cellevent_reviewed_at"),
            models.Index(fields=["review_rank", "id"], condition=models.Q(reviewed_call=""),
                         name="cellevent_pending_rank"),
        ]

    def __str__(self) -> str:
        return f"{self.source} ({self.call})"

    @property
    def final_call(self) -> str:
        return self.reviewed_call or self.call

    @property
    def final_category(self) -> str:
        return self.reviewed_category or self.category


class CellReview(models.Model):
    """One reviewer's call on one cell (issue 13): the first and second review and the adjudication.

    ``CellEvent.reviewed_call`` stays the call that counts; these rows keep each reviewer's own
    call so agreement (Cohen's kappa) can be measured reviewer-reviewer and reviewer-model."""

    class Kind(models.TextChoices):
        FIRST = "first", "First review"
        SECOND = "second", "Second review"
        ADJUDICATION = "adjudication", "Adjudication"

    event = models.ForeignKey(CellEvent, on_delete=models.CASCADE, related_name="reviews")
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    kind = models.CharField(max_length=12, choices=Kind.choices, default=Kind.FIRST)
    call = models.CharField(max_length=10, choices=Call.choices)
    category = models.CharField(max_length=20, blank=True)
    reason = models.TextField(blank=True)
    at = models.DateTimeField(default=timezone.now)

    objects = ScopedQuerySet.as_manager()
    scope_path = "event__draw__patient__"

    class Meta:
        ordering = ["event", "at"]
        constraints = [models.UniqueConstraint(fields=["event", "kind"], name="one_review_of_each_kind")]

    def __str__(self) -> str:
        return f"{self.kind} {self.call} on {self.event_id}"


class LabTraining(models.Model):
    """A lab-model training run (issue 13, point 4): a Celery job on the ``training`` queue that
    fine-tunes the active model on a care team's reviewed cells and registers a *candidate*
    ``ClassifierVersion`` (never active by itself) with its comparison to the active version."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    team = models.ForeignKey(CareTeam, on_delete=models.CASCADE, related_name="trainings")
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    progress = models.PositiveSmallIntegerField(default=0)
    stage = models.CharField(max_length=60, blank=True)
    error = models.TextField(blank=True)
    base_version = models.CharField(max_length=80, blank=True)
    candidate = models.ForeignKey(ClassifierVersion, on_delete=models.SET_NULL, null=True, blank=True,
                                  related_name="trainings")
    result = models.JSONField(default=dict, blank=True, help_text="split, metrics of both versions, McNemar")
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"training {self.pk} of {self.team} ({self.status})"


class ShadowCall(models.Model):
    """A candidate version's call on a cell it analysed in shadow (issue 13, point 5): stored next
    to the active version's call (``CellEvent.call``), never counted."""

    event = models.ForeignKey(CellEvent, on_delete=models.CASCADE, related_name="shadow_calls")
    version = models.CharField(max_length=80, db_index=True)
    call = models.CharField(max_length=10, choices=Call.choices)
    ctc_probability = models.FloatField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["event", "version"], name="one_shadow_call_per_version")]

    def __str__(self) -> str:
        return f"{self.version}: {self.call} on {self.event_id}"


class SummaryStatus(models.TextChoices):
    PRELIMINARY = "preliminary", "Preliminary"
    FINAL = "final", "Final"
    AMENDED = "amended", "Amended"


class DrawSummary(models.Model):
    draw = models.OneToOneField(BloodDraw, on_delete=models.CASCADE, related_name="summary")
    events_analysed = models.PositiveIntegerField(default=0)
    ctc_count = models.PositiveIntegerField(default=0)
    ctc_per_7_5ml = models.FloatField(default=0.0)
    malignant_fraction = models.FloatField(default=0.0, help_text="CTCs / events analysed")
    reviewed_events = models.PositiveIntegerField(default=0)
    #: The count's model uncertainty (issue 14, patients/summary.py): the count without the unreviewed
    #: CTC calls the model is unsure of, and with the unreviewed non-CTC calls it is unsure of.
    #: Equal to ctc_count once every call is reviewed; null on summaries computed before.
    ctc_count_min = models.PositiveIntegerField(null=True, blank=True)
    ctc_count_max = models.PositiveIntegerField(null=True, blank=True)
    status = models.CharField(max_length=12, choices=SummaryStatus.choices, default=SummaryStatus.PRELIMINARY)
    model_version = models.CharField(max_length=80, blank=True)
    updated_at = models.DateTimeField(auto_now=True)
    history = HistoricalRecords()

    objects = ScopedQuerySet.as_manager()
    scope_path = "draw__patient__"

    class Meta:
        verbose_name_plural = "draw summaries"

    def __str__(self) -> str:
        return f"{self.draw}: {self.ctc_per_7_5ml:.1f} CTC/7.5 mL ({self.status})"


class AuditEvent(models.Model):
    """Who looked at or exported what, from where (changes are in the history tables)."""

    class Action(models.TextChoices):
        VIEW = "view", "View"
        EXPORT = "export", "Export"
        CREATE = "create", "Create"
        UPDATE = "update", "Update"
        DELETE = "delete", "Delete"
        REVIEW = "review", "Review"
        LOGIN = "login", "Login"
        LOGOUT = "logout", "Logout"
        LOGIN_FAILED = "login_fail", "Failed login"
        WITHDRAW = "withdraw", "Withdraw"

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True)
    action = models.CharField(max_length=10, choices=Action.choices)
    object_type = models.CharField(max_length=40)
    object_id = models.CharField(max_length=40, blank=True)
    patient = models.ForeignKey(Patient, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    path = models.CharField(max_length=300, blank=True)
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-at"]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} {self.user} {self.action} {self.object_type} {self.object_id}"
