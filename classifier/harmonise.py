"""The corrections a set of event thumbnails gets before classification, in one place.

An upload (:mod:`classifier.engine`), a labelled folder (:func:`classifier.data.prepare_folder`)
and the domain check's calibration sets (:func:`classifier.domain.prepare_set`) are each read as
one export of one lab, and corrected the same way, in this order:

1. the tone curve of 8-bit renders re-mapped to the validated one (:mod:`classifier.tone`);
2. CD45 light leaking into the CK channel taken out, read on the re-mapped images, since the
   share an 8-bit render shows follows its curve (:mod:`classifier.bleed`).

Both are measured on the set (or an even sample of a large one), never on one image, and the
domain check still judges the images as given; :meth:`SetCorrection.annotate` says what was done.
Fields are corrected image by image instead (:func:`classifier.preprocess.setup_image`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from classifier import bleed, tone
from classifier.sampling import even_sample

if TYPE_CHECKING:
    from classifier.decoders import FileForm


@dataclass(frozen=True)
class SetCorrection:
    """What is done to every image of a set (the defaults: nothing)."""

    tone: tone.ToneCurve = field(default_factory=tone.ToneCurve)
    bleed: bleed.SetBleed = field(default_factory=bleed.SetBleed)

    def apply(self, image: np.ndarray, channels: Sequence[str]) -> np.ndarray:
        return bleed.apply(tone.remap(image, self.tone), channels, self.bleed)

    def annotate(self, domain_check: dict) -> dict:
        return bleed.annotate(tone.annotate(domain_check, self.tone), self.bleed)


def measure(images: Sequence[np.ndarray], channels: Sequence[Sequence[str]], sources: Sequence[str] | None = None,
            total: int | None = None, forms: Sequence[FileForm | None] | None = None) -> SetCorrection:
    """The corrections for a set of (C, H, W) thumbnails, or for a larger set of ``total`` of which
    ``images`` is an even sample (``forms``: how the files stored them)."""
    curve = tone.measure(images, channels, sources, total=total, forms=forms)
    # the bleed is read on a sample of the tone curve's sample, so that a whole set (an upload) and
    # the tone sample of it (evaluate's folder, ``total`` given) give the same share
    base = even_sample(len(images), tone.SAMPLE)
    pick = base[even_sample(len(base), bleed.SAMPLE)]
    leak = bleed.measure([tone.remap(images[i], curve) for i in pick], [channels[i] for i in pick])
    return SetCorrection(curve, leak)
