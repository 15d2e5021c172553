"""``segment-eval`` on labelled folders as people export them: PNG/JPEG/TIFF under any extension
case, colour images of a grey or blue nuclear stain, binary masks, and the mistakes (a missing or
misshapen mask, a colour composite) refused with a message instead of a traceback or a wrong F1.

Every folder is built from two nuclei-dev images (dsb00, dsb05: 256x256, 16 and 38 nuclei) and
scored without the baseline; a correct reading must give exactly the scores of the plain TIFFs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image
from scipy import ndimage as ndi

from classifier import cli
from classifier.errors import InputError
from classifier.nuclei.evaluate import BINARY_MASK_NOTE, evaluate_folder

DEV = Path(__file__).resolve().parents[1] / "data" / "nuclei-dev"
NAMES = ("dsb00", "dsb05")
SCORE_KEYS = ("n_true", "n_pred", "tp", "tp_iou", "f1", "f1_iou50")


def _image(name: str) -> np.ndarray:
    return tifffile.imread(DEV / "images" / f"{name}.tif")


def _mask(name: str) -> np.ndarray:
    return tifffile.imread(DEV / "masks" / f"{name}.tif")


def _folder(root: Path) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    return root


def _png(arr: np.ndarray, path: Path, mode: str | None = None) -> None:
    Image.fromarray(arr, mode).save(path)


def _scores(report: dict) -> dict[str, tuple]:
    return {r["name"]: tuple(r[k] for k in SCORE_KEYS) for r in report["images"]}


def _eval(root: Path, **kw) -> dict:
    return evaluate_folder(root, baseline=False, **kw)


@pytest.fixture(scope="module")
def reference() -> dict[str, tuple]:
    """The scores of the two images as nuclei-dev stores them (grey uint8 TIFF, uint16 labels)."""
    ref = _scores(_eval(DEV, only=",".join(NAMES)))
    assert ref["dsb00"][0] == 16 and ref["dsb05"][0] == 38
    return ref


def test_png_tiff_and_upper_case_extensions_pair_by_stem(tmp_path, reference):
    root = _folder(tmp_path)
    # a mixed folder: one image as PNG with a .tiff mask, the other as .TIF with a 16-bit PNG mask
    _png(_image("dsb00"), root / "images" / "dsb00.png")
    tifffile.imwrite(root / "masks" / "dsb00.tiff", _mask("dsb00"))
    tifffile.imwrite(root / "images" / "dsb05.TIF", _image("dsb05"))
    _png(_mask("dsb05").astype(np.uint16), root / "masks" / "dsb05.png")
    (root / "images" / "notes.txt").write_text("not an image")  # other files are no images
    report = _eval(root)
    assert _scores(report) == reference  # both halves scored, nothing dropped
    assert "masks_without_images" not in report


def test_grey_saved_as_rgba_png_or_rgb_tiff_scores_as_grey(tmp_path, reference):
    root = _folder(tmp_path)
    a, b = _image("dsb00"), _image("dsb05")
    # DSB 2018's own images are RGBA PNGs of grey content
    _png(np.stack([a, a, a, np.full_like(a, 255)], -1), root / "images" / "dsb00.png", "RGBA")
    tifffile.imwrite(root / "images" / "dsb05.tif", np.stack([b, b, b], -1))
    for n in NAMES:
        tifffile.imwrite(root / "masks" / f"{n}.tif", _mask(n))
    report = _eval(root)
    assert _scores(report) == reference
    assert report["images"][1]["image_note"].startswith("3 identical colour channels")


def test_blue_only_rgb_and_a_1xhxw_tiff_score_as_grey(tmp_path, reference):
    root = _folder(tmp_path)
    a = _image("dsb00")
    zero = np.zeros_like(a)
    tifffile.imwrite(root / "images" / "dsb00.tif", np.stack([zero, zero, a], -1))  # DAPI shown blue
    tifffile.imwrite(root / "images" / "dsb05.tif", _image("dsb05")[None])
    for n in NAMES:
        tifffile.imwrite(root / "masks" / f"{n}.tif", _mask(n))
    report = _eval(root)
    assert _scores(report) == reference
    assert report["images"][0]["image_note"] == "only channel 2 of 3 has signal: it was used"
    assert report["images"][0]["shape"] == [256, 256]


def test_a_colour_composite_needs_channel(tmp_path, reference):
    root = _folder(tmp_path)
    a = _image("dsb00")
    # red: another stain (here the image flipped), green empty, blue: the nuclei
    tifffile.imwrite(root / "images" / "dsb00.tif", np.stack([a[::-1], np.zeros_like(a), a], -1))
    tifffile.imwrite(root / "masks" / "dsb00.tif", _mask("dsb00"))
    with pytest.raises(InputError, match=r"dsb00\.tif: is a 3-channel colour image.*--channel N"):
        _eval(root)
    assert _scores(_eval(root, channel=2)) == {"dsb00": reference["dsb00"]}
    # red holds other content: choosing it must change the result, not be ignored
    assert _scores(_eval(root, channel=0))["dsb00"] != reference["dsb00"]
    with pytest.raises(InputError, match="--channel 3 is out of range"):
        _eval(root, channel=3)


def test_image_and_mask_of_different_shapes_are_refused_naming_both(tmp_path):
    root = _folder(tmp_path)
    for n in NAMES:
        tifffile.imwrite(root / "images" / f"{n}.tif", _image(n))
    tifffile.imwrite(root / "masks" / "dsb00.tif", _mask("dsb00"))
    tifffile.imwrite(root / "masks" / "dsb05.tif", _mask("dsb05")[:200])
    with pytest.raises(InputError, match=r"dsb05\.tif: the image is 256x256 .* mask dsb05\.tif is 200x256"):
        _eval(root)


def test_a_missing_mask_is_named_and_a_mask_without_image_reported(tmp_path, reference, capsys):
    root = _folder(tmp_path)
    for n in NAMES:
        _png(_image(n), root / "images" / f"{n}.png")
    tifffile.imwrite(root / "masks" / "dsb00.tif", _mask("dsb00"))
    with pytest.raises(InputError, match=r"no mask for dsb05\.png"):
        _eval(root)
    # a subset with masks still runs; a mask no image claims is reported, not silently skipped
    tifffile.imwrite(root / "masks" / "dsb99.tif", _mask("dsb05"))
    report = _eval(root, only="dsb00")
    assert _scores(report) == {"dsb00": reference["dsb00"]}
    assert report["masks_without_images"] == ["dsb99.tif"]
    assert "no image for dsb99.tif" in capsys.readouterr().err


@pytest.mark.parametrize("on", [1, 255])
def test_a_binary_mask_is_split_into_connected_components(tmp_path, capsys, on):
    root = _folder(tmp_path)
    tifffile.imwrite(root / "images" / "dsb05.tif", _image("dsb05"))
    fg = _mask("dsb05") > 0
    tifffile.imwrite(root / "masks" / "dsb05.tif", (fg * on).astype(np.uint8))
    row = _eval(root)["images"][0]
    _, components = ndi.label(fg)
    assert 1 < components < 38  # touching nuclei merge: fewer than the 38 instances
    assert row["n_true"] == components
    assert row["mask_note"] == BINARY_MASK_NOTE
    assert "binary mask" in capsys.readouterr().err


def _instance_colours(n: int, seed: int) -> np.ndarray:
    """n distinct non-black RGB colours."""
    codes = np.random.default_rng(seed).choice(np.arange(1, 2**24), n, replace=False)
    return np.stack([(codes >> 16) & 255, (codes >> 8) & 255, codes & 255], 1).astype(np.uint8)


def test_colour_masks_one_colour_per_nucleus(tmp_path, reference, capsys):
    """A palette PNG (labelme, many annotation tools) or an RGB render with one colour per nucleus
    scores exactly as the integer labels it encodes."""
    root = _folder(tmp_path)
    for n in NAMES:
        tifffile.imwrite(root / "images" / f"{n}.tif", _image(n))
    m00, m05 = _mask("dsb00"), _mask("dsb05")
    palette = Image.fromarray(m00.astype(np.uint8), "P")
    palette.putpalette([0, 0, 0] + _instance_colours(255, 0).ravel().tolist())
    palette.save(root / "masks" / "dsb00.png")
    rgb = np.zeros(m05.shape + (3,), np.uint8)
    colours = _instance_colours(int(m05.max()), 1)
    rgb[m05 > 0] = colours[m05[m05 > 0] - 1]
    _png(rgb, root / "masks" / "dsb05.png")
    report = _eval(root)
    assert _scores(report) == reference
    assert all(r["mask_note"].startswith("colour mask") for r in report["images"])
    assert "colour mask" in capsys.readouterr().err


def test_a_recycled_palette_is_split_where_one_colour_covers_separate_nuclei(tmp_path):
    """Label renders (skimage label2rgb) recycle a few colours: separate regions of one colour are
    separate nuclei; without that, dsb05's 38 nuclei would be scored as 6."""
    root = _folder(tmp_path)
    tifffile.imwrite(root / "images" / "dsb05.tif", _image("dsb05"))
    m = _mask("dsb05")
    colours = _instance_colours(6, 2)
    rgb = np.zeros(m.shape + (3,), np.uint8)
    rgb[m > 0] = colours[(m[m > 0] - 1) % 6]
    _png(rgb, root / "masks" / "dsb05.png")
    row = _eval(root)["images"][0]
    touching_same_colour = 38 - row["n_true"]
    assert 0 <= touching_same_colour <= 3  # only touching nuclei of one colour merge
    assert "6 colours" in row["mask_note"]


