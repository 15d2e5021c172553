"""Image input: every accepted format read correctly, every hostile input refused by name."""

from __future__ import annotations

import io
import logging
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from classifier.channel_names import canonical, parse_channels
from classifier.errors import InputError
from classifier.io import ImageInput, Limits, read_inputs, select_channels, validate_upload

CH4 = "DAPI,CK,AF,CD45"


def field(c: int = 4, h: int = 40, w: int = 48, dtype: str = "uint8", seed: int = 0) -> np.ndarray:
    """A small image whose channel k is filled around the value 10 * (k + 1), so tests can
    tell channels apart after any reordering."""
    rng = np.random.default_rng(seed)
    base = np.arange(1, c + 1, dtype=np.float64)[:, None, None] * 10
    return (base + rng.integers(0, 3, (c, h, w))).astype(dtype)


def channel_means(inp: ImageInput) -> list[int]:
    return [round(float(m) / 10) for m in inp.image.mean(axis=(1, 2))]


def write_tif(path: Path, arr: np.ndarray, **kw: object) -> Path:
    kw.setdefault("photometric", "minisblack")  # channels as planes, not a guessed RGB
    tifffile.imwrite(path, arr, **kw)
    return path


def make_zip(path: Path, members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def tif_bytes(arr: np.ndarray, **kw: object) -> bytes:
    kw.setdefault("photometric", "minisblack")
    buf = io.BytesIO()
    tifffile.imwrite(buf, arr, **kw)
    return buf.getvalue()


def huge_tiff_header(width: int, height: int) -> bytes:
    """A 100-odd byte little-endian TIFF whose one IFD declares width x height 8-bit pixels.

    The pixel data are not there: the reader must refuse it from the header alone.
    """
    entries = [  # (tag, type, count, value); type 3 = SHORT, 4 = LONG
        (256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 1),
        (262, 3, 1, 1), (273, 4, 1, 8), (277, 3, 1, 1), (278, 4, 1, height),
        (279, 4, 1, min(width * height, 2**32 - 1)),
    ]
    ifd = struct.pack("<H", len(entries))
    for tag, typ, count, value in entries:
        packed = struct.pack("<H", value) + b"\0\0" if typ == 3 else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, typ, count) + packed
    ifd += struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", 8) + ifd


def refused(paths: list[Path], channels: str | None = CH4, **kw: object) -> str:
    with pytest.raises(InputError) as err:
        read_inputs(paths, channels, **kw)  # type: ignore[arg-type]
    return str(err.value)


# --- formats that must be read -----------------------------------------------------


def test_it_reads_a_cyx_tiff_with_the_given_channel_order(tmp_path: Path) -> None:
    (inp,) = read_inputs([write_tif(tmp_path / "a.tif", field())], "dapi, ck, af, cd45")
    assert inp.source == "a.tif"
    assert inp.channels == ["DAPI", "CK", "AF", "CD45"]
    assert inp.image.dtype == np.float32 and inp.image.shape == (4, 40, 48)
    assert channel_means(inp) == [1, 2, 3, 4]
    assert inp.pixel_size_um is None


def test_it_reads_a_yxc_tiff(tmp_path: Path) -> None:
    path = write_tif(tmp_path / "yxc.tif", np.moveaxis(field(), 0, -1), planarconfig="contig")
    (inp,) = read_inputs([path], CH4)
    assert inp.image.shape == (4, 40, 48) and channel_means(inp) == [1, 2, 3, 4]


def test_it_keeps_the_fourth_channel_of_a_tiff_written_as_rgba(tmp_path: Path) -> None:
    # tifffile (and other writers) store an (H, W, 4) array as RGBA: with four names given,
    # the "alpha" is a marker and must be kept.
    path = write_tif(tmp_path / "hw4.tif", np.moveaxis(field(), 0, -1), photometric="rgb")
    (inp,) = read_inputs([path], CH4)
    assert channel_means(inp) == [1, 2, 3, 4]


def test_it_reads_an_ome_tiff_with_names_and_pixel_size_from_metadata(tmp_path: Path) -> None:
    path = write_tif(tmp_path / "f.ome.tif", field()[None], ome=True, metadata={
        "axes": "ZCYX", "Channel": {"Name": ["Hoechst", "pan-CK", "AF", "CD45-APC"]},
        "PhysicalSizeX": 650.0, "PhysicalSizeXUnit": "nm"})
    (inp,) = read_inputs([path])
    assert inp.channels == ["DAPI", "CK", "AF", "CD45"]
    assert inp.pixel_size_um == pytest.approx(0.65)
    assert channel_means(inp) == [1, 2, 3, 4]


def test_the_callers_names_and_pixel_size_win_over_metadata(tmp_path: Path) -> None:
    path = write_tif(tmp_path / "f.ome.tif", field(), ome=True, metadata={
        "axes": "CYX", "Channel": {"Name": ["A1", "B2", "C3", "D4"]}, "PhysicalSizeX": 0.5})
    (inp,) = read_inputs([path], "CD45,AF,CK,DAPI", pixel_size_um=0.8)
    assert inp.channels == ["CD45", "AF", "CK", "DAPI"] and inp.pixel_size_um == 0.8


