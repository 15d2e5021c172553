"""One writer of the access trail (issue 12, point 3): ``patients.audit.record``.

Every other module asks it; none builds an ``AuditEvent`` row itself. The copies that did
had drifted (no NUL-safe detail, their own address and path rules). The scan reads the
sources with ``ast``, so a comment or a docstring naming ``AuditEvent(`` does not count,
and an import under another name (``import ... AuditEvent as A``) does.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WRITER = "patients/audit.py"
#: Modules still building rows by hand, with the change that removes them from here (none left).
ALLOWED: set[str] = set()
SKIP_DIRS = {"tests", "migrations", "var", "media", "artifacts", "runs", "staticfiles", "node_modules", "__pycache__"}
WRITE_METHODS = {"create", "bulk_create", "get_or_create", "update_or_create"}
MANAGERS = {"objects", "_default_manager", "_base_manager"}


def _sources() -> list[Path]:
    out = []
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in SKIP_DIRS]
        out += [Path(folder) / f for f in files if f.endswith(".py")]
    return out


def _is_model(node: ast.AST, names: set[str]) -> bool:
    """``AuditEvent``, an alias of it, or ``<something>.AuditEvent`` (``models.AuditEvent``)."""
    return (isinstance(node, ast.Name) and node.id in names) or (
        isinstance(node, ast.Attribute) and node.attr == "AuditEvent")


def constructions(source: str) -> list[int]:
    """Line numbers where ``source`` builds an AuditEvent row: ``AuditEvent(...)`` or
    ``AuditEvent.objects.create(...)`` (and bulk_create / get_or_create / update_or_create)."""
    tree = ast.parse(source)
    names = {"AuditEvent"} | {
        a.asname for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
        for a in n.names if a.name == "AuditEvent" and a.asname}
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        through_manager = (isinstance(f, ast.Attribute) and f.attr in WRITE_METHODS
                           and isinstance(f.value, ast.Attribute) and f.value.attr in MANAGERS
                           and _is_model(f.value.value, names))
        if through_manager or _is_model(f, names):
            lines.append(node.lineno)
    return sorted(lines)


def test_the_scan_finds_every_way_of_building_a_row():
    assert constructions("from patients.models import AuditEvent\nAuditEvent.objects.create(action='view')") == [2]
    assert constructions("from patients import models\nmodels.AuditEvent(action='x').save()") == [2]
    assert constructions("from patients.models import AuditEvent as A\nA.objects.bulk_create([])") == [2]
    assert constructions("AuditEvent._default_manager.get_or_create(action='x')") == [1]
    # Reading the trail, naming the class in text or asking record() is not building a row.
    assert constructions('"""AuditEvent(...)"""\nAuditEvent.objects.filter(action="view")\n'
                         'record(request, AuditEvent.Action.VIEW)') == []


def test_only_patients_audit_builds_audit_rows():
    found = {}
    for path in _sources():
        rel = path.relative_to(ROOT).as_posix()
        lines = constructions(path.read_text(encoding="utf-8"))
        if lines and rel != WRITER and rel not in ALLOWED:
            found[rel] = lines
    assert not found, f"AuditEvent rows built outside {WRITER} (call patients.audit.record instead): {found}"
    assert constructions((ROOT / WRITER).read_text(encoding="utf-8")), "the writer itself was not found: scan broken"


@pytest.mark.django_db
def test_record_without_a_request_names_the_user_and_where_it_came_from(alice, patient):
    from patients.audit import record
    from patients.models import AuditEvent

    row = record(None, AuditEvent.Action.EXPORT, user=alice, object_type="TrainingSet", object_id=7,
                 path="manage.py export_training_set", detail={"note": "a\x00b"})
    row.refresh_from_db()
    assert (row.user, row.object_type, row.object_id, row.ip_address, row.path) == (
        alice, "TrainingSet", "7", None, "manage.py export_training_set")
    assert row.detail == {"note": "a\\x00b"}  # jsonb refuses NUL: every row goes through the same guard
    row = record(None, AuditEvent.Action.REVIEW, patient, user=None)
    assert (row.user, row.patient, row.object_type, row.object_id) == (None, patient, "Patient", str(patient.pk))


@pytest.mark.django_db
def test_record_takes_the_request_user_unless_told_otherwise(rf, alice, bob, patient):
    from patients.audit import record
    from patients.models import AuditEvent

    request = rf.get("/somewhere/?q=1", REMOTE_ADDR="10.1.2.3")
    request.user = alice
    row = record(request, AuditEvent.Action.VIEW, patient)
    assert (row.user, row.ip_address, row.path, row.patient) == (alice, "10.1.2.3", "/somewhere/?q=1", patient)
    assert record(request, AuditEvent.Action.LOGIN, user=bob).user == bob  # a token for bob, say
    assert record(request, AuditEvent.Action.LOGIN_FAILED, user=None).user is None  # nobody signed in
