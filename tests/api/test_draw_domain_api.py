"""A draw's domain status in the API (patients.drawdomain): ``domain_check`` on /api/draws/ and
/api/summaries/ is the merge of the draw's finished uploads' checks, the same the pages, CSVs and
FHIR use; null without one; withdrawn and failed uploads do not count; a list reads the checks of
a whole page in one query; another team's draw stays a 404."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from patients import drawdomain
from patients.models import UploadStatus
from patients.summary import recompute_summary
from tests import factories

pytestmark = pytest.mark.django_db

REASON = "no AF channel: the model was validated on 4-channel images (DAPI, CK, AF, CD45) (23 of 23 images)"
WIDE = "wide framing: 170 µm across, validated 54-100 µm (14 of 50 images)"
MINOR = "pixel size 0.5 µm, validated 0.65 µm"
SHIFTED = {"status": "shifted", "score": 0.73, "reasons": [REASON, WIDE]}
IN_DOMAIN = {"status": "in_domain", "score": 0.08, "reasons": [MINOR]}


def _upload(draw, check: dict | None, status: str = UploadStatus.DONE, cells: int = 1):  # noqa: ANN202
    upload = factories.ImagingUploadFactory(draw=draw, status=status, domain_check=check)
    for _ in range(cells):
        factories.CellEventFactory(upload=upload)
    return upload


def _analysed(draw, *checks: dict | None, **kwargs) -> None:  # noqa: ANN003
    for check in checks:
        _upload(draw, check, **kwargs)
    recompute_summary(draw)


def _draw(as_client, draw) -> dict:  # noqa: ANN001
    r = as_client.get(f"/api/draws/{draw.pk}/")
    assert r.status_code == 200, r.content
    return r.json()


def test_a_shifted_finished_upload_makes_the_draw_shifted_with_its_reasons(as_alice, draw):
    _analysed(draw, IN_DOMAIN, SHIFTED)
    body = _draw(as_alice, draw)
    assert list(body)[-1] == "domain_check"  # appended at the end
    # shifted when any upload is; the worst score; the shifted upload's reasons only (not the in-domain one's)
    assert body["domain_check"] == {"status": "shifted", "score": 0.73, "reasons": [REASON, WIDE]}
    # exactly patients.drawdomain's merge (the one the pages, CSVs and FHIR show)
    merged = drawdomain.for_draws([draw.pk])[draw.pk]
    assert body["domain_check"] == {"status": merged.status, "score": merged.score, "reasons": list(merged.reasons)}


def test_in_domain_draw_keeps_its_minor_reasons(as_alice, draw):
    _analysed(draw, IN_DOMAIN, {"status": "in_domain", "score": 0.2, "reasons": [MINOR, "another pixel size"]})
    assert _draw(as_alice, draw)["domain_check"] == {"status": "in_domain", "score": 0.2,
                                                       "reasons": [MINOR, "another pixel size"]}


def test_withdrawn_and_failed_uploads_do_not_count(as_alice, patient):
    mixed = factories.BloodDrawFactory(patient=patient)
    _analysed(mixed, IN_DOMAIN)
    _upload(mixed, {"status": "shifted", "score": 1.0, "reasons": ["withdrawn one"]}, status=UploadStatus.WITHDRAWN)
    _upload(mixed, {"status": "shifted", "score": 0.9, "reasons": ["failed one"]}, status=UploadStatus.FAILED,
            cells=0)
    recompute_summary(mixed)
    assert _draw(as_alice, mixed)["domain_check"] == {"status": "in_domain", "score": 0.08, "reasons": [MINOR]}

    only_ignored = factories.BloodDrawFactory(patient=patient)
    _upload(only_ignored, SHIFTED, status=UploadStatus.WITHDRAWN)
    _upload(only_ignored, SHIFTED, status=UploadStatus.FAILED, cells=0)
    _upload(only_ignored, SHIFTED, status=UploadStatus.RUNNING, cells=0)
    recompute_summary(only_ignored)
    assert _draw(as_alice, only_ignored)["domain_check"] is None


def test_no_check_is_null(as_alice, patient):
    bare = factories.BloodDrawFactory(patient=patient)  # no upload at all
    before_the_check = factories.BloodDrawFactory(patient=patient)
    _analysed(before_the_check, None)  # analysed before the check existed
    malformed = factories.BloodDrawFactory(patient=patient)
    _analysed(malformed, {"status": "unknown"})  # a shape drawdomain does not trust: no check
    for d in (bare, before_the_check, malformed):
        assert _draw(as_alice, d)["domain_check"] is None, d
    assert as_alice.get(f"/api/summaries/{before_the_check.pk}/").json()["domain_check"] is None


def test_a_check_without_a_score_has_a_null_score(as_alice, draw):
    _analysed(draw, {"status": "shifted", "reasons": [REASON]})
    assert _draw(as_alice, draw)["domain_check"] == {"status": "shifted", "score": None, "reasons": [REASON]}


def test_lists_and_summaries_carry_the_same_check(as_alice, patient):
    shifted, in_domain, unchecked, pending = (factories.BloodDrawFactory(patient=patient) for _ in range(4))
    _analysed(shifted, SHIFTED)
    _analysed(in_domain, IN_DOMAIN)
    _analysed(unchecked, None)
    _upload(pending, SHIFTED, cells=0)  # finished, no cell: no summary, but the check is the draw's
    recompute_summary(pending)
    expected = {shifted.pk: SHIFTED, in_domain.pk: IN_DOMAIN, unchecked.pk: None, pending.pk: SHIFTED}

    draws = as_alice.get("/api/draws/?page_size=100").json()["results"]
    assert {d["id"]: d["domain_check"] for d in draws} == expected
    summaries = as_alice.get("/api/summaries/?page_size=100").json()["results"]
    assert all(list(s)[-1] == "domain_check" for s in summaries)
    assert {s["draw"]: s["domain_check"] for s in summaries} == {
        pk: check for pk, check in expected.items() if pk != pending.pk}  # a summary row needs a count
    assert as_alice.get(f"/api/summaries/{shifted.pk}/").json()["domain_check"] == SHIFTED
    # a new draw answers its (empty) check too
    r = as_alice.post("/api/draws/", {"patient": patient.pk, "drawn_at": "2025-03-01T09:30:00Z", "volume_ml": 7.5,
                                      "timepoint": "C9D1"}, format="json")
    assert r.status_code == 201, r.content
    assert r.json()["domain_check"] is None


def test_a_page_of_draws_reads_the_checks_in_a_bounded_number_of_queries(as_alice, team,
                                                                         django_assert_max_num_queries):
    def make(n: int) -> None:
        for i in range(n):
            draw = factories.BloodDrawFactory(patient=factories.PatientFactory(care_team=team))
            _analysed(draw, SHIFTED if i % 2 else IN_DOMAIN, IN_DOMAIN)

    def queries(path: str) -> int:
        with CaptureQueriesContext(connection) as ctx:
            r = as_alice.get(path)
        assert r.status_code == 200
        return len(ctx.captured_queries)

    make(2)
    few = {path: queries(path) for path in ("/api/draws/", "/api/summaries/")}
    make(8)
    for path in ("/api/draws/", "/api/summaries/"):
        # auth + admin check + count + page + the page's checks (one query) + audit
        with django_assert_max_num_queries(8):
            body = as_alice.get(path).json()
        assert body["count"] == 10
        statuses = [r["domain_check"]["status"] for r in body["results"]]
        assert statuses.count("shifted") == 1 + 4 and statuses.count("in_domain") == 1 + 4  # odd i: shifted
        assert queries(path) == few[path], path  # not one more per row


def test_another_teams_user_gets_404(as_alice, as_charlie, draw):
    _analysed(draw, SHIFTED)
    assert _draw(as_alice, draw)["domain_check"]["status"] == "shifted"
    assert as_charlie.get(f"/api/draws/{draw.pk}/").status_code == 404
    assert as_charlie.get(f"/api/summaries/{draw.pk}/").status_code == 404
    assert as_charlie.get("/api/draws/").json()["count"] == 0
    assert as_charlie.get("/api/summaries/").json()["count"] == 0
