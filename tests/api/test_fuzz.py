"""The API fuzzed from its own OpenAPI schema (schemathesis), against the real Django stack.

Every operation of ``/api/schema/`` gets generated requests (path, query, headers, bodies
that follow the schema, and bodies that break it) sent through the project's WSGI
application to PostgreSQL, as three callers:

- **alice**, an oncologist with a patient, treatment line, clinical event, draw, upload,
  cell event and summary, once with generated ids and once with the ids of her records;
- **charlie**, an oncologist of another care team, with the path ids set to *alice's*
  records: nothing of hers may answer 2xx, whatever the method, query or body.

Checks on every response: no 5xx; the body matches the schema for its status code and the
content type is the declared one (schemathesis' ``response_schema_conformance`` and
``content_type_conformance``). The test prints how many requests it sent and how many
server errors it met. ``FUZZ_EXAMPLES`` (default 5) bounds the examples per operation,
caller and mode, so that the test stays within a few minutes on two cores; the examples are
the same on every run unless ``FUZZ_RANDOM=1`` (e.g. ``FUZZ_RANDOM=1 FUZZ_EXAMPLES=50
FUZZ_REPORT=/tmp/fuzz.txt make test PYTEST_ARGS=tests/api/test_fuzz.py`` to look further).
"""

from __future__ import annotations

import os
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field

import pytest
import schemathesis  # requirements/dev.in: a missing fuzzer fails here, it is not skipped
from django.core import signals
from django.core.cache import cache
from django.db import close_old_connections, transaction
from django.test import override_settings
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from rest_framework.authtoken.models import Token
from schemathesis import GenerationMode
from schemathesis.checks import content_type_conformance, response_schema_conformance

from patients.summary import recompute_summary
from tests import factories

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "5"))
#: The same examples on every run (reproducible CI) unless FUZZ_RANDOM=1 asks for new ones (exploring).
DERANDOMIZE = os.environ.get("FUZZ_RANDOM", "") != "1"

#: Which of alice's records a path's ``{id}`` names, by the first segment after /api/.
RESOURCE_OF_SEGMENT = {
    "patients": "patient", "treatment-lines": "line", "clinical-events": "clinical", "draws": "draw",
    "uploads": "upload", "events": "event", "summaries": "draw",
}


@dataclass
class Tally:
    requests: int = 0
    server_errors: list[str] = field(default_factory=list)
    leaks: list[str] = field(default_factory=list)
    nonconforming: list[str] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    unsatisfiable: list[str] = field(default_factory=list)


@pytest.fixture
def alice_records(alice, patient) -> dict[str, int]:
    line = factories.TreatmentLineFactory(patient=patient)
    clinical = factories.ClinicalEventFactory(patient=patient, note="fuzz")
    draw = factories.BloodDrawFactory(patient=patient)
    upload = factories.ImagingUploadFactory(draw=draw)
    event = factories.CellEventFactory(upload=upload, call="ctc", ctc_probability=0.9)
    recompute_summary(draw)
    return {"patient": patient.pk, "line": line.pk, "clinical": clinical.pk, "draw": draw.pk, "upload": upload.pk,
            "event": event.pk}


@pytest.fixture
def wsgi_app():
    """The project's WSGI application on the test database (as Django's test client runs it).

    ``request_started``/``request_finished`` close database connections that are not in
    autocommit: in a test's transaction that would close the connection under the test, so
    they are disconnected for the duration, as ``django.test.Client`` does.
    """
    from django.core.wsgi import get_wsgi_application

    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        yield get_wsgi_application()
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


def _path_ids(operation, records: dict[str, int]) -> dict[str, int] | None:  # noqa: ANN001
    """Alice's record ids for the operation's path parameters, or None when it names no record of hers."""
    names = [p.name for p in operation.path_parameters]
    if not names:
        return None
    segment = operation.path.removeprefix("/api/").split("/")[0]
    resource = RESOURCE_OF_SEGMENT.get(segment)
    if resource is None:  # cancer types, trials, model versions: reference data, not a team's records
        return None
    return {name: records[resource] for name in names}


