"""The call threshold on the draw and model pages, uncertainty measured from it, readable
category names and the call/category disagreement flag on cell cards."""

from __future__ import annotations

import pytest

from classifier.results import AnalysisResult, EventResult
from dashboard.labels import CATEGORY_LABELS, call_category_disagree, category_label
from patients import pipeline
from patients.models import ClassifierVersion, UploadStatus
from tests import factories

pytestmark = pytest.mark.django_db

THRESHOLD = 0.163
META = {"threshold": THRESHOLD, "threshold_rule": "98% sensitivity on the synthetic validation split"}


def _event(i: int, p: float, category: str) -> EventResult:
    return EventResult(source=f"e{i}.tif", index=i, x=1.0, y=1.0, call="ctc" if p >= THRESHOLD else "non_ctc",
                       ctc_probability=p, category=category, category_probabilities={category: 0.9},
                       embedding=[0.0, 1.0], branch_contributions={"spatial": 0.5, "texture": 0.5})


@pytest.fixture
def stored(draw, monkeypatch):
    monkeypatch.setattr(pipeline, "_metadata_for_registry", lambda weights_path: dict(META))
    upload = factories.ImagingUploadFactory(draw=draw, status=UploadStatus.QUEUED)
    attempt = pipeline.claim(upload.pk)
    # |p - 0.5| would order 0.5, 0.3, 0.17, 0.05; from the 0.163 threshold: 0.17, 0.05, 0.3, 0.5.
    result = AnalysisResult(events=[_event(0, 0.5, "ctc"), _event(1, 0.05, "leukocyte"),
                                    _event(2, 0.3, "apoptotic_ctc"), _event(3, 0.17, "ck_debris")],
                            model_version="thr-model", channels=["DAPI", "CK", "CD45"], threshold=THRESHOLD)
    assert pipeline.store_results(upload, attempt, result) == "done"
    return draw


def test_labels_and_disagreement():
    assert [category_label(c) for c in ("ctc", "apoptotic_ctc", "ck_debris", "leukocyte", "artifact")] == [
        "CTC", "Apoptotic CTC", "CK+ debris", "Leukocyte", "Artifact"]
    assert set(CATEGORY_LABELS) == {"ctc", "apoptotic_ctc", "leukocyte", "ck_debris", "artifact"}
    assert call_category_disagree("ctc", "apoptotic_ctc") and call_category_disagree("non_ctc", "ctc")
    assert not call_category_disagree("ctc", "ctc") and not call_category_disagree("non_ctc", "leukocyte")


def test_most_uncertain_first_is_the_distance_from_the_threshold(client, alice, stored):
    client.force_login(alice)
    response = client.get(f"/draws/{stored.pk}/", {"sort": "uncertainty"})
    # Issue 13: "most uncertain" is the distance from the threshold on the log-odds scale
    # (patients.review.review_rank), so a counted cell at 0.3 comes before a rejected one at 0.05
    # (|logit 0.3 - logit 0.163| = 0.79 < 1.31); the stored margin stays |p - threshold|.
    assert [c.ctc_probability for c in response.context["cells"]] == [0.17, 0.3, 0.05, 0.5]
    assert [round(c.margin, 3) for c in response.context["cells"]] == [0.007, 0.137, 0.113, 0.337]
    body = response.content.decode()
    assert 'data-testid="call-threshold"' in body and "P(CTC) ≥ <b>0.163</b>" in body
    assert "closest to this threshold" in body
    # Readable names on the cards and in the category filter; no raw codes.
    for label in ("CK+ debris", "Apoptotic CTC", "Leukocyte"):
        assert label in body
    assert ">ck_debris<" not in body and "apoptotic_ctc ·" not in body
    # 0.17 and 0.3 are called CTC but categorised CK+ debris / apoptotic CTC: flagged;
    # 0.5 (CTC, ctc) and 0.05 (not CTC, leukocyte) agree.
    flagged = {c.ctc_probability for c in response.context["cells"] if c.disagree}
    assert flagged == {0.17, 0.3}
    assert body.count('data-testid="disagree"') == 2 and "call and category disagree: review" in body


def test_models_page_shows_the_call_threshold(client, alice, stored):
    assert ClassifierVersion.objects.get(version="thr-model").metadata["threshold"] == THRESHOLD
    client.force_login(alice)
    body = client.get("/models/").content.decode()
    assert 'data-testid="model-threshold"' in body and "P(CTC) ≥ 0.163" in body
