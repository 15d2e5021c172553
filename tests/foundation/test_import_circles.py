"""No import circles in ``patients`` held together by imports inside functions (issue 12, point 6).

Two circles were: ``models`` <-> ``scoping`` (the queryset class now lives with the models; the
scoping rule imports none of them) and ``tasks`` <-> ``uploads`` (``enqueue`` lives beside its
task). With them went ``models`` -> ``outcomes`` -> ``cohort`` -> ``models`` (the outcome-date check
lives with the other date checks) and ``shadow`` <-> ``training_tasks`` (``enqueue_shadow`` beside
its task), ``schedule`` <-> ``summary`` (``sentence_for_draws`` reads draws' summaries: it
lives in ``summary``, which imports the status rule from ``schedule`` at the top), and ``cohort``
<-> ``outcomes`` (the draws CSV joins courses and survival records: ``outcomes.draws_csv_rows``
lives above both; ``cohort`` imports no patients module inside a function). The scan reads
the sources with ``ast``: an import inside a function that closes a circle is what these tests
refuse; a lazy import for another reason (torch is heavy) is fine.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "patients"
MODULES = {f"patients.{p.stem}": p for p in sorted(PACKAGE.glob("*.py")) if p.stem != "__init__"}

#: The modules of issue 12.6: no import of another patients module inside a function at all.
NO_LAZY = ("patients.models", "patients.scoping", "patients.tasks", "patients.uploads", "patients.pipeline",
           "patients.training_tasks", "patients.shadow", "patients.outcomes", "patients.validation",
           "patients.cohort")

#: Circles still closed by a lazy import, outside issue 12.6's modules (each pair is one circle).
#: Remove a pair when it is gone; the test fails on a new one.
KNOWN_CIRCLES: set[frozenset[str]] = set()


def _target(node: ast.AST) -> list[str]:
    """The patients modules an import statement names (``from patients import x`` names ``patients.x``)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name in MODULES]
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        if node.module == "patients":
            return [f"patients.{a.name}" for a in node.names if f"patients.{a.name}" in MODULES]
        return [node.module] if node.module in MODULES else []
    return []


def imports(path: Path) -> tuple[set[str], list[tuple[str, str, int]]]:
    """(modules imported at module level, [(module, function, line)] imported inside a function).

    Module level includes ``if``/``try`` blocks at the top but not ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top: set[str] = set()

    def walk_top(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.If | ast.Try):
                walk_top(node.body + getattr(node, "orelse", []) + getattr(node, "finalbody", [])
                         + [s for h in getattr(node, "handlers", []) for s in h.body])
            top.update(_target(node))

    walk_top(tree.body)
    lazy = [(m, fn.name, node.lineno) for fn in ast.walk(tree) if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef)
            for node in ast.walk(fn) for m in _target(node)]
    return top, lazy


def _graph(include_lazy: bool) -> dict[str, set[str]]:
    """Module -> the patients modules it imports (inside functions too if ``include_lazy``, except
    the lazy imports of :data:`KNOWN_CIRCLES`)."""
    graph = {}
    for name, path in MODULES.items():
        top, lazy = imports(path)
        graph[name] = top | ({m for m, _, _ in lazy if frozenset({name, m}) not in KNOWN_CIRCLES}
                             if include_lazy else set())
        graph[name].discard(name)
    return graph


def _path(graph: dict[str, set[str]], start: str, goal: str) -> list[str] | None:
    """A chain of imports from ``start`` to ``goal``, or None."""
    seen, todo = {start: [start]}, [start]
    while todo:
        here = todo.pop()
        for nxt in sorted(graph.get(here, ())):
            if nxt not in seen:
                seen[nxt] = [*seen[here], nxt]
                if nxt == goal:
                    return seen[nxt]
                todo.append(nxt)
    return None


def test_issue_12_6_modules_import_no_patients_module_inside_a_function():
    found = [f"{name}:{line} {fn}() imports {m}" for name in NO_LAZY for m, fn, line in imports(MODULES[name])[1]]
    assert not found, "\n".join(found)


def test_no_import_inside_a_function_closes_a_circle():
    graph = _graph(include_lazy=True)
    circles = []
    for name, path in MODULES.items():
        for m, fn, line in imports(path)[1]:
            if frozenset({name, m}) not in KNOWN_CIRCLES and (back := _path(graph, m, name)):
                circles.append(f"{name}:{line} {fn}() imports {m}, which imports it back: {' -> '.join(back)}")
    assert not circles, "\n".join(circles)


def test_module_level_imports_form_no_circle():
    """Without the lazy imports, the package's import graph is a tree-like order: any module can be
    imported first (no circle that works only in one import order)."""
    graph = _graph(include_lazy=False)
    circles = [" -> ".join([name, *back]) for name in graph for m in graph[name]
               if (back := _path(graph, m, name)) and back[:1] == [m]]
    assert not circles, "\n".join(circles)


def test_the_scan_sees_a_circle_dodged_inside_a_function(tmp_path, monkeypatch):
    """The check can fail: the old models.py/scoping.py pair is reported."""
    (tmp_path / "models.py").write_text("from patients.scoping import ScopedQuerySet\n")
    (tmp_path / "scoping.py").write_text("def for_user():\n    from patients.models import Patient\n")
    monkeypatch.setattr(sys.modules[__name__], "MODULES",
                        {"patients.models": tmp_path / "models.py", "patients.scoping": tmp_path / "scoping.py"})
    with pytest.raises(AssertionError, match=r"patients.scoping:2 for_user\(\) imports patients.models"):
        test_no_import_inside_a_function_closes_a_circle()
    monkeypatch.setattr(sys.modules[__name__], "NO_LAZY", ("patients.scoping",))
    with pytest.raises(AssertionError, match="imports patients.models"):
        test_issue_12_6_modules_import_no_patients_module_inside_a_function()


#: Two ends of the circles that were: uploads first loads tasks, pipeline, training_tasks, shadow in that
#: order; training_tasks first the other way round (shadow before tasks). django.setup() loads models.
#: Any order works when the module-level graph has no circle (test above); this runs two for real.
FIRST = ("patients.uploads", "patients.training_tasks")


def test_each_module_imports_first_in_a_fresh_interpreter():
    """Each module imported first after django.setup() (which loads patients.models), in its own
    interpreter; patients.scoping even before setup (it imports no model)."""
    code = ("import importlib, sys\n"
            "import patients.scoping\n"  # before setup: no model import
            "import django; django.setup()\n"
            "importlib.import_module(sys.argv[1])\n"
            "print('ok', sys.argv[1])\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", code, m], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for m in FIRST]
    for m, p in zip(FIRST, procs, strict=True):
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0 and f"ok {m}" in out, out[-2000:]
