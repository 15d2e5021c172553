"""Readable names for the classifier's cell categories: one mapping for every page."""

from __future__ import annotations

CATEGORY_LABELS: dict[str, str] = {
    "ctc": "CTC",
    "apoptotic_ctc": "Apoptotic CTC",
    "leukocyte": "Leukocyte",
    "ck_debris": "CK+ debris",
    "artifact": "Artifact",
}


def category_label(code: str | None) -> str:
    """``"ck_debris"`` -> ``"CK+ debris"``; an unknown code reads as itself without underscores."""
    if not code:
        return "—"
    return CATEGORY_LABELS.get(code, code.replace("_", " ").capitalize())


def call_category_disagree(call: str, category: str) -> bool:
    """The binary call and the category head say different things (a cell worth a look):
    called CTC but categorised as a non-CTC class, or not CTC but categorised as CTC."""
    if category not in CATEGORY_LABELS:
        return False
    return (call == "ctc") != (category == "ctc")
