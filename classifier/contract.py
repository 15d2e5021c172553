"""The preprocessing contract: everything that must match between training and inference,
stored with the weights (:mod:`classifier.weights`) and checked when they are loaded.

What each field means for the pixels is implemented in :mod:`classifier.preprocess`; this
module only states, stores, reads back and compares the contract (as timm keeps a model's
data config apart from its transforms). A change to any value here is a change of
preprocessing: new weights, or a ``ContractError`` on load.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from classifier.errors import ContractError

#: intensity anchors and clip range of the per-channel normalisation
LOW_PCT = 20.0
HIGH_PCT = 99.9
CLIP = (-0.5, 1.5)

#: median diameter (µm) of a leukocyte-dominated population of nuclei *as the thumbnail
#: thresholds measure them* (DAPI foreground of a smoothed, block-averaged copy), from which
#: a pixel size is inferred: calibrated on the synthetic generator (docs/model-card.md) so
#: that inferred pixel sizes come out right, and stored with the weights. Deliberately not
#: ``classifier.segmentation.NUCLEUS_DIAMETER_UM`` (7 µm, the physical size the nucleus
#: network segments at): the same nuclei, measured by a different method.
THRESHOLDED_NUCLEUS_UM = 6.75


@dataclass(frozen=True)
class PreprocessContract:
    """Everything that must match between training and inference."""

    crop_px: int = 48
    um_per_px: float = 0.5
    channels: tuple[str, ...] = ("DAPI", "CK", "CD45", "AF")
    required: tuple[str, ...] = ("DAPI", "CK", "CD45")
    normalisation: str = (f"per-channel (x - p{LOW_PCT:g}) / (p{HIGH_PCT:g} of smoothed block mean - p{LOW_PCT:g}), "
                          f"clip {CLIP}")
    #: median leukocyte-dominated nucleus diameter used to infer the pixel size (µm):
    #: :data:`THRESHOLDED_NUCLEUS_UM`
    reference_nucleus_um: float = THRESHOLDED_NUCLEUS_UM
    feature_names: tuple[str, ...] = field(default_factory=tuple)
    version: int = 2
    #: nucleus diameter (µm) assumed for a lone event (a tight crop with fewer than
    #: ``preprocess.MIN_NEIGHBOURS`` other nuclei): between a leukocyte's and a CTC's, since the
    #: event is a candidate of either kind (calibrated on the generator's tight framings)
    lone_nucleus_um: float = 9.0
    background: str = "min(p20, median of the darkest eighth of 8x8 block means)"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"] = list(self.channels)
        d["required"] = list(self.required)
        d["feature_names"] = list(self.feature_names)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> PreprocessContract:
        try:
            return cls(
                crop_px=int(d["crop_px"]),
                um_per_px=float(d["um_per_px"]),
                channels=tuple(d["channels"]),
                required=tuple(d["required"]),
                normalisation=str(d["normalisation"]),
                reference_nucleus_um=float(d["reference_nucleus_um"]),
                feature_names=tuple(d["feature_names"]),
                version=int(d["version"]),
                # contracts before version 2 had neither: their values are what v1 did, so
                # check_against names the difference instead of failing to read them
                lone_nucleus_um=float(d.get("lone_nucleus_um", d["reference_nucleus_um"])),
                background=str(d.get("background", f"p{LOW_PCT:g}")),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ContractError(f"weights carry an unreadable preprocessing contract: {err}") from err

    def check_against(self, code: PreprocessContract) -> None:
        """Raise ContractError unless weights trained under ``self`` can run with ``code``."""
        mine, theirs = self.to_dict(), code.to_dict()
        diff = [k for k in mine if mine[k] != theirs[k]]
        if diff:
            detail = "; ".join(_difference(k, mine[k], theirs[k]) for k in diff)
            raise ContractError(f"preprocessing contract mismatch ({detail})")


def _difference(key: str, weights: object, code: object) -> str:
    """One field's difference in a sentence short enough for a page: lists (86 attribute names) by
    their counts and the names only one side has, not in full."""
    if isinstance(weights, list) and isinstance(code, list):
        only_w = [x for x in weights if x not in code]
        only_c = [x for x in code if x not in weights]
        parts = [f"weights {len(weights)} vs code {len(code)}"]
        if only_w:
            parts.append("only in the weights: " + _first(only_w))
        if only_c:
            parts.append("only in the code: " + _first(only_c))
        if not only_w and not only_c:
            parts.append("same names, another order")
        return f"{key}: " + ", ".join(parts)
    return f"{key}: weights {weights!r} vs code {code!r}"


def _first(names: list, n: int = 5) -> str:
    return ", ".join(map(str, names[:n])) + (" ..." if len(names) > n else "")


def code_contract() -> PreprocessContract:
    """The contract this code implements, with the attribute names it computes (no torch: the
    web process checks a bundle's metadata against it before promoting it)."""
    from classifier import features

    return PreprocessContract(feature_names=tuple(features.feature_names()))
