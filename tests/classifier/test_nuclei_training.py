"""Training the nucleus network (classifier.nuclei.train): the contact weighting that targets
merged neighbours, and a second stage that continues from saved weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from scipy import ndimage as ndi
from skimage.segmentation import expand_labels

from classifier.nuclei import star, train


def _discs(shape: tuple[int, int], centres: list[tuple[int, int]], r: int) -> np.ndarray:
    yy, xx = np.indices(shape)
    lab = np.zeros(shape, np.int32)
    for i, (cy, cx) in enumerate(centres, start=1):
        lab[((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) & (lab == 0)] = i
    return lab


def _training_image(lab: np.ndarray) -> train.Image:
    """Bright flat discs on a dark background, lightly blurred, with their training targets."""
    img = ndi.gaussian_filter(np.where(lab > 0, 200.0, 10.0).astype(np.float32), 1)
    dist, logsize = train.targets(lab)
    return train.Image("t", img, lab, expand_labels(lab, 2), dist, logsize, 24.0, train.contacts(lab))


def _tiny_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for folder in ("images", "masks"):
        (root / "data" / folder).mkdir(parents=True)
    for k in range(3):
        centres = [(int(y), int(x)) for y, x in rng.integers(16, 112, (6, 2))]
        lab = _discs((128, 128), centres, 7)
        img = (np.where(lab > 0, 180, 20) + rng.normal(0, 5, lab.shape)).astype(np.float32)
        tifffile.imwrite(root / "data" / "images" / f"n{k}.tif", img)
        tifffile.imwrite(root / "data" / "masks" / f"n{k}.tif", lab.astype(np.uint16))
    return root / "data"


def test_contacts_mark_only_borders_between_two_nuclei() -> None:
    # two discs touching (centres 2r apart) and one far away
    lab = _discs((64, 96), [(32, 20), (32, 36), (32, 80)], 8)
    c = train.contacts(lab)
    assert c[32, 28] == 1  # the shared border
    assert c[32, 80] == 0 and c[32, 71] == 0  # the lone disc's centre and its edge with the background
    assert c[5, 5] == 0
    assert 0 < c.sum() < 0.1 * c.size


def test_contact_weight_raises_the_distance_loss_weight_only_near_contacts() -> None:
    lab = _discs((128, 128), [(64, 50), (64, 74), (30, 30), (100, 100)], 12)
    im = _training_image(lab)
    plain = [train.sample(np.random.default_rng(s), im, 96)[2][1] for s in range(6)]
    heavy = [train.sample(np.random.default_rng(s), im, 96, train.Augment(contact_weight=4.0))[2][1] for s in range(6)]
    # same random draws: the weights differ only where a contact is, and there by the factor asked
    assert any((h != p).any() for h, p in zip(heavy, plain, strict=True))
    for h, p in zip(heavy, plain, strict=True):
        diff = h != p
        assert np.all(h[diff] == 5.0) and np.all(p[diff] == 1.0)


def test_texture_prob_sets_how_often_nuclei_are_textured() -> None:
    lab = _discs((128, 128), [(64, 50), (30, 30), (100, 100), (64, 100)], 12)
    im = _training_image(lab)

    def spread_inside(aug: train.Augment) -> float:
        """Median over samples of the input's coefficient of variation inside the nuclear cores."""
        cvs = []
        for s in range(16):
            x, t, _ = train.sample(np.random.default_rng(s), im, 96, aug)
            core = t[1] > 0.5  # away from the outlines, where the flat discs have no structure
            if core.sum() > 20:
                cvs.append(float(x[0][core].std() / max(abs(float(x[0][core].mean())), 1e-6)))
        return float(np.median(cvs))

    flat, textured = spread_inside(train.Augment(texture_prob=0.0)), spread_inside(train.Augment(texture_prob=1.0))
    assert textured > 1.3 * flat, (flat, textured)


def test_nucleoli_darken_nuclei_inside_and_leave_the_background_alone() -> None:
    lab = _discs((240, 240), [(60, 60), (60, 180), (180, 60), (180, 180)], 20)
    dark = train.nucleoli(np.random.default_rng(0), lab, 40.0)
    assert dark.shape == lab.shape and dark.max() <= 1.0
    # spots centre inside nuclei; only their blurred rims (< 4 sigma) reach past the outline
    assert np.all(dark[ndi.binary_dilation(lab > 0, iterations=22) == 0] > 0.999)
    # about 2.5 nucleoli per nucleus, each 40-75 % darker at its centre: a few deep spots per disc
    spots = ndi.label(dark < 0.8)[0]
    assert 3 <= spots.max() <= 25, spots.max()
    assert 0.2 <= dark.min() <= 0.6  # overlapping nucleoli stop at 0.2
    assert np.all(train.nucleoli(np.random.default_rng(0), np.zeros((32, 32), np.int32), 40.0) == 1.0)


