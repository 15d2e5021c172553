"""Datasets of prepared events: synthetic (generated in parallel, cached) and labelled folders.

A dataset holds what the model consumes (normalised crops and attributes) plus labels
and masks, so training, evaluation and tests share one representation.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import numpy as np

from classifier import bleed, features, tone
from classifier import harmonise as set_correction
from classifier.channel_names import canonical
from classifier.contract import PreprocessContract
from classifier.errors import InputError
from classifier.parallel import fork_map
from classifier.preprocess import Prepared, prepare_image
from classifier.results import CATEGORIES
from classifier.sampling import even_sample
from classifier.synth import make_event, sample_category
from classifier.synth.events import sample_framing
from classifier.synth.export import export

if TYPE_CHECKING:  # classifier.io imports this module's neighbours; it is imported where it is used
    from classifier.io import ImageInput

#: ctc-dev (and CellSearch-style) category names -> the model's categories.
#: "Unidentified Cell" objects are CK+ and AF+ but not identifiable as a cell: they are
#: not counted (is_ctc 0) and look most like our "artifact" class.
FOLDER_CATEGORIES: dict[str, str] = {
    "ctc": "ctc",
    "apoptotic ctc": "apoptotic_ctc",
    "apoptotic": "apoptotic_ctc",
    "white blood cell": "leukocyte",
    "wbc": "leukocyte",
    "leukocyte": "leukocyte",
    "ck/epcam foci": "ck_debris",
    "ck foci": "ck_debris",
    "ck+ debris / foci": "ck_debris",
    "debris": "ck_debris",
    "fluorescent artifact": "artifact",
    "artifact": "artifact",
    "unidentified cell": "artifact",
}

#: bump when the generator or preprocessing changes, to invalidate caches
GENERATOR_VERSION = 10


@dataclass
class EventSet:
    crops: np.ndarray  # float16/32 (N, C, S, S)
    feats: np.ndarray  # float32 (N, F)
    is_ctc: np.ndarray  # int64 (N,)
    category: np.ndarray  # int64 (N,), index into CATEGORIES (-1 unknown)
    nucleus: np.ndarray  # bool (N, S, S)
    cell: np.ndarray  # bool (N, S, S)
    names: list[str]

    def __len__(self) -> int:
        return int(self.is_ctc.shape[0])

    def subset(self, idx: np.ndarray) -> EventSet:
        return EventSet(self.crops[idx], self.feats[idx], self.is_ctc[idx], self.category[idx], self.nucleus[idx],
                        self.cell[idx], [self.names[i] for i in idx])


def featurise(prep: Prepared, contract: PreprocessContract, chunk: int = 1024) -> np.ndarray:
    out = []
    for s in range(0, len(prep), chunk):
        f, _ = features.compute(prep.crops[s:s + chunk], prep.nucleus[s:s + chunk], prep.cell[s:s + chunk],
                                contract.um_per_px)
        out.append(f)
    if not out:
        return np.zeros((0, len(features.feature_names())), np.float32)
    return np.concatenate(out)


# --- synthetic ---------------------------------------------------------------------------


def _synth_one(args: tuple[int, int, dict]) -> tuple[Prepared, int, int]:
    seed, index, contract_d = args
    contract = PreprocessContract.from_dict(contract_d)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))
    category = sample_category(rng)
    image, info = make_event(rng, category, framing=sample_framing(rng))
    # how the source hands it over: AF absent, RGB composites (PNG/JPEG), display settings
    image, channels, _kind = export(image, rng)
    px = info["px_um"] * float(rng.uniform(0.93, 1.07)) if rng.random() < 0.3 else None
    prep = prepare_image(image, channels, contract, pixel_size_um=px)
    return prep, int(info["is_ctc"]), CATEGORIES.index(category)


def _synth_chunk(args: tuple[int, Sequence[int], dict]) -> list[tuple[Prepared, int, int]]:
    seed, indices, contract_d = args
    return [_synth_one((seed, i, contract_d)) for i in indices]


def synthetic(n: int, seed: int, contract: PreprocessContract, workers: int = 2, cache: Path | None = None,
              progress: bool = True) -> EventSet:
    """``n`` synthetic events; event ``i`` depends only on (seed, i), so the result is the
    same for any number of workers."""
    key = hashlib.sha256(f"{GENERATOR_VERSION}|{n}|{seed}|{contract.to_dict()}".encode()).hexdigest()[:16]
    if cache is not None:
        path = Path(cache) / f"synth-{key}.npz"
        if path.exists():
            z = np.load(path)
            return EventSet(z["crops"], z["feats"], z["is_ctc"], z["category"], z["nucleus"], z["cell"],
                            [f"synth{i:06d}" for i in range(n)])
    from tqdm import tqdm

    cd = contract.to_dict()
    chunks = [(seed, range(s, min(s + 64, n)), cd) for s in range(0, n, 64)]
    results: list[tuple[Prepared, int, int]] = []
    bar = tqdm(total=n, desc=f"synth {n} events", disable=not progress, unit="ev")
    if workers > 1:
        # fork_map, not a ProcessPoolExecutor: multiprocessing refuses children inside Celery's
        # (daemonic) prefork workers, where a lab-model training builds its replay set.
        def progress_to(done_chunks: int) -> None:
            bar.update(min(n, done_chunks * 64) - bar.n)

        for part in fork_map(_synth_chunk, chunks, workers, chunk=1, progress=progress_to):
            results += part
    else:
        for c in chunks:
            part = _synth_chunk(c)
            results += part
            bar.update(len(part))
    bar.close()
    prep = Prepared.concat([r[0] for r in results], contract)
    feats = featurise(prep, contract)
    ds = EventSet(prep.crops.astype(np.float16), feats, np.array([r[1] for r in results], np.int64),
                  np.array([r[2] for r in results], np.int64), prep.nucleus, prep.cell,
                  [f"synth{i:06d}" for i in range(n)])
    if cache is not None:
        Path(cache).mkdir(parents=True, exist_ok=True)
        tmp = Path(cache) / f".tmp-{os.getpid()}-{key}.npz"
        np.savez(tmp, crops=ds.crops, feats=ds.feats, is_ctc=ds.is_ctc, category=ds.category,
                 nucleus=ds.nucleus, cell=ds.cell)
        tmp.replace(Path(cache) / f"synth-{key}.npz")
    return ds


# --- labelled folders ------------------------------------------------------------------------


@dataclass
class FolderItem:
    file: str
    is_ctc: int
    category: str | None  # one of CATEGORIES, or None


#: how lab spreadsheets write is_ctc (compared lower-cased and stripped): Excel's TRUE/FALSE, a
#: yes/no column, the call names; numbers are read as numbers (1, 0, 1.0, 0.0)
IS_CTC_WORDS: dict[str, int] = {"true": 1, "false": 0, "yes": 1, "no": 0, "ctc": 1, "non-ctc": 0, "non_ctc": 0}
#: where event files usually lie in a labelled folder (ctc-dev: events/objectNNN.tif)
EVENTS_DIR = "events"
_DELIMITERS = (",", ";", "\t")  # Excel writes ';' where ',' is the decimal separator


def read_labels(folder: Path) -> list[FolderItem]:
    """``labels.csv`` with columns ``file,is_ctc[,category]``, as spreadsheets write it: UTF-8 with or
    without a byte-order mark, header names in any case and spacing, ``,`` ``;`` or tab between
    columns. Each file is resolved to where it lies (see :func:`resolve_file`); a value that cannot
    be read raises :class:`InputError` naming the line."""
    path = Path(folder) / "labels.csv"
    if not path.exists():
        raise InputError(f"{folder}: no labels.csv (expected columns file,is_ctc[,category]).")
    try:
        # utf-8-sig: Excel's "CSV UTF-8" starts with a byte-order mark, which would stick to "file"
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start}); save it as "
                         "\"CSV UTF-8\".") from None
    # newline="": the csv module handles CRLF and line breaks inside quoted cells itself
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(text.split("\n", 1)[0]))
    header = [h.strip().lower() for h in next(reader, [])]
    if not {"file", "is_ctc"} <= set(header):
        raise InputError(f"{path}: needs columns file,is_ctc[,category]; has {header}.")
    col = {name: header.index(name) for name in ("file", "is_ctc", "category") if name in header}
    items = []
    lines: dict[object, tuple[int, str]] = {}  # event -> the line that first named it, and its file
    siblings: dict[Path, Counter] = {}
    for row in reader:
        cells = [c.strip() for c in row]
        if not any(cells):
            continue  # a blank line (spreadsheets leave some at the end)
        where = f"{path}, line {reader.line_num}"
        name = _cell(cells, col, "file")
        if not name:
            raise InputError(f"{where}: no file name.")
        file = resolve_file(Path(folder), name, where)
        # one event scored twice weighs twice in every metric (a helper's folder: n 19 for 18 events),
        # also when two rows name two channel files of one event kept one file per channel
        key = _event_key(Path(folder), file, siblings)
        if key in lines and lines[key][1] != file and _composites(Path(folder), lines[key][1], file):
            # two composites whose names differ only by a marker word (CK_003.tif, CD45_003.tif):
            # each holds its channels and is an event of its own
            key = str(PurePosixPath(file.replace("\\", "/")))
        if key in lines:
            first, again = lines[key]
            same = "is listed again" if again == file else f"names the same event as {again!r}"
            raise InputError(f"{where}: {name!r} {same} (first on line {first}); list each event once.")
        lines[key] = (reader.line_num, file)
        items.append(FolderItem(file, parse_is_ctc(_cell(cells, col, "is_ctc"), where),
                                _category(_cell(cells, col, "category"))))
    return items


def _event_key(folder: Path, file: str, index: dict[Path, Counter]) -> object:
    """What identifies the event a labels.csv row names: its file, or, for an event kept one file
    per channel, the name its channel files share (:func:`channel_siblings`). ``index``: each folder's
    files counted by that name, listed once per folder (a scan per row made 1,000 rows take 2 min)."""
    path = folder / file
    own = _unmarked_name(path)
    if own is not None and path.parent.is_dir():
        if path.parent not in index:
            index[path.parent] = Counter(_unmarked_name(p) for p in path.parent.iterdir()
                                         if p.is_file() and not p.name.startswith("."))
        if index[path.parent][own] > 1:
            return own
    return str(PurePosixPath(file.replace("\\", "/")))


def _composites(folder: Path, *files: str) -> bool:
    """Whether each file declares two or more channel planes in its header and is not a colour
    picture: composites of their own, not the channel files of one event kept one file per
    channel. Read (headers only) where two labelled files' names differ by a marker word alone.
    A colour picture (one channel rendered in its colour, or an RGB composite) or a file that
    cannot be probed keeps the older reading, one event listed twice, which is refused."""
    from classifier.decoders import decode, sniff
    from classifier.limits import Limits

    for name in files:
        try:
            with open(folder / name, "rb") as fh:
                if sniff(fh.read(16)) != "tiff":  # a PNG or JPEG holds a colour picture at most
                    return False
                fh.seek(0)
                dec = decode(fh, "tiff", name, Limits(), read=False)
        except (OSError, InputError):
            return False
        if dec.shape[0] < 2 or dec.colour:
            return False
    return True


#: image files that a labelled folder's labels.csv is expected to name
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")


def unlabelled_images(folder: Path, items: Sequence[FolderItem]) -> list[str]:
    """Image files under ``folder`` that ``labels.csv`` does not name (hidden files and macOS
    resource forks left out): they are not scored, and a metric over the rest says so."""
    labelled = [(Path(folder) / it.file).resolve() for it in items]
    named = set(labelled)
    events = {_unmarked_name(p) for p in labelled} - {None}  # an event kept one file per channel
    out = []
    for path in sorted(Path(folder).rglob("*")):
        rel = path.relative_to(folder)
        if (path.suffix.lower() in IMAGE_SUFFIXES and path.is_file() and path.resolve() not in named
                and _unmarked_name(path.resolve()) not in events
                and not any(part.startswith((".", "__MACOSX")) for part in rel.parts)):
            out.append(rel.as_posix())
    return out


def _cell(cells: list[str], col: dict[str, int], name: str) -> str:
    """Column ``name`` of a row; blank when the row is short or the column absent."""
    k = col.get(name)
    return cells[k] if k is not None and k < len(cells) else ""


def _delimiter(header_line: str) -> str:
    """The column separator of a header line: the first of ``,`` ``;`` tab that splits off the
    ``file`` and ``is_ctc`` columns (``,`` when none does: the error then shows the header as read)."""
    for sep in _DELIMITERS:
        names = {h.strip().strip('"').strip().lower() for h in header_line.split(sep)}
        if {"file", "is_ctc"} <= names:
            return sep
    return ","


def parse_is_ctc(value: str, where: str) -> int:
    """1 or 0 from how a spreadsheet writes it (:data:`IS_CTC_WORDS`, or the numbers 1 and 0)."""
    v = value.strip().lower()
    if v in IS_CTC_WORDS:
        return IS_CTC_WORDS[v]
    try:
        if float(v) in (0.0, 1.0):
            return int(float(v))
    except ValueError:
        pass  # not a number: said below
    raise InputError(f"{where}: is_ctc is {value!r}; expected 1/0, true/false, yes/no or ctc/non-ctc.")


def _category(raw: str) -> str | None:
    """One of CATEGORIES from ctc-dev's (or the model's own) names; None when blank or unknown."""
    if not raw:
        return None
    cat = FOLDER_CATEGORIES.get(raw.lower())
    if cat is None and raw.lower().replace(" ", "_") in CATEGORIES:
        cat = raw.lower().replace(" ", "_")
    return cat


def resolve_file(folder: Path, name: str, where: str = "labels.csv") -> str:
    """``name`` as it lies under ``folder``: as written when it is there (unchanged, so the names
    of a folder that needs no help stay as they were), else with or without the ``events/`` prefix
    that a spreadsheet edited by hand often gains or loses. Raises :class:`InputError` with every
    path tried when it is in none of them."""
    tried = [name]
    rel = Path(name.replace("\\", "/"))  # a path written on Windows
    if not rel.is_absolute():
        parts = rel.parts
        alt = Path(*parts[1:]) if len(parts) > 1 and parts[0].lower() == EVENTS_DIR else Path(EVENTS_DIR, rel)
        tried += [str(p) for p in (rel, alt) if str(p) not in tried]
    for candidate in tried:
        if (folder / candidate).is_file():
            return candidate
    paths = " or ".join(str(folder / t) for t in tried)
    raise InputError(f"{where}: file {name!r} not found (tried {paths}).")


def channel_siblings(path: Path) -> list[Path]:
    """``path`` and the files beside it whose names differ from its name only by the marker word
    (``object005_DAPI.tif`` -> ``object005_CK.tif``, ``object005_CD45.tif``...): an event exported
    one file per channel, named in labels.csv by one of them. Just ``[path]`` when its name has no
    marker word."""
    own = _unmarked_name(path)
    if own is None:
        return [path]
    return sorted(p for p in path.parent.iterdir()
                  if p.is_file() and not p.name.startswith(".") and _unmarked_name(p) == own)


def _unmarked_name(path: Path) -> tuple[str, str, tuple[str, ...]] | None:
    """(folder, suffix, the name's words without its one marker word); None without exactly one."""
    words = [w for w in re.split(r"[^A-Za-z0-9]+", path.stem) if w]
    marked = [i for i, w in enumerate(words) if canonical(w) is not None]
    if len(marked) != 1:
        return None
    return str(path.parent), path.suffix.lower(), tuple(words[:marked[0]] + words[marked[0] + 1:])


def load_input(path: Path, channels: Sequence[str]) -> ImageInput:
    """Decode one event file as an upload's file is decoded (with how the file stored it); an
    event kept one file per channel is read with its sibling files (:func:`channel_siblings`)."""
    from classifier.io import read_inputs

    try:
        inp = read_inputs([path], list(channels))
    except InputError:
        files = channel_siblings(path)
        if len(files) < 2:
            raise
        inp = read_inputs(files, list(channels))  # one file per channel: said by io if they do not fit
    if len(inp) != 1:
        raise InputError(f"{path}: expected one image, got {len(inp)}.")
    return inp[0]


def load_image(path: Path, channels: Sequence[str]) -> tuple[np.ndarray, list[str], float | None]:
    """Decode one event file: (image, channel names, pixel size from its metadata)."""
    inp = load_input(path, channels)
    return inp.image, list(inp.channels), inp.pixel_size_um


def folder(path: Path, channels: Sequence[str], contract: PreprocessContract,
           pixel_size_um: float | None = None, harmonise: bool = True) -> EventSet:
    """Prepare every event of a labelled folder (as an upload of them: see :func:`prepare_folder`)."""
    return prepare_folder(path, channels, contract, pixel_size_um, harmonise).events


@dataclass
class PreparedFolder:
    """A labelled folder as the model sees it, with what was inferred on the way."""

    events: EventSet
    px_um: np.ndarray  # pixel size used per event (given, from metadata or inferred)
    correction: set_correction.SetCorrection  # what was done to every image (classifier.harmonise)

    @property
    def tone(self) -> tone.ToneCurve:
        """The tone curve re-mapping applied to its 8-bit images (:mod:`classifier.tone`)."""
        return self.correction.tone

    @property
    def bleed(self) -> bleed.SetBleed:
        """The CD45 share taken out of CK (:mod:`classifier.bleed`)."""
        return self.correction.bleed


def prepare_folder(path: Path, channels: Sequence[str], contract: PreprocessContract,
                   pixel_size_um: float | None = None, harmonise: bool = True) -> PreparedFolder:
    """Every event of a labelled folder, prepared as the engine prepares an upload of them: the
    folder's tone curve re-mapped and its CD45 bleed into CK taken out first (:mod:`classifier.tone`,
    :mod:`classifier.bleed`), unless ``harmonise`` is False (a folder gathered from many uploads,
    whose corrections were each the upload's own)."""
    items = read_labels(Path(path))
    corr = set_correction.SetCorrection()
    if harmonise and items:
        # from the same even sample the engine takes; those files are decoded twice, so that a large
        # folder is never held in memory whole
        pick = even_sample(len(items), tone.SAMPLE)
        sample = [load_input(Path(path) / items[i].file, channels) for i in pick]
        corr = set_correction.measure([im.image for im in sample], [list(im.channels) for im in sample],
                                      [items[i].file for i in pick], total=len(items),
                                      forms=[im.form for im in sample])
    preps = []
    for it in items:
        image, chans, px = load_image(Path(path) / it.file, channels)
        preps.append(prepare_image(corr.apply(image, chans), chans, contract,
                                   pixel_size_um if pixel_size_um is not None else px, source=it.file))
    prep = Prepared.concat(preps, contract)
    events = EventSet(
        prep.crops,
        featurise(prep, contract),
        np.array([it.is_ctc for it in items], np.int64),
        np.array([CATEGORIES.index(it.category) if it.category else -1 for it in items], np.int64),
        prep.nucleus,
        prep.cell,
        [it.file for it in items],
    )
    return PreparedFolder(events, prep.px_um, corr)
