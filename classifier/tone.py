"""Tone-curve harmonisation of 8-bit event exports (issue 11: other labs' exports).

An 8-bit export's tone curve (a display gamma, the stretch the viewer applied) is the
exporting lab's choice, not a property of the cells; a curve far from the validated one costs
real calls: ctc-dev written with display gamma 1.6 loses three of its seven CTCs (balanced
accuracy 0.74) although nothing about the cells changed. The domain check already measures the
curve of a set of images as the median of their mid-tones (:attr:`classifier.domain.ImageSignals.midtone`).
When that median lies more than :data:`CORRECT_ABOVE` from the validated one, and beyond its own
sampling error (:func:`classifier.domain.tone_shift`), every 8-bit
image of the set is re-mapped with the single gamma that brings the median back,
``255 (x / 255) ** gamma``, before it is classified.

What this is not: raw counts (12/16-bit, float) are linear and never re-mapped; a set of fewer
than :data:`classifier.domain.MIN_IMAGES_FOR_TONE` 8-bit images framed like the validated ones
is not judged (one image's mid-tones are its content, and so are those of a frame that one cell
fills); a small difference is left alone (framing and magnification move the median too, see
docs/model-card.md); constant fill at a frame's border (black
padding, a cell at the scan edge: :func:`classifier.preprocess.fill_border`) is not measured, it
would pass for dark background and darken the median. The domain check still judges the images
as they were uploaded and reports the shift; :func:`annotate` replaces its tone sentence with what
was done about it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from classifier.domain import (
    MIN_IMAGES_FOR_TONE,
    TONE_RAMP,
    TONE_REASON,
    VALIDATED_MIDTONE,
    image_signals_batch,
    tone_midtones,
    tone_shift,
)
from classifier.sampling import even_sample

if TYPE_CHECKING:
    from classifier.decoders import FileForm

#: re-map when the set's median mid-tone is this far from the validated one, and beyond its sampling
#: error: the midpoint of the domain check's tone ramp, where it reads shifted (display gamma 0.6 / 1.6
#: move ctc-dev by +0.11 / -0.16 and the synthetic renders by about as much)
CORRECT_ABOVE = sum(TONE_RAMP) / 2
#: a stronger correction than this means the measure itself is not to be trusted
GAMMA_RANGE = (0.4, 2.5)
#: images measured at most (evenly spaced over the set)
SAMPLE = 256


@dataclass(frozen=True)
class ToneCurve:
    """The re-mapping chosen for a set of images (``gamma`` 1.0: none)."""

    gamma: float = 1.0
    midtone: float | None = None  # the median mid-tone of the images measured, before any re-mapping
    measured: int = 0  # 8-bit images framed like the validated ones that it was measured on

    @property
    def applied(self) -> bool:
        return self.gamma != 1.0

    def note(self) -> str:
        """The sentence the domain check's reasons get when the curve was re-mapped."""
        return (f"the 8-bit images were re-mapped before classification (gamma {self.gamma:.2f}) to bring their "
                f"median mid-tone of {self.midtone:.2f} (measured on {self.measured} images) to the validated "
                f"{VALIDATED_MIDTONE:.2f}; this correction was checked on a few renderings only: review the calls")

    def as_dict(self) -> dict:
        return {"gamma": round(self.gamma, 3), "midtone": None if self.midtone is None else round(self.midtone, 3),
                "measured": self.measured, "applied": self.applied}


def measure(images: Sequence[np.ndarray], channels: Sequence[Sequence[str]],
            sources: Sequence[str] | None = None, total: int | None = None,
            forms: Sequence[FileForm | None] | None = None) -> ToneCurve:
    """The curve for a set of (C, H, W) event images (or an even sample of a larger set of
    ``total`` images: a median over a few hundred is as good as over all). ``forms``: how the
    files stored them (a 16-bit file whose values stay under 256 is no 8-bit display render)."""
    n = len(images) if total is None else total
    if n < MIN_IMAGES_FOR_TONE or not len(images):
        return ToneCurve()
    pick = even_sample(len(images), SAMPLE)
    names = list(sources) if sources is not None else [f"image{i}" for i in range(len(images))]
    try:
        signals = image_signals_batch([images[i] for i in pick], [channels[i] for i in pick], [names[i] for i in pick],
                                      forms=[forms[i] for i in pick] if forms is not None else None,
                                      edges=False)
    except (ValueError, IndexError):
        return ToneCurve()  # an image the measure cannot read: the decoder and preprocessing say why
    # mid-tones tell the curve only in frames framed like the validated ones: where one cell fills
    # the frame its own signal is the bulk of the pixels, whatever the curve
    mids = tone_midtones(signals)
    if len(mids) < MIN_IMAGES_FOR_TONE:
        return ToneCurve()
    mid = float(np.median(mids))
    if abs(tone_shift(mids)) <= CORRECT_ABOVE or not 0.02 < mid < 0.98:
        return ToneCurve(1.0, mid, len(mids))
    gamma = math.log(VALIDATED_MIDTONE) / math.log(mid)
    if not GAMMA_RANGE[0] <= gamma <= GAMMA_RANGE[1]:
        return ToneCurve(1.0, mid, len(mids))
    return ToneCurve(gamma, mid, len(mids))


def is_8bit(image: np.ndarray) -> bool:
    """Whole numbers from 0 to 255: an 8-bit display render. The domain check decides the same
    from point samples; here every pixel's range counts (one value above 255 is not 8-bit) and
    integrality is read on ~4,000 pixels (a stride coprime with the row length, so every column
    and row is visited)."""
    a = np.asarray(image)
    if a.dtype == np.uint8:
        return True
    if not a.size or float(a.min()) < 0 or float(a.max()) > 255:
        return False
    sample = a.reshape(-1)[:: a.size // 4096 + 1]
    return bool(np.all(sample == np.round(sample)))


def remap(image: np.ndarray, curve: ToneCurve) -> np.ndarray:
    """``image`` through the curve when it is an 8-bit render (``255 (x / 255) ** gamma``), else as given."""
    if not curve.applied or not is_8bit(image):
        return image
    x = np.clip(np.asarray(image, np.float32) / 255.0, 0.0, 1.0)
    return (255.0 * np.power(x, np.float32(curve.gamma))).astype(np.float32)


def harmonise(images: Sequence[np.ndarray], channels: Sequence[Sequence[str]],
              sources: Sequence[str] | None = None) -> tuple[list[np.ndarray], ToneCurve]:
    """``images`` with the set's tone curve re-mapped where :func:`measure` asks for it
    (8-bit renders only; the others, and every image when nothing is applied, as given)."""
    curve = measure(images, channels, sources)
    return [remap(img, curve) for img in images], curve


def annotate(domain_check: dict, curve: ToneCurve) -> dict:
    """``domain_check`` (the contract object, judged on the images as given) with its tone sentence
    replaced by what was done about it, when the curve was re-mapped; otherwise unchanged."""
    if curve.applied:
        reasons = [r for r in domain_check.get("reasons", []) if not str(r).startswith(TONE_REASON)]
        domain_check["reasons"] = [*reasons, curve.note()]
    return domain_check
