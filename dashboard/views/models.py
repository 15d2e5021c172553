"""The Models page: every classifier version with what its metadata says (``patients.registry``),
the draws and cells it produced, and promote / retire (``patients.registry``, audited)."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Count, Sum
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from dashboard import figures
from dashboard.access import require
from dashboard.views.common import base_context
from patients import registry
from patients.audit import record
from patients.models import ClassifierVersion, DrawSummary
from patients.roles import Action


@login_required
def models_page(request: HttpRequest) -> HttpResponse:
    versions = list(ClassifierVersion.objects.order_by("-is_active", "retired", "-created_at"))
    counts = {
        row["model_version"]: row
        for row in DrawSummary.objects.for_user(request.user).order_by().values("model_version")
        .annotate(draws=Count("pk"), events=Sum("events_analysed"), ctc=Sum("ctc_count"))
    }
    for v in versions:
        facts = registry.facts(v.metadata)
        v.evaluations, v.threshold, v.threshold_rule, v.training = (
            facts.evaluations, facts.threshold, facts.threshold_rule, facts.training)
        v.counts = counts.get(v.version, {"draws": 0, "events": 0, "ctc": 0})
        v.figures = []
        for i, ev in enumerate(v.evaluations[:3]):
            if "confusion" in ev:
                v.figures.append((f"fig-cm-{v.pk}-{i}", f"Confusion matrix · {ev['name']}",
                                  figures.to_json(figures.confusion_figure(ev["confusion"], ev["confusion_labels"]))))
            if "roc" in ev:
                v.figures.append((f"fig-roc-{v.pk}-{i}", f"ROC · {ev['name']}",
                                  figures.to_json(figures.roc_figure(*ev["roc"], ev.get("auc")))))
    record(request, "view", object_type="ClassifierVersions")
    return render(request, "dashboard/models.html", base_context(request, nav="models", versions=versions))


@login_required
@require_POST
def model_action(request: HttpRequest, pk: int, action: str) -> HttpResponse:
    version = get_object_or_404(ClassifierVersion, pk=pk)
    require(request, Action.MANAGE_MODELS)
    if action == "promote":
        try:
            registry.promote(version, request)
        except registry.PromotionRefused as err:
            messages.error(request, str(err))
        else:
            messages.success(request, f"{version.version} is now the active model for new uploads.")
    elif action == "retire":
        registry.retire(version, request)
        messages.success(request, f"{version.version} is retired; its past results are kept.")
    else:
        raise Http404("Unknown action")
    return redirect("dashboard:models")