def test_a_small_nucleus_far_from_a_large_one_of_its_colour_stays_a_nucleus():
    """Recycled colours: a small nucleus (or one cut by the image edge) must not be joined to a
    distant large nucleus of the same colour; a speck touching its own nucleus is part of it."""
    from classifier.nuclei.evaluate import _colour_labels

    yy, xx = np.mgrid[:200, :200]
    rgb = np.zeros((3, 200, 200), np.uint8)
    rgb[0][(yy - 50) ** 2 + (xx - 50) ** 2 <= 20**2] = 255  # large red
    rgb[0][(yy - 150) ** 2 + (xx - 150) ** 2 <= 6**2] = 255  # small red, far away
    rgb[1][(yy - 50) ** 2 + (xx - 150) ** 2 <= 10**2] = 255  # green
    rgb[0][50, 72] = 255  # a one-pixel speck 2 px off the large red one: the same nucleus
    labels, _ = _colour_labels(rgb, Path("m.png"))
    assert labels.max() == 3 and labels[50, 72] == labels[50, 50]


def test_a_colour_jpeg_mask_is_refused(tmp_path):
    root = _folder(tmp_path)
    tifffile.imwrite(root / "images" / "dsb00.tif", _image("dsb00"))
    m = _mask("dsb00")
    rgb = np.zeros(m.shape + (3,), np.uint8)
    rgb[m > 0] = _instance_colours(int(m.max()), 3)[m[m > 0] - 1]
    Image.fromarray(rgb).save(root / "masks" / "dsb00.jpg", quality=95)
    with pytest.raises(InputError, match="a colour JPEG cannot be a mask"):
        _eval(root)


