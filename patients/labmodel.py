"""Train a lab model from the lab's reviews (issue 13, point 4).

``run_training(job)`` is what the Celery task on the ``training`` queue runs (never the
classification queue, so uploads are never stuck behind a training):

1. export the care team's reviewed cells (patients/trainingset.py, scoped as the requester sees);
2. split them **by draw** (never cells of one draw on both sides), about a third of the draws held out;
3. adapt the active version on the training side (``classifier.finetune.adapt``: the model
   unchanged, a lab head over its features, the full fine-tune or both, chosen by
   cross-validation on the training side, with its own operating threshold);
4. evaluate the active and the candidate version on the same held-out cells: balanced accuracy,
   AUC, sensitivity and specificity at the threshold, calibration (ECE, Brier), and McNemar's exact
   p for the paired calls;
5. register the candidate ``ClassifierVersion`` with its metrics and provenance (draws on each
   side, reviewers, base version). It is **never** made active here: an admin promotes it.
"""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from django.conf import settings
from django.utils import timezone

from patients import registry
from patients.models import ClassifierVersion, LabTraining
from patients.trainingset import write_training_set


def _knob(name: str, default: int) -> int:
    """Fine-tuning steps and synthetic replay size from the environment (tests use small ones)."""
    return int(os.environ.get(name, default))


class TrainingError(Exception):
    """A reason the training cannot run that the admin should read (too few draws, ...)."""


#: The least a training starts from: reviewed cells, and draws (some are held out for the comparison).
MIN_REVIEWED_CELLS = 4
MIN_REVIEWED_DRAWS = 2
#: Below this many CTC and non-CTC cells on the training side the recipe cannot cross-validate and
#: keeps the active model (``classifier.finetune.adapt``: k-fold needs two of each class).
MIN_PER_CLASS = 2

#: Where the fine-tune/cross-validation step runs on the job's progress bar (from, to), in percent.
ADAPT_PROGRESS = (35, 80)


@dataclass
class Readiness:
    """A care team's reviewed cells as a training would see them, and what it still lacks."""

    team: object  # CareTeam
    cells: int = 0
    ctc: int = 0
    draws: int = 0

    @property
    def ready(self) -> bool:
        return self.cells >= MIN_REVIEWED_CELLS and self.draws >= MIN_REVIEWED_DRAWS

    @property
    def can_adapt(self) -> bool:
        """Enough of both classes that the recipe can try a lab-specific change at all."""
        return self.ready and self.ctc >= MIN_PER_CLASS and self.cells - self.ctc >= MIN_PER_CLASS

    @property
    def missing(self) -> str:
        """What a training still needs, in words (empty when it can start)."""
        need = []
        if self.cells < MIN_REVIEWED_CELLS:
            n = MIN_REVIEWED_CELLS - self.cells
            need.append(f"{n} more reviewed cell{'s' if n != 1 else ''}")
        if self.draws < MIN_REVIEWED_DRAWS:
            n = MIN_REVIEWED_DRAWS - self.draws
            need.append(f"reviewed cells from {n} more draw{'s' if n != 1 else ''}")
        return " and ".join(need)


def readiness(user, teams) -> list[Readiness]:  # noqa: ANN001 - User, iterable of CareTeam
    """Per team: the reviewed cells ``user`` may see (what the training exports), CTC among them, draws."""
    from django.db.models import Count, Q

    from patients.trainingset import reviewed_cells

    teams = list(teams)
    rows = {
        r["draw__patient__care_team"]: r
        for r in reviewed_cells(user).filter(draw__patient__care_team__in=teams).order_by()
        .values("draw__patient__care_team")
        .annotate(cells=Count("pk"), ctc=Count("pk", filter=Q(reviewed_call="ctc")),
                  draws=Count("draw", distinct=True))
    }
    out = []
    for team in teams:
        r = rows.get(team.pk, {})
        out.append(Readiness(team, r.get("cells", 0), r.get("ctc", 0), r.get("draws", 0)))
    return out


def trainers(user) -> list[str]:  # noqa: ANN001
    """Who may start a lab-model training for ``user``'s care teams: their administrators' user names."""
    from patients.models import Membership, Role

    teams = Membership.objects.filter(user=user).values("team")
    return sorted(set(Membership.objects.filter(team__in=teams, role=Role.ADMIN, user__is_active=True)
                      .values_list("user__username", flat=True)))


def adaptation_summary(report: dict) -> dict:
    """What the page says about the recipe's choice (``classifier.finetune.adapt``'s report).

    ``kept_active``: the recipe chose the active model unchanged (no lab-specific change beat it
    by the margin), so the candidate makes the same calls: promoting it changes nothing.
    """
    scores = report.get("candidates") or {}
    others = {name: s["cv_balanced_accuracy"] for name, s in scores.items() if name != "base"}
    best = max(others, key=others.get) if others else None
    return {
        "chosen": report.get("chosen", ""),
        "kept_active": report.get("chosen") == "base",
        "margin": report.get("margin"),
        "reason": report.get("reason", ""),
        "base_cv": (scores.get("base") or {}).get("cv_balanced_accuracy"),
        "best_other": best,
        "best_other_cv": others.get(best) if best else None,
    }