def test_nucleoli_prob_sets_how_often_nuclei_get_nucleoli(monkeypatch) -> None:  # noqa: ANN001
    im = _training_image(_discs((128, 128), [(64, 50), (30, 30), (100, 100), (64, 100)], 12))
    real = train.nucleoli
    darkened = []

    def counted(rng: np.random.Generator, lab: np.ndarray, diameter: float) -> np.ndarray:
        out = real(rng, lab, diameter)
        darkened.append(float(out.min()))
        return out

    monkeypatch.setattr(train, "nucleoli", counted)
    for prob, lo, hi in ((0.0, 0, 0), (0.5, 8, 32), (1.0, 40, 40)):
        darkened.clear()
        for s in range(40):
            train.sample(np.random.default_rng(s), im, 96, train.Augment(nucleoli_prob=prob))
        assert lo <= len(darkened) <= hi, (prob, len(darkened))
    assert min(darkened) < 0.7  # and the patches it was applied to did get dark spots


def test_the_default_augmentation_keeps_the_shipped_recipes_random_stream() -> None:
    """The shipped weights are reproducible from their two training commands only if a patch drawn
    with the defaults stays the same: a new augmentation that draws its coin even when switched off
    (`--nucleoli-prob` did, for one commit) shifts every later draw. Sums of four patches, pinned at
    317cd3c (before the nucleoli augmentation) on this synthetic image; if a dependency upgrade moves
    them, check that the training commands still reproduce the shipped weights before re-pinning."""
    im = _training_image(_discs((128, 128), [(64, 50), (30, 30), (100, 100), (64, 100)], 12))
    pinned = [(2789.096, 858.077, 19108.0), (4435.67, 1910.086, 19335.0), (2970.495, 487.94, 9808.0),
              (2549.613, 359.478, 9912.0)]
    for seed, sums in enumerate(pinned):
        x, t, w = train.sample(np.random.default_rng(seed), im, 96, train.Augment())
        assert (float(x.sum()), float(t.sum()), float(w.sum())) == pytest.approx(sums, rel=1e-4), seed


def test_a_second_stage_continues_from_saved_weights(tmp_path: Path) -> None:
    data = _tiny_folder(tmp_path)
    kw = dict(batch_size=2, patch=32, lr=1e-3, seed=0, threads=1, widths=(4, 8), log_every=1, val_images=1)
    first = tmp_path / "first.pt"
    train.train(data, first, steps=1, **kw)
    second = tmp_path / "second.pt"
    report = train.train(data, second, steps=1, init=first, aug=train.Augment(contact_weight=4.0), **kw)
    a = torch.load(first, weights_only=True)
    b = torch.load(second, weights_only=True)
    assert b["widths"] == a["widths"] == [4, 8]
    assert report["steps_done"] == 1
    # one step from the first stage's weights moves them a little, not back to a fresh start
    fresh = train.NucleusUNet((4, 8)).state_dict()
    key = "down.0.0.weight"
    assert not torch.equal(a["state_dict"][key], b["state_dict"][key])
    assert (b["state_dict"][key] - a["state_dict"][key]).abs().max() < (fresh[key] - a["state_dict"][key]).abs().max()


def test_worker_processes_draw_the_same_batches_whatever_their_number() -> None:
    """`train-nuclei --workers N` (a GPU run, where one process drawing patches would leave the
    network idle): batch i comes from its own generator, so 1 and 2 worker processes give the same
    batches in step order, and step i is what `batch` draws from the generator (seed, i)."""
    images = [_training_image(_discs((128, 128), c, 10)) for c in
              ([(64, 50), (30, 30), (100, 100)], [(40, 40), (64, 64), (90, 30)])]
    kw = dict(seed=3, size=2, patch=32, aug=train.Augment(), first=2, last=6, rng=np.random.default_rng(0))
    one = list(train.batches(images, workers=1, **kw))
    two = list(train.batches(images, workers=2, **kw))
    assert len(one) == len(two) == 5
    for a, b in zip(one, two, strict=True):
        for u, v in zip(a, b, strict=True):
            assert torch.equal(u, v)
    again = train.batch(np.random.default_rng([3, 4]), images, 2, 32, train.Augment())
    assert all(torch.equal(u, v) for u, v in zip(one[2], again, strict=True))  # step 4 is the third
    assert not torch.equal(one[0][0], one[1][0])
    # workers=0 is the shipped recipe's single stream: the generator it is given, in turn
    rng = np.random.default_rng(0)
    seq = list(train.batches(images, workers=0, **{**kw, "rng": np.random.default_rng(0)}))
    for got in seq:
        want = train.batch(rng, images, 2, 32, train.Augment())
        assert all(torch.equal(u, v) for u, v in zip(got, want, strict=True))
    assert not torch.equal(seq[0][0], one[0][0])


