"""Record a blood draw, upload its event gallery, wait for the analysis, print the CTC count.

A minimal client of the CTC Monitor REST API with `requests`:

    python docs/examples/client.py --url http://127.0.0.1:8000 \\
        --username demo --password demo-password \\
        --patient 1 --folder path/to/event-tiffs --channels DAPI,CK,AF,CD45 \\
        --volume 7.5 --timepoint C3D1

The folder holds one multi-channel TIFF (C, Y, X) per candidate event, channels in the
order given by ``--channels`` (DAPI, CK and CD45 are required). The last line printed
is one JSON object with the draw's summary.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import requests

IMAGE_SUFFIXES = {".tif", ".tiff", ".png", ".jpg", ".jpeg", ".zip"}


def get_token(api: str, username: str, password: str) -> str:
    r = requests.post(f"{api}/auth/token/", data={"username": username, "password": password}, timeout=30)
    r.raise_for_status()
    return r.json()["token"]


def check(r: requests.Response) -> dict:
    """Raise with the API's own message (a 400 says what was wrong)."""
    if r.status_code >= 400:
        raise SystemExit(f"{r.request.method} {r.url} -> {r.status_code}: {r.text}")
    return r.json()


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--username", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--patient", type=int, required=True, help="patient id (GET /api/patients/ lists them)")
    p.add_argument("--folder", type=Path, required=True, help="folder of event TIFFs")
    p.add_argument("--channels", default="DAPI,CK,AF,CD45", help="channel names in file order")
    p.add_argument("--volume", type=float, default=7.5, help="blood volume analysed, mL")
    p.add_argument("--timepoint", default="baseline")
    p.add_argument("--drawn-at", default=None, help="ISO 8601; default now")
    p.add_argument("--timeout", type=float, default=600, help="seconds to wait for the analysis")
    args = p.parse_args(argv)

    api = args.url.rstrip("/") + "/api"
    s = requests.Session()
    s.headers["Authorization"] = f"Token {get_token(api, args.username, args.password)}"

    # 1. The draw.
    drawn_at = args.drawn_at or dt.datetime.now(dt.UTC).isoformat()
    draw = check(s.post(f"{api}/draws/", json={"patient": args.patient, "drawn_at": drawn_at,
                                               "volume_ml": args.volume, "timepoint": args.timepoint}, timeout=30))
    print(f"draw {draw['id']} recorded for patient {draw['study_id']}", file=sys.stderr)

    # 2. The images: every file of the folder as one `file` part each (a zip works too).
    paths = sorted(q for q in args.folder.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise SystemExit(f"no images in {args.folder}")
    with ExitStack() as stack:
        files = [("file", (q.name, stack.enter_context(q.open("rb")), "image/tiff")) for q in paths]
        r = s.post(f"{api}/draws/{draw['id']}/uploads/", files=files,
                   data={"channels": args.channels, "kind": "events"}, timeout=300)
    upload = check(r)
    status_url = r.headers["Location"]
    print(f"upload {upload['id']}: {len(paths)} file(s) queued", file=sys.stderr)

    # 3. Wait for the worker.
    deadline = time.monotonic() + args.timeout
    while upload["status"] not in ("done", "failed"):
        if time.monotonic() > deadline:
            raise SystemExit(f"still {upload['status']} after {args.timeout:.0f} s: {status_url}")
        time.sleep(1.0)
        upload = check(s.get(status_url, timeout=30))
        print(f"  {upload['status']} {upload['progress']}% {upload['stage']}", file=sys.stderr)
    if upload["status"] == "failed":
        raise SystemExit(f"analysis failed: {upload['error']}")

    # 4. The per-file calls and the count.
    events = check(s.get(f"{api}/draws/{draw['id']}/events/", params={"upload": upload["id"], "page_size": 1000},
                         timeout=60))
    for e in events["results"]:
        print(f"  {e['source']}: {e['call']} (p={e['ctc_probability']:.2f}, {e['category']})", file=sys.stderr)
    summary = check(s.get(f"{api}/draws/{draw['id']}/", timeout=30))["summary"]
    result = {"draw": draw["id"], "upload": upload["id"], "model_version": upload["model_version"], **summary}
    print(f"CTC count: {summary['ctc_count']} ({summary['ctc_per_7_5ml']} per 7.5 mL, "
          f"{summary['events_analysed']} events, {summary['status']})", file=sys.stderr)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
