"""Who may see which patient: the one mechanism views and API share.

A user sees the patients of every care team they belong to, plus, as a trial
coordinator, every patient enrolled in a trial they coordinate. Superusers and
members with the admin role see everything. Each scoped model names the lookup
path to its patient (``scope_path``) so one queryset method serves all of them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.db import models

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser, AnonymousUser


def is_admin(user: Any) -> bool:
    if not user.is_authenticated or not user.is_active:
        return False
    return bool(user.is_superuser or user.memberships.filter(role="admin").exists())


def patient_filter(user: AbstractBaseUser | AnonymousUser, path: str = "") -> models.Q | None:
    """A Q object selecting what ``user`` may see; None means everything."""
    if is_admin(user):
        return None
    return models.Q(**{f"{path}care_team__memberships__user": user}) | models.Q(
        **{f"{path}trial__coordinators": user}
    )


class ScopedQuerySet(models.QuerySet):
    def for_user(self, user: AbstractBaseUser | AnonymousUser) -> ScopedQuerySet:
        if not user.is_authenticated or not user.is_active:
            return self.none()
        q = patient_filter(user)
        if q is None:
            return self
        from patients.models import Patient

        # The visible patients as a subquery (the OR over two joins can repeat a patient; in an
        # IN list that is harmless, so no distinct()). Filtering each model on its patient, not
        # on its own ids, lets PostgreSQL use the patient_id/draw_id indexes instead of
        # semi-joining the whole table with itself (CellEvent: 1.2 s -> 50 ms, docs/performance.md).
        visible = Patient._default_manager.filter(q).values("pk")
        path = getattr(self.model, "scope_path", "")
        return self.filter(pk__in=visible) if not path else self.filter(**{f"{path}in": visible})