def test_float_masks_must_hold_integers(tmp_path, reference):
    root = _folder(tmp_path)
    tifffile.imwrite(root / "images" / "dsb00.tif", _image("dsb00"))
    tifffile.imwrite(root / "masks" / "dsb00.tif", _mask("dsb00").astype(np.float32))
    assert _scores(_eval(root)) == {"dsb00": reference["dsb00"]}  # whole-number floats are labels
    tifffile.imwrite(root / "masks" / "dsb00.tif", _mask("dsb00").astype(np.float32) / 16)
    with pytest.raises(InputError, match=r"non-integer values such as 0\.5"):
        _eval(root)


def test_the_cli_prints_the_error_and_exits_2(tmp_path, reference, capsys):
    root = _folder(tmp_path)
    a = _image("dsb00")
    tifffile.imwrite(root / "images" / "dsb00.tif", np.stack([a[::-1], np.zeros_like(a), a], -1))
    tifffile.imwrite(root / "masks" / "dsb00.tif", _mask("dsb00"))
    args = ["segment-eval", "--data", str(root), "--no-baseline", "--quiet"]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--channel N" in err and "Traceback" not in err
    assert cli.main([*args, "--channel", "2"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["channel"] == 2 and _scores(out) == {"dsb00": reference["dsb00"]}
    (root / "masks" / "dsb00.tif").unlink()
    assert cli.main(args) == 2
    assert "no mask for dsb00.tif" in capsys.readouterr().err


def test_a_stack_of_frames_with_a_stack_of_masks_is_scored_plane_by_plane(tmp_path, reference, capsys):
    """A time-lapse or z-stack saved as one multi-page TIFF, with its masks as one multi-page TIFF:
    read as a 3-channel colour image with a colour-coded mask, it gave 432 "nuclei" for 125 and F1 0.44
    (--channel 1); each plane is now an image of its own, scored with the mask's plane of its index."""
    root = _folder(tmp_path)
    a, m = _image("dsb00"), _mask("dsb00")
    frames, masks = np.stack([a, a[::-1], a[:, ::-1]]), np.stack([m, m[::-1], m[:, ::-1]])
    tifffile.imwrite(root / "images" / "dsb00.tif", frames.astype(np.uint16), photometric="minisblack")
    for dtype in (np.uint16, np.uint8):  # ImageJ saves label stacks of <= 255 nuclei as 8-bit
        tifffile.imwrite(root / "masks" / "dsb00.tif", masks.astype(dtype), photometric="minisblack")
        report = _eval(root)
        rows = {r["name"]: r for r in report["images"]}
        assert list(rows) == ["dsb00[0]", "dsb00[1]", "dsb00[2]"]
        assert _scores(report)["dsb00[0]"] == reference["dsb00"]  # the first plane is the image itself
        assert all(r["n_true"] == 16 and r["f1"] >= 0.8 for r in rows.values()), rows
        assert rows["dsb00[2]"]["image_note"].startswith("plane 2 of a stack of 3")
        assert report["pooled"]["n_true"] == 48
        assert "scored as 3 frames" in capsys.readouterr().err  # the reading is said, with its way out
    # a stack whose last mask plane is empty (an empty z-slice): 4 frames, not RGB + alpha
    tifffile.imwrite(root / "images" / "dsb00.tif", np.concatenate([frames, a.T[None]]).astype(np.uint16))
    tifffile.imwrite(root / "masks" / "dsb00.tif", np.concatenate([masks, 0 * m[None]]).astype(np.uint16))
    assert [r["n_true"] for r in _eval(root)["images"]] == [16, 16, 16, 0]
    # --channel says the planes are channels: the one named is scored against a one-plane mask
    tifffile.imwrite(root / "images" / "dsb00.tif", frames.astype(np.uint16), photometric="minisblack")
    tifffile.imwrite(root / "masks" / "dsb00.tif", m)
    with pytest.raises(InputError, match=r"--channel N.*stack of frames"):
        _eval(root)
    assert _scores(_eval(root, channel=0)) == {"dsb00": reference["dsb00"]}
    # a colour render of labels (8-bit RGB, one colour per nucleus) beside a 3-plane image is a colour
    # mask, not 3 frames: the image's planes are then channels, and the user must say which
    colours = np.random.default_rng(0).integers(40, 255, (int(m.max()) + 1, 3)).astype(np.uint8)
    colours[0] = 0
    tifffile.imwrite(root / "masks" / "dsb00.tif", colours[m])
    with pytest.raises(InputError, match=r"--channel N"):
        _eval(root)
    assert _scores(_eval(root, channel=0)) == {"dsb00": reference["dsb00"]}
