"""The draw page's re-run panel (issue 13, point 5): other versions' calls on the draw's cells,
and for administrators the form that re-runs the draw with another version (dashboard/rerun_views.py)."""

from __future__ import annotations

from django import template

from dashboard.access import rights_on
from patients.models import ClassifierVersion
from patients.rerun import counted_versions, rerun_results
from patients.roles import Action

register = template.Library()


@register.inclusion_tag("dashboard/_rerun.html", takes_context=True)
def draw_rerun(context, draw) -> dict:  # noqa: ANN001
    request = context["request"]
    # The right on *this* draw's patient (the check of dashboard/rerun_views.py), as the page's other controls.
    admin = rights_on(request, draw)[Action.MANAGE_MODELS.value]
    counted = counted_versions(draw)
    versions = (list(ClassifierVersion.objects.exclude(version__in=counted if len(counted) == 1 else [])
                     .order_by("-is_active", "retired", "-created_at")) if admin and counted else [])
    return {"draw": draw, "results": rerun_results(draw), "versions": versions, "counted": counted,
            "can_rerun": admin and bool(versions), "csrf_token": context.get("csrf_token")}