def _step(job: LabTraining, progress: int, stage: str) -> None:
    job.progress, job.stage = progress, stage
    LabTraining.objects.filter(pk=job.pk).update(progress=progress, stage=stage)


def _adapt_progress(job: LabTraining, n_cells: int):  # noqa: ANN202 - the callback adapt calls
    """``adapt``'s progress (fraction, step) onto the job's bar between :data:`ADAPT_PROGRESS`'s ends;
    the row is written only when the percent or the step changes."""
    lo, hi = ADAPT_PROGRESS
    last: list = [None]

    def report(fraction: float, what: str) -> None:
        percent = lo + int(round(fraction * (hi - lo)))
        stage = f"fine-tuning ({n_cells} cells): {what}"[:60]
        if (percent, stage) != last[0]:
            last[0] = (percent, stage)
            _step(job, percent, stage)

    return report


def split_by_draw(rows: list[dict], salt: str = "", held_out: float = 1 / 3) -> tuple[set[str], set[str]]:
    """Draw ids for training and for the held-out test; both sides non-empty, no draw on both.

    Each draw's side is fixed by a hash of ``salt`` (the care team) and its id, not by a shuffle
    per training: successive trainings of one team are compared on the same held-out draws, and a
    draw reviewed later joins a side without moving the others.
    """
    draws = sorted({r["draw"] for r in rows})
    if len(draws) < MIN_REVIEWED_DRAWS:
        raise TrainingError(f"Need reviewed cells from at least {MIN_REVIEWED_DRAWS} draws to hold some out; "
                            f"have {len(draws)}.")
    rank = {d: int.from_bytes(hashlib.sha256(f"{salt}:{d}".encode()).digest()[:8], "big") / 2**64 for d in draws}
    test = {d for d in draws if rank[d] < held_out}
    if not test:  # too few draws for the share to land on one: hold out the lowest-ranked
        test = {min(draws, key=rank.__getitem__)}
    elif len(test) == len(draws):
        test.discard(max(draws, key=rank.__getitem__))
    return set(draws) - test, test


