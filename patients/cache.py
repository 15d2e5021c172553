"""When cached cohort results go stale: a data stamp that changes with every write they depend on.

The cohort page derives everything (arm table, waterfall, swimmer lanes, overdue list)
from the visible patients' draws, summaries and treatment lines, and Python work on
1,000 courses is most of its time; ``patients.cohort.cached`` keeps the result under
a key made of the visible patients *and* :func:`data_stamp`. The stamp has two parts
because either alone misses writes:

- a **version token** in Django's cache, replaced by signals on every save or delete
  of a model the courses read (:data:`WATCHED`). It catches edits that change no
  count (a treatment line's end date, a draw's timepoint, a patient moved to another
  arm), and with a shared cache (Redis) it reaches every process at once;
- a **database stamp**, one cheap query (counts, highest ids, latest summary update),
  which catches what the signals of *this* process never see: summaries recomputed by
  the Celery worker, rows written by another web process, and anything written with
  the cache down or flushed.

With the local-memory cache (the default when ``CACHES`` is not configured) an *edit*
made in another web process is only caught by the database stamp if it touches a
summary; :data:`patients.cohort.CACHE_SECONDS` bounds that case.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import Model
from django.db.models.signals import post_delete, post_save

VERSION_KEY = "patients:cohort-version"


def _watched() -> tuple[type[Model], ...]:
    from patients.models import BloodDraw, CancerType, CareTeam, DrawSummary, Patient, TreatmentLine, Trial, TrialArm

    # Everything patient_courses / overdue_patients read, reference data included (a new
    # cut-off re-classifies every draw; a renamed trial or site relabels the arm table).
    return (Patient, BloodDraw, DrawSummary, TreatmentLine, CancerType, CareTeam, Trial, TrialArm)


def cohort_version() -> str:
    """The current version token (made on first use, kept until the next write)."""
    token = cache.get(VERSION_KEY)
    if token is None:
        token = uuid.uuid4().hex
        # add(): two processes starting at once agree on one token.
        if not cache.add(VERSION_KEY, token, timeout=None):
            token = cache.get(VERSION_KEY) or token
    return token


def _new_version() -> None:
    cache.set(VERSION_KEY, uuid.uuid4().hex, timeout=None)


def bump_cohort_version(**_: Any) -> None:
    """A signal receiver: every cached cohort result is stale from now on.

    Bumped at once (a read later in the same transaction must not get the old result)
    and again on commit: a request in another process that read the token between the
    save and the commit cached the *old* rows under the new token.
    """
    _new_version()
    transaction.on_commit(_new_version)


def database_stamp() -> tuple:
    """One query: row counts and highest ids of draws, lines and patients, and the latest summary update.

    A summary is saved (``updated_at`` moves) whenever a draw is analysed, reviewed or its
    volume corrected; an insert raises a highest id, a delete lowers a count, and ids are
    never reused. Portable SQL (scalar subqueries), so it runs on SQLite too.
    """
    from patients.models import BloodDraw, DrawSummary, Patient, TreatmentLine

    parts = []
    for model in (BloodDraw, TreatmentLine, Patient):
        table = connection.ops.quote_name(model._meta.db_table)
        parts.append(f"(SELECT COUNT(*) FROM {table})")
        parts.append(f"(SELECT MAX(id) FROM {table})")
    table = connection.ops.quote_name(DrawSummary._meta.db_table)
    parts.append(f"(SELECT COUNT(*) FROM {table})")
    parts.append(f"(SELECT MAX(updated_at) FROM {table})")
    with connection.cursor() as cur:
        cur.execute("SELECT " + ", ".join(parts))
        return tuple(cur.fetchone())


def data_stamp() -> str:
    """Changes whenever anything a cohort result is made of may have changed."""
    return f"{cohort_version()}|{database_stamp()!r}"


def connect_signals() -> None:
    """Wired in ``PatientsConfig.ready``: bump the version on each save and delete of a watched model."""
    for model in _watched():
        uid = f"patients.cache.bump:{model._meta.label}"
        post_save.connect(bump_cohort_version, sender=model, dispatch_uid=uid + ":save")
        post_delete.connect(bump_cohort_version, sender=model, dispatch_uid=uid + ":delete")
