"""A small U-Net for nuclei: two input channels (linear and log-scaled DAPI), two outputs.

Outputs (logits): foreground (is this pixel in a nucleus) and a *scale-free* distance map, the
distance to the nucleus boundary divided by that nucleus's largest such distance (1 at its centre,
0 at its edge). The distance map is what separates touching nuclei (their centres are far apart,
their contact line is at 0) and, divided by the radius, means the same at every nucleus size.
About 0.8 MB of float32 weights. The nucleus size it works at is saved with its weights
(``work_diameter``; 12 px, :data:`classifier.nuclei.prep.WORK_DIAMETER`, for the shipped ones).

With ``rays`` > 0 a second head adds star-convex outlines (StarDist, Schmidt et al. 2018): for each
pixel, the distance to its nucleus's edge along ``rays`` evenly spaced directions, in units of the
working diameter, so that two touching nuclei could be two outlines even where the distance map has
no valley between them (measured: they part no more neighbours than the distance map does; model
card, Segmentation, "Star-convex outlines").
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from classifier.nuclei.prep import WORK_DIAMETER


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )


class NucleusUNet(nn.Module):
    """Three-level U-Net (``widths`` per level); input sides must be multiples of 8."""

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64, 96), cin: int = 2, cout: int = 3,
                 work_diameter: float = WORK_DIAMETER, rays: int = 0) -> None:
        super().__init__()
        self.widths = tuple(widths)
        #: the nucleus diameter (px) the network was trained to see: images are brought to it
        self.work_diameter = float(work_diameter)
        self.down = nn.ModuleList()
        c = cin
        for w in widths:
            self.down.append(_block(c, w))
            c = w
        self.up = nn.ModuleList()
        for w in reversed(widths[:-1]):
            self.up.append(_block(c + w, w))
            c = w
        self.head = nn.Conv2d(c, cout, 1)
        #: star-convex outline directions (0: none); ray k points at angle 2 pi k / rays from +x
        #: towards +y, as :func:`stardist.geometry.star_dist` measures them
        self.rays = int(rays)
        if self.rays:
            # outlines need more than the few channels of the last level: a small layer of their own
            self.ray_head = nn.Sequential(nn.Conv2d(c, 32, 3, padding=1), nn.ReLU(inplace=True),
                                          nn.Conv2d(32, self.rays, 1))

    @property
    def outputs(self) -> int:
        """Output channels: foreground, distance, size, then the rays' lengths."""
        return self.head.out_channels + self.rays

    @property
    def multiple(self) -> int:
        """Input sides must be divisible by this."""
        return 2 ** (len(self.widths) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            if i:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        for block, skip in zip(self.up, reversed(skips[:-1]), strict=True):
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            x = block(torch.cat([x, skip], dim=1))
        if self.rays:
            return torch.cat([self.head(x), self.ray_head(x)], dim=1)
        return self.head(x)