def test_a_run_with_workers_is_reproducible(tmp_path: Path) -> None:
    data = _tiny_folder(tmp_path)
    kw = dict(steps=3, batch_size=2, patch=32, lr=1e-3, seed=0, threads=1, widths=(4, 8), log_every=3, val_images=1)
    train.train(data, tmp_path / "a.pt", workers=1, **kw)
    train.train(data, tmp_path / "b.pt", workers=2, **kw)
    a = torch.load(tmp_path / "a.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "b.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cuda_asked_for_without_a_gpu_is_a_clear_error(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="no CUDA device"):
        train.train(_tiny_folder(tmp_path), tmp_path / "w.pt", steps=1, batch_size=2, patch=32, lr=1e-3, seed=0,
                    threads=1, widths=(4, 8), device="cuda")


def test_weights_are_saved_every_save_every_steps_and_never_half_written(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """A GPU run under a time limit (`scripts/gpu_train_nuclei.sh`) keeps the weights of its last
    `--save-every` step, and a stop inside a save leaves the previous file whole."""
    data = _tiny_folder(tmp_path)
    out = tmp_path / "w.pt"
    saved: list[dict] = []
    real = train.save

    def spy(model, path):  # noqa: ANN001, ANN202
        real(model, path)
        saved.append(torch.load(path, weights_only=True)["state_dict"])

    monkeypatch.setattr(train, "save", spy)
    train.train(data, out, steps=3, batch_size=2, patch=32, lr=1e-3, seed=0, threads=1, widths=(4, 8),
                log_every=100, val_images=1, save_every=1)
    assert len(saved) == 4  # steps 1, 2, 3 and the end of the run
    assert not torch.equal(saved[0]["down.0.0.weight"], saved[1]["down.0.0.weight"])
    monkeypatch.setattr(train, "save", real)

    def cut_short(obj, path):  # noqa: ANN001, ANN202 - a timeout's signal in the middle of the write
        Path(path).write_bytes(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", cut_short)
    with pytest.raises(KeyboardInterrupt):
        train.save(train.NucleusUNet((4, 8)), out)
    monkeypatch.undo()
    kept = torch.load(out, weights_only=True)["state_dict"]
    assert torch.equal(kept["down.0.0.weight"], saved[-1]["down.0.0.weight"])


def test_halo_gain_spreads_a_nucleus_gain_over_the_contact_with_its_neighbour() -> None:
    """A dim nucleus touching a bright one brightens towards the contact (and the bright one dims),
    as out-of-focus light and the `dimbright` render make it; far from both the gain is 1."""
    lab = _discs((96, 160), [(48, 60), (48, 100)], 20)  # two discs touching at x = 80
    lut = np.array([1.0, 0.1, 1.0], np.float32)
    g = train.halo_gain(lab, lut, 40.0)
    assert g.shape == lab.shape and g.dtype == np.float32
    assert g[48, 76] > 2 * g[48, 50]  # the dim disc, by the contact against its middle
    assert g[48, 84] < g[48, 110] - 0.1  # the bright disc dims by the contact
    assert g[48, 50] == pytest.approx(0.1, abs=0.02) and g[5, 5] == pytest.approx(1.0, abs=1e-3)


def test_halo_and_saturation_are_drawn_as_often_as_asked(monkeypatch) -> None:  # noqa: ANN001
    im = _training_image(_discs((128, 128), [(64, 50), (30, 30), (100, 100), (64, 100)], 12))
    real = train.halo_gain
    calls = []

    def counted(lab: np.ndarray, lut: np.ndarray, diameter: float) -> np.ndarray:
        calls.append(1)
        return real(lab, lut, diameter)

    monkeypatch.setattr(train, "halo_gain", counted)
    for prob, lo, hi in ((0.0, 0, 0), (0.5, 8, 32), (1.0, 40, 40)):
        calls.clear()
        for s in range(40):
            train.sample(np.random.default_rng(s), im, 96, train.Augment(dim_prob=1.0, halo_prob=prob))
        assert lo <= len(calls) <= hi, (prob, len(calls))

    # 8-bit renders clipped at the 85-98th percentile: many more pixels at 255 than at 99-100
    img = ndi.gaussian_filter(np.where(_discs((96, 96), [(30, 30), (66, 66)], 16) > 0, 200.0, 10.0), 1)

    def full_share(prob: float) -> float:
        shares = []
        for s in range(60):
            out = train._instrument(np.random.default_rng(s), img.astype(np.float32), prob)
            if out.max() <= 255 and not np.array_equal(out, img):
                shares.append(float(np.mean(out == 255)))
        return float(np.mean(shares))

    assert full_share(1.0) > 3 * full_share(0.0) and full_share(1.0) > 0.02


def test_a_time_limited_run_stops_at_a_recorded_step_that_reproduces_its_weights(tmp_path: Path) -> None:
    """`train-nuclei --time-limit` (a borrowed GPU's few minutes): the run stops after the step that
    reaches the limit, saves, and its record says how to make the same weights again (`--stop-after`
    that step); `timeout` used to kill runs between saves, and the step they stopped at was lost."""
    import json
    import shlex

    from classifier.cli import main

    data = _tiny_folder(tmp_path)
    args = ["train-nuclei", "--data", str(data), "--steps", "4", "--batch", "2", "--patch", "32",
            "--widths", "4,8", "--log-every", "100"]
    limited = tmp_path / "limited.pt"
    assert main([*args, "--out", str(limited), "--time-limit", "0"]) == 0
    record = json.loads(limited.with_suffix(".json").read_text())
    assert record["steps_done"] == 1 and record["stopped_by_time_limit"] is True
    assert record["reproduce"].endswith("--stop-after 1")
    assert "--time-limit" not in record["reproduce"]
    # the record's own command, run as written but for --out (it names the limited run's file)
    again = tmp_path / "again.pt"
    argv = shlex.split(record["reproduce"])[3:]  # after "python -m classifier"
    argv[argv.index("--out") + 1] = str(again)
    assert main(argv) == 0
    a = torch.load(limited, weights_only=True)["state_dict"]
    b = torch.load(again, weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    full = tmp_path / "full.pt"
    assert main([*args, "--out", str(full)]) == 0
    done = json.loads(full.with_suffix(".json").read_text())
    assert done["steps_done"] == 4 and done["stopped_by_time_limit"] is False and "reproduce" not in done
    c = torch.load(full, weights_only=True)["state_dict"]
    assert not torch.equal(a["down.0.0.weight"], c["down.0.0.weight"])


def test_a_bfloat16_run_trains_and_saves_float32_weights(tmp_path: Path) -> None:
    """`train-nuclei --precision bf16` (fast on CPUs with AMX): the forward pass runs under bfloat16
    autocast, the weights it learns and saves stay float32 and differ from a float32 run's."""
    data = _tiny_folder(tmp_path)
    kw = dict(steps=2, batch_size=2, patch=32, lr=1e-3, seed=0, threads=1, widths=(4, 8), log_every=2, val_images=1)
    train.train(data, tmp_path / "fp32.pt", **kw)
    report = train.train(data, tmp_path / "bf16.pt", precision="bf16", **kw)
    a = torch.load(tmp_path / "fp32.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "bf16.pt", weights_only=True)["state_dict"]
    assert report["steps_done"] == 2
    assert all(v.dtype == a[k].dtype for k, v in b.items())
    assert b["down.0.0.weight"].dtype == torch.float32
    assert not torch.equal(a["down.0.0.weight"], b["down.0.0.weight"])  # the bf16 forward pass was used
    assert torch.allclose(a["down.0.0.weight"], b["down.0.0.weight"], atol=0.05)  # but learns the same thing
    with pytest.raises(ValueError, match="precision must be one of"):
        train.train(data, tmp_path / "x.pt", precision="fp16", **kw)


def test_the_working_size_is_trained_saved_and_used_by_inference(tmp_path: Path) -> None:
    """`train-nuclei --work-diameter 18 --patch 144`: nuclei are drawn at 18 px (crops of 240 px, as
    many nuclei across as the shipped 160 px at 12 px), the size the weights were trained at is saved
    with them, and inference brings an image's nuclei to that size, not to the shipped 12 px."""
    from classifier.nuclei import infer

    assert (train.context(12.0), train.context(18.0)) == (160, 240)
    im = _training_image(_discs((256, 256), [(64, 64), (128, 160), (200, 90)], 12))
    x, t, w = train.sample(np.random.default_rng(0), im, 144, work_d=18.0)
    assert x.shape == (2, 144, 144) and t.shape == w.shape == (3, 144, 144)
    data = _tiny_folder(tmp_path)
    kw = dict(steps=1, batch_size=2, patch=48, lr=1e-3, seed=0, threads=1, widths=(4, 8), log_every=1, val_images=1)
    report = train.train(data, tmp_path / "w18.pt", work_diameter=18.0, **kw)
    assert report["work_diameter"] == 18.0
    assert torch.load(tmp_path / "w18.pt", weights_only=True)["work_diameter"] == 18.0
    again = train.train(data, tmp_path / "w18b.pt", init=tmp_path / "w18.pt", **kw)  # the init's size is kept
    assert again["work_diameter"] == 18.0
    model = infer.load_model(str(tmp_path / "w18.pt"))
    assert model.work_diameter == 18.0
    img = np.zeros((96, 96), np.float32)
    assert infer.segment_nuclei_with(model, img, diameter_px=9.0).factor == 2.0  # 9 px nuclei brought to 18
    assert infer.load_model().work_diameter == 12.0  # the shipped weights predate the record: 12 px
    with pytest.raises(ValueError, match="larger than the 160 px crop"):
        train.train(data, tmp_path / "x.pt", **{**kw, "patch": 168})


def test_star_convex_ray_targets_turn_and_mirror_with_their_patch() -> None:
    """Rays (`star.ray_targets`, in working diameters) turned with their patch (`star.turn_rays`) are the rays
    of the turned nuclei, and a nucleus cut by the crop's edge is not trained on (its rays stop at
    the edge, not at its outline)."""
    from stardist import star_dist

    lab = np.zeros((40, 40), np.int32)
    lab[5:20, 8:30], lab[22:35, 3:12], lab[25:40, 20:26] = 1, 2, 3  # 3 touches the bottom edge
    d, whole = star.ray_targets(lab, 32, 12.0)
    assert d.shape == (32, 40, 40)
    assert whole[12, 18] == 1 and whole[30, 22] == 0 and whole[0, 0] == 0
    # from (12, 18) rightwards (ray 0, +x) the edge of nucleus 1 is 12 px away: one working diameter
    assert d[0, 12, 18] == pytest.approx(1.0, abs=0.1)
    for r in range(4):
        for flip in (False, True):
            turned = np.rot90(lab, r)
            turned = np.ascontiguousarray(turned[:, ::-1] if flip else turned)
            want = star_dist(turned, 32).transpose(2, 0, 1) / 12.0
            got = np.rot90(d, r, axes=(1, 2))
            got = np.ascontiguousarray(got[:, :, ::-1] if flip else got)
            np.testing.assert_allclose(star.turn_rays(got, r, flip), want, atol=1e-4)
    im = _training_image(_discs((256, 256), [(64, 64), (128, 160), (200, 90)], 12))
    x, t, w = train.sample(np.random.default_rng(0), im, 96, rays=8)
    assert t.shape == (11, 96, 96) and w.shape == (4, 96, 96)
    assert (w[3] > 0).any() and not (w[3][t[0] == 0] > 0).any()  # rays weigh only nuclear pixels


def test_a_run_with_rays_saves_them_and_continues_from_weights_without(tmp_path: Path) -> None:
    """`train-nuclei --rays 8`: the weights record their rays and inference loads them; a run from
    weights without rays (the shipped ones) gains a ray head and keeps the rest; a count of rays
    that quarter turns do not map onto itself is a clear error."""
    from classifier.nuclei import infer

    data = _tiny_folder(tmp_path)
    kw = dict(steps=1, batch_size=2, patch=48, lr=1e-3, seed=0, threads=1, widths=(4, 8), log_every=1, val_images=1)
    train.train(data, tmp_path / "plain.pt", **kw)
    report = train.train(data, tmp_path / "rays.pt", init=tmp_path / "plain.pt", rays=8, **kw)
    assert report["rays"] == 8
    plain = torch.load(tmp_path / "plain.pt", weights_only=True)
    bundle = torch.load(tmp_path / "rays.pt", weights_only=True)
    assert plain["rays"] == 0 and bundle["rays"] == 8
    assert any(k.startswith("ray_head.") for k in bundle["state_dict"])
    model = infer.load_model(str(tmp_path / "rays.pt"))
    assert (model.rays, model.outputs) == (8, 11)
    maps = infer.predict_maps(model, np.zeros((2, 64, 64), np.float32))
    assert maps.shape == (11, 64, 64)
    with pytest.raises(ValueError, match="multiple of 4"):
        train.train(data, tmp_path / "x.pt", rays=6, **kw)
