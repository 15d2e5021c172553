"""Who may see which patient: the one mechanism views and API share.

A user sees the patients of every care team they belong to, plus, as a trial
coordinator, every patient enrolled in a trial they coordinate. Superusers and
members with the admin role see everything. Each scoped model names the lookup
path to its patient (``scope_path``) so one queryset method serves all of them:
``patients.models.ScopedQuerySet.for_user`` applies :func:`patient_filter` (the queryset lives
with the models; this module imports none of them).
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

