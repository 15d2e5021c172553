"""Re-running a draw with another classifier version from the draw page (issue 13, point 5).

Administrators only (``Action.MANAGE_MODELS``); the rule, the bulk lane and the audit row are
``patients.rerun.rerun_draw``'s, shared with ``POST /api/draws/{id}/rerun/``. The form and the
per-version results on the draw page come from ``{% draw_rerun draw %}`` (templatetags/rerun_tags.py).
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.http import require_POST

from dashboard.access import record_for
from patients.models import BloodDraw, ClassifierVersion
from patients.rerun import rerun_draw
from patients.roles import Action


@login_required
@require_POST
def draw_rerun(request: HttpRequest, pk: int) -> HttpResponse:
    """Queue the draw's uploads for analysis by the chosen version (bulk lane); audited."""
    draw = record_for(request, BloodDraw.objects.select_related("patient"), pk, Action.MANAGE_MODELS)
    back = reverse("dashboard:draw", args=[draw.pk]) + "#rerun"
    raw = request.POST.get("version", "")
    version = ClassifierVersion.objects.filter(pk=int(raw)).first() if raw.isdigit() and len(raw) < 19 else None
    if version is None:
        messages.error(request, "Choose a classifier version to re-run the draw with.")
        return redirect(back)
    try:
        uploads = rerun_draw(draw, version, request.user, request=request)
    except ValidationError as err:
        messages.error(request, " ".join(err.messages))
        return redirect(back)
    n = len(uploads)
    messages.success(request, f"Re-run with {version.version} queued ({n} upload{'s' if n != 1 else ''}, bulk lane). "
                              "Its calls appear beside the counted ones; the count is unchanged.")
    return redirect(back)
