"""Profile the worker's hot path in-process: ``Classifier.analyse_files`` under cProfile.

    python -m bench.profile                    # the 1,000-event gallery (var/bench, made if missing)
    python -m bench.profile --kind field       # the 4x2048x2048 field
    python -m bench.profile --threads 2 --top 40 --out var/bench/gallery.pstats
    python -m bench.profile --prep-workers 2   # as the worker runs it (the pool's work is then invisible)

Prints the functions by own time and by cumulative time on stderr, and as the last line of
stdout one JSON object: ``kind``, ``weights`` (shipped or random-init), ``events``,
``threads``, ``prep_workers``, ``seconds``, ``stages_s`` (the classifier's per-stage timings) and ``top``
(the ``--top`` functions by own time: ``[function, calls, own_s, cumulative_s]``). A warm-up
run on the same input comes first.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time

from bench.common import ROOT, emit, log


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kind", choices=["events", "field"], default="events")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as the worker)")
    ap.add_argument("--prep-workers", type=int, default=1,
                    help="preprocessing processes (CLASSIFIER_PREP_WORKERS; default 1: cProfile sees only this "
                         "process, so with a pool the per-image work would show as lock waits)")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--out", help="write the raw pstats here")
    args = ap.parse_args(argv)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import torch

    from bench.pipeline import CHANNELS, bench_weights, field_tiff, gallery_zip
    from classifier.engine import Classifier

    torch.set_num_threads(args.threads)
    path = gallery_zip(1000) if args.kind == "events" else field_tiff(2048, 1000)
    weights, label = bench_weights()
    clf = Classifier.load(weights=weights or None, device="cpu")
    clf.prep_workers = args.prep_workers
    clf.analyse_files([path], CHANNELS, kind=args.kind, pixel_size_um=0.65)  # warm-up
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    res = clf.analyse_files([path], CHANNELS, kind=args.kind, pixel_size_um=0.65)
    prof.disable()
    seconds = time.perf_counter() - t0
    if args.out:
        prof.dump_stats(args.out)
    buf = io.StringIO()
    st = pstats.Stats(prof, stream=buf)
    st.sort_stats("tottime").print_stats(args.top)
    st.sort_stats("cumulative").print_stats(args.top)
    log(buf.getvalue())
    rows = sorted(st.stats.items(), key=lambda kv: -kv[1][2])[: args.top]  # type: ignore[attr-defined]
    top = [[f"{fn[0].split('site-packages/')[-1].replace(str(ROOT) + '/', '')}:{fn[1]}({fn[2]})",
            v[1], round(v[2], 3), round(v[3], 3)] for fn, v in rows]
    out = {"kind": args.kind, "weights": label, "events": len(res.events), "threads": args.threads,
           "prep_workers": args.prep_workers,
           "seconds": round(seconds, 2), "stages_s": {k: round(v, 3) for k, v in res.timings.items()}, "top": top}
    emit(out)
    return out


if __name__ == "__main__":
    main()
