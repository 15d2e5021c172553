"""Star-convex nucleus outlines (StarDist: Schmidt et al., MICCAI 2018), for networks trained with
``train-nuclei --rays N``.

Each nuclear pixel predicts the distance to its nucleus's edge along ``N`` evenly spaced rays; the
outlines seen from the surest pixels, thinned by non-maximum suppression, are one per nucleus, also
where two touching nuclei's distance map has no valley between them. The ``stardist`` package
measures the training targets and suppresses overlapping outlines (C code, fast on large fields);
it is needed only for networks with rays, which the shipped weights are not (model card,
Segmentation: measured, not better than the distance map's own cores).
"""

from __future__ import annotations

import os
from types import ModuleType

import numpy as np
from scipy import ndimage as ndi

#: ``CLASSIFIER_NUCLEI_STAR``: how a network's outlines are used. "seeds": the centres of the outlines
#: kept by non-maximum suppression seed the watershed on the distance map; "polygons": the outlines
#: are the nuclei; "off": the outlines are ignored (the distance map's cores, as without rays)
MODE_ENV = "CLASSIFIER_NUCLEI_STAR"
MODES = ("seeds", "polygons", "off")
#: outlines are read where the distance map (StarDist's object probability) is above this: 0.35
#: and 0.5 scored alike on the validation images
PROB_THRESHOLD = 0.5
#: an outline overlapping a surer one by more than this is the same nucleus (0.3 / 0.4 / 0.6 / 0.75
#: on the validation images: 0.4 best, more splits textured nuclei, less merges neighbours)
NMS_THRESHOLD = 0.4


def mode() -> str:
    """:data:`MODE_ENV` (default "seeds"), checked."""
    m = os.environ.get(MODE_ENV, "seeds").strip().lower()
    if m not in MODES:
        raise ValueError(f"{MODE_ENV} must be one of {', '.join(MODES)}, not {m!r}")
    return m


def _stardist(part: str) -> ModuleType:
    try:
        import importlib

        return importlib.import_module(f"stardist.{part}")
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise RuntimeError("nucleus networks with star-convex rays need the stardist package "
                           "(pip install stardist; requirements/dev.in)") from e


def ray_targets(labels: np.ndarray, rays: int, work_d: float) -> tuple[np.ndarray, np.ndarray]:
    """(rays, H, W) distances from each nuclear pixel to its nucleus's edge along ``rays``
    directions (ray k at angle 2 pi k / rays from +x towards +y), in working diameters, and (H, W)
    1 where they are whole: a nucleus cut by the crop's edge has rays that stop there, not at its
    outline, and is not trained on."""
    lab = np.ascontiguousarray(labels, dtype=np.int32)
    d = _stardist("geometry").star_dist(lab, rays, mode="cpp").transpose(2, 0, 1) / work_d
    cut = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
    whole = (lab > 0) & ~np.isin(lab, cut[cut > 0])
    return d.astype(np.float32), whole.astype(np.float32)


def turn_rays(d: np.ndarray, r: int, flip: bool) -> np.ndarray:
    """Ray maps (rays, H, W) whose image was turned by ``np.rot90(., r, axes=(1, 2))`` and then
    mirrored left-right (``flip``): a quarter turn takes angle a to a - pi / 2, a mirror to pi - a.
    ``rays`` must be a multiple of 4."""
    n = d.shape[0]
    idx = (np.arange(n) + r * n // 4) % n  # after a quarter turn the ray at k was at k + n / 4
    if flip:
        idx = idx[(n // 2 - np.arange(n)) % n]
    return d[idx]


def suppress(maps: np.ndarray, mask: np.ndarray, diameter: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The outlines non-maximum suppression keeps: (points (K, 2), their scores, their rays in px).
    ``maps``: the network's outputs (rays from channel 3, in units of ``diameter`` px)."""
    prob = np.where(mask, maps[1], 0).astype(np.float32)
    rays = np.ascontiguousarray(np.moveaxis(maps[3:], 0, -1) * diameter, dtype=np.float32)
    return _stardist("nms").non_maximum_suppression(np.maximum(rays, 1e-3), prob, nms_thresh=NMS_THRESHOLD,
                                                    prob_thresh=PROB_THRESHOLD)


def seeds(maps: np.ndarray, mask: np.ndarray, diameter: float) -> tuple[np.ndarray, int]:
    """Watershed markers at the centres of the outlines that :func:`suppress` keeps: one per
    nucleus, also where two touching nuclei's cores join (their outlines overlap little)."""
    points, _, _ = suppress(maps, mask, diameter)
    markers = np.zeros(mask.shape, np.int32)
    if len(points):
        markers[points[:, 0], points[:, 1]] = np.arange(1, len(points) + 1)
        # a marker of a few pixels, so that a seed on a ridge of the distance map keeps its side
        markers = ndi.grey_dilation(markers, size=3) * mask
    return markers, len(points)


def polygon_labels(maps: np.ndarray, mask: np.ndarray, diameter: float) -> np.ndarray:
    """int32 labels painted from the outlines :func:`suppress` keeps (surer ones on top)."""
    points, probs, dists = suppress(maps, mask, diameter)
    if not len(points):
        return np.zeros(mask.shape, np.int32)
    return _stardist("geometry").polygons_to_label(dists, points, mask.shape, prob=probs).astype(np.int32)