@pytest.mark.parametrize("writer", ["ome", "imagej"])
def test_names_given_in_another_order_than_the_files_are_refused(tmp_path: Path, writer: str) -> None:
    """Taking the caller's order over the file's would swap markers silently (an OME export of
    CD45,DAPI,CK,AF read as DAPI,CK,AF,CD45 called every ctc-dev CTC non-CTC)."""
    own = ["CD45", "DAPI", "CK", "AF"]
    if writer == "ome":
        path = write_tif(tmp_path / "f.ome.tif", field(), ome=True, metadata={"axes": "CYX", "Channel": {"Name": own}})
    else:
        path = write_tif(tmp_path / "f.tif", field(), imagej=True, metadata={"axes": "CYX", "Labels": own})
    msg = refused([path], CH4)
    assert msg.startswith(f"{path.name}: the file names its channels CD45, DAPI, CK, AF (in that order), "
                          "but they were given as DAPI,CK,AF,CD45")
    assert "give them in the file's order (CD45,DAPI,CK,AF)" in msg
    with pytest.raises(InputError, match="the file names its channels"):  # at request time too
        validate_upload([path], CH4)
    (inp,) = read_inputs([path], "CD45,DAPI,CK,AF")  # the file's own order is read as it says
    assert channel_means(inp) == [1, 2, 3, 4] and inp.channels == own
    validate_upload([path], "CD45,DAPI,CK,-")  # skipping a channel is no contradiction


def test_names_with_the_dye_first_are_read_and_a_swap_is_refused(tmp_path: Path) -> None:
    own = ["DAPI", "APC-CD45", "PE-AF", "FITC-CK"]  # planes in the order DAPI, CD45, AF, CK
    path = write_tif(tmp_path / "f.ome.tif", field(), ome=True, metadata={"axes": "CYX", "Channel": {"Name": own}})
    assert "give them in the file's order (DAPI,CD45,AF,CK)" in refused([path], CH4)
    (inp,) = read_inputs([path], "DAPI,CD45,AF,CK")
    assert channel_means(inp) == [1, 2, 3, 4]


def test_dye_names_that_read_as_one_marker_are_no_contradiction(tmp_path: Path) -> None:
    """'AF 488', 'AF 647' (Alexa Fluor dyes) both read as AF: the file's names then say nothing about
    the order, and the caller's names stand."""
    path = write_tif(tmp_path / "f.ome.tif", field(), ome=True, metadata={
        "axes": "CYX", "Channel": {"Name": ["DAPI", "AF 488", "AF 555", "AF 647"]}})
    (inp,) = read_inputs([path], CH4)
    assert inp.channels == CH4.split(",") and channel_means(inp) == [1, 2, 3, 4]


def test_a_tiff_of_several_images_is_refused_and_a_preview_is_passed_over(tmp_path: Path) -> None:
    """Only one image per file is read: an OME-TIFF of 3 events must not count as one, and a
    thumbnail written before the image must not be analysed instead of it."""
    path = tmp_path / "three.ome.tif"
    with tifffile.TiffWriter(path, ome=True) as tw:
        for k in range(3):
            tw.write(field(seed=k), photometric="minisblack", metadata={"axes": "CYX"})
    assert refused([path]).startswith("three.ome.tif: holds 3 images (48x40 pixels; TIFF/OME series), "
                                      "but one image per file is read")
    path = tmp_path / "thumb.ome.tif"
    with tifffile.TiffWriter(path, ome=True) as tw:  # the preview's metadata must not be the image's
        tw.write(field(h=16, w=16), photometric="minisblack",
                 metadata={"axes": "CYX", "Channel": {"Name": ["A", "B", "C", "D"]}, "PhysicalSizeX": 2.0})
        tw.write(field(h=64, w=80), photometric="minisblack",
                 metadata={"axes": "CYX", "Channel": {"Name": CH4.split(",")}, "PhysicalSizeX": 0.4})
    (inp,) = read_inputs([path])
    assert inp.image.shape == (4, 64, 80) and channel_means(inp) == [1, 2, 3, 4]
    assert inp.channels == CH4.split(",") and inp.pixel_size_um == pytest.approx(0.4)


def test_a_blank_fourth_sample_is_a_channel_not_an_alpha(tmp_path: Path) -> None:
    """tifffile writes (H, W, 4) as RGB + an extra sample; all zero is a channel written blank
    (an instrument without AF), not a wholly transparent alpha."""
    arr = np.moveaxis(field(), 0, -1).copy()
    arr[..., 3] = 0
    path = write_tif(tmp_path / "blank.tif", arr, photometric="rgb")
    (inp,) = read_inputs([path], "DAPI,CK,CD45,AF")
    assert channel_means(inp) == [1, 2, 3, 0]


def test_it_reads_imagej_channel_labels(tmp_path: Path) -> None:
    path = write_tif(tmp_path / "ij.tif", field(), imagej=True, resolution=(1 / 0.33, 1 / 0.33),
                     metadata={"axes": "CYX", "Labels": ["DAPI", "CK", "AF", "CD45"],
                               "unit": "micron"})
    (inp,) = read_inputs([path])
    assert inp.channels == ["DAPI", "CK", "AF", "CD45"]
    assert inp.pixel_size_um == pytest.approx(0.33, rel=1e-3)


def test_it_reads_tifffile_json_channel_names_like_ctc_dev(tmp_path: Path) -> None:
    path = write_tif(tmp_path / "e.tif", field(),
                     metadata={"axes": "CYX", "Channel": {"Name": ["DAPI", "CK", "AF", "CD45"]}})
    (inp,) = read_inputs([path])
    assert inp.channels == ["DAPI", "CK", "AF", "CD45"]


