"""The classifier's output records: what the pipeline stores per event and per run.

These dataclasses are the boundary between ``classifier`` (no Django) and the
``patients`` app, which copies them into rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Category head order. Only ``ctc`` counts as a CTC (CellSearch definition).
CATEGORIES: tuple[str, ...] = ("ctc", "apoptotic_ctc", "leukocyte", "ck_debris", "artifact")


@dataclass
class Attribute:
    """One texture/fluorescence attribute and how it pushed the call."""

    name: str
    value: float
    effect: float  # signed contribution to the CTC logit; > 0 pushes toward CTC

    @property
    def direction(self) -> str:
        return "toward_ctc" if self.effect > 0 else "away_from_ctc"

    def as_dict(self) -> dict[str, float | str]:
        return {"name": self.name, "value": self.value, "effect": self.effect, "direction": self.direction}


@dataclass
class EventResult:
    """One analysed cell event."""

    source: str  # file name inside the upload; "name#k" for object k of a field image
    index: int  # running index of the event within the upload
    x: float  # centroid in the input image's pixels
    y: float
    call: str  # "ctc" | "non_ctc"
    ctc_probability: float  # calibrated
    category: str  # one of CATEGORIES
    category_probabilities: dict[str, float]
    embedding: list[float]  # low-dimensional fused embedding (for the 2-D map)
    branch_contributions: dict[str, float]  # {"spatial": w, "texture": 1 - w}
    top_attributes: list[Attribute] = field(default_factory=list)
    thumbnail: np.ndarray | None = None  # uint8 (C, h, w), channels in ``AnalysisResult.channels``
    heatmap: np.ndarray | None = None  # uint8 (h, w), same h, w as thumbnail


@dataclass
class AnalysisResult:
    """Everything one upload produced."""

    events: list[EventResult]
    model_version: str
    channels: list[str]  # channel names of each thumbnail, in order
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    device: str = "cpu"
    #: the operating point the calls were made at (``call = ctc if p >= threshold``)
    threshold: float = 0.5
    #: whether the images look like what the model was validated on:
    #: ``{"status": "in_domain" | "shifted", "score": float, "reasons": [str]}`` (classifier.domain)
    domain_check: dict[str, object] | None = None
    #: plain-language problems found on the way that do not stop the run, e.g. a field whose
    #: object count is implausible for its size (never silently counted)
    warnings: list[str] = field(default_factory=list)
