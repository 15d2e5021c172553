"""Plain-language names for what the model's explanation shows (issue 13, point 6).

A reviewer met raw attribute names (``DAPI_glcm1_entropy``) and "spatial/texture" bars; the
pages now show words, with the technical name on hover (``title``) for those who want it.
"""

from __future__ import annotations

#: The two branches of the network (classifier.engine): what each looks at, in words.
BRANCH_LABELS = {"spatial": "Image appearance", "texture": "Measured features"}
_CHANNEL_WORDS = {"DAPI": "nucleus stain (DAPI)", "CK": "cytokeratin (CK)", "CD45": "CD45 (leukocyte marker)",
                  "AF": "autofluorescence"}
_MEASURE_WORDS = {
    "nucleus_mean": "brightness in the nucleus", "cytoplasm_mean": "brightness in the cytoplasm",
    "cell_mean": "brightness over the cell", "cell_max": "peak brightness", "outside_mean": "background brightness",
    "contrast": "cell against background", "cv": "unevenness", "granularity": "granularity",
    "hotspot_fraction": "share in bright spots",
    "cell_area_um2": "cell area", "nucleus_area_um2": "nucleus area", "cell_diameter_um": "cell diameter",
    "nc_ratio": "nucleus-to-cell ratio", "cell_eccentricity": "cell elongation",
    "nucleus_eccentricity": "nucleus elongation", "cell_roughness": "rough cell outline",
    "nucleus_offset_um": "nucleus off centre", "has_nucleus": "a nucleus is present",
    "dapi_fragments": "fragmented nucleus", "pearson_dapi_ck": "CK overlaps the nucleus",
    "pearson_ck_cd45": "CK and CD45 overlap", "pearson_af_dapi": "autofluorescence overlaps the nucleus",
    "ck_in_nucleus_fraction": "CK inside the nucleus", "cd45_rim_ratio": "CD45 on the cell rim",
    "af_to_dapi": "autofluorescence against the nucleus stain",
}
_TEXTURE_WORDS = {"contrast": "texture contrast", "homogeneity": "texture smoothness", "energy": "texture uniformity",
                  "correlation": "texture regularity", "entropy": "texture irregularity"}


def attribute_label(name: str) -> str:
    """``DAPI_glcm1_entropy`` -> ``nucleus stain (DAPI): texture irregularity (fine)``; unknown
    names are made readable (underscores to spaces) rather than hidden."""
    if not name:
        return ""
    if name in _MEASURE_WORDS:
        words = _MEASURE_WORDS[name]
        return words[0].upper() + words[1:]
    channel, _, rest = name.partition("_")
    where = _CHANNEL_WORDS.get(channel.upper())
    if where and rest:
        if rest.startswith(("glcm1_", "glcm2_")):
            scale = "fine" if rest.startswith("glcm1") else "coarse"
            words = f"{_TEXTURE_WORDS.get(rest[6:], rest[6:])} ({scale})"
        elif rest.startswith("lbp_"):
            words = f"micro-pattern {rest[4:]}"
        else:
            words = _MEASURE_WORDS.get(rest, rest.replace("_", " "))
        return f"{where[0].upper() + where[1:]}: {words}"
    return name.replace("_", " ").capitalize()


def branch_label(name: str) -> str:
    """``spatial`` -> ``Image pattern`` (the branch names of the network mean little to a reviewer)."""
    return BRANCH_LABELS.get(name, name.replace("_", " ").capitalize())