def test_it_takes_pages_as_channels(tmp_path: Path) -> None:
    path = tmp_path / "pages.tif"
    with tifffile.TiffWriter(path) as tw:
        for plane in field():
            tw.write(plane)
    (inp,) = read_inputs([path], CH4)
    assert channel_means(inp) == [1, 2, 3, 4]


@pytest.mark.parametrize("dtype", ["uint16", "int16", "float32", "float64", "uint32"])
def test_it_reads_other_pixel_types_as_float32(tmp_path: Path, dtype: str) -> None:
    (inp,) = read_inputs([write_tif(tmp_path / "t.tif", field(dtype=dtype))], CH4)
    assert inp.image.dtype == np.float32 and channel_means(inp) == [1, 2, 3, 4]


@pytest.mark.parametrize("compression", ["zlib", "lzw", "packbits"])
def test_it_reads_compressed_tiffs(tmp_path: Path, compression: str) -> None:
    path = write_tif(tmp_path / "c.tif", field(), compression=compression)
    (inp,) = read_inputs([path], CH4)
    assert channel_means(inp) == [1, 2, 3, 4]


def test_it_stacks_one_greyscale_file_per_channel_by_marker_names(tmp_path: Path) -> None:
    arr = field()
    # Uploaded out of order, and CK as a PNG: the marker word in each name decides.
    paths = [write_tif(tmp_path / "f1_CD45.tif", arr[3]), write_tif(tmp_path / "f1_dapi.tif", arr[0])]
    Image.fromarray(arr[1]).save(tmp_path / "f1_panck.png")
    paths += [tmp_path / "f1_panck.png", write_tif(tmp_path / "f1_AF.tif", arr[2])]
    arr2 = field(seed=1)  # another event (one image given twice is refused)
    paths += [write_tif(tmp_path / f"f2_{m}.tif", arr2[k]) for k, m in enumerate(["DAPI", "CK", "AF", "CD45"])]
    out = read_inputs(paths, CH4)
    assert [i.source for i in out] == ["f1_dapi.tif", "f2_DAPI.tif"]
    for inp in out:
        assert inp.channels == ["DAPI", "CK", "AF", "CD45"] and channel_means(inp) == [1, 2, 3, 4]


def test_it_stacks_unnamed_channel_files_in_upload_order(tmp_path: Path) -> None:
    arr = field()
    paths = [write_tif(tmp_path / f"img{k}.tif", arr[k]) for k in range(4)]
    (inp,) = read_inputs(paths, CH4, names=["a.tif", "b.tif", "c.tif", "d.tif"])
    assert inp.source == "a.tif" and channel_means(inp) == [1, 2, 3, 4]


def test_it_maps_rgb_composite_colours_to_markers(tmp_path: Path) -> None:
    arr = field(3)  # R=10, G=20, B=30
    Image.fromarray(np.moveaxis(arr, 0, -1)).save(tmp_path / "comp.png")
    (inp,) = read_inputs([tmp_path / "comp.png"], "CD45,CK,DAPI")
    assert inp.channels == ["CD45", "CK", "DAPI"] and channel_means(inp) == [1, 2, 3]
    dapi = select_channels(inp, ["DAPI", "CK", "CD45"], ["AF"])
    assert dapi.shape == (4, 40, 48) and round(dapi[0].mean() / 10) == 3 and not dapi[3].any()


def test_it_drops_the_alpha_of_an_rgba_png_and_skips_a_dash_channel(tmp_path: Path) -> None:
    arr = np.concatenate([field(3), np.full((1, 40, 48), 255, np.uint8)])
    Image.fromarray(np.moveaxis(arr, 0, -1), "RGBA").save(tmp_path / "comp.png")
    (inp,) = read_inputs([tmp_path / "comp.png"], "CD45,CK,DAPI")
    assert channel_means(inp) == [1, 2, 3]
    (inp,) = read_inputs([tmp_path / "comp.png"], "CD45,CK,DAPI,-")
    assert inp.channels == ["CD45", "CK", "DAPI"]
    # naming the opaque alpha as a fourth marker would read a channel saturated everywhere
    assert "is the image's alpha" in refused([tmp_path / "comp.png"], "CD45,CK,DAPI,AF")


def test_it_reads_rgb_jpeg_and_rgb_tiff_composites(tmp_path: Path) -> None:
    arr = np.moveaxis(field(3), 0, -1)
    Image.fromarray(arr).save(tmp_path / "c.jpg", quality=95)
    write_tif(tmp_path / "c.tif", arr, photometric="rgb")
    for name in ("c.jpg", "c.tif"):
        (inp,) = read_inputs([tmp_path / name], "CD45,CK,DAPI")
        assert channel_means(inp) == [1, 2, 3], name


def test_it_reads_a_zip_of_tiffs_in_natural_name_order_and_skips_non_images(tmp_path: Path) -> None:
    members = {f"events/e{k}.tif": tif_bytes(field(seed=k)) for k in (10, 2, 1)}
    members["labels.csv"] = b"file,is_ctc\n"
    members["__MACOSX/events/._e1.tif"] = b"junk"
    out = read_inputs([make_zip(tmp_path / "up.zip", members)], CH4)
    assert [i.source for i in out] == ["up.zip/events/e1.tif", "up.zip/events/e2.tif",
                                       "up.zip/events/e10.tif"]


def test_it_reads_per_channel_files_inside_a_zip(tmp_path: Path) -> None:
    arr = field()
    members = {f"f_{m}.tif": tif_bytes(arr[k]) for k, m in enumerate(["DAPI", "CK", "AF", "CD45"])}
    (inp,) = read_inputs([make_zip(tmp_path / "ch.zip", members)], CH4)
    assert channel_means(inp) == [1, 2, 3, 4]


