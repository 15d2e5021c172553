"""CD45 bleeding into the CK channel of an event gallery: read from the set, taken out (issue 11).

Filter sets differ between instruments, and some pass part of the CD45 dye's light into the CK
channel. A leukocyte then shows CK where it has none, and the CTCs' CK is judged against that:
ctc-dev with 15 % of its CD45 added to CK loses one of its seven CTCs (object024, p 0.54 -> 0.18),
with the domain check reading ``in_domain``, since nothing else about the images changed
(``python -m classifier robustness``, rendering ``bleed_cd45_ck_20``).

Fields take the share out image by image (:func:`classifier.preprocess.compensate_bleed`: a field
holds hundreds of leukocytes to read it from). A thumbnail holds a few, so a gallery's share is
the median over its images whose share can be read (:func:`classifier.preprocess.readable_bleed_share`)
and is taken out of every image of the set when it is at least :data:`SET_MIN_SHARE`.

Where that bar stands: ctc-dev's 18 thumbnails read 0.000-0.041 each (median 0.007). The model's
synthetic training renders read 0.05-0.12 as sets (their 8-bit stretch lifts a CK channel with no
bright cell, and the 0-3 % of CD45 light in it with it; the same scenes as raw counts read 0.009),
and taking that out changes nothing (synthetic in-domain set of 200: balanced accuracy 0.942 either
way): the model has seen it. ctc-dev with 10 % added reads about 0.10 and keeps its calls (BA 1.000);
with 15 / 20 / 30 % it reads 0.15 / 0.20 / 0.30 and loses 1 / 1 / 2 of its 7 CTCs (BA 0.883 / 0.883 /
0.812), all ``in_domain``; taken out: 1.000 / 1.000 / 0.955. So the bar is above what training held.
CK into CD45 cannot be read this way from thumbnails (their CK-bright pixels are few and stretched:
ctc-dev reads -0.4 to 17) and is not touched.

The domain check still judges the images as uploaded; :func:`annotate` adds what was done.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from classifier.preprocess import MAX_BLEED, compensate_bleed, readable_bleed_share
from classifier.sampling import even_sample
from classifier.tone import is_8bit

#: a set's median share from which CD45 is taken out of CK: above what the training renders held
SET_MIN_SHARE = 0.13
#: images whose share could be read, at least (one thumbnail's share is its few cells' business, and
#: the median of 3 was too: a new user's 3 single-cell composites read 29 % and had it taken out, while
#: their 40 read nothing to take out; twelfth session of 2026-12-04)
MIN_READABLE = 8
#: images measured at most (evenly spaced over the set; a median over 64 is as good as over all,
#: and each costs ~1 ms)
SAMPLE = 64


@dataclass(frozen=True)
class SetBleed:
    """The CD45-into-CK share taken out of a set of thumbnails (``share`` 0.0: none)."""

    share: float = 0.0
    measured: float | None = None  # the set's median share, whether or not it was taken out
    readable: int = 0  # images the median was taken over

    @property
    def applied(self) -> bool:
        return self.share > 0.0

    def note(self) -> str:
        return (f"CD45 light seen in the CK channel ({self.share:.0%} of CD45's signal, the median of "
                f"{self.readable} images) was subtracted before classification, as cytometers compensate "
                "spectral bleed-through; this correction was checked on renderings only: review the calls")

    def as_dict(self) -> dict:
        return {"cd45_into_ck": round(self.share, 3),
                "measured": None if self.measured is None else round(self.measured, 3),
                "readable_images": self.readable, "applied": self.applied}


def measure(images: Sequence[np.ndarray], channels: Sequence[Sequence[str]]) -> SetBleed:
    """The share to take out of a set of (C, H, W) thumbnails (an even sample of at most
    :data:`SAMPLE` of them), ``channels`` naming each image's planes."""
    if not len(images):
        return SetBleed()
    pick = even_sample(len(images), SAMPLE)
    shares = []
    for i in pick:
        names = list(channels[i])
        if "CD45" not in names or "CK" not in names or np.asarray(images[i]).ndim != 3:
            continue
        s = readable_bleed_share(np.asarray(images[i], np.float32), names.index("CD45"), names.index("CK"))
        if s is not None:
            shares.append(s)
    if len(shares) < MIN_READABLE:
        return SetBleed(readable=len(shares))
    mid = float(np.median(shares))
    take = SET_MIN_SHARE <= mid <= MAX_BLEED  # above: a CK+ CD45+ population or a channel mix-up, not leakage
    return SetBleed(mid if take else 0.0, mid, len(shares))


def apply(image: np.ndarray, channels: Sequence[str], bleed: SetBleed) -> np.ndarray:
    """``image`` with the set's share of CD45 taken out of CK (as given when none is applied).
    An 8-bit render stays whole numbers in 0-255, so that it is still read as one afterwards
    (the tone curve re-maps only those)."""
    if not bleed.applied:
        return image
    out = compensate_bleed(np.asarray(image, np.float32), channels, bleed.share)
    return np.clip(np.round(out), 0, 255).astype(np.float32) if is_8bit(image) else out


def annotate(domain_check: dict, bleed: SetBleed) -> dict:
    """``domain_check`` with a sentence on the compensation, when one was applied."""
    if bleed.applied:
        domain_check["reasons"] = [*domain_check.get("reasons", []), bleed.note()]
    return domain_check
