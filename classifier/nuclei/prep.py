"""What the nucleus network sees: resampling to the working scale and robust normalisation.

Shared by training and inference on purpose: instruments differ by camera offset (~33,000 on
some 16-bit cameras), gain, uneven illumination and bit depth, and the network must see the same
kind of input whatever the instrument. So, at the working scale (a nucleus ``WORK_DIAMETER`` px
across):

1. a slowly varying background (a low percentile over blocks ~10 nuclei wide, median-filtered
   and interpolated) is subtracted: offset and uneven illumination go;
2. the result is divided by a high percentile (the brightest nuclei) for a linear channel, and
   log-scaled in units of the background noise for a second channel, where a dim nucleus next
   to a saturated one is still plainly above the noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage as ndi
from torch.nn import functional as F  # noqa: N812

WORK_DIAMETER = 12.0  # nucleus diameter (px) at which the network works
#: the network is trained on nuclei from this factor below to this factor above WORK_DIAMETER
SCALE_TOLERANCE = 1.6


def resample(img: np.ndarray, factor: float) -> np.ndarray:
    """``img`` (H, W) float32 zoomed by ``factor``: area mean down, bilinear up."""
    if abs(factor - 1.0) < 1e-6:
        return img.astype(np.float32, copy=False)
    h, w = img.shape
    size = (max(1, round(h * factor)), max(1, round(w * factor)))
    t = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))[None, None]
    if factor < 1:
        out = F.interpolate(t, size=size, mode="area")
    else:
        out = F.interpolate(t, size=size, mode="bilinear", align_corners=False)
    return out[0, 0].numpy()


def background(img: np.ndarray, block: int = int(10 * WORK_DIAMETER)) -> np.ndarray:
    """The slowly varying background of ``img`` (working scale): 5th percentile of blocks."""
    h, w = img.shape
    b = max(8, min(block, max(h, w)))
    b -= b % 2
    gh, gw = -(-h // b), -(-w // b)
    padded = np.pad(img, ((0, gh * b - h), (0, gw * b - w)), mode="reflect" if min(h, w) > 1 else "edge")
    step = 2 if b >= 32 else 1  # every other pixel is plenty for a percentile
    blocks = padded[::step, ::step].reshape(gh, b // step, gw, b // step).transpose(0, 2, 1, 3).reshape(gh, gw, -1)
    low = np.percentile(blocks, 5, axis=2).astype(np.float32)
    if gh >= 3 or gw >= 3:
        low = ndi.median_filter(low, size=3, mode="nearest")
    if gh == 1 and gw == 1:
        return np.full(img.shape, float(low[0, 0]), np.float32)
    t = torch.from_numpy(np.ascontiguousarray(low))[None, None]
    up = F.interpolate(t, size=(gh * b, gw * b), mode="bilinear", align_corners=False)[0, 0].numpy()
    return up[:h, :w]


@dataclass
class Prepared:
    """A working-scale image as the network sees it, and how far each pixel is above background."""

    x: np.ndarray  # (2, H, W) float32 network input
    excess: np.ndarray  # (H, W) float32 signal above the slowly varying background (input units)
    noise: float  # spread of the background (input units)


def prepare(img: np.ndarray, work_d: float = WORK_DIAMETER) -> Prepared:
    """Network input from a working-scale image (any offset, gain, depth), with its noise level;
    ``work_d``: the network's working nucleus diameter (the background is read on blocks of 10)."""
    img = img.astype(np.float32, copy=False)
    x = img - background(img, int(10 * work_d))
    sample = x[:: max(1, x.shape[0] // 512), :: max(1, x.shape[1] // 512)].ravel()
    below = sample[sample <= np.median(sample)]
    # noise: spread of the background pixels (those below the median, mirrored); the floor keeps
    # 8-bit images, whose background is often exactly flat, from dividing by zero
    noise = float(np.sqrt(np.mean(np.square(below - np.median(below))))) if below.size else 0.0
    hi = float(np.percentile(sample, 99.8))
    noise = max(noise, 1e-3 * max(hi, 1e-6), 1e-6)
    hi = max(hi, 20 * noise)
    lin = np.clip(x / hi, -0.5, 2.0)
    k = 3 * noise
    log = np.log1p(np.maximum(x, 0) / k) / math.log1p(hi / k)
    return Prepared(np.stack([lin, np.minimum(log, 2.0)]).astype(np.float32), x, noise)


def normalise(img: np.ndarray, work_d: float = WORK_DIAMETER) -> np.ndarray:
    """(2, H, W) float32 network input from a working-scale image (any offset, gain, depth)."""
    return prepare(img, work_d).x
