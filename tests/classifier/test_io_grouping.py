"""Which files make up one image: per-channel file names, folders, and TIFF extra samples.

Every image here fills its channel k around 10 * (k + 1) + offset, so a test can tell from
the means both which channel landed where and which event (offset) it came from.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from classifier.errors import InputError
from classifier.io import ImageInput, read_inputs

CH4 = "DAPI,CK,AF,CD45"
MARKERS = ["DAPI", "CK", "AF", "CD45"]


def event(offset: int = 0, c: int = 4, h: int = 32, w: int = 36) -> np.ndarray:
    rng = np.random.default_rng(offset)
    base = np.arange(1, c + 1, dtype=np.float64)[:, None, None] * 10 + offset
    return (base + rng.integers(0, 2, (c, h, w))).astype(np.uint8)


def means(inp: ImageInput) -> list[int]:
    return [int(round(float(m))) for m in inp.image.mean(axis=(1, 2))]


def expected(offset: int, c: int = 4) -> list[int]:
    # rng adds 0 or 1 per pixel: the mean rounds to the base or one above; floor it
    return [10 * (k + 1) + offset for k in range(c)]


def close(inp: ImageInput, offset: int, c: int = 4) -> bool:
    return all(0 <= m - e <= 1 for m, e in zip(means(inp), expected(offset, c), strict=True))


def write(path: Path, arr: np.ndarray, **kw: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    kw.setdefault("photometric", "minisblack")
    tifffile.imwrite(path, arr, **kw)
    return path


def refused(paths: list[Path], channels: str = CH4) -> str:
    with pytest.raises(InputError) as err:
        read_inputs(paths, channels)
    return str(err.value)


# --- Fiji "Split Channels" and channel-number names --------------------------------


def test_fiji_split_channel_names_are_grouped_by_event(tmp_path: Path) -> None:
    for off, name in ((0, "object005"), (50, "object016")):
        for k in range(4):
            write(tmp_path / f"C{k + 1}-{name}.tif", event(off)[k])
    # as a shell glob passes them: C1 of every event first, then C2...
    out = read_inputs(sorted(tmp_path.iterdir()), CH4)
    assert [i.source for i in out] == ["C1-object005.tif", "C1-object016.tif"]
    assert close(out[0], 0) and close(out[1], 50)
    assert out[0].channels == MARKERS


def test_fiji_names_follow_the_declared_order_and_skip_dashes(tmp_path: Path) -> None:
    arr = event()
    paths = [write(tmp_path / f"C{k + 1}-ev.tif", arr[k]) for k in range(4)]
    (inp,) = read_inputs(paths[::-1], "CD45,CK,-,DAPI")  # upload order does not matter
    assert inp.channels == ["CD45", "CK", "DAPI"]
    assert [m // 10 for m in means(inp)] == [1, 2, 4]


def test_a_fiji_channel_number_beyond_the_names_is_refused(tmp_path: Path) -> None:
    paths = [write(tmp_path / f"C{k + 1}-ev.tif", event()[0]) for k in range(5)]
    msg = refused(paths)
    assert msg.startswith("C5-ev.tif: its name makes it channel 5")


def test_ch_index_names_are_grouped_even_out_of_order(tmp_path: Path) -> None:
    paths = [write(tmp_path / f"ev{off}_ch{k}.tif", event(off)[k])
             for off in (0, 40) for k in range(4)]
    out = read_inputs([paths[2], paths[0], paths[3], paths[1], *paths[4:]], CH4)
    assert [i.source for i in out] == ["ev0_ch0.tif", "ev40_ch0.tif"]
    assert close(out[0], 0) and close(out[1], 40)


def test_marker_names_with_a_two_word_alias(tmp_path: Path) -> None:
    arr = event()
    names = ["DAPI", "pan-CK", "AF", "CD45"]
    paths = [write(tmp_path / f"object005_{m}.tif", arr[k]) for k, m in enumerate(names)]
    (inp,) = read_inputs(sorted(paths), CH4)
    assert close(inp, 0)


# --- the taken-in-order fallback ---------------------------------------------------


@pytest.mark.parametrize("events", [(5, 16, 21, 38), (1, 2, 3, 4)])
def test_the_fallback_refuses_to_stack_one_channel_of_several_events(tmp_path: Path, events) -> None:
    # channel number first, in a form no scheme knows: sorted, a group is one channel of
    # four events; their names differ by an event number, not a channel label -- also when the
    # events are numbered 001..004, which counts up like a channel number but is zero-padded.
    paths = [write(tmp_path / f"{k + 1}_object{e:03d}.tif", event(e)[k])
             for k in range(4) for e in events]
    msg = refused(sorted(paths))
    assert msg.startswith(f"1_object{events[0]:03d}.tif: cannot tell which file holds which channel")
    assert "name files after their marker (e.g. object005_DAPI.tif)" in msg


def test_marker_named_folders_give_each_file_its_channel(tmp_path: Path) -> None:
    # DAPI/ev.tif, CK/ev.tif...: sorted, AF would be read as DAPI (once refused, now read by folder)
    paths = sorted(write(tmp_path / m / "ev.tif", event()[k]) for k, m in enumerate(MARKERS))
    (inp,) = read_inputs(paths, CH4)
    assert close(inp, 0)


@pytest.mark.parametrize("name", ["event{e}.tif", "object{e:03d}.tif"])
def test_events_kept_in_one_folder_per_marker_are_stacked_by_event(tmp_path: Path, name) -> None:
    """DAPI/event1..4, CK/event1..4...: taken in upload order, each "event" held four events' DAPI
    (a helper's probe: 0 of 4 CTCs, no error). Each file's channel is its folder's marker."""
    paths = [write(tmp_path / m / name.format(e=e), event(10 * e)[k]) for k, m in enumerate(MARKERS)
             for e in (1, 2, 3, 4)]
    out = read_inputs(paths, CH4)
    assert len(out) == 4 and all(close(inp, 10 * e) for inp, e in zip(out, (1, 2, 3, 4), strict=True))
    lost = name.format(e=3)  # event 3's CD45 file missing: said, not stacked with another event's
    assert "no file for channel(s) CD45" in refused([p for p in paths if (p.parent.name, p.name) != ("CD45", lost)])


@pytest.mark.parametrize("pattern", ["img{k1}.tif", "img{k1:02d}.tif", "ev_w{k1}.tif"])
def test_the_fallback_still_takes_numbered_files_of_one_event_in_order(tmp_path: Path, pattern) -> None:
    paths = [write(tmp_path / pattern.format(k1=k + 1, k0=k), event()[k]) for k in range(4)]
    (inp,) = read_inputs(paths, CH4)
    assert inp.source == paths[0].name and close(inp, 0)


# --- the same names in two folders -------------------------------------------------


def test_two_folders_with_the_same_file_names_are_two_draws(tmp_path: Path) -> None:
    paths = []
    for folder, off in (("drawA", 0), ("drawB", 50)):
        for k, m in enumerate(MARKERS):
            paths.append(write(tmp_path / folder / f"object005_{m}.tif", event(off)[k]))
    out = read_inputs(paths, CH4)
    assert [i.source for i in out] == ["drawA/object005_DAPI.tif", "drawB/object005_DAPI.tif"]
    assert close(out[0], 0) and close(out[1], 50)


def test_channels_split_across_two_folders_are_not_stacked_together(tmp_path: Path) -> None:
    paths = [write(tmp_path / ("a" if k < 2 else "b") / f"ev_{m}.tif", event()[k])
             for k, m in enumerate(MARKERS)]
    assert refused(paths).startswith("ev_DAPI.tif: no file for channel(s) AF, CD45 of image 'ev'")


def test_unique_names_stay_short(tmp_path: Path) -> None:
    paths = [write(tmp_path / "x" / "e1.tif", event()), write(tmp_path / "y" / "e2.tif", event(1))]
    assert [i.source for i in read_inputs(paths, CH4)] == ["e1.tif", "e2.tif"]


# --- a TIFF's fourth sample: alpha or marker ----------------------------------------


def test_a_channel_last_tiff_keeps_a_varying_fourth_sample(tmp_path: Path) -> None:
    # tifffile writes (H, W, 4) as RGB plus an extra sample tagged as alpha
    path = write(tmp_path / "hw4.tif", np.moveaxis(event(), 0, -1), photometric="rgb")
    assert tifffile.TiffFile(path).pages.first.extrasamples
    (inp,) = read_inputs([path], CH4)
    assert close(inp, 0)
    assert refused([path], "DAPI,CK,AF") == "hw4.tif: has 4 channels but 3 channel names were given."


@pytest.mark.parametrize("dtype,value", [("uint8", 255), ("uint16", 65535), ("uint8", 0)])
def test_a_constant_tagged_alpha_is_dropped(tmp_path: Path, dtype: str, value: int) -> None:
    rgb = event(c=3).astype(dtype)
    arr = np.concatenate([rgb, np.full((1, *rgb.shape[1:]), value, dtype)])
    path = write(tmp_path / "rgba.tif", np.moveaxis(arr, 0, -1), photometric="rgb")
    (inp,) = read_inputs([path], "CD45,CK,DAPI")
    assert inp.channels == ["CD45", "CK", "DAPI"] and close(inp, 0, 3)


def test_an_untagged_constant_sample_that_is_not_opaque_is_a_channel(tmp_path: Path) -> None:
    arr = np.concatenate([event(c=3), np.full((1, 32, 36), 7, np.uint8)])
    path = write(tmp_path / "x.tif", np.moveaxis(arr, 0, -1), photometric="rgb", extrasamples=[0])
    assert "has 4 channels but 3 channel names" in refused([path], "CD45,CK,DAPI")


def test_an_rgba_png_with_an_opaque_alpha_drops_it(tmp_path: Path) -> None:
    arr = np.concatenate([event(c=3), np.full((1, 32, 36), 255, np.uint8)])
    Image.fromarray(np.moveaxis(arr, 0, -1), "RGBA").save(tmp_path / "c.png")
    (inp,) = read_inputs([tmp_path / "c.png"], "CD45,CK,DAPI")
    assert inp.channels == ["CD45", "CK", "DAPI"] and close(inp, 0, 3)


# --- a folder argument --------------------------------------------------------------


@pytest.mark.parametrize("slash", ["", "/"])
def test_a_folder_expands_to_its_images_in_natural_order(tmp_path: Path, slash: str) -> None:
    folder = tmp_path / "events"
    for n in (10, 2):
        write(folder / f"object{n}.tif", event(n))
    write(folder / "object3.dat", event(3))  # a TIFF by its content, not its name
    (folder / "labels.csv").write_text("file,is_ctc\nobject2.tif,1\n")
    (folder / "notes.txt").write_text("not an image")
    write(folder / ".hidden.tif", event())
    (folder / "sub").mkdir()
    out = read_inputs([str(folder) + slash], CH4)
    assert [i.source for i in out] == ["object2.tif", "object3.dat", "object10.tif"]
    assert close(out[0], 2) and close(out[1], 3) and close(out[2], 10)


def test_a_folder_of_channel_files_is_grouped(tmp_path: Path) -> None:
    for k, m in enumerate(MARKERS):
        write(tmp_path / "f" / f"ev_{m}.tif", event()[k])
    (inp,) = read_inputs([tmp_path / "f"], CH4)
    assert inp.source == "ev_DAPI.tif" and close(inp, 0)


def test_a_folder_without_images_is_refused_by_name(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    (folder / "events").mkdir(parents=True)
    (folder / "labels.csv").write_text("file,is_ctc\n")
    msg = refused([folder])
    assert msg.startswith(f"{folder}: the folder contains no image files")
    assert "sub-folder (events)" in msg
