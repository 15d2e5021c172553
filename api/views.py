"""The REST API's views.

Every queryset goes through ``for_user`` (out of scope is a 404, never a 403 that
would confirm the record exists); writes and exports are checked against the role matrix
per care team (``api.permissions``: the user's role on the patient acted on; multi-patient
exports keep the patients they may export, ``patients.roles.patients_for_action``); each
read of patient data and each export leaves one audit row.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Q
from django.utils.http import content_disposition_header
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.authtoken.models import Token
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.generics import get_object_or_404  # a malformed id is a 404 here, not a ValueError (500)
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from api import deid, fhir
from api.filters import (
    MAX_ID,
    CellEventFilter,
    ClinicalEventFilter,
    DrawFilter,
    PatientFilter,
    SummaryFilter,
    TreatmentLineFilter,
    UploadFilter,
)
from api.pagination import StandardPagination
from api.parsers import JSONParser
from api.permissions import RoleActionPermission, check_on
from api.renderers import CSVRenderer, PNGRenderer
from api.serializers import (
    CancerTypeSerializer,
    CareTeamSerializer,
    CellEventDetailSerializer,
    CellEventSerializer,
    ClassifierVersionSerializer,
    ClinicalEventSerializer,
    CohortArmSerializer,
    CohortSerializer,
    ConfirmedSerializer,
    ConfirmRemainingSerializer,
    DrawSerializer,
    DrawSummaryListSerializer,
    LabTrainingCreateSerializer,
    LabTrainingSerializer,
    PatientSerializer,
    RerunQueuedSerializer,
    RerunResultSerializer,
    RerunSerializer,
    ReviewSerializer,
    SurvivalSerializer,
    TreatmentLineSerializer,
    TrialSerializer,
    UploadCreatedSerializer,
    UploadCreateSerializer,
    UploadSerializer,
    WithdrawSerializer,
)
from api.throttling import ClientScopedRateThrottle
from patients import audit, registry, rerun
from patients.duplicates import TRUE as DUP_TRUE
from patients.duplicates import refuse_duplicates
from patients.models import (
    AuditEvent,
    BloodDraw,
    CancerType,
    CareTeam,
    CellEvent,
    ClassifierVersion,
    ClinicalEvent,
    DrawSummary,
    ImagingUpload,
    LabTraining,
    Membership,
    Patient,
    TreatmentLine,
    Trial,
)
from patients.review import AlreadyReviewed, confirm_remaining, review_event
from patients.roles import Action, can, patients_for_action
from patients.scoping import is_admin
from patients.summary import recompute_summary
from patients.thumbnails import recorded_strip, strip_channels
from patients.training_tasks import start_training
from patients.uploads import UploadRequest, create_upload, withdraw_upload

PERMISSIONS = [IsAuthenticated, RoleActionPermission]
NO_DELETE = ["get", "post", "put", "patch", "head", "options"]


class ObtainTokenView(ObtainAuthToken):
    """Username + password -> ``{"token": ...}``; throttled against guessing, locked out like the sign-in form."""

    throttle_classes = [ClientScopedRateThrottle]  # the client by patients.audit.client_ip, not X-Forwarded-For
    throttle_scope = "token"
    parser_classes = [FormParser, MultiPartParser, JSONParser]  # JSON: api.parsers (depth-limited)

    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = self.get_serializer(data=request.data)
        if not serializer.is_valid():
            # django-axes' backend marks a locked (username, address) pair on the request it was given
            # (this DRF request) and refuses; Django then reports bad credentials. Say what happened,
            # as the sign-in form does, with the status of the throttle.
            if getattr(request, "axes_locked_out", False):
                return _locked_response()
            raise serializers.ValidationError(serializer.errors)
        user = serializer.validated_data["user"]
        token, _ = Token.objects.get_or_create(user=user)
        # A token is a login: it goes into the access trail like a dashboard sign-in.
        audit.record(request, AuditEvent.Action.LOGIN, user=user, object_type="Token", detail={"via": "api"})
        return Response({"token": token.key})


def _locked_response() -> Response:
    from django.conf import settings

    cooloff = getattr(settings, "AXES_COOLOFF_TIME", None)
    seconds = int(cooloff.total_seconds()) if hasattr(cooloff, "total_seconds") else None
    response = Response({"detail": "Account locked: too many failed sign-ins from this address. "
                                   "Try again later, or ask an administrator to unlock it."},
                        status=status.HTTP_429_TOO_MANY_REQUESTS)
    if seconds:
        response["Retry-After"] = str(seconds)
    return response


def _valid_filters(filterset: Any) -> Any:
    """The filtered queryset of a django-filter ``filterset``; a bad value is a 400 with the reason.

    Used where a view applies a filterset itself (the list endpoints go through the filter
    backend, which does the same): an invalid filter must not be silently dropped.
    """
    if not filterset.is_valid():
        raise serializers.ValidationError({k: list(v) for k, v in filterset.errors.items()})
    return filterset.qs


def _patient_stub(patient_id: int | None) -> Patient | None:
    # The audit row only needs the id: no query to load the patient.
    return Patient(pk=patient_id) if patient_id else None


def patient_id_of(obj: Any) -> int | None:
    """The patient a record belongs to (its own id, ``patient_id``, or its draw's)."""
    if isinstance(obj, Patient):
        return obj.pk
    if getattr(obj, "patient_id", None):
        return obj.patient_id
    draw = getattr(obj, "draw", None)
    return draw.patient_id if draw is not None else None


class AuditedReadMixin:
    """One audit row per read of patient data: the object on a detail, the query on a list."""

    pagination_class = StandardPagination

    def get_object(self):  # noqa: ANN201
        # An id past bigint matches nothing. Django answers a primary-key lookup so on every
        # database, but a foreign-key lookup (summaries are found by their draw) reaches SQLite
        # (the embedded default) as an OverflowError, a 500: refuse it before any query.
        value = self.kwargs.get(self.lookup_url_kwarg or self.lookup_field)
        if isinstance(value, str) and value.isdigit() and int(value) > MAX_ID:
            raise NotFound(f"No record with id {value}.")
        return super().get_object()

    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        instance = self.get_object()
        data = self.get_serializer(instance).data
        audit.record(request, "view", instance, patient=_patient_stub(patient_id_of(instance)))
        return Response(data)

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        response = super().list(request, *args, **kwargs)
        count = response.data.get("count") if isinstance(response.data, dict) else None
        pid = request.query_params.get("patient")
        patient = _patient_stub(int(pid)) if pid and pid.isdigit() and count else None
        audit.record(request, "view", object_type=f"{self.get_queryset().model.__name__} list", patient=patient,
                     detail={"count": count, "query": dict(request.query_params.items())})
        return response


EXPORT_REFUSED = "Your role does not allow exports."
EXPORT_REFUSED_HERE = "Your role in this patient's care team does not allow exports."


class PatientRightsMixin:
    """A record written for a patient named in the body (a new draw, treatment line, clinical
    event, or one moved to another patient) needs the write right on *that* patient: the role in
    its care team (``patients.roles.can_on``). The record changed is checked by the permission."""

    def check_body_patient(self, serializer: serializers.Serializer) -> None:
        check_on(self.request, self.write_action, serializer.validated_data.get("patient"))

    def perform_create(self, serializer: serializers.Serializer) -> None:
        self.check_body_patient(serializer)
        super().perform_create(serializer)

    def perform_update(self, serializer: serializers.Serializer) -> None:
        self.check_body_patient(serializer)
        super().perform_update(serializer)


def _drf_error(err: DjangoValidationError, fields: dict[str, str], default: str) -> serializers.ValidationError:
    """A Django ValidationError from the domain -> DRF's ``{field: [message]}`` (a 400)."""
    field = fields.get(getattr(err, "code", None) or "", default)
    if field == "file" and " ".join(err.messages).lower().startswith("channel"):
        field = "channels"  # the image reader's complaint about the declared channels
    return serializers.ValidationError({field: err.messages})


# --- reference data ------------------------------------------------------------------------------

@extend_schema_view(list=extend_schema(summary="Cancer types with their prognostic CTC cut-off"))
class CancerTypeViewSet(viewsets.ReadOnlyModelViewSet):
    """Cancer types and their prognostic cut-offs (data, editable by administrators)."""

    serializer_class = CancerTypeSerializer
    queryset = CancerType.objects.all()
    lookup_field = "code"
    lookup_value_regex = r"[^/.\x00]+"  # a NUL is no code (PostgreSQL refuses it in a query: was a 500)
    pagination_class = None


@extend_schema_view(list=extend_schema(summary="Your care teams (all teams for administrators)"))
class CareTeamViewSet(viewsets.ReadOnlyModelViewSet):
    """Care teams you belong to, with your role in each."""

    pagination_class = StandardPagination
    serializer_class = CareTeamSerializer
    queryset = CareTeam.objects.none()  # for the schema; get_queryset() decides
    ordering_fields = ["name", "site"]

    def get_queryset(self):  # noqa: ANN201
        user = self.request.user
        qs = CareTeam.objects.all()
        if not user.is_authenticated:
            return qs.none()
        if not is_admin(user):
            qs = qs.filter(pk__in=Membership.objects.filter(user=user).values("team_id"))
        return qs.order_by("name")

    def get_serializer_context(self) -> dict:
        context = super().get_serializer_context()
        user = self.request.user
        if user.is_authenticated:
            context["roles_by_team"] = dict(Membership.objects.filter(user=user).values_list("team_id", "role"))
        return context


@extend_schema_view(list=extend_schema(summary="Trials you coordinate or that enrol patients you can see"))
class TrialViewSet(viewsets.ReadOnlyModelViewSet):
    """Trials and their arms."""

    pagination_class = StandardPagination
    serializer_class = TrialSerializer
    queryset = Trial.objects.none()  # for the schema; get_queryset() decides
    lookup_field = "code"
    lookup_value_regex = r"[^/.\x00]+"  # a NUL is no code (PostgreSQL refuses it in a query: was a 500)

    def get_queryset(self):  # noqa: ANN201
        user = self.request.user
        qs = Trial.objects.prefetch_related("arms").order_by("code")
        if not user.is_authenticated:
            return qs.none()
        if is_admin(user):
            return qs
        visible = Q(coordinators=user) | Q(pk__in=Patient.objects.for_user(user).values("trial_id"))
        return qs.filter(pk__in=Trial.objects.filter(visible).values("pk"))


@extend_schema_view(
    list=extend_schema(summary="Classifier versions in the registry"),
    promote=extend_schema(request=None, responses=ClassifierVersionSerializer,
                          summary="Make this version the active one (new uploads use it)"),
    retire=extend_schema(request=None, responses=ClassifierVersionSerializer,
                         summary="Retire this version (it is no longer used for new uploads)"),
)
class ClassifierVersionViewSet(viewsets.ReadOnlyModelViewSet):
    """The model registry: which classifier versions exist and which one is active."""

    pagination_class = StandardPagination
    serializer_class = ClassifierVersionSerializer
    queryset = ClassifierVersion.objects.all()
    permission_classes = PERMISSIONS
    action_permissions = {"promote": Action.MANAGE_MODELS, "retire": Action.MANAGE_MODELS}
    ordering_fields = ["created_at", "version"]

    @action(detail=True, methods=["post"])
    def promote(self, request: Request, pk: str | None = None, **kwargs: Any) -> Response:
        try:
            version = registry.promote(self.get_object(), request)
        except registry.PromotionRefused as err:
            raise serializers.ValidationError({"weights_path": [str(err)]}) from err
        return Response(self.get_serializer(version).data)

    @action(detail=True, methods=["post"])
    def retire(self, request: Request, pk: str | None = None, **kwargs: Any) -> Response:
        return Response(self.get_serializer(registry.retire(self.get_object(), request)).data)


@extend_schema_view(
    list=extend_schema(summary="Lab-model trainings (administrators)"),
    retrieve=extend_schema(summary="One training: status, progress, stage, error, the candidate and its comparison"),
    create=extend_schema(request=LabTrainingCreateSerializer, responses={202: LabTrainingSerializer},
                         summary="Start a lab-model training from a care team's reviewed cells (training queue; "
                                 "the candidate is registered, never made active by itself)"),
)
class LabTrainingViewSet(mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet):
    """Lab-model trainings (issue 13, point 4): the same start as the Models page and
    ``manage.py train_lab_model`` (``patients.training_tasks.start_training``, audited)."""

    pagination_class = StandardPagination
    serializer_class = LabTrainingSerializer
    permission_classes = PERMISSIONS
    write_action = Action.MANAGE_MODELS
    ordering_fields = ["created_at"]

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        if not can(request.user, Action.MANAGE_MODELS):  # reads too: like the Models page's progress bar
            raise PermissionDenied("Only administrators see and start lab-model trainings.")

    def get_queryset(self):  # noqa: ANN201
        return LabTraining.objects.select_related("team", "requested_by", "candidate").order_by("-created_at", "-pk")

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        form = LabTrainingCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        # Who may manage models is an administrator, who sees every care team (patients.scoping).
        team = CareTeam.objects.filter(pk=form.validated_data["team"]).first()
        if team is None:
            raise serializers.ValidationError({"team": [f"No care team {form.validated_data['team']}."]})
        job = start_training(team, request.user)
        body = LabTrainingSerializer(job, context=self.get_serializer_context()).data
        return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": str(body["url"])})


# --- patients and their records ------------------------------------------------------------------

@extend_schema_view(
    list=extend_schema(summary="Patients you may see"),
    create=extend_schema(summary="Add a patient to one of your care teams"),
    fhir=extend_schema(summary="FHIR R4 Bundle (collection) of every draw of the patient",
                       responses={(200, "application/fhir+json"): OpenApiResponse(OpenApiTypes.OBJECT,
                                                                                  description="FHIR R4 Bundle")}),
)
class PatientViewSet(AuditedReadMixin, viewsets.ModelViewSet):
    """Patients of your care teams (and of trials you coordinate)."""

    serializer_class = PatientSerializer
    permission_classes = PERMISSIONS
    write_action = Action.EDIT_RECORDS
    http_method_names = NO_DELETE
    filterset_class = PatientFilter
    ordering_fields = ["study_id", "diagnosis_date", "enrolled_on", "created_at"]

    def get_queryset(self):  # noqa: ANN201
        return (
            Patient.objects.for_user(self.request.user)
            .select_related("cancer_type", "trial", "arm", "outcome_recorded_by")
            .order_by("study_id")
        )

    @action(detail=True, methods=["get"])
    def fhir(self, request: Request, pk: str | None = None, **kwargs: Any) -> Response:
        if not can(request.user, Action.EXPORT):  # a FHIR bundle is an export (roles matrix, docs/security.md)
            raise PermissionDenied(EXPORT_REFUSED)  # before the lookup: the same answer for every id
        patient = self.get_object()
        check_on(request, Action.EXPORT, patient, EXPORT_REFUSED_HERE)  # the role in this patient's team
        draws = (
            BloodDraw.objects.filter(patient=patient).select_related("summary").order_by("drawn_at", "pk")
        )
        for d in draws:  # the bundle builder reads draw.patient: reuse the loaded one
            d.patient = patient
        bundle = fhir.patient_bundle(patient, draws)
        audit.record(request, "export", patient, detail={"format": "fhir", "draws": len(draws)})
        return Response(bundle, content_type="application/fhir+json")


@extend_schema_view(list=extend_schema(summary="Treatment lines (filter ?patient=)"))
class TreatmentLineViewSet(PatientRightsMixin, AuditedReadMixin, viewsets.ModelViewSet):
    """Treatment lines of the patients you may see."""

    serializer_class = TreatmentLineSerializer
    permission_classes = PERMISSIONS
    write_action = Action.EDIT_RECORDS
    filterset_class = TreatmentLineFilter
    ordering_fields = ["start_date", "line_number"]

    def get_queryset(self):  # noqa: ANN201
        return TreatmentLine.objects.for_user(self.request.user).order_by("patient_id", "line_number")


@extend_schema_view(list=extend_schema(summary="Clinical events: imaging response, surgery, progression"))
class ClinicalEventViewSet(PatientRightsMixin, AuditedReadMixin, viewsets.ModelViewSet):
    """Clinical events (imaging response with RECIST, surgery, progression) of your patients."""

    serializer_class = ClinicalEventSerializer
    permission_classes = PERMISSIONS
    write_action = Action.EDIT_RECORDS
    filterset_class = ClinicalEventFilter
    ordering_fields = ["date"]

    def get_queryset(self):  # noqa: ANN201
        return ClinicalEvent.objects.for_user(self.request.user).order_by("patient_id", "date", "pk")


EVENT_PARAMS = [
    OpenApiParameter("upload", OpenApiTypes.INT, description="Only events of this upload"),
    OpenApiParameter("call", OpenApiTypes.STR, enum=["ctc", "non_ctc"], description="The model's call"),
    OpenApiParameter("category", OpenApiTypes.STR),
    OpenApiParameter("reviewed", OpenApiTypes.BOOL),
    OpenApiParameter("source", OpenApiTypes.STR, description="File name (name#k for field objects)"),
    OpenApiParameter("page", OpenApiTypes.INT),
    OpenApiParameter("page_size", OpenApiTypes.INT, description="Up to 1000"),
]


@extend_schema_view(
    list=extend_schema(summary="Blood draws (filter ?patient=, ?trial=, ?arm=, ?drawn_after=, ?drawn_before=)"),
    retrieve=extend_schema(summary="One draw with its summary (CTC count per 7.5 mL, status)"),
    fhir=extend_schema(summary="FHIR R4 Bundle: Specimen, Observations, DiagnosticReport",
                       responses={(200, "application/fhir+json"): OpenApiResponse(OpenApiTypes.OBJECT,
                                                                                  description="FHIR R4 Bundle")}),
)
class DrawViewSet(PatientRightsMixin, AuditedReadMixin, viewsets.ModelViewSet):
    """Blood draws, their imaging uploads, cell events and FHIR export."""

    serializer_class = DrawSerializer
    permission_classes = PERMISSIONS
    write_action = Action.EDIT_RECORDS
    # Issue 13: "confirm the remaining calls" is a review; re-running with another version manages models.
    action_permissions = {"uploads": Action.UPLOAD, "confirm_remaining": Action.REVIEW,
                          "rerun": Action.MANAGE_MODELS}
    http_method_names = NO_DELETE
    filterset_class = DrawFilter
    ordering_fields = ["drawn_at", "created_at", "timepoint"]

    def get_queryset(self):  # noqa: ANN201
        return (
            BloodDraw.objects.for_user(self.request.user)
            .select_related("summary", "patient__cancer_type")
            .order_by("drawn_at", "pk")
        )

    def perform_create(self, serializer: DrawSerializer) -> None:
        self.check_body_patient(serializer)
        serializer.save(created_by=self.request.user)

    def perform_update(self, serializer: DrawSerializer) -> None:
        self.check_body_patient(serializer)
        before = serializer.instance.volume_ml
        draw = serializer.save()
        if draw.volume_ml != before and DrawSummary.objects.filter(draw=draw).exists():
            # The count per 7.5 mL depends on the volume: a corrected volume recounts at once.
            summary = recompute_summary(draw)
            if summary is not None:
                draw.summary = summary

    @extend_schema(
        methods=["POST"],
        summary="Upload imaging for this draw (multipart); analysed by the worker",
        request={"multipart/form-data": UploadCreateSerializer},
        responses={202: UploadCreatedSerializer},
    )
    @extend_schema(methods=["GET"], summary="The draw's uploads", responses=UploadSerializer(many=True))
    @action(detail=True, methods=["get", "post"], parser_classes=[MultiPartParser, FormParser],
            pagination_class=None, filterset_class=None, ordering_fields=None)
    def uploads(self, request: Request, pk: str | None = None, **kwargs: Any) -> Response:
        draw = self.get_object()
        if request.method == "GET":
            uploads = ImagingUpload.objects.filter(draw=draw).prefetch_related("files").order_by("-created_at")
            audit.record(request, "view", draw, patient=_patient_stub(draw.patient_id),
                         object_type="ImagingUpload list")
            return Response(UploadSerializer(uploads, many=True, context=self.get_serializer_context()).data)
        files = request.FILES.getlist("file") or request.FILES.getlist("files")
        data: dict[str, Any] = {k: request.data.get(k) for k in ("channels", "kind", "pixel_size_um")
                                if request.data.get(k) not in (None, "")}
        data["file"] = files
        form = UploadCreateSerializer(data=data)
        if not files:
            raise serializers.ValidationError({"file": ["No file was uploaded: send one or more `file` parts."]})
        form.is_valid(raise_exception=True)
        v = form.validated_data
        try:
            # Issue 13: files identical to ones already on the draw need ``allow_duplicates``.
            refuse_duplicates(draw, v["file"], str(request.data.get("allow_duplicates", "")) in DUP_TRUE)
        except DjangoValidationError as err:
            return Response({"file": err.messages, "code": "duplicate"}, status=status.HTTP_409_CONFLICT)
        try:
            upload = create_upload(
                draw,
                UploadRequest(files=v["file"], channels=v["channels"], kind=v["kind"],
                              pixel_size_um=v.get("pixel_size_um")),
                user=request.user,
            )
        except DjangoValidationError as err:
            raise _drf_error(
                err, {"channels": "channels", "kind": "kind", "pixel_size": "pixel_size_um"}, default="file"
            ) from err
        body = UploadCreatedSerializer(upload, context=self.get_serializer_context()).data
        return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": str(body["url"])})

    @extend_schema(summary="Every cell event of the draw, with the model's and the reviewer's call",
                   parameters=EVENT_PARAMS, responses=CellEventSerializer(many=True))
    @action(detail=True, methods=["get"], filterset_class=None, ordering_fields=None)
    def events(self, request: Request, pk: str | None = None, **kwargs: Any) -> Response:
        draw = self.get_object()
        qs = (
            CellEvent.objects.filter(draw=draw)
            .defer("thumbnail", "heatmap", "explanation")
            .select_related("reviewed_by")
            .order_by("upload_id", "index")
        )
        qs = _valid_filters(CellEventFilter(request.query_params, queryset=qs, request=request))
        page = self.paginate_queryset(qs)
        data = CellEventSerializer(page, many=True, context=self.get_serializer_context()).data
        audit.record(request, "view", draw, patient=_patient_stub(draw.patient_id), object_type="CellEvent list",
                     detail={"draw": draw.pk, "count": self.paginator.page.paginator.count})
        return self.get_paginated_response(data)

    @action(detail=True, methods=["get"], filterset_class=None, ordering_fields=None)
    def fhir(self, request: Request, pk: str | None = None, **kwargs: Any) -> Response:
        if not can(request.user, Action.EXPORT):  # a FHIR bundle is an export (roles matrix, docs/security.md)
            raise PermissionDenied(EXPORT_REFUSED)  # before the lookup: the same answer for every id
        draw = self.get_object()
        check_on(request, Action.EXPORT, draw, EXPORT_REFUSED_HERE)  # the role in this patient's team
        bundle = fhir.draw_bundle(draw)
        audit.record(request, "export", draw, patient=_patient_stub(draw.patient_id), detail={"format": "fhir"})
        return Response(bundle, content_type="application/fhir+json")

    @extend_schema(summary="Confirm the model's call of the draw's remaining unreviewed cells in one audited "
                           "action (the review grid's 'confirm the remaining calls')",
                   request=ConfirmRemainingSerializer, responses={200: ConfirmedSerializer})
    @action(detail=True, methods=["post"], url_path="confirm-remaining",
            parser_classes=[JSONParser, FormParser, MultiPartParser], filterset_class=None, ordering_fields=None)
    def confirm_remaining(self, request: Request, pk: str | None = None, **kwargs: Any) -> Response:
        draw = self.get_object()
        form = ConfirmRemainingSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        try:
            # a draw whose images differ from the validated ones needs "acknowledge_shifted": true (patients.review)
            confirmed = confirm_remaining(draw, request.user, form.validated_data.get("cells"), request=request,
                                          acknowledge_shifted=form.validated_data.get("acknowledge_shifted", False))
        except DjangoValidationError as err:
            if getattr(err, "code", None) != "domain_shifted":
                raise
            raise serializers.ValidationError({"acknowledge_shifted": [
                f"{err.messages[0]} Send \"acknowledge_shifted\": true once you have looked at them."]}) from err
        summary = DrawSummary.objects.select_related("draw__patient__cancer_type").filter(draw=draw).first()
        return Response(ConfirmedSerializer({"confirmed": confirmed, "summary": summary}).data)

    @extend_schema(methods=["POST"], request=RerunSerializer, responses={202: RerunQueuedSerializer},
                   summary="Re-run the draw's uploads with another classifier version (administrators; bulk lane, "
                           "audited): its calls are stored beside the counted ones, the count is unchanged")
    @extend_schema(methods=["GET"], responses=RerunResultSerializer(many=True),
                   summary="Other versions' calls on the draw's cells (re-runs, shadow runs) against the counted ones")
    @action(detail=True, methods=["get", "post"], parser_classes=[JSONParser, FormParser, MultiPartParser],
            pagination_class=None, filterset_class=None, ordering_fields=None)
    def rerun(self, request: Request, pk: str | None = None, **kwargs: Any) -> Response:
        draw = self.get_object()
        if request.method == "GET":
            audit.record(request, "view", draw, patient=_patient_stub(draw.patient_id), object_type="Rerun results")
            return Response(RerunResultSerializer(rerun.rerun_results(draw), many=True).data)
        form = RerunSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        version = ClassifierVersion.objects.filter(version=form.validated_data["version"]).first()
        if version is None:
            raise serializers.ValidationError({"version": [f"No classifier version {form.validated_data['version']!r}; "
                                                           "see /api/models/."]})
        try:
            uploads = rerun.rerun_draw(draw, version, request.user, request=request)
        except DjangoValidationError as err:
            raise _drf_error(err, {"nothing_to_rerun": "non_field_errors"}, default="version") from err
        body = {"draw": draw.pk, "version": version.version, "uploads": uploads,
                "counted_version": rerun.counted_versions(draw)}
        return Response(RerunQueuedSerializer(body).data, status=status.HTTP_202_ACCEPTED)


@extend_schema_view(list=extend_schema(summary="Imaging uploads (filter ?draw=, ?status=)"),
                    retrieve=extend_schema(summary="Upload status, progress, stage, error, model version"),
                    withdraw=extend_schema(request=WithdrawSerializer, responses=UploadSerializer,
                                           summary="Withdraw a mistaken upload (reason required): its events leave "
                                                   "the draw's count; files and rows are kept"))
class UploadViewSet(AuditedReadMixin, viewsets.ReadOnlyModelViewSet):
    """Imaging uploads and their analysis status."""

    serializer_class = UploadSerializer
    permission_classes = PERMISSIONS
    action_permissions = {"withdraw": Action.UPLOAD}
    filterset_class = UploadFilter
    ordering_fields = ["created_at", "finished_at"]

    def get_queryset(self):  # noqa: ANN201
        return (
            ImagingUpload.objects.for_user(self.request.user)
            .select_related("draw")
            .prefetch_related("files")
            .order_by("-created_at")
        )


    @action(detail=True, methods=["post"], parser_classes=[JSONParser, FormParser, MultiPartParser],
            filterset_class=None, ordering_fields=None)
    def withdraw(self, request: Request, pk: str | None = None, **kwargs: Any) -> Response:
        upload = self.get_object()
        form = WithdrawSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        try:
            upload = withdraw_upload(upload, request.user, form.validated_data["reason"], request=request)
        except DjangoValidationError as err:
            if getattr(err, "code", "") == "already_withdrawn":
                return Response({"detail": err.messages[0]}, status=status.HTTP_409_CONFLICT)
            raise _drf_error(err, {}, default="reason") from err
        upload = self.get_queryset().get(pk=upload.pk)
        return Response(UploadSerializer(upload, context=self.get_serializer_context()).data)


@extend_schema_view(
    list=extend_schema(summary="Cell events (filter ?draw=, ?call=, ?reviewed=)"),
    review=extend_schema(request=ReviewSerializer,
                         responses={200: CellEventDetailSerializer,
                                    409: OpenApiResponse(description="Already reviewed (send change=true and a "
                                                                     "reason to change the review)")},
                         summary="Confirm or override the model's call (a reason is required to override)"),
)
class CellEventViewSet(AuditedReadMixin, viewsets.ReadOnlyModelViewSet):
    """Cell events found by the classifier, and their review."""

    permission_classes = PERMISSIONS
    action_permissions = {"review": Action.REVIEW}
    filterset_class = CellEventFilter
    ordering_fields = ["index", "ctc_probability", "margin", "reviewed_at"]

    def get_serializer_class(self):  # noqa: ANN201
        return CellEventSerializer if self.action == "list" else CellEventDetailSerializer

    def get_queryset(self):  # noqa: ANN201
        qs = CellEvent.objects.for_user(self.request.user).select_related("reviewed_by", "draw")
        # The PNGs are large and served elsewhere; the explanation only on a detail.
        qs = qs.defer("thumbnail", "heatmap", *(["explanation"] if self.action == "list" else []))
        return qs.order_by("draw_id", "upload_id", "index")

    def _png(self, request: Request, field: str) -> Response:
        event = get_object_or_404(
            CellEvent.objects.for_user(request.user).select_related("upload", "draw")
            .only("pk", "upload", "draw", "draw__patient_id", "upload__result_channels", "upload__channels", field),
            pk=self.kwargs["pk"],
        )
        data = bytes(getattr(event, field) or b"")
        if not data:
            raise NotFound(f"This event has no stored {field}.")
        audit.record(request, "view", event, patient=_patient_stub(event.draw.patient_id),
                     object_type=f"CellEvent {field}")
        channels = strip_channels(event.upload.result_channels, event.upload.channels) if field == "thumbnail" else None
        if channels is not None:  # only the tiles of channels the upload recorded (patients.thumbnails)
            data = recorded_strip(data, channels)
        response = Response(data, content_type="image/png")
        if channels is not None:
            response["X-Channels"] = ",".join(channels.recorded if event.upload.result_channels else [])
            if channels.missing:
                response["X-Channels-Not-Recorded"] = ",".join(channels.missing)
        return response

    @extend_schema(summary="The event's thumbnail: PNG strip, one greyscale tile per channel (order in X-Channels)",
                   responses={(200, "image/png"): OpenApiTypes.BINARY})
    @action(detail=True, methods=["get"], renderer_classes=[PNGRenderer, JSONRenderer], filterset_class=None,
            ordering_fields=None)
    def thumbnail(self, request: Request, pk: str | None = None, **kwargs: Any) -> Response:
        return self._png(request, "thumbnail")

    @extend_schema(summary="The spatial branch's heat map for the event (PNG, greyscale)",
                   responses={(200, "image/png"): OpenApiTypes.BINARY})
    @action(detail=True, methods=["get"], renderer_classes=[PNGRenderer, JSONRenderer], filterset_class=None,
            ordering_fields=None)
    def heatmap(self, request: Request, pk: str | None = None, **kwargs: Any) -> Response:
        return self._png(request, "heatmap")

    @action(detail=True, methods=["post"], parser_classes=[JSONParser, FormParser, MultiPartParser])
    def review(self, request: Request, pk: str | None = None, **kwargs: Any) -> Response:
        event = self.get_object()
        form = ReviewSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        try:
            reviewed = review_event(event, request.user, form.validated_data["call"], form.validated_data["reason"],
                                    change=form.validated_data["change"], request=request,
                                    category=form.validated_data["category"])
        except AlreadyReviewed as err:
            # A stale page: someone reviewed the cell meanwhile. Nothing changed.
            done = err.event
            return Response({"detail": err.messages[0], "reviewed_call": done.reviewed_call,
                             "reviewed_by": done.reviewed_by.username if done.reviewed_by else None,
                             "reviewed_at": done.reviewed_at}, status=status.HTTP_409_CONFLICT)
        except DjangoValidationError as err:
            raise _drf_error(err, {"call": "call", "reason_required": "reason", "category": "category"},
                             default="reason") from err
        reviewed = self.get_queryset().get(pk=reviewed.pk)
        return Response(CellEventDetailSerializer(reviewed, context=self.get_serializer_context()).data)


@extend_schema_view(list=extend_schema(summary="Draw summaries (filter ?patient=, ?trial=, ?arm=, ?status=)"),
                    retrieve=extend_schema(summary="The summary of one draw (by draw id)"))
class DrawSummaryViewSet(AuditedReadMixin, viewsets.ReadOnlyModelViewSet):
    """Per-draw summaries: CTC count per 7.5 mL, malignant fraction, review status."""

    serializer_class = DrawSummaryListSerializer
    filterset_class = SummaryFilter
    lookup_field = "draw"
    lookup_url_kwarg = "draw_id"
    ordering_fields = ["draw__drawn_at", "ctc_per_7_5ml", "updated_at"]

    def get_queryset(self):  # noqa: ANN201
        return (
            DrawSummary.objects.for_user(self.request.user)
            .select_related("draw__patient__cancer_type")
            .order_by("draw__patient_id", "draw__drawn_at")
        )


# --- cohort --------------------------------------------------------------------------------------

class CohortView(APIView):
    """Cohort summary per trial and arm: CTC status at baseline and follow-up, conversion, waterfall."""

    permission_classes = PERMISSIONS

    @extend_schema(
        summary="Cohort summary per trial/arm (CTC conversion, change from baseline)",
        parameters=[
            OpenApiParameter("trial", OpenApiTypes.STR, description="Trial code"),
            OpenApiParameter("arm", OpenApiTypes.STR, description="Arm code"),
            OpenApiParameter("cancer_type", OpenApiTypes.STR, description="Cancer type code"),
            OpenApiParameter("care_team", OpenApiTypes.INT, description="Care team id"),
            OpenApiParameter("follow_up", OpenApiTypes.STR,
                             description="Follow-up landmark timepoint, e.g. C2D1 (default: the latest draw)"),
        ],
        responses={200: CohortSerializer, 403: OpenApiResponse(description="Your role has no cohort view")},
    )
    def get(self, request: Request) -> Response:
        from patients import cohort

        if not can(request.user, Action.COHORT):
            return Response({"detail": "Your role does not include the cohort view."},
                            status=status.HTTP_403_FORBIDDEN)
        # Only the patients whose care team (or trial) gives the user the cohort right.
        patients = _valid_filters(PatientFilter(request.query_params,
                                                queryset=patients_for_action(request.user, Action.COHORT)))
        courses = cohort.patient_courses(patients, landmark=request.query_params.get("follow_up", "")[:40])
        arms = [
            {**{k: getattr(a, k) for k in CohortArmSerializer().fields if k not in ("label", "conversion_rate",
                                                                                  "reverse_rate")},
             "label": a.label, "conversion_rate": a.conversion_rate, "reverse_rate": a.reverse_rate}
            for a in cohort.arm_summaries(courses)
        ]
        bars = [{"study_id": b[0], "arm": b[1], "change_pct": b[2], "conversion": b[3]}
                for b in cohort.waterfall(courses)]
        audit.record(request, "view", object_type="Cohort",
                     detail={"patients": len(courses), "query": dict(request.query_params.items())})
        return Response(CohortSerializer({"patients": len(courses), "arms": arms, "waterfall": bars}).data)


# --- exports ---------------------------------------------------------------------------------------

class DeidentifiedExportView(APIView):
    """De-identified cohort export for statisticians (CSV: one row per draw; JSON: nested).

    Pseudonymous IDs only (HMAC of the study ID), no MRN, names or database ids; every date
    of a patient shifted by the same secret number of days, so intervals are exact.
    """

    permission_classes = PERMISSIONS
    renderer_classes = [JSONRenderer, CSVRenderer]

    @extend_schema(
        summary="De-identified cohort export (CSV or JSON), audited",
        parameters=[
            OpenApiParameter("format", OpenApiTypes.STR, enum=["json", "csv"], description="Default json"),
            OpenApiParameter("trial", OpenApiTypes.STR, description="Trial code"),
            OpenApiParameter("arm", OpenApiTypes.STR, description="Arm code"),
            OpenApiParameter("cancer_type", OpenApiTypes.STR, description="Cancer type code"),
        ],
        responses={200: OpenApiResponse(OpenApiTypes.OBJECT, description="JSON {patients: [...]} or text/csv"),
                   403: OpenApiResponse(description="Your role may not export")},
    )
    def get(self, request: Request) -> Response:
        if not can(request.user, Action.EXPORT):
            return Response({"detail": EXPORT_REFUSED}, status=status.HTTP_403_FORBIDDEN)
        # Only the patients whose care team (or trial) lets the user export: rights are per team.
        patients = _valid_filters(PatientFilter(request.query_params,
                                                queryset=patients_for_action(request.user, Action.EXPORT)))
        records = [deid.patient_record(p) for p in deid.export_queryset(patients)]
        fmt = request.accepted_renderer.format
        audit.record(
            request, "export", object_type="DeidentifiedExport",
            detail={"format": fmt, "patients": len(records), "draws": sum(len(r["draws"]) for r in records),
                    "filters": {k: v for k, v in request.query_params.items() if k != "format"}},
        )
        if fmt == "csv":
            rows = deid.csv_rows(records)
            response = Response({"fields": deid.CSV_PATIENT_FIELDS + deid.CSV_DRAW_FIELDS, "rows": rows})
            response["Content-Disposition"] = content_disposition_header(True, "ctc-deidentified.csv")
            return response
        return Response({
            "date_shift": f"per patient, a secret constant in [-{deid.MAX_SHIFT_DAYS}, {deid.MAX_SHIFT_DAYS}] days",
            "patients": records,
        })



# --- cohort survival (issue 14) --------------------------------------------------------------------

class SurvivalView(APIView):
    """Kaplan–Meier, log-rank and Cox by CTC status for the visible cohort (patients.outcomes).

    Scoped like every cohort figure: only patients ``for_user`` returns can enter a curve.
    ``?format=csv`` (export right) is the per-patient data: time, event and group.
    """

    permission_classes = PERMISSIONS
    renderer_classes = [JSONRenderer, CSVRenderer]

    @extend_schema(
        summary="Survival by CTC status: KM curves, at-risk counts, medians, log-rank, Cox HR, c-index",
        parameters=[
            OpenApiParameter("endpoint", OpenApiTypes.STR, enum=["pfs", "os"], description="Default pfs"),
            OpenApiParameter("by", OpenApiTypes.STR, enum=["baseline", "ctc0", "conversion"],
                             description="Grouping: baseline status, CTC0 at first follow-up, conversion class"),
            OpenApiParameter("trial", OpenApiTypes.STR, description="Trial code"),
            OpenApiParameter("arm", OpenApiTypes.STR, description="Arm code"),
            OpenApiParameter("cancer_type", OpenApiTypes.STR, description="Cancer type code"),
            OpenApiParameter("care_team", OpenApiTypes.INT, description="Care team id"),
            OpenApiParameter("follow_up", OpenApiTypes.STR,
                             description="Landmark timepoint of the first follow-up, e.g. C2D1 (default: the first "
                                         "analysed draw after baseline)"),
            OpenApiParameter("data", OpenApiTypes.BOOL, description="Add per-patient rows (`data`)"),
            OpenApiParameter("format", OpenApiTypes.STR, enum=["json", "csv"],
                             description="csv: per-patient survival data (export right)"),
        ],
        responses={200: SurvivalSerializer, 400: OpenApiResponse(description="Unknown endpoint or grouping"),
                   403: OpenApiResponse(description="Your role has no cohort view")},
    )
    def get(self, request: Request) -> Response:
        from patients import outcomes

        if not can(request.user, Action.COHORT):
            return Response({"detail": "Your role does not include the cohort view."},
                            status=status.HTTP_403_FORBIDDEN)
        endpoint = request.query_params.get("endpoint", "pfs")
        by = request.query_params.get("by", "baseline")
        errors = {}
        if endpoint not in outcomes.ENDPOINTS:
            errors["endpoint"] = [f"Unknown endpoint {endpoint[:20]!r}: use pfs or os."]
        if by not in outcomes.GROUPINGS:
            errors["by"] = [f"Unknown grouping {by[:20]!r}: use baseline, ctc0 or conversion."]
        if errors:
            return Response(errors, status=status.HTTP_400_BAD_REQUEST)
        landmark = request.query_params.get("follow_up", "")[:40]
        fmt = request.accepted_renderer.format
        if fmt == "csv" and not can(request.user, Action.EXPORT):
            return Response({"detail": EXPORT_REFUSED}, status=status.HTTP_403_FORBIDDEN)
        # Rights are per care team: the patients the user has the cohort right on (and, for the
        # CSV, the export right too).
        visible = patients_for_action(request.user, Action.COHORT)
        if fmt == "csv":
            visible = patients_for_action(request.user, Action.EXPORT, visible)
        patients = PatientFilter(request.query_params, queryset=visible).qs
        records = outcomes.survival_records(patients, landmark=landmark)
        query = {k: v for k, v in request.query_params.items() if k != "format"}
        if fmt == "csv":
            audit.record(request, "export", object_type="Survival",
                         detail={"format": "csv", "patients": len(records), "query": query})
            from patients.csvsafe import safe_cell  # study ids are user text: no spreadsheet formulas

            rows = [{k: safe_cell(v) for k, v in row.items()} for row in outcomes.survival_rows(records)]
            response = Response({"fields": outcomes.SURVIVAL_CSV_HEADER, "rows": rows})
            response["Content-Disposition"] = content_disposition_header(True, "ctc-survival.csv")
            return response
        body = outcomes.survival_analysis(records, endpoint=endpoint, by=by)
        body["follow_up"] = landmark
        if request.query_params.get("data") in ("1", "true", "yes"):
            body["data"] = outcomes.survival_rows(records)
        audit.record(request, "view", object_type="Survival", detail={"patients": len(records), "query": query})
        return Response(SurvivalSerializer(body).data)
