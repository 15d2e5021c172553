"""The draw page's upload endpoints: the form posts files here (JSON back), the progress bar polls
the status, and a mistaken upload is withdrawn."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from dashboard.access import record_for
from dashboard.forms import UploadForm
from patients.audit import record
from patients.duplicates import refuse_duplicates
from patients.models import BloodDraw, ImagingUpload, UploadStatus
from patients.roles import Action, can_on
from patients.uploads import UploadRequest, create_upload, draw_is_final, withdraw_upload


def _upload_json(upload: ImagingUpload) -> dict:
    return {
        "id": upload.pk,
        "status": upload.status,
        "status_label": upload.get_status_display(),
        "progress": upload.progress,
        "stage": upload.stage,
        "error": upload.error,
        "status_url": reverse("dashboard:upload_status", args=[upload.pk]),
        "draw_url": reverse("dashboard:draw", args=[upload.draw_id]),
    }


@login_required
@require_POST
def upload_create(request: HttpRequest, pk: int) -> JsonResponse:
    """The upload form posts here (fetch); JSON back: the upload and where to poll its status."""
    draw = get_object_or_404(BloodDraw.objects.for_user(request.user).select_related("patient"), pk=pk)
    if not can_on(request.user, Action.UPLOAD, draw):  # the role in this patient's care team
        return JsonResponse({"error": "Your role does not allow uploads for this patient."}, status=403)
    form = UploadForm(request.POST, request.FILES)
    files = request.FILES.getlist("files")
    if not files:
        return JsonResponse({"error": "Choose at least one image file."}, status=400)
    if not form.is_valid():
        errors = {k: v for k, v in form.errors.items() if k != "files"}
        if errors:
            msg = "; ".join(f"{form.fields[k].label}: {' '.join(v)}" for k, v in errors.items())
            return JsonResponse({"error": msg}, status=400)
    data = form.cleaned_data
    if draw_is_final(draw) and request.POST.get("confirm_final") not in ("1", "on", "true"):
        return JsonResponse({"error": "This draw is final; adding imaging makes it preliminary again. "
                                      "Tick the confirmation to upload anyway."}, status=400)
    try:
        # Issue 13: the same files again are refused unless the user ticks the confirmation.
        refuse_duplicates(draw, files, bool(data.get("confirm_duplicates")))
    except ValidationError as err:
        return JsonResponse({"error": " ".join(err.messages), "duplicate": True}, status=409)
    try:
        upload = create_upload(draw, UploadRequest(files=files, channels=data.get("channels") or "",
                                                   kind=data.get("kind") or ImagingUpload.Kind.EVENTS,
                                                   pixel_size_um=data.get("pixel_size_um")), request.user)
    except ValidationError as err:
        return JsonResponse({"error": " ".join(err.messages)}, status=400)
    record(request, "create", upload, patient=draw.patient, detail={"files": len(files)})
    for warning in upload.warnings:
        messages.warning(request, warning)  # shown on the draw page the progress bar reloads
    return JsonResponse({**_upload_json(upload), "warnings": upload.warnings}, status=201)


@login_required
@require_POST
def upload_withdraw(request: HttpRequest, pk: int) -> HttpResponse:
    """Withdraw a mistaken upload (reason required): its events leave the draw's count."""
    upload = record_for(request, ImagingUpload.objects.select_related("draw__patient"), pk, Action.UPLOAD)
    try:
        withdraw_upload(upload, request.user, request.POST.get("reason", ""), request=request)
    except ValidationError as err:
        messages.error(request, f"Upload {upload.pk}: {' '.join(err.messages)}")
    else:
        messages.success(request, f"Upload {upload.pk} withdrawn: its cells no longer count for this draw.")
    return redirect(upload.draw)


@login_required
@require_GET
def upload_status(request: HttpRequest, pk: int) -> JsonResponse:
    """Polled by the progress bar about once a second: not audited per poll (the upload's
    creation and the draw page are), to keep the audit trail readable."""
    upload = get_object_or_404(ImagingUpload.objects.for_user(request.user), pk=pk)
    data = _upload_json(upload)
    if upload.status == UploadStatus.DONE:
        data["events"] = upload.events.count()
    response = JsonResponse(data)
    response["Cache-Control"] = "no-store"
    return response