def _write_side(src: Path, rows: list[dict], draws: set[str], dst: Path) -> list[dict]:
    side = [r for r in rows if r["draw"] in draws]
    (dst / "events").mkdir(parents=True, exist_ok=True)
    for r in side:
        shutil.copyfile(src / r["file"], dst / r["file"])
    with open(dst / "labels.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0].keys()))
        writer.writeheader()
        writer.writerows(side)
    return side


def mcnemar_p(y: np.ndarray, a: np.ndarray, b: np.ndarray) -> float | None:
    """Exact McNemar p (two-sided binomial on the discordant pairs) for two sets of paired calls."""
    from scipy.stats import binomtest

    a_right, b_right = a == y, b == y
    n01, n10 = int(np.sum(a_right & ~b_right)), int(np.sum(~a_right & b_right))
    if n01 + n10 == 0:
        return 1.0
    return float(binomtest(n01, n01 + n10, 0.5).pvalue)


def _summary(m: dict) -> dict:
    keys = ("n", "n_ctc", "balanced_accuracy", "roc_auc", "sensitivity", "specificity", "ece", "brier", "threshold")
    return {k: m.get(k) for k in keys}


def run_training(job: LabTraining) -> LabTraining:
    """Run ``job`` to the end (status, progress and stage written as it goes)."""
    import torch

    from classifier import data, evaluate
    from classifier.finetune import adapt
    from classifier.weights import load_bundle, save_bundle, sha256
    from patients.pipeline import active_weights

    torch.set_num_threads(1)  # a shared machine: training never takes every core from classification
    LabTraining.objects.filter(pk=job.pk).update(status=LabTraining.Status.RUNNING, progress=1, stage="starting")
    try:
        with tempfile.TemporaryDirectory(prefix="lab-training-") as tmp:
            root = Path(tmp)
            _step(job, 5, "exporting the reviewed cells")
            exported = write_training_set(job.requested_by, root / "all", job.team)
            with open(root / "all" / "labels.csv", newline="") as fh:
                rows = list(csv.DictReader(fh))
            if exported.cells < MIN_REVIEWED_CELLS:
                raise TrainingError(f"Only {exported.cells} reviewed cells in {job.team}: review more first "
                                    f"(at least {MIN_REVIEWED_CELLS}, from at least {MIN_REVIEWED_DRAWS} draws).")
            train_draws, test_draws = split_by_draw(rows, salt=f"team-{job.team_id}")
            train_rows = _write_side(root / "all", rows, train_draws, root / "train")
            test_rows = _write_side(root / "all", rows, test_draws, root / "test")
            _step(job, 15, "preparing the images")
            weights = active_weights()
            model, contract, meta = load_bundle(Path(weights) if weights else None)
            # The registry's reading of a version's threshold: none recorded is none, not 0.5. The
            # candidate starts from and is compared with the active version at its own operating point.
            active_threshold = registry.threshold(meta)
            if active_threshold is None:
                raise TrainingError(f"The active version {meta.get('version', '')} records no call threshold in its "
                                    "metadata: the candidate could not be compared with it at its operating point.")
            channels = exported.channels
            # no tone re-mapping here: the team's events come from many uploads (and some are the
            # pipeline's own thumbnails); a curve is a property of one upload, re-mapped when it was analysed
            train_ds = data.folder(root / "train", channels, contract, harmonise=False)
            test_ds = data.folder(root / "test", channels, contract, harmonise=False)
            _step(job, ADAPT_PROGRESS[0], f"fine-tuning on {len(train_ds)} cells of {len(train_draws)} draws")
            n_replay = _knob("LAB_TRAINING_REPLAY", 0)  # 0: the recipe's own (cached) replay set
            replay = data.synthetic(n_replay, 7_000, contract, workers=1, progress=False) if n_replay else None
            # The recipe chooses by cross-validation on the training side among the active model
            # unchanged, a lab head over its features, the full fine-tune and both (issue 13, point 7).
            adapted = adapt(model, train_ds, active_threshold, seed=0, steps=_knob("LAB_TRAINING_STEPS", 60),
                            replay=replay, progress=_adapt_progress(job, len(train_ds)))
            tuned, threshold = adapted.model, adapted.threshold
            _step(job, 80, f"evaluating both versions on {len(test_ds)} held-out cells")
            active_m = evaluate.evaluate_set(model, test_ds, active_threshold)
            cand_m = evaluate.evaluate_set(tuned, test_ds, threshold)
            p_active = evaluate.predict(model, test_ds)["p"]
            p_cand = evaluate.predict(tuned, test_ds)["p"]
            p_mcnemar = mcnemar_p(test_ds.is_ctc, (p_active >= active_threshold).astype(int),
                                  (p_cand >= threshold).astype(int))
            _step(job, 92, "registering the candidate")
            out_dir = Path(settings.MEDIA_ROOT) / "models"
            out_dir.mkdir(parents=True, exist_ok=True)
            path = out_dir / f"lab-{job.team_id}-{job.pk}.pt"
            provenance = {
                "team": job.team.name, "training": job.pk, "base_version": meta.get("version", ""),
                "train_draws": sorted(train_draws, key=int), "test_draws": sorted(test_draws, key=int),
                "train_cells": len(train_rows), "test_cells": len(test_rows),
                "reviewers": exported.reviewers, "channels": channels,
            }
            new_meta = {
                "name": f"{meta.get('name', 'ctc-dual')}-lab-{job.team_id}",
                "base_version": meta.get("version", "1.0.0").split("+")[0] + f"-lab{job.team_id}",
                "finetuned_from": meta.get("version"), "threshold": threshold,
                "training_data": {"kind": "a lab's reviewed cells", "provenance": provenance},
                "adaptation": adapted.report,
                "metrics": {"held_out_active": _summary(active_m), "held_out_candidate": _summary(cand_m)},
            }
            saved = save_bundle(tuned, contract, path, new_meta)
        comparison = {"active": _summary(active_m), "candidate": _summary(cand_m), "mcnemar_p": p_mcnemar,
                      "provenance": provenance, "adaptation": adaptation_summary(adapted.report)}
        version = ClassifierVersion.objects.create(
            version=saved["version"], weights_path=str(path), sha256=sha256(path), is_active=False,
            metadata={**saved, "candidate": True, "comparison": comparison, "threshold": threshold})
        LabTraining.objects.filter(pk=job.pk).update(
            status=LabTraining.Status.DONE, progress=100, stage="done", candidate=version, result=comparison,
            base_version=meta.get("version", ""), finished_at=timezone.now())
    except TrainingError as err:
        # The stage stays the step that failed: the page reads "Failed: exporting the reviewed cells".
        LabTraining.objects.filter(pk=job.pk).update(status=LabTraining.Status.FAILED, error=str(err),
                                                     finished_at=timezone.now())
    except Exception as err:  # noqa: BLE001 - the admin sees the failure on the page, the log has the trace
        import logging

        logging.getLogger(__name__).exception("lab training %s failed", job.pk)
        LabTraining.objects.filter(pk=job.pk).update(status=LabTraining.Status.FAILED,
                                                     error=f"{type(err).__name__}: {err}"[:2000],
                                                     finished_at=timezone.now())
    job.refresh_from_db()
    return job