def test_one_image_given_twice_is_refused_so_its_cells_are_not_counted_twice(tmp_path: Path) -> None:
    a = write_tif(tmp_path / "a.tif", field(seed=1))
    b = write_tif(tmp_path / "b.tif", field(seed=2))
    msg = refused([a, b, a])
    assert "a.tif: the same image (given twice)" in msg and "counted twice" in msg
    # a file and a zip holding it: the bytes differ, the image does not
    z = make_zip(tmp_path / "up.zip", {"events/b.tif": tif_bytes(field(seed=2))})
    assert "up.zip/events/b.tif: the same image as b.tif" in refused([a, b, z])
    # blank frames hold no cell and may repeat; different images pass
    blank = np.zeros((4, 40, 48), np.uint8)
    c = write_tif(tmp_path / "c.tif", blank)
    d = write_tif(tmp_path / "d.tif", blank)
    assert len(read_inputs([a, b, c, d], CH4)) == 4


def test_a_large_field_passes_the_default_limits(tmp_path: Path) -> None:
    path = write_tif(tmp_path / "big.tif", np.zeros((4, 2048, 2048), np.uint16))
    validate_upload([path], CH4)
    (inp,) = read_inputs([path], CH4)
    assert inp.image.shape == (4, 2048, 2048)


def test_the_real_ctc_dev_events_read_with_their_metadata_names() -> None:
    folder = Path(__file__).resolve().parents[3] / "shared/data/ctc-dev/events"
    files = sorted(folder.glob("*.tif"))
    if not files:
        pytest.skip("ctc-dev is not present")
    out = read_inputs(files)
    assert len(out) == len(files) and all(i.channels == ["DAPI", "CK", "AF", "CD45"] for i in out)


# --- channel names -----------------------------------------------------------------


@pytest.mark.parametrize(("name", "canon"), [
    ("Hoechst 33342", "DAPI"), ("dapi", "DAPI"), ("PanCK", "CK"), ("CK8/18/19", "CK"),
    ("EpCAM", "CK"), ("pan-cytokeratin", "CK"), ("CD45-APC", "CD45"), ("cd45", "CD45"),
    ("Vimentin", "VIM"), ("autofluorescence", "AF"), ("FITC", None), ("Channel:0:1", None),
    # the dye first (a helper's OME export "DAPI, APC-CD45, PE-AF, FITC-CK" was read as no names at all,
    # so a swapped --channels missed every ctc-dev CTC), the marker in brackets, two markers in one name
    ("APC-CD45", "CD45"), ("PE-AF", "AF"), ("FITC (pan-CK)", "CK"), ("APC (CD45)", "CD45"),
    ("cytokeratin/EpCAM", "CK"), ("Alexa Fluor 488", None), ("CD45 / CK", "CD45"), ("CD45 (AF 647)", "CD45"),
])
def test_channel_aliases(name: str, canon: str | None) -> None:
    assert canonical(name) == canon


def test_it_refuses_unknown_and_duplicate_channel_names(tmp_path: Path) -> None:
    path = write_tif(tmp_path / "a.tif", field())
    assert "Unknown channel name 'FITC'" in refused([path], "DAPI,CK,FITC,CD45")
    assert "Channel DAPI is named twice" in refused([path], "DAPI,Hoechst,AF,CD45")
    with pytest.raises(InputError, match="Unknown channel name 'XYZ'"):
        validate_upload([path], "DAPI,CK,XYZ,CD45")
    assert parse_channels("DAPI,CK,-,CD45,") == ["DAPI", "CK", None, "CD45"]


def test_it_refuses_a_missing_required_channel(tmp_path: Path) -> None:
    path = write_tif(tmp_path / "a.tif", field())
    msg = refused([path], "DAPI,CK,AF,VIM")
    assert msg.startswith("a.tif: missing required channel(s) CD45")
    with pytest.raises(InputError, match="missing required channel"):
        validate_upload([path], "DAPI,CK,AF,VIM")
    inp = read_inputs([path], "DAPI,CK,AF,VIM", required=())[0]
    with pytest.raises(InputError, match="a.tif: channel CD45 is missing"):
        select_channels(inp, ["DAPI", "CK", "CD45"])


def test_it_asks_for_names_when_the_file_has_none(tmp_path: Path) -> None:
    path = write_tif(tmp_path / "a.tif", field())
    assert "does not name its 4 channels" in refused([path], None)


# --- hostile and broken inputs -----------------------------------------------------


def test_zero_byte_file(tmp_path: Path) -> None:
    (tmp_path / "empty.tif").write_bytes(b"")
    assert refused([tmp_path / "empty.tif"]) == "empty.tif: the file is empty (0 bytes)."


