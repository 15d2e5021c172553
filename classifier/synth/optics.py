"""Optics and camera: from fluorophore densities to the pixels an instrument exports.

Order follows the physics: spectral bleed-through between channels, a blurred
point-spread function (optionally defocused), uneven illumination, photon shot noise
and read noise at a per-channel gain, then one of the export renderings seen in
practice (raw 12/16-bit counts, or an 8-bit per-channel contrast stretch with
saturation and gamma, as in ctc-dev).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from classifier.synth.cells import AF, CD45, CK, DAPI


@dataclass
class Optics:
    psf_um: tuple[float, float, float, float]  # Gaussian PSF sigma per channel
    photons: tuple[float, float, float, float]  # photons per unit density
    background: tuple[float, float, float, float]  # photons per pixel (slide autofluorescence)
    read_noise: float
    bleed: dict[tuple[int, int], float]  # (from, to) -> fraction
    illumination: float  # amplitude of the smooth illumination falloff
    rendering: str  # "raw16" | "raw12" | "stretch8" | "float"
    stretch_low_pct: float
    stretch_high_pct: float
    gamma: float

    @classmethod
    def random(cls, rng: np.random.Generator, defocus: float = 1.0) -> Optics:
        psf = rng.uniform(0.45, 1.0) * defocus
        # AF is an empty channel: its photons are few, so after a stretch it is mostly noise
        # with a faint copy of DAPI (what ctc-dev's AF channel looks like).
        photons = (
            float(np.exp(rng.uniform(np.log(150), np.log(4000)))),
            float(np.exp(rng.uniform(np.log(100), np.log(4000)))),
            float(np.exp(rng.uniform(np.log(20), np.log(800)))),
            float(np.exp(rng.uniform(np.log(150), np.log(4000)))),
        )
        bg = tuple(float(np.exp(rng.uniform(np.log(2), np.log(150)))) for _ in range(4))
        bleed = {
            (DAPI, AF): float(rng.uniform(0.0, 0.35)),
            (CK, AF): float(rng.uniform(0.0, 0.02)),
            (CD45, AF): float(rng.uniform(0.0, 0.02)),
            (DAPI, CK): float(rng.uniform(0.0, 0.03)),
            (CK, CD45): float(rng.uniform(0.0, 0.015)),
            (CD45, CK): float(rng.uniform(0.0, 0.03)),
        }
        rendering = str(rng.choice(["stretch8", "raw16", "raw12", "float"], p=[0.55, 0.2, 0.1, 0.15]))
        return cls(
            psf_um=tuple(float(psf * rng.uniform(0.85, 1.2)) for _ in range(4)),  # type: ignore[arg-type]
            photons=photons,
            background=bg,  # type: ignore[arg-type]
            read_noise=float(rng.uniform(1.0, 8.0)),
            bleed=bleed,
            illumination=float(rng.uniform(0.0, 0.35)),
            rendering=rendering,
            stretch_low_pct=float(rng.uniform(0.0, 20.0)),
            # displays usually map the brightest pixel to white; some saturate a little
            stretch_high_pct=float(rng.uniform(99.95, 100.0) if rng.random() < 0.7 else rng.uniform(99.0, 99.95)),
            gamma=float(np.exp(rng.normal(0.0, 0.2))),
        )


def render(data: np.ndarray, px_um: float, optics: Optics, rng: np.random.Generator) -> np.ndarray:
    """Image the densities ``data`` (4, H, W); return float32 pixel values (4, H, W)."""
    img = data.copy()
    for (src, dst), frac in optics.bleed.items():
        img[dst] += frac * data[src]
    h, w = img.shape[1:]
    # uneven illumination: a smooth random field, drawn coarse and interpolated (cheap)
    coarse = rng.standard_normal((4, 4)).astype(np.float32)
    illum = 1.0 + optics.illumination * ndi.zoom(coarse, (h / 4.0, w / 4.0), order=3, grid_mode=True,
                                                 mode="nearest")[:h, :w] / 1.5
    illum = np.clip(illum, 0.3, None)
    out = np.empty_like(img)
    for c in range(4):
        blurred = ndi.gaussian_filter(img[c], optics.psf_um[c] / px_um)
        lam = np.clip(blurred * illum * optics.photons[c] + optics.background[c] * illum, 0, None)
        out[c] = rng.poisson(lam).astype(np.float32) + rng.normal(0, optics.read_noise, (h, w))
    return finish(out, optics, rng)


def finish(counts: np.ndarray, optics: Optics, rng: np.random.Generator) -> np.ndarray:
    """Apply the export rendering to photon counts."""
    if optics.rendering == "raw16":
        offset = float(rng.uniform(0, 500))
        return np.clip(np.round(counts + offset), 0, 65535).astype(np.float32)
    if optics.rendering == "raw12":
        offset = float(rng.uniform(0, 200))
        return np.clip(np.round(counts + offset), 0, 4095).astype(np.float32)
    if optics.rendering == "float":
        return (np.clip(counts, 0, None) / max(float(counts.max()), 1.0)).astype(np.float32)
    out = np.empty_like(counts)
    for c in range(counts.shape[0]):
        lo = np.percentile(counts[c], optics.stretch_low_pct)
        hi = np.percentile(counts[c], optics.stretch_high_pct)
        if hi <= lo:
            hi = lo + 1.0
        v = np.clip((counts[c] - lo) / (hi - lo), 0, 1) ** optics.gamma
        out[c] = np.round(v * 255.0)
    return out.astype(np.float32)
