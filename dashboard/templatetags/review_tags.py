"""Agreement per reviewer (issue 13): Cohen's kappa reviewer-model and reviewer-reviewer, on the
review and model pages, over the reviews the signed-in user may see."""

from __future__ import annotations

from django import template

from dashboard.access import actions_for
from patients import cohort as cohort_stats
from patients.adjudication import agreement_by_reviewer
from patients.models import CellEvent, CellReview, Patient
from patients.roles import Action

register = template.Library()


def kappa_table(user) -> dict:  # noqa: ANN001
    """The rows of the agreement table and the number of cells awaiting adjudication, in scope."""
    return {"rows": agreement_by_reviewer(CellReview.objects.for_user(user))[:20],
            "pending": CellEvent.objects.for_user(user).filter(adjudication_pending=True).count()}


@register.inclusion_tag("dashboard/_review_agreement.html", takes_context=True)
def review_agreement(context) -> dict:  # noqa: ANN001
    user = context["request"].user
    if context.get("kappa") is not None:  # the review page computes it with its own cached figures
        return {**context["kappa"], "can_export": Action.EXPORT in actions_for(context["request"])}

    def build() -> dict:
        return kappa_table(user)

    # Reads every review in scope: cached per visible patients until a review moves the data stamp
    # (every review recomputes its draw's summary), as the review page's agreement card is.
    return {**cohort_stats.cached(Patient.objects.for_user(user), "review-kappa", build),
            "can_export": Action.EXPORT in actions_for(context["request"])}


@register.inclusion_tag("dashboard/_lab_training.html", takes_context=True)
def lab_training_panel(context) -> dict:  # noqa: ANN001
    """Start a lab-model training (admins), its progress, and each candidate against the active version."""
    from dashboard.review_views import _my_teams
    from patients.labmodel import MIN_PER_CLASS, MIN_REVIEWED_CELLS, MIN_REVIEWED_DRAWS, readiness, trainers
    from patients.models import LabTraining

    user = context["request"].user
    if Action.MANAGE_MODELS not in actions_for(context["request"]):
        return {"show": False, "trainers": trainers(user)}  # one line: who may start a training
    teams = list(_my_teams(user))
    jobs = list(LabTraining.objects.filter(team__in=teams).select_related("team", "candidate", "requested_by")[:5])
    metrics = [("balanced_accuracy", "Balanced accuracy"), ("roc_auc", "ROC AUC"), ("sensitivity", "Sensitivity"),
               ("specificity", "Specificity"), ("ece", "Calibration error (ECE)"), ("brier", "Brier score")]
    for job in jobs:
        res = job.result or {}
        job.rows = [(label, (res.get("active") or {}).get(key), (res.get("candidate") or {}).get(key))
                    for key, label in metrics]
    from patients.models import ClassifierVersion
    from patients.shadow import agreement

    candidates = list(ClassifierVersion.objects.filter(metadata__candidate=True, is_active=False, retired=False))
    visible = CellEvent.objects.for_user(user)
    for v in candidates:
        v.shadow_on = bool((v.metadata or {}).get("shadow"))
        v.shadow = agreement(v.version, visible)
    return {"show": True, "teams": teams, "jobs": jobs, "candidates": candidates,
            "readiness": readiness(user, teams), "min_cells": MIN_REVIEWED_CELLS, "min_draws": MIN_REVIEWED_DRAWS,
            "min_class": MIN_PER_CLASS, "csrf_token": context.get("csrf_token")}
