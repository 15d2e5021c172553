"""Drawing primitives: nuclei, cytoplasm, membranes and debris on a physical canvas.

Everything is specified in micrometres and drawn at the canvas' pixel size, so one
scene description renders at any magnification. The canvas holds fluorophore
densities (arbitrary units, ~1 = a typical leukocyte nucleus); optics and camera
are applied afterwards in :mod:`classifier.synth.optics`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

DAPI, CK, AF, CD45 = 0, 1, 2, 3  # canvas channel order (same as ctc-dev)


@dataclass
class Canvas:
    """Fluorophore densities (4, H, W) in channel order DAPI, CK, AF, CD45."""

    data: np.ndarray
    px_um: float
    labels: np.ndarray | None = None  # int32 cell labels (fields only)

    @classmethod
    def empty(cls, height: int, width: int, px_um: float, with_labels: bool = False) -> Canvas:
        labels = np.zeros((height, width), np.int32) if with_labels else None
        return cls(np.zeros((4, height, width), np.float32), px_um, labels)

    @property
    def shape(self) -> tuple[int, int]:
        return self.data.shape[1], self.data.shape[2]


@dataclass
class Window:
    """A local patch of the canvas around an object, with coordinates in pixels."""

    sy: slice
    sx: slice
    dy: np.ndarray  # (h, 1) offsets from the object centre, px
    dx: np.ndarray  # (1, w)


def window(canvas: Canvas, cy: float, cx: float, radius_px: float) -> Window | None:
    h, w = canvas.shape
    r = int(np.ceil(radius_px)) + 2
    y0, y1 = max(int(cy) - r, 0), min(int(cy) + r + 1, h)
    x0, x1 = max(int(cx) - r, 0), min(int(cx) + r + 1, w)
    if y0 >= y1 or x0 >= x1:
        return None
    dy = (np.arange(y0, y1, dtype=np.float32) - cy)[:, None]
    dx = (np.arange(x0, x1, dtype=np.float32) - cx)[None, :]
    return Window(slice(y0, y1), slice(x0, x1), dy, dx)


_BANK: dict[float, np.ndarray] = {}
_BANK_SIZE = 192


def _bank(sigma: float) -> np.ndarray:
    """A fixed (seeded) 192x192 unit-std texture per correlation length: cropping it at a
    random offset is statistically the same as filtering fresh noise, and 20x cheaper."""
    if sigma not in _BANK:
        g = np.random.default_rng(int(sigma * 1000))
        f = ndi.gaussian_filter(g.standard_normal((_BANK_SIZE, _BANK_SIZE)).astype(np.float32), sigma, mode="wrap")
        _BANK[sigma] = (f - f.mean()) / max(float(f.std()), 1e-6)
    return _BANK[sigma]


def smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma_px: float) -> np.ndarray:
    """Zero-mean, unit-std Gaussian random field with correlation length ``sigma_px``."""
    sigma = float(np.clip(round(max(sigma_px, 0.3) * 4) / 4, 0.25, 24.0))
    h, w = shape[-2], shape[-1]
    if len(shape) == 2 and h <= _BANK_SIZE // 2 and w <= _BANK_SIZE // 2:
        bank = _bank(sigma)
        y, x = rng.integers(0, _BANK_SIZE - h + 1), rng.integers(0, _BANK_SIZE - w + 1)
        patch = bank[y:y + h, x:x + w]
        return patch if rng.random() < 0.5 else patch.T.copy() if h == w else patch[::-1].copy()
    field = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    std = float(field.std())
    return field / std if std > 0 else field


@dataclass
class Shape:
    """A star-shaped outline: radius(theta) = r * (1 + sum a_k cos(k theta + phi_k)), then
    stretched by ``aspect`` along ``angle`` (cells are rarely round)."""

    r_um: float
    aspect: float = 1.0
    angle: float = 0.0
    amps: tuple[float, ...] = ()
    phases: tuple[float, ...] = ()

    @classmethod
    def random(cls, rng: np.random.Generator, r_um: float, irregularity: float, max_aspect: float) -> Shape:
        ks = np.arange(2, 7)
        amps = rng.normal(0.0, irregularity, ks.size) / np.sqrt(ks - 1)
        return cls(
            r_um=r_um,
            aspect=float(rng.uniform(1.0, max_aspect)),
            angle=float(rng.uniform(0, np.pi)),
            amps=tuple(float(a) for a in amps),
            phases=tuple(float(p) for p in rng.uniform(0, 2 * np.pi, ks.size)),
        )

    def extent_um(self) -> float:
        return self.r_um * self.aspect * (1.0 + float(np.sum(np.abs(self.amps))))

    def polar(self, win: Window, px_um: float) -> tuple[np.ndarray, np.ndarray]:
        """Normalised radius rho / r(theta) (1 at the outline) and the outline radius in px."""
        c, s = np.cos(self.angle), np.sin(self.angle)
        u = (win.dx * c + win.dy * s) / self.aspect
        v = -win.dx * s + win.dy * c
        theta = np.arctan2(v, u)
        rho = np.sqrt(u * u + v * v)
        rt = np.ones_like(theta)
        for k, (a, p) in enumerate(zip(self.amps, self.phases, strict=True), start=2):
            rt = rt + a * np.cos(k * theta + p)
        r_px = np.maximum(rt, 0.3) * (self.r_um / px_um)
        return rho / r_px, r_px


def soft_fill(shape: Shape, win: Window, px_um: float) -> np.ndarray:
    """Anti-aliased filled outline (values 0..1, a one-pixel ramp at the edge)."""
    q, r_px = shape.polar(win, px_um)
    return np.clip((1.0 - q) * r_px + 0.5, 0.0, 1.0).astype(np.float32)


def ring(shape: Shape, win: Window, px_um: float, width_um: float) -> np.ndarray:
    """A membrane: Gaussian profile across the outline."""
    q, r_px = shape.polar(win, px_um)
    d_px = (q - 1.0) * r_px
    w_px = max(width_um / px_um, 0.6)
    return np.exp(-0.5 * (d_px / w_px) ** 2).astype(np.float32)


def add(canvas: Canvas, ch: int, win: Window, values: np.ndarray) -> None:
    canvas.data[ch, win.sy, win.sx] += values


def paint_label(canvas: Canvas, win: Window, mask: np.ndarray, label: int) -> None:
    if canvas.labels is not None:
        patch = canvas.labels[win.sy, win.sx]
        patch[mask] = label


# --- nuclei -------------------------------------------------------------------------


def draw_nucleus(
    canvas: Canvas,
    rng: np.random.Generator,
    cy: float,
    cx: float,
    r_um: float,
    style: str,
    intensity: float,
) -> np.ndarray | None:
    """Draw a DAPI nucleus; return its binary mask in the window (for labels), or None.

    Styles: ``round`` (intact, fine chromatin texture), ``lobed`` (granulocyte),
    ``fragmented`` (apoptotic karyorrhexis: several small bright bodies),
    ``condensed`` (pyknosis: small, very bright), ``lumpy`` (degrading, coarse texture).
    """
    px = canvas.px_um
    win = window(canvas, cy, cx, 1.6 * r_um / px)
    if win is None:
        return None
    h, w = win.dy.shape[0], win.dx.shape[1]
    if style == "lobed":
        n = int(rng.integers(2, 5))
        total = np.zeros((h, w), np.float32)
        a0 = rng.uniform(0, 2 * np.pi)
        for i in range(n):
            a = a0 + 2 * np.pi * i / n + rng.normal(0, 0.3)
            d = 0.45 * r_um / px
            sub = Window(win.sy, win.sx, win.dy - d * np.sin(a), win.dx - d * np.cos(a))
            lobe = Shape.random(rng, r_um * rng.uniform(0.45, 0.6), 0.05, 1.3)
            total = np.maximum(total, soft_fill(lobe, sub, px))
        tex = 1.0 + 0.15 * smooth_noise(rng, (h, w), 0.4 / px)
        add(canvas, DAPI, win, intensity * total * tex)
        return total > 0.5
    if style == "fragmented":
        n = int(rng.integers(2, 8))
        total = np.zeros((h, w), np.float32)
        for _ in range(n):
            rr = r_um * np.sqrt(rng.uniform(0, 0.7))
            a = rng.uniform(0, 2 * np.pi)
            sub = Window(win.sy, win.sx, win.dy - rr / px * np.sin(a), win.dx - rr / px * np.cos(a))
            body = Shape.random(rng, max(r_um * rng.uniform(0.15, 0.35), 0.6), 0.05, 1.2)
            total = np.maximum(total, soft_fill(body, sub, px) * rng.uniform(0.8, 2.0))
        add(canvas, DAPI, win, intensity * total)
        return total > 0.4
    if style == "condensed":
        shape = Shape.random(rng, r_um * rng.uniform(0.4, 0.6), 0.08, 1.3)
        m = soft_fill(shape, win, px)
        add(canvas, DAPI, win, intensity * rng.uniform(1.2, 1.8) * m)
        return m > 0.5
    irregular, texture = (0.05, 0.15) if style == "round" else (0.12, 0.5)
    shape = Shape.random(rng, r_um, irregular, 1.3)
    m = soft_fill(shape, win, px)
    tex = 1.0 + texture * smooth_noise(rng, (h, w), (0.5 if style == "round" else 0.9) / px)
    if style == "lumpy":  # chromatin clumping: a few bright clods
        clods = np.clip(smooth_noise(rng, (h, w), 0.7 / px) - 0.8, 0, None)
        tex = tex + 1.5 * clods
    add(canvas, DAPI, win, intensity * m * np.clip(tex, 0.1, None))
    return m > 0.5


# --- cell bodies ----------------------------------------------------------------------


def draw_cytoplasm(
    canvas: Canvas,
    rng: np.random.Generator,
    ch: int,
    cy: float,
    cx: float,
    shape: Shape,
    intensity: float,
    style: str,
    nucleus_dim: tuple[float, float, float, float] | None = None,
) -> np.ndarray | None:
    """Draw a marker in a cell body; return the cell mask in the window.

    Styles: ``fill`` (cytoskeletal CK: filled body, fine filament texture), ``granular``
    (apoptotic CK: aggregates and blebs), ``ring`` (membrane marker such as CD45),
    ``rim`` (a thin, uneven CK rim over a faint body: CK-dim CTCs),
    ``spot`` (a patch of nonspecific stain on one side).
    ``nucleus_dim`` = (dy_px, dx_px, r_px, factor): a seen-from-above nucleus hides
    part of the cytoplasm, so CK is dimmer over it (the crescents in ctc-dev).
    """
    px = canvas.px_um
    win = window(canvas, cy, cx, 1.3 * shape.extent_um() / px + 1)
    if win is None:
        return None
    h, w = win.dy.shape[0], win.dx.shape[1]
    m = soft_fill(shape, win, px)
    if style == "fill":
        # filaments (fine) plus uneven cytoplasm thickness (coarse)
        tex = (1.0 + rng.uniform(0.1, 0.35) * smooth_noise(rng, (h, w), 0.35 / px)
               + rng.uniform(0.0, 0.5) * smooth_noise(rng, (h, w), 1.2 / px))
        val = m * np.clip(tex, 0.15, None)
    elif style == "granular":
        spots = np.clip(smooth_noise(rng, (h, w), 0.45 / px) - rng.uniform(0.3, 1.2), 0, None)
        val = m * (rng.uniform(0.25, 0.8) + rng.uniform(0.8, 3.0) * spots)
        for _ in range(int(rng.integers(0, 6))):  # membrane blebs at the outline
            a = rng.uniform(0, 2 * np.pi)
            rr = shape.r_um * rng.uniform(0.8, 1.1) / px
            sub = Window(win.sy, win.sx, win.dy - rr * np.sin(a), win.dx - rr * np.cos(a))
            bleb = Shape(max(shape.r_um * rng.uniform(0.12, 0.3), 0.5))
            val = np.maximum(val, soft_fill(bleb, sub, px) * rng.uniform(0.5, 1.5))
    elif style == "ring":
        val = ring(shape, win, px, rng.uniform(0.5, 1.0)) + rng.uniform(0.3, 0.9) * m
    elif style == "rim":  # a thin, uneven cortical rim (CK-dim CTCs) over a faint body
        tex = np.clip(1.0 + 0.4 * smooth_noise(rng, (h, w), 0.6 / px), 0.2, None)
        val = (ring(shape, win, px, rng.uniform(0.3, 0.7)) * tex + rng.uniform(0.05, 0.35) * m)
    elif style == "spot":
        a = rng.uniform(0, 2 * np.pi)
        rr = shape.r_um * rng.uniform(0.3, 0.9) / px
        sub = Window(win.sy, win.sx, win.dy - rr * np.sin(a), win.dx - rr * np.cos(a))
        blob = Shape.random(rng, shape.r_um * rng.uniform(0.25, 0.6), 0.15, 2.0)
        val = soft_fill(blob, sub, px) * m
    else:
        raise ValueError(f"unknown cytoplasm style {style!r}")
    if nucleus_dim is not None:
        ndy, ndx, nr, factor = nucleus_dim
        over = np.sqrt((win.dy - ndy) ** 2 + (win.dx - ndx) ** 2) < nr
        val = np.where(over, val * factor, val)
    add(canvas, ch, win, intensity * val.astype(np.float32))
    return m > 0.5


def draw_debris(
    canvas: Canvas,
    rng: np.random.Generator,
    cy: float,
    cx: float,
    r_um: float,
    weights: tuple[float, float, float, float],
    sharp: bool,
) -> None:
    """Draw an anuclear fragment (CK foci) or a fluorescent artifact.

    ``weights`` give the intensity per channel (DAPI, CK, AF, CD45). ``sharp`` objects
    (crystals, fibres, dust) have straight edges and are strongly elongated.
    """
    px = canvas.px_um
    if sharp:
        shape = Shape(r_um, aspect=float(rng.uniform(1.0, 3.0)), angle=float(rng.uniform(0, np.pi)),
                      amps=(0.0, float(rng.uniform(0.1, 0.3))), phases=(0.0, float(rng.uniform(0, 6.3))))
    else:
        shape = Shape.random(rng, r_um, 0.25, 2.2)
    win = window(canvas, cy, cx, 1.3 * shape.extent_um() / px + 1)
    if win is None:
        return
    m = soft_fill(shape, win, px)
    if not sharp:  # crescents and irregular aggregates
        if rng.random() < 0.5:
            off = Shape(shape.r_um * rng.uniform(0.7, 1.0), shape.aspect, shape.angle, shape.amps, shape.phases)
            a = rng.uniform(0, 2 * np.pi)
            d = shape.r_um * rng.uniform(0.4, 0.8) / px
            sub = Window(win.sy, win.sx, win.dy - d * np.sin(a), win.dx - d * np.cos(a))
            m = m * (1.0 - soft_fill(off, sub, px))
        m = m * np.clip(1.0 + 0.4 * smooth_noise(rng, m.shape, 0.4 / px), 0.2, None)
    for ch, wgt in enumerate(weights):
        if wgt > 0:
            add(canvas, ch, win, wgt * m)
