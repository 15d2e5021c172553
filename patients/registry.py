"""The model registry's two changes of state: promote a version, retire one.

One place for the rule (one active version; promoting un-retires; retiring deactivates) and for
its audit row, so the Models page and the API behave alike (issue 12, point 1).
"""

from __future__ import annotations

from django.db import transaction
from django.http import HttpRequest

from patients.audit import record
from patients.models import ClassifierVersion


def promote(version: ClassifierVersion, request: HttpRequest) -> ClassifierVersion:
    """Make ``version`` the only active one (new uploads use it); audited, with the held-out
    comparison a lab model was promoted on (issue 13) kept in the audit row."""
    with transaction.atomic():
        for other in ClassifierVersion.objects.exclude(pk=version.pk).filter(is_active=True):
            other.is_active = False
            other.save(update_fields=["is_active"])  # one by one: the history records each
        version.is_active, version.retired = True, False
        version.save(update_fields=["is_active", "retired"])
        detail: dict = {"action": "promote"}
        if (version.metadata or {}).get("comparison"):
            detail["comparison"] = version.metadata["comparison"]
        record(request, "update", version, detail=detail)
    return version


def retire(version: ClassifierVersion, request: HttpRequest) -> ClassifierVersion:
    """Retire ``version`` (no longer active; its past results keep naming it); audited."""
    with transaction.atomic():
        version.is_active, version.retired = False, True
        version.save(update_fields=["is_active", "retired"])
        record(request, "update", version, detail={"action": "retire"})
    return version
