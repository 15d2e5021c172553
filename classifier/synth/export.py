"""How an instrument hands an event over: which channels, in what file, at what bit depth.

:func:`classifier.synth.make_event` renders four channels (DAPI, CK, AF, CD45) with the
camera's noise and one per-channel display stretch. Real sources differ further, and
the model is trained on the differences so that it holds on them zero-shot:

- **AF absent** (many instruments have no empty channel): 3 channels only;
- **per-channel gain, offset and gamma** on top of the stretch (another lab's display
  settings), and extra **bleed-through** (DAPI -> CK, CK -> CD45: a few %) and **blur**;
- **RGB composites** (8-bit, one colour per marker, AF never shown): red CK / green CD45 /
  blue DAPI or red CD45 / green CK / blue DAPI, display-gamma encoded, saved as PNG or as
  JPEG (quality 60-95, 4:2:0 chroma subsampling), read back as three named channels.

:func:`export` returns the array as a reader of the file would decode it plus the
channel names a user would give, so the training data goes through the same
:func:`classifier.preprocess.prepare_image` call as uploads.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from classifier.synth.cells import AF, CD45, CK, DAPI

CHANNELS = ("DAPI", "CK", "AF", "CD45")
#: RGB orders seen in practice (red, green, blue)
RGB_ORDERS: tuple[tuple[str, str, str], ...] = (("CK", "CD45", "DAPI"), ("CD45", "CK", "DAPI"))


@dataclass(frozen=True)
class ExportMix:
    """How often each export variant appears in the training data."""

    af_absent: float = 0.3
    rgb: float = 0.22
    jpeg_given_rgb: float = 0.6
    display_jitter: float = 0.5
    extra_bleed: float = 0.35
    extra_blur: float = 0.15


DEFAULT_MIX = ExportMix()


def _display(x: np.ndarray) -> np.ndarray:
    """One channel as 0..1 (its own min..max): the starting point of a display render."""
    lo, hi = float(x.min()), float(x.max())
    return (x - lo) / max(hi - lo, 1e-9)


def bleed(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Extra spectral bleed-through between channels (DAPI -> CK up to 6 %, CK -> CD45 up to
    5 %, CD45 -> CK up to 3 %), applied to the channels' display values."""
    out = image.astype(np.float32).copy()
    disp = np.stack([_display(c) for c in image]) * np.ptp(image.reshape(4, -1), axis=1)[:, None, None]
    for (src, dst), hi in {(DAPI, CK): 0.06, (CK, CD45): 0.05, (CD45, CK): 0.03}.items():
        out[dst] += float(rng.uniform(0.0, hi)) * disp[src]
    return out


def jitter_display(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per-channel gain, offset and gamma of another display setting (values stay >= 0)."""
    out = np.empty_like(image, dtype=np.float32)
    for c in range(image.shape[0]):
        d = _display(image[c])
        g = float(np.exp(rng.normal(0.0, 0.3)))
        gain = float(np.exp(rng.normal(0.0, 0.35)))
        off = float(rng.uniform(0.0, 0.15)) if rng.random() < 0.5 else 0.0
        scale = float(np.ptp(image[c])) or 1.0
        out[c] = (off + gain * d**g) * scale
    return out


def rgb_composite(image: np.ndarray, rng: np.random.Generator, order: tuple[str, str, str],
                  quality: int | None) -> np.ndarray:
    """An 8-bit RGB composite (H, W, 3) in ``order``, each colour a display stretch with a
    display gamma (1/2.2 sRGB-like or near-linear) and optional saturation, then JPEG
    (``quality``) or lossless; returned as it decodes (uint8 values, float32)."""
    from PIL import Image

    planes = []
    enc_gamma = 1 / 2.2 if rng.random() < 0.4 else float(np.exp(rng.normal(0.0, 0.15)))
    for name in order:
        d = _display(image[CHANNELS.index(name)])
        sat = float(rng.uniform(0.85, 1.0)) if rng.random() < 0.3 else 1.0
        planes.append(np.clip(d / sat, 0, 1) ** enc_gamma * 255.0)
    rgb = np.clip(np.round(np.stack(planes, axis=-1)), 0, 255).astype(np.uint8)
    if quality is not None:
        buf = io.BytesIO()
        Image.fromarray(rgb, "RGB").save(buf, format="JPEG", quality=int(quality))
        buf.seek(0)
        rgb = np.asarray(Image.open(buf).convert("RGB"))
    return rgb.astype(np.float32)


def export(image: np.ndarray, rng: np.random.Generator, mix: ExportMix = DEFAULT_MIX
           ) -> tuple[np.ndarray, list[str], str]:
    """One event as a source hands it over: ``(array (C, H, W) float32, channel names, kind)``
    with kind ``tiff4`` | ``tiff3`` (AF absent) | ``rgb_png`` | ``rgb_jpeg``."""
    img = image.astype(np.float32)
    if rng.random() < mix.extra_bleed:
        img = bleed(img, rng)
    if rng.random() < mix.extra_blur:
        img = ndi.gaussian_filter(img, (0.0, *(2 * [float(rng.uniform(0.5, 1.5))])))
    if rng.random() < mix.display_jitter:
        img = jitter_display(img, rng)
    if rng.random() < mix.rgb:
        order = RGB_ORDERS[int(rng.integers(len(RGB_ORDERS)))]
        jpeg = rng.random() < mix.jpeg_given_rgb
        rgb = rgb_composite(img, rng, order, int(rng.integers(60, 96)) if jpeg else None)
        return np.ascontiguousarray(rgb.transpose(2, 0, 1)), list(order), "rgb_jpeg" if jpeg else "rgb_png"
    if rng.random() < mix.af_absent:
        return np.ascontiguousarray(img[[DAPI, CK, CD45]]), ["DAPI", "CK", "CD45"], "tiff3"
    return img, list(CHANNELS), "tiff4"


EXPORT_KINDS = ("tiff4", "tiff3", "rgb_png", "rgb_jpeg")


def export_as(image: np.ndarray, rng: np.random.Generator, kind: str,
              order: tuple[str, str, str] = RGB_ORDERS[0]) -> tuple[np.ndarray, list[str]]:
    """``image`` handed over as ``kind`` (one of :data:`EXPORT_KINDS`), with the display
    variations of :func:`export` but no random choice of kind: for shifted test sets, where
    a whole folder comes from one source. RGB kinds return (H, W, 3) uint8 as the file holds."""
    if kind not in EXPORT_KINDS:
        raise ValueError(f"unknown export kind {kind!r}")
    img = image.astype(np.float32)
    if rng.random() < DEFAULT_MIX.extra_bleed:
        img = bleed(img, rng)
    if rng.random() < DEFAULT_MIX.display_jitter:
        img = jitter_display(img, rng)
    if kind.startswith("rgb"):
        # lossless here: the writer saves "rgb_jpeg" as a JPEG (one compression, as a file has)
        return rgb_composite(img, rng, order, None).astype(np.uint8), list(order)
    if kind == "tiff3":
        return np.ascontiguousarray(img[[DAPI, CK, CD45]]), ["DAPI", "CK", "CD45"]
    return img, list(CHANNELS)


__all__ = ["AF", "DEFAULT_MIX", "EXPORT_KINDS", "RGB_ORDERS", "ExportMix", "bleed", "export", "export_as",
           "jitter_display", "rgb_composite"]