def _fuzz(operation, tally: Tally, *, who: str, token: str, mode: GenerationMode,  # noqa: ANN001
          path_ids: dict[str, int] | None, must_not_succeed: bool) -> None:
    strategy = operation.as_strategy(generation_mode=mode, headers={"Authorization": f"Token {token}"},
                                     path_parameters=path_ids)

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=DERANDOMIZE,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def run(case) -> None:  # noqa: ANN001
        cache.clear()  # the token throttle counts in the cache: fuzz the endpoint, not the throttle
        tally.requests += 1
        try:
            # One savepoint per request: a failed query must not abort the test's transaction for the
            # requests after it (in production each request has its own transaction).
            with transaction.atomic():
                response = case.call()
        except Exception as err:  # noqa: BLE001 - DEBUG_PROPAGATE_EXCEPTIONS: a 500, with its cause
            where = "".join(traceback.format_exception(err)[-3:])[-600:]
            tally.server_errors.append(f"{who} {case.method} {case.formatted_path} {case.query or ''} "
                                       f"{case.body if not isinstance(case.body, bytes) else '<bytes>'}"[:400]
                                       + f" -> {type(err).__name__}: {where}")
            tally.statuses[5] += 1
            return
        tally.statuses[response.status_code // 100] += 1
        label = f"{who} {case.method} {case.formatted_path} {case.query or ''} -> {response.status_code}"
        if response.status_code >= 500:
            tally.server_errors.append(label + " " + response.text[:300])
            return
        if must_not_succeed and 200 <= response.status_code < 300:
            tally.leaks.append(label + " " + response.text[:300])
        try:
            case.validate_response(response, checks=[response_schema_conformance, content_type_conformance])
        except BaseExceptionGroup as err:  # schemathesis raises a group of failures; keep the first lines
            for failure in err.exceptions:
                tally.nonconforming.append(label + ": " + " ".join(str(failure).split())[:300])

    try:
        run()
    except Unsatisfiable:  # e.g. no way to break the schema of an operation without parameters or body
        tally.unsatisfiable.append(f"{who} {operation.method.upper()} {operation.path} ({mode.value})")


@override_settings(DEBUG_PROPAGATE_EXCEPTIONS=True)  # a server error raises here, with its traceback
def test_the_api_survives_its_own_schema(wsgi_app, alice, charlie, alice_records, capsys):
    schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", wsgi_app)
    tokens = {u.username: Token.objects.get_or_create(user=u)[0].key for u in (alice, charlie)}
    tally = Tally()
    operations = 0
    started = time.monotonic()
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        ids = _path_ids(operation, alice_records)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _fuzz(operation, tally, who="alice", token=tokens["alice"], mode=mode, path_ids=None,
                  must_not_succeed=False)
            if ids:
                _fuzz(operation, tally, who="alice", token=tokens["alice"], mode=mode, path_ids=ids,
                      must_not_succeed=False)
                _fuzz(operation, tally, who="charlie", token=tokens["charlie"], mode=mode, path_ids=ids,
                      must_not_succeed=True)
    elapsed = time.monotonic() - started
    with capsys.disabled():
        print(f"\n[fuzz] {operations} operations, {tally.requests} generated requests in {elapsed:.0f} s "
              f"(responses by class: {dict(sorted(tally.statuses.items()))}); "
              f"{len(tally.server_errors)} server errors, {len(tally.leaks)} 2xx on another team's records, "
              f"{len(tally.nonconforming)} responses not matching the schema; "
              f"{len(tally.unsatisfiable)} runs with nothing to generate")
    if os.environ.get("FUZZ_REPORT"):  # the full findings, for whoever fixes them
        with open(os.environ["FUZZ_REPORT"], "w", encoding="utf-8") as out:
            for title, rows in (("server errors", tally.server_errors), ("2xx on alice's records", tally.leaks),
                                ("not matching the schema", tally.nonconforming)):
                out.write(f"== {title}: {len(rows)}\n" + "\n".join(rows) + "\n")
    assert operations >= 30 and tally.requests >= operations * EXAMPLES
    assert not tally.server_errors, "\n".join(tally.server_errors[:20])
    assert not tally.leaks, "\n".join(tally.leaks[:20])
    distinct = sorted({n.split(": ", 1)[1][:200] + "  [" + n.split(" -> ")[0][:80] + "]" for n in tally.nonconforming})
    assert not tally.nonconforming, "\n".join(distinct[:40])
