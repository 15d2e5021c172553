"""Which tiles of a stored event thumbnail show a channel the upload recorded.

The worker stores each event's thumbnail as one greyscale tile per *model* channel, in
``ImagingUpload.result_channels`` order (the preprocessing contract's DAPI, CK, CD45, AF), whatever
the upload had: the model's input fills a channel the upload lacks with zeros, so a 3-channel upload
(DAPI, CK, CD45: the partner lab's instrument) gets an all-black AF tile. That tile is no image of
anything; the pages, the printout and the API show (and name) only the recorded channels, and say
which were not recorded ("AF not recorded").

Channel names are compared as markers (``classifier.channel_names.canonical``: "Hoechst" is DAPI,
"CK-FITC" is CK), so a lab's spelling in ``ImagingUpload.channels`` matches the model's names.
Thumbnails stored before ``result_channels`` existed are in the upload's own order: all recorded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from classifier.channel_names import canonical
from patients.imaging import decode_grey, encode_strip


@dataclass(frozen=True)
class StripChannels:
    """The tiles of a stored strip (``tiles``, in order) and those the upload did not record."""

    tiles: tuple[str, ...]
    missing: tuple[str, ...] = ()

    @property
    def recorded(self) -> tuple[str, ...]:
        return tuple(t for t in self.tiles if t not in self.missing)

    @property
    def missing_text(self) -> str:
        """``"AF not recorded"`` (``""`` when every tile was recorded)."""
        return f"{', '.join(self.missing)} not recorded" if self.missing else ""


def _marker(name: str) -> str:
    return canonical(name) or str(name).strip().upper()


def strip_channels(result_channels: Sequence[str] | None, upload_channels: Sequence[str] | None) -> StripChannels:
    """:class:`StripChannels` of an upload's thumbnails (``upload.result_channels``, ``upload.channels``)."""
    if not result_channels:
        return StripChannels(tuple(upload_channels or ()))
    had = {_marker(c) for c in upload_channels or ()}
    if not had:  # nothing to compare with: show what was stored
        return StripChannels(tuple(result_channels))
    return StripChannels(tuple(result_channels), tuple(t for t in result_channels if _marker(t) not in had))


def recorded_strip(png: bytes, channels: StripChannels) -> bytes:
    """The stored strip ``png`` with only the recorded channels' tiles (``png`` itself when none is missing)."""
    if not channels.missing or not channels.tiles:
        return png
    grey = decode_grey(png)
    n = len(channels.tiles)
    if grey.shape[1] % n:
        return png  # not a strip of these tiles: leave it as stored
    tiles = np.split(grey, n, axis=1)
    keep = [tile for name, tile in zip(channels.tiles, tiles, strict=True) if name not in channels.missing]
    return encode_strip(np.stack(keep)) if keep else png


def label_cells(cells: Sequence) -> str:
    """Set what a page's thumbnail of each cell (``CellEvent`` with ``upload`` loaded) needs:
    ``channels`` (the strip's tiles, comma-separated, to cut it), ``missing_channels`` (the tiles to
    leave out, comma-separated) and ``missing_text`` ("AF not recorded"). Returns the page's note on
    what was not recorded ("" when every channel was), one per distinct case."""
    by_upload: dict[int, StripChannels] = {}
    notes: list[str] = []
    for c in cells:
        up = c.upload
        ch = by_upload.get(up.pk)
        if ch is None:
            ch = by_upload[up.pk] = strip_channels(up.result_channels, up.channels)
            note = f"{ch.missing_text} (the upload had {', '.join(ch.recorded)}): not shown" if ch.missing else ""
            if note and note not in notes:
                notes.append(note)
        c.channels = ",".join(ch.tiles)
        c.missing_channels = ",".join(ch.missing)
        c.missing_text = ch.missing_text
    return "; ".join(notes)