def test_truncated_tiff(tmp_path: Path) -> None:
    data = tif_bytes(field())
    (tmp_path / "cut.tif").write_bytes(data[: len(data) // 2])
    assert refused([tmp_path / "cut.tif"]).startswith("cut.tif: the TIFF file is truncated")
    with pytest.raises(InputError, match="truncated"):
        validate_upload([tmp_path / "cut.tif"], CH4)


def test_corrupt_tiff_leaves_no_decoder_log_lines(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """tifffile logs what it finds wrong before raising; the user gets our sentence, not its log."""
    (tmp_path / "junk.tif").write_bytes(b"II*\x00" + struct.pack("<I", 1_651_663_207) + b"garbage")
    caplog.set_level(logging.DEBUG, logger="tifffile")
    assert refused([tmp_path / "junk.tif"]) == "junk.tif: the TIFF file contains no image."
    assert not [r for r in caplog.records if r.name.startswith("tifffile")]
    logging.getLogger("tifffile").warning("outside a decode")  # elsewhere tifffile logs as usual
    assert [r.getMessage() for r in caplog.records if r.name == "tifffile"] == ["outside a decode"]


def test_truncated_png(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.fromarray(np.moveaxis(field(3, seed=3), 0, -1)).save(buf, "PNG")
    (tmp_path / "cut.png").write_bytes(buf.getvalue()[:-200])
    assert refused([tmp_path / "cut.png"], "CD45,CK,DAPI").startswith("cut.png: cannot be read as PNG")


def test_text_renamed_tif(tmp_path: Path) -> None:
    (tmp_path / "notes.tif").write_text("patient notes, not an image\n")
    assert refused([tmp_path / "notes.tif"]).startswith("notes.tif: is text, not an image")
    with pytest.raises(InputError, match="notes.tif: is text"):
        validate_upload([tmp_path / "notes.tif"], CH4)


def test_one_by_one_image(tmp_path: Path) -> None:
    path = write_tif(tmp_path / "dot.tif", np.zeros((1, 1), np.uint8))
    assert refused([path]) == "dot.tif: 1x1 pixels is too small to hold a cell (at least 16x16)."


def test_wrong_channel_count(tmp_path: Path) -> None:
    path = write_tif(tmp_path / "three.tif", field(3))
    assert refused([path]) == "three.tif: has 3 channels but 4 channel names were given."
    with pytest.raises(InputError, match="has 3 channels but 4"):
        validate_upload([path], CH4)


def test_a_2d_image_with_several_channels_named(tmp_path: Path) -> None:
    path = write_tif(tmp_path / "flat.tif", field()[0])
    assert refused([path]).startswith("flat.tif: is a single-channel (2-D) image but 4 channels")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_in_a_float_image(tmp_path: Path, bad: float) -> None:
    arr = field(dtype="float32")
    arr[1, 5, 5] = bad
    path = write_tif(tmp_path / "nan.tif", arr)
    assert refused([path]) == "nan.tif: contains NaN, infinite or out-of-range pixel values."


def test_float64_values_beyond_float32(tmp_path: Path) -> None:
    arr = field(dtype="float64")
    arr[0, 0, 0] = 1e300
    assert "out-of-range" in refused([write_tif(tmp_path / "big.tif", arr)])


@pytest.mark.parametrize(("dtype", "label"), [("complex64", "complex64"), ("bool", "bool")])
def test_unsupported_pixel_types(tmp_path: Path, dtype: str, label: str) -> None:
    path = write_tif(tmp_path / "odd.tif", np.zeros((4, 32, 32), dtype))
    assert refused([path]).startswith(f"odd.tif: pixel type {label} is not supported")


def test_a_tiff_declaring_100000_by_100000_pixels_is_refused_from_its_header(tmp_path: Path) -> None:
    path = tmp_path / "bomb.tif"
    path.write_bytes(huge_tiff_header(100_000, 100_000))
    assert path.stat().st_size < 200
    expected = "bomb.tif: 100000x100000 pixels is over the limit of 67 megapixels per image."
    assert refused([path]) == expected
    with pytest.raises(InputError) as err:
        validate_upload([path], CH4)
    assert str(err.value) == expected


def test_a_png_declaring_a_huge_size_is_refused_before_decoding(tmp_path: Path) -> None:
    # A valid PNG header with 100000 x 100000 and no image data behind it.
    import zlib as _z

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", _z.crc32(kind + body))

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0))
    (tmp_path / "bomb.png").write_bytes(png + chunk(b"IEND", b""))
    msg = refused([tmp_path / "bomb.png"], "CD45,CK,DAPI")
    assert msg == ("bomb.png: declares 10000000000 pixels, over the limit of 67 megapixels "
                   "per image.")


def test_a_zip_bomb(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "bomb.zip", {"a.tif": b"\0" * (40 << 20)})
    assert path.stat().st_size < 100_000
    msg = refused([path])
    assert msg.startswith("bomb.zip/a.tif: compressed ") and "possible zip bomb" in msg
    with pytest.raises(InputError, match="zip bomb"):
        validate_upload([path], CH4)


def test_a_zip_member_over_the_size_limit(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "big.zip", {"a.tif": tif_bytes(np.zeros((4, 64, 64), np.uint8))})
    msg = refused([path], limits=Limits(max_file_bytes=8192))
    assert msg.startswith("big.zip/a.tif: 16.") and msg.endswith("KB uncompressed, over the limit of 8 KB per file.")


@pytest.mark.parametrize("evil", ["../escape.tif", "/etc/passwd.tif", "a/../../b.tif", "C:/x.tif"])
def test_a_zip_with_unsafe_member_names(tmp_path: Path, evil: str) -> None:
    path = make_zip(tmp_path / "evil.zip", {"ok.tif": tif_bytes(field()), evil: tif_bytes(field())})
    expected = (f"evil.zip: member '{evil}' has an unsafe path (absolute or containing '..'); "
                "the archive is rejected.")
    assert refused([path]) == expected
    with pytest.raises(InputError, match="unsafe path"):
        validate_upload([path], CH4)


def test_nested_zips(tmp_path: Path) -> None:
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as zf:
        zf.writestr("e.tif", tif_bytes(field()))
    path = make_zip(tmp_path / "outer.zip", {"inner.zip": inner.getvalue()})
    assert refused([path]).startswith("outer.zip/inner.zip: zip archives inside zip archives")
    with pytest.raises(InputError, match="inside zip archives"):
        validate_upload([path], CH4)
    # one level of nesting is a setting, not a hard rule
    (inp,) = read_inputs([path], CH4, limits=Limits(max_zip_depth=2))
    assert inp.source == "outer.zip/inner.zip/e.tif"



# --- zip members at upload time (validate_upload): the loose files' checks, within a byte budget ----


def png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.moveaxis(arr, 0, -1)).save(buf, "PNG")
    return buf.getvalue()


def upload_refused(paths: list[Path], channels: str = CH4, **kw: object) -> str:
    with pytest.raises(InputError) as err:
        validate_upload(paths, channels, **kw)  # type: ignore[arg-type]
    return str(err.value)


def test_a_zip_member_with_another_channel_count_is_refused_at_upload_naming_the_zip_and_member(
        tmp_path: Path) -> None:
    members = {f"event00{k}.tif": tif_bytes(field(seed=k)) for k in range(1, 7)}
    members["event007.tif"] = tif_bytes(field(3))
    path = make_zip(tmp_path / "slides.zip", members)
    # the loose file's sentence (test_wrong_channel_count), the member named inside its zip
    assert upload_refused([path]) == "slides.zip/event007.tif: has 3 channels but 4 channel names were given."
    assert refused([path]) == upload_refused([path])  # what the worker would say


def test_a_broken_zip_member_is_refused_at_upload(tmp_path: Path) -> None:
    png = png_bytes(field(3, seed=3))
    cut = make_zip(tmp_path / "gallery.zip", {"a.png": png, "b.png": png_bytes(field(3, seed=4))[:-200]})
    assert upload_refused([cut], "CD45,CK,DAPI").startswith("gallery.zip/b.png: cannot be read as PNG")
    tif = tif_bytes(field())
    short = make_zip(tmp_path / "short.zip", {"a.tif": tif[: len(tif) // 2]})
    assert upload_refused([short]).startswith("short.zip/a.tif: the TIFF file is truncated")
    # bytes changed inside the archive (a bad download): its checksum fails once the member is read whole
    good = tif_bytes(field())
    stored = make_zip(tmp_path / "crc.zip", {"a.tif": good}, zipfile.ZIP_STORED)
    data = bytearray(stored.read_bytes())
    data[data.index(good) + len(good) - 1] ^= 0xFF
    stored.write_bytes(bytes(data))
    assert upload_refused([stored]).startswith("crc.zip/a.tif: cannot be extracted (Bad CRC-32")


def test_an_rgb_png_in_a_zip_named_with_four_channels_is_refused_at_upload(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "photos.zip", {"photo.png": png_bytes(field(3, seed=5))})
    assert upload_refused([path]).startswith("photos.zip/photo.png: is an RGB colour image: its 3 planes")
    validate_upload([path], "CD45,CK,DAPI")


def test_valid_zips_pass_at_upload_and_channel_files_inside_are_left_to_grouping(tmp_path: Path) -> None:
    events = make_zip(tmp_path / "events.zip", {f"e{k}.tif": tif_bytes(field(seed=k)) for k in range(5)})
    arr = field()
    per_channel = make_zip(tmp_path / "ch.zip", {f"f_{m}.png": png_bytes(np.stack([arr[k]] * 3))
                                                 for k, m in enumerate(["DAPI", "CK", "AF", "CD45"])})
    validate_upload([events, per_channel], CH4)  # grey saved as RGB: one channel each, as loose files


def test_zip_members_past_the_request_budget_are_left_to_the_worker(tmp_path: Path) -> None:
    good = [tif_bytes(field(seed=k)) for k in (1, 2)]
    three = tif_bytes(field(3))
    path = make_zip(tmp_path / "big.zip", {"e1.tif": good[0], "e2.tif": good[1], "e3.tif": three})
    assert upload_refused([path]).startswith("big.zip/e3.tif: has 3 channels")
    # a budget of the first two members: the third is not read in the request, the worker refuses it
    budget = Limits(request_zip_bytes=len(good[0]) + len(good[1]))
    validate_upload([path], CH4, limits=budget)
    assert refused([path]).startswith("big.zip/e3.tif: has 3 channels")
    # a member over the budget is not read in part, and smaller ones after it still are
    first = make_zip(tmp_path / "first.zip", {"a.tif": tif_bytes(field(h=400, w=400)), "b.tif": three})
    assert upload_refused([first], limits=Limits(request_zip_bytes=len(good[0]))).startswith("first.zip/b.tif")
    # one budget for the upload's zips together, not one per zip
    one = make_zip(tmp_path / "one.zip", {"e.tif": good[0]})
    two = make_zip(tmp_path / "two.zip", {"e.tif": three})
    assert upload_refused([two], limits=Limits(request_zip_bytes=len(good[0]))).startswith("two.zip/e.tif")
    validate_upload([one, two], CH4, limits=Limits(request_zip_bytes=len(good[0])))


def test_a_nested_zip_is_checked_within_the_same_budget(tmp_path: Path) -> None:
    """Where a lab allows one zip inside another (``max_zip_depth=2``), the inner zip's members get
    the request's checks too, drawn on the same budget; an inner zip past it waits for the worker."""
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as zf:
        zf.writestr("e.tif", tif_bytes(field(3)))
    path = make_zip(tmp_path / "outer.zip", {"inner.zip": inner.getvalue()})
    deep = Limits(max_zip_depth=2)
    assert upload_refused([path], limits=deep).startswith("outer.zip/inner.zip/e.tif: has 3 channels")
    validate_upload([path], CH4, limits=Limits(max_zip_depth=2, request_zip_bytes=len(inner.getvalue()) - 1))
    assert refused([path], limits=deep).startswith("outer.zip/inner.zip/e.tif: has 3 channels")


def test_a_zip_without_images_is_refused_at_upload(tmp_path: Path) -> None:
    """Only notes and system files: refused in the request, as the worker would refuse it, unless a
    nested zip that the request did not open may still hold images."""
    path = make_zip(tmp_path / "notes.zip", {"readme.txt": b"slide 7", "__MACOSX/._e.tif": b"x"})
    assert upload_refused([path]) == "notes.zip: the archive contains no image files."
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as zf:
        zf.writestr("e.tif", tif_bytes(field()))
    nested = make_zip(tmp_path / "outer.zip", {"inner.zip": inner.getvalue(), "readme.txt": b"x"})
    validate_upload([nested], CH4, limits=Limits(max_zip_depth=2, request_zip_bytes=10))


def test_the_png_budget_is_one_for_loose_files_and_zip_members(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    loose = tmp_path / "loose.png"
    loose.write_bytes(png_bytes(field(3, seed=1)))
    path = make_zip(tmp_path / "cut.zip", {"b.png": png_bytes(field(3, seed=2))[:-200]})
    samples = 3 * 40 * 48
    monkeypatch.setattr("classifier.io._PEEK_IMAGE_TOTAL", 2 * samples)
    assert upload_refused([loose, path], "CD45,CK,DAPI").startswith("cut.zip/b.png: cannot be read as PNG")
    # the loose file used what the budget held: the member's pixels are the worker's to read
    monkeypatch.setattr("classifier.io._PEEK_IMAGE_TOTAL", samples)
    validate_upload([loose, path], "CD45,CK,DAPI")
    assert refused([loose, path], "CD45,CK,DAPI").startswith("cut.zip/b.png: cannot be read as PNG")


def test_a_zip_bomb_is_refused_at_upload_from_its_directory_before_any_member_is_checked(tmp_path: Path) -> None:
    # the bomb after a member with the wrong channel count: the directory's check comes first, as before
    path = make_zip(tmp_path / "bomb.zip", {"a.tif": tif_bytes(field(3)), "b.tif": b"\0" * (40 << 20)})
    msg = upload_refused([path])
    assert msg.startswith("bomb.zip/b.tif: compressed ") and "possible zip bomb" in msg


def test_too_many_files(tmp_path: Path) -> None:
    limits = Limits(max_files=5)
    path = make_zip(tmp_path / "many.zip", {f"e{k}.tif": tif_bytes(field()) for k in range(6)})
    assert "at most 5 files" in refused([path], limits=limits)
    paths = [write_tif(tmp_path / f"e{k}.tif", field()) for k in range(6)]
    assert refused(paths, limits=limits) == "e5.tif: more than 5 files in one upload."


def test_a_file_over_the_size_limit(tmp_path: Path) -> None:
    path = write_tif(tmp_path / "a.tif", field())
    msg = refused([path], limits=Limits(max_file_bytes=1000))
    assert msg.startswith("a.tif: ") and msg.endswith(" KB is over the limit of 1000 bytes per file.")
    assert "over the limit" in refused([path, path], limits=Limits(max_total_bytes=9000))


def test_an_upload_too_large_once_decoded(tmp_path: Path) -> None:
    paths = [write_tif(tmp_path / f"e{k}.tif", field()) for k in range(3)]
    limit = Limits(max_decoded_bytes_total=2 * 4 * 40 * 48 * 4)
    assert refused(paths, limits=limit).startswith("e2.tif: the upload's images are over the limit")


def test_a_zip_that_is_not_a_zip(tmp_path: Path) -> None:
    (tmp_path / "x.zip").write_bytes(b"PK\x03\x04" + b"\0" * 40)
    assert refused([tmp_path / "x.zip"]).startswith("x.zip: not a readable zip archive")


def test_an_empty_zip_or_one_without_images(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "docs.zip", {"readme.txt": b"hello"})
    assert refused([path]) == "docs.zip: the archive contains no image files."


def test_a_text_file_in_a_zip_named_tif(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "up.zip", {"a.tif": b"just some text, honestly"})
    assert refused([path]).startswith("up.zip/a.tif: is text, not an image")


def test_channel_files_of_different_sizes(tmp_path: Path) -> None:
    paths = [write_tif(tmp_path / f"f_{m}.tif", np.zeros((32, 32 + k), np.uint8))
             for k, m in enumerate(["DAPI", "CK", "AF", "CD45"])]
    assert "differ in size" in refused(paths)


def test_a_zstack_is_refused(tmp_path: Path) -> None:
    path = write_tif(tmp_path / "z.tif", np.zeros((3, 4, 32, 32), np.uint8), metadata={"axes": "ZCYX"})
    assert refused([path]).startswith("z.tif: has more dimensions than channels x height x width")


def test_a_tiff_with_thousands_of_pages_is_refused_before_its_series_are_built(tmp_path: Path) -> None:
    path = tmp_path / "pages.tif"
    with tifffile.TiffWriter(path) as tw:
        for _ in range(40):
            tw.write(np.zeros((16, 16), np.uint8), photometric="minisblack")
    assert refused([path], limits=Limits(max_tiff_pages=32)) == (
        "pages.tif: the TIFF has 40 pages; at most 32 are accepted.")


def test_a_bad_pixel_size(tmp_path: Path) -> None:
    path = write_tif(tmp_path / "a.tif", field())
    assert "outside 0.01-100" in refused([path], pixel_size_um=-1.0)
    assert "outside 0.01-100" in refused([path], pixel_size_um=float("nan"))


def test_the_upload_check_refuses_a_fourth_marker_sample_given_three_names(tmp_path: Path) -> None:
    # tifffile stores (4, H, W) uint8 as RGB + an extra sample tagged alpha; only the pixels tell
    # a marker (varying) from an opaque alpha, and the request must hear about it at once
    path = write_tif(tmp_path / "e.tif", field(seed=3), photometric="rgb", planarconfig="separate")
    with pytest.raises(InputError, match="has 4 channels but 3 channel names were given"):
        validate_upload([path], "DAPI,CK,CD45")
    validate_upload([path], CH4)


def test_a_valid_upload_passes_validation(tmp_path: Path) -> None:
    paths = [write_tif(tmp_path / "a.tif", field()),
             make_zip(tmp_path / "b.zip", {"e.tif": tif_bytes(field(seed=1))})]
    validate_upload(paths, CH4)
    assert len(read_inputs(paths, CH4)) == 2


def test_a_16bit_colour_png_keeps_its_16_bits(tmp_path: Path) -> None:
    """Pillow reads a 16-bit RGB(A) PNG as 8-bit: 12-bit camera data kept 16 grey levels and was then
    called low-contrast (a helper's probe). Such files are decoded at 16 bits."""
    import imagecodecs

    rng = np.random.default_rng(0)
    planes = rng.integers(0, 4096, (40, 50, 4)).astype(np.uint16)
    (tmp_path / "four.png").write_bytes(imagecodecs.png_encode(planes))
    (inp,) = read_inputs([tmp_path / "four.png"], CH4)  # RGBA whose fourth plane is a channel
    assert inp.image.shape == (4, 40, 50) and np.array_equal(inp.image, np.moveaxis(planes, -1, 0))
    assert inp.form.bits == 16 and inp.form.colour
    (tmp_path / "rgb.png").write_bytes(imagecodecs.png_encode(np.ascontiguousarray(planes[..., :3])))
    (inp,) = read_inputs([tmp_path / "rgb.png"], "CD45,CK,DAPI")
    assert inp.image.shape == (3, 40, 50) and inp.image.max() > 255 and inp.form.bits == 16
    (tmp_path / "bad.png").write_bytes(imagecodecs.png_encode(planes)[:60])  # cut short
    assert "cannot be read as a 16-bit PNG" in refused([tmp_path / "bad.png"], CH4)


def test_one_colour_pngs_one_per_channel_are_greyscale_channels(tmp_path: Path) -> None:
    """DAPI saved blue, CK green, CD45 magenta, one PNG each: read as colour composites, each file
    became an event of its own (a helper's probe: 54 events for 18)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    planes = {m: rng.integers(10 * (k + 1), 10 * (k + 1) + 2, (24, 30)).astype(np.uint8)
              for k, m in enumerate(["DAPI", "CK", "CD45"])}
    colours = {"DAPI": (2,), "CK": (1,), "CD45": (0, 2)}
    paths = []
    for m, plane in planes.items():
        rgb = np.zeros((24, 30, 3), np.uint8)
        for b in colours[m]:
            rgb[..., b] = plane
        paths.append(tmp_path / f"ev_{m}.png")
        Image.fromarray(rgb, "RGB").save(paths[-1])
    (inp,) = read_inputs(paths, "DAPI,CK,CD45")
    assert [int(float(v)) for v in inp.image.mean(axis=(1, 2))] == [10, 20, 30]
    # a real composite (two colours differing) stays one colour image of three channels
    mixed = np.zeros((24, 30, 3), np.uint8)
    mixed[..., 0], mixed[..., 2] = planes["CD45"], planes["DAPI"]
    Image.fromarray(mixed, "RGB").save(tmp_path / "composite.png")
    (inp,) = read_inputs([tmp_path / "composite.png"], "CD45,CK,DAPI")
    assert inp.image.shape == (3, 24, 30) and inp.form.colour


def test_one_colour_16bit_pngs_one_per_channel_are_greyscale_channels(tmp_path: Path) -> None:
    """The same one-file-per-channel export at 16 bits (decoded by imagecodecs, not Pillow) is read
    as one event of three channels, at its 16 bits (a reviewer's finding: it made three events)."""
    import imagecodecs

    rng = np.random.default_rng(1)
    planes = {m: rng.integers(1000 * (k + 1), 1000 * (k + 1) + 2, (24, 30)).astype(np.uint16)
              for k, m in enumerate(["DAPI", "CK", "CD45"])}
    colours = {"DAPI": (2,), "CK": (1,), "CD45": (0, 2)}
    paths = []
    for m, plane in planes.items():
        rgb = np.zeros((24, 30, 3), np.uint16)
        for b in colours[m]:
            rgb[..., b] = plane
        paths.append(tmp_path / f"ev_{m}.png")
        paths[-1].write_bytes(imagecodecs.png_encode(rgb))
    (inp,) = read_inputs(paths, "DAPI,CK,CD45")
    assert [int(float(v)) for v in inp.image.mean(axis=(1, 2))] == [1000, 2000, 3000]
    assert inp.form.bits == 16
