"""Marker (channel) names: canonical spellings, aliases, and parsing of a caller's list.

Uploads name their channels in whatever words the lab uses ("Hoechst", "pan-CK",
"CD45-APC"...). Everything downstream works with a small set of canonical upper-case
names, so the mapping lives in one place.

Decisions worth knowing:
- **EpCAM maps to CK.** In CellSearch-type assays EpCAM is used for capture and CK 8/18/19
  for staining, and exports label the epithelial channel either way (ctc-dev calls it
  "cytokeratin/EpCAM"). Both mark the epithelial origin the classifier looks for, so they
  are one channel here. A lab with both stains must drop one (see below).
- **Nuclear dyes** (DAPI, Hoechst 33342/33258, DRAQ5) all map to DAPI.
- **Fluorophores** beside the marker are ignored, before or after it: "CD45-APC", "APC-CD45",
  "CK (FITC)", "FITC (pan-CK)" and "DAPI_405" resolve by the one marker among their words (an
  OME file naming its planes dye first, "APC-CD45", was not read, so a swapped ``--channels``
  passed unnoticed); a bare fluorophore ("FITC") is not a marker and is rejected, because the
  same dye carries different markers in different labs.
- A channel the caller wants ignored is named ``-`` (or ``none``/``skip``): useful for an
  RGB composite with an unused colour, or a stain the classifier does not know.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from classifier.errors import InputError

#: Channels every analysed image must have (CellSearch definition: DAPI+, CK+, CD45-).
REQUIRED_CHANNELS: tuple[str, ...] = ("DAPI", "CK", "CD45")

#: Canonical name -> accepted spellings (compared after `_key` normalisation).
ALIASES: dict[str, tuple[str, ...]] = {
    "DAPI": ("DAPI", "HOECHST", "HOECHST33342", "HOECHST33258", "H33342", "DRAQ5",
             "NUCLEUS", "NUCLEAR", "NUCLEI", "DNA"),
    "CK": ("CK", "PANCK", "PANCYTOKERATIN", "CYTOKERATIN", "KRT", "CK81819", "CK818",
           "CK8", "CK18", "CK19", "EPCAM", "CKEPCAM"),
    "CD45": ("CD45", "PTPRC", "LCA"),
    "AF": ("AF", "AUTOFLUORESCENCE", "AUTOFLUOR"),
    "VIM": ("VIM", "VIMENTIN"),
    "HER2": ("HER2", "ERBB2"),
    "PSMA": ("PSMA", "FOLH1"),
    "AR": ("AR", "ANDROGENRECEPTOR"),
    "PDL1": ("PDL1", "CD274"),
    "EGFR": ("EGFR",),
    "KI67": ("KI67", "MKI67"),
}

#: Spellings that mean "this channel is present in the file but ignore it".
SKIP_NAMES: frozenset[str] = frozenset({"-", "_", "NONE", "SKIP", "UNUSED", "IGNORE"})

_LOOKUP: dict[str, str] = {alias: canon for canon, names in ALIASES.items() for alias in names}


def _key(word: str) -> str:
    """Upper case without separators, so "CK 8/18/19", "ck8-18-19" and "CK8_18_19" agree."""
    return re.sub(r"[^A-Z0-9]", "", word.upper())


def canonical(name: str) -> str | None:
    """The canonical marker for ``name``, or None when it is not a known marker.

    Tries the whole name first ("CK 8/18/19"), then its words and pairs of neighbouring words
    ("pan CK"), so that a fluorophore before or after the marker ("CD45-APC", "APC-CD45",
    "DAPI (405 nm)", "FITC (pan-CK)") does not get in the way. A name whose words point to two
    different markers is no marker (None): it does not say which. A bare dye ("FITC") is no
    marker either: the same dye carries different markers in different labs.
    """
    whole = _key(name)
    if whole in _LOOKUP:
        return _LOOKUP[whole]
    keys = [_key(w) for w in re.split(r"[\s_\-(),;:/]+", name.strip()) if _key(w)]
    if keys and keys[0] in _LOOKUP:  # the marker first: "CD45 (AF 647)" is CD45 (AF: Alexa Fluor)
        return _LOOKUP[keys[0]]
    found = {_LOOKUP[k] for k in keys if k in _LOOKUP}
    found |= {_LOOKUP[a + b] for a, b in zip(keys, keys[1:], strict=False) if a + b in _LOOKUP}
    return found.pop() if len(found) == 1 else None


def describe_known() -> str:
    """One line listing the accepted names, for error messages."""
    parts = []
    for canon, names in ALIASES.items():
        extra = [n for n in names if n != canon][:3]
        parts.append(f"{canon} ({', '.join(extra)})" if extra else canon)
    return "; ".join(parts)


def parse_channels(spec: str | Sequence[str]) -> list[str | None]:
    """Parse the caller's channel list into canonical names (None for a skipped channel).

    ``spec`` is a comma- (or semicolon-) separated string or a sequence of names, in the
    order of the channels in the file; for an RGB composite, the order red, green, blue.
    Raises InputError for an empty list, an unknown name or a marker named twice.
    """
    raw = re.split(r"[,;]", spec) if isinstance(spec, str) else list(spec)
    names = [str(n).strip() for n in raw]
    if isinstance(spec, str) and names and names[-1] == "":
        names.pop()  # tolerate a trailing comma
    if not names or all(n == "" for n in names):
        raise InputError("No channel names were given (e.g. DAPI,CK,CD45).")
    out: list[str | None] = []
    for name in names:
        if name == "":
            raise InputError(f"Channel list '{','.join(names)}' has an empty name.")
        if name.upper() in SKIP_NAMES:
            out.append(None)
            continue
        canon = canonical(name)
        if canon is None:
            raise InputError(
                f"Unknown channel name '{name}'. Known markers: {describe_known()}. "
                "Name a channel '-' to ignore it."
            )
        if canon in out:
            raise InputError(f"Channel {canon} is named twice in '{','.join(names)}'.")
        out.append(canon)
    return out


def missing_required(channels: Sequence[str | None],
                     required: Sequence[str] = REQUIRED_CHANNELS) -> list[str]:
    """Required markers absent from ``channels``, in the order of ``required``."""
    return [r for r in required if r not in channels]
