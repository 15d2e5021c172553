"""The model registry: its two changes of state (promote a version, retire one) and what a
version's metadata says (call threshold, training data, evaluations).

One place for the rule (one active version; promoting un-retires; retiring deactivates) and for
its audit row, so the Models page and the API behave alike (issue 12, point 1); one reader of
the metadata the classifier writes (``python -m classifier train|finetune|domain-calibrate``) for
the Models page and the draw page's threshold line (issue 12, point 8).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from django.db import transaction
from django.http import HttpRequest

from classifier.bundle_file import check_file
from classifier.errors import ContractError
from patients.audit import record
from patients.models import ClassifierVersion


class PromotionRefused(ValueError):
    """The version cannot be made active: its weights file is missing, is not a bundle, or its
    metadata records a preprocessing contract other than the code's."""


def promote(version: ClassifierVersion, request: HttpRequest) -> ClassifierVersion:
    """Make ``version`` the only active one (new uploads use it); audited, with the held-out
    comparison a lab model was promoted on (issue 13) kept in the audit row. Its weights file is
    checked first (:func:`classifier.bundle_file.check_file`, no torch in the web process): a file
    that is gone, is not a bundle or was made for other preprocessing would otherwise fail every
    upload after it
    (:class:`PromotionRefused`; nothing changes). A version without a path runs the shipped weights."""
    if version.weights_path:
        try:
            check_file(Path(version.weights_path))
        except (ContractError, FileNotFoundError) as err:
            raise PromotionRefused(f"{version.version} cannot be made active: its weights cannot be used "
                                   f"({err}); the active version is unchanged.") from err
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


# --- What a version's metadata says -------------------------------------------------------------


def threshold(metadata: dict | None) -> float | None:
    """The operating point a version calls CTC at (``P(CTC) >= threshold``), from its metadata."""
    value = (metadata or {}).get("threshold")
    return float(value) if isinstance(value, int | float) else None


def thresholds(versions: set[str]) -> list[tuple[str, float]]:
    """``(model version, threshold)`` for the versions that produced a draw's results (one query)."""
    if not versions:
        return []
    rows = ClassifierVersion.objects.filter(version__in=versions).values_list("version", "metadata")
    return sorted((v, t) for v, meta in rows if (t := threshold(meta)) is not None)


#: The names each metric goes by in stored metadata (the classifier's, older reports', hand-written).
_METRIC_KEYS = {
    "n": ("n", "n_eval"),
    "accuracy": ("accuracy", "acc"),
    "balanced_accuracy": ("balanced_accuracy",),
    "auc": ("roc_auc", "auc"),
    "sensitivity": ("sensitivity", "recall"),
    "specificity": ("specificity",),
    "ece": ("ece", "expected_calibration_error"),
    "brier": ("brier",),
}


def _one_evaluation(name: str, src: dict) -> dict | None:
    out: dict = {"name": name}
    for key, candidates in _METRIC_KEYS.items():
        out[key] = next((src[k] for k in candidates if isinstance(src.get(k), int | float)), None)
    cm = src.get("confusion_matrix", src.get("confusion"))
    if isinstance(cm, dict) and {"tp", "fp", "tn", "fn"} <= set(cm):
        out["confusion"] = [[cm["tn"], cm["fp"]], [cm["fn"], cm["tp"]]]
        out["confusion_labels"] = ["Not CTC", "CTC"]
    elif isinstance(cm, list) and cm and all(isinstance(r, list) for r in cm):
        out["confusion"] = cm
        out["confusion_labels"] = src.get("confusion_labels") or (
            ["Not CTC", "CTC"] if len(cm) == 2 else [str(i) for i in range(len(cm))])
    roc = src.get("roc") or src.get("roc_curve")
    if isinstance(roc, dict) and roc.get("fpr") and roc.get("tpr"):
        out["roc"] = (roc["fpr"], roc["tpr"])
    if out["accuracy"] is None and out["auc"] is None and "confusion" not in out:
        return None
    return out


def evaluations(meta: dict) -> list[dict]:
    """Evaluation results in a version's metadata: ``metrics`` may hold one result or one per data set
    (the classifier writes ``{"synthetic_test": {...}, "<folder>": {...}}``)."""
    metrics = meta.get("metrics")
    found: list[dict] = []
    if isinstance(metrics, dict):
        flat = _one_evaluation("evaluation", metrics)
        if flat is not None:
            found.append(flat)
        else:
            for name, src in metrics.items():
                if isinstance(src, dict) and (one := _one_evaluation(name.replace("_", " "), src)):
                    found.append(one)
    elif (flat := _one_evaluation("evaluation", meta)) is not None:
        found.append(flat)
    return found


def training_text(meta: dict) -> str:
    """The training data in one line (``training_data`` or ``training``; a dict's plain values)."""
    training = meta.get("training_data") or meta.get("training") or ""
    if isinstance(training, dict):
        training = ", ".join(f"{k}: {val}" for k, val in training.items() if not isinstance(val, dict | list))
    return str(training)


@dataclass(frozen=True)
class VersionFacts:
    """What the Models page shows of a version's metadata."""

    threshold: float | None
    threshold_rule: str
    training: str
    evaluations: list[dict]


def facts(metadata: dict | None) -> VersionFacts:
    """What a version's stored metadata says (missing or malformed entries read as absent)."""
    meta = metadata or {}
    return VersionFacts(threshold(meta), meta.get("threshold_rule") or "", training_text(meta), evaluations(meta))
