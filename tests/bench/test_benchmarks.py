"""Each benchmark runs in its tiny ``--quick`` mode and prints one JSON object as its last
line, with the keys its docstring documents. Timings are not asserted (benchmarks, not
timed tests); docs/performance.md holds the figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_bench(module: str, *args: str, timeout: float = 180) -> dict:
    env = dict(os.environ)
    env.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")
    env["PYTHONUNBUFFERED"] = "1"
    proc = subprocess.run([sys.executable, "-m", module, "--quick", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f"{module} failed:\n{proc.stderr[-4000:]}"
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert lines, f"{module} printed nothing on stdout:\n{proc.stderr[-2000:]}"
    return json.loads(lines[-1])


def drop_database(name: str) -> None:
    import psycopg

    from bench.common import database_url

    with psycopg.connect(database_url("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def scratch_db():
    """One throw-away database for the pipeline and dashboard runs of this module (each
    benchmark migrates it; the dashboard's generator replaces whatever is there)."""
    name = f"ctc_bench_t_{uuid.uuid4().hex[:8]}"
    yield name
    drop_database(name)


def test_classifier_quick() -> None:
    out = run_bench("bench.classifier")
    assert out["benchmark"] == "classifier" and out["quick"] is True
    for key in ("device", "threads", "precision", "weights", "input", "n_features", "model", "resnet18", "ratio",
                "model_with_explanations_events_per_s", "features", "model_plus_features_events_per_s", "one_thread",
                "targets",
                "meets_target", "accuracy", "machine"):
        assert key in out, key
    for name in ("model", "resnet18"):
        m = out[name]
        assert m["params"] > 0 and m["mflops_per_event"] > 0 and m["peak_rss_mb"] >= 0
        assert all(v > 0 for v in m["events_per_s"].values())
    # the shipped model is a small fraction of ResNet-18's work per event
    assert out["model"]["mflops_per_event"] < out["resnet18"]["mflops_per_event"] / 5
    assert set(out["ratio"]) == set(out["model"]["events_per_s"])
    assert out["features"]["events_per_s"] > 0
    assert set(out["meets_target"]) == {"events_per_s", "ratio"}


@pytest.mark.worker
def test_pipeline_quick(scratch_db: str) -> None:
    out = run_bench("bench.pipeline", "--database", scratch_db)
    assert out["benchmark"] == "pipeline"
    for key in ("weights", "worker_start_s", "warmup_s", "repeats", "gallery", "field", "machine"):
        assert key in out, key
    for name in ("gallery", "field"):
        r = out[name]
        assert r["events"] > 0 and r["seconds"] > 0 and r["events_per_s"] > 0
        assert set(r["share"]) == {"decode", "segment", "features", "model", "explanation", "database", "other"}
        assert {"decode", "segment", "features", "model", "explanation", "database"} <= set(r["stages_s"])
        assert isinstance(r["meets_target"], bool)
    assert out["gallery"]["events"] == 16


def test_dashboard_quick(scratch_db: str) -> None:
    out = run_bench("bench.dashboard", "--database", scratch_db)
    assert out["benchmark"] == "dashboard"
    assert out["cohort"] == {"patients": 40, "draws": 160, "events": 3200, "care_teams": 10, "generated": True,
                             "generate_s": out["cohort"]["generate_s"]}
    pages = {"patient_list", "patient", "draw", "cohort", "review", "api_patients", "api_draws", "api_draw_events"}
    assert set(out["pages"]) == pages
    for page, by_user in out["pages"].items():
        assert set(by_user) == {"admin", "team"}, page
        for user, r in by_user.items():
            assert r["status"] == 200, (page, user, r.get("error"))
            assert r["p95_ms"] >= r["p50_ms"] > 0 and r["queries"] > 0
    for key in ("target_p95_ms", "worst", "failing", "meets_target", "machine", "repeats"):
        assert key in out, key
