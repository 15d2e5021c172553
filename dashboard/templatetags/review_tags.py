"""Agreement per reviewer (issue 13): Cohen's kappa reviewer-model and reviewer-reviewer, on the
review and model pages, over the reviews the signed-in user may see.

The table is a read-only statistic of the reviews of every patient the user sees (any role may
read it, as it may read the records; the Models page shows it to everyone), so it is cached per
visible patients. Its link to adjudication is not: it counts the cells the adjudication page lists
(those of patients the user may review, ``patients.adjudication.adjudication_list``), per request.
"""

from __future__ import annotations

from django import template

from dashboard.access import actions_for
from patients import cohort as cohort_stats
from patients.adjudication import adjudication_list, agreement_by_reviewer
from patients.models import CellEvent, CellReview, Patient
from patients.roles import Action

register = template.Library()


def kappa_table(user) -> dict:  # noqa: ANN001
    """The rows of the agreement table: every review of the patients ``user`` sees."""
    return {"rows": agreement_by_reviewer(CellReview.objects.for_user(user))[:20]}


def adjudication_pending(request) -> int:  # noqa: ANN001
    """How many cells the adjudication page would list for this user: disputed cells of the patients
    they may review; 0 when their role reviews nowhere (that page answers 403)."""
    if Action.REVIEW not in actions_for(request):
        return 0
    return adjudication_list(request.user).count()


@register.inclusion_tag("dashboard/_review_agreement.html", takes_context=True)
def review_agreement(context) -> dict:  # noqa: ANN001
    request = context["request"]
    can_export = Action.EXPORT in actions_for(request)
    if context.get("kappa") is not None:  # the review page computes it (and its adjudication count)
        return {**context["kappa"], "can_export": can_export}
    mine = {"pending": adjudication_pending(request), "can_export": can_export}

    def build() -> dict:
        return kappa_table(request.user)

    # Reads every review in scope: cached per visible patients until a review moves the data stamp
    # (every review recomputes its draw's summary), as the review page's agreement card is.
    return {**cohort_stats.cached(Patient.objects.for_user(request.user), "review-kappa", build), **mine}


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
