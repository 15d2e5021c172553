"""Dashboard pages through the test client: content, permissions, audit, query counts."""

from __future__ import annotations

import datetime as dt

import pytest

from patients.models import AuditEvent, BloodDraw, CellEvent, ClassifierVersion, Role, SummaryStatus
from tests import factories
from tests.dashboard.builders import add_cells, course_patient

pytestmark = pytest.mark.django_db


@pytest.fixture
def as_alice(client, alice):
    client.force_login(alice)
    return client


@pytest.fixture
def as_bob(client, bob):
    client.force_login(bob)
    return client


@pytest.fixture
def as_charlie(client, charlie):
    client.force_login(charlie)
    return client


def test_login_page_has_the_contract_fields(client):
    body = client.get("/accounts/login/").content.decode()
    assert 'name="username"' in body and 'name="password"' in body


def test_every_page_requires_sign_in(client, course):
    patient, draws = course
    for url in ["/", f"/patients/{patient.pk}/", f"/draws/{draws['baseline'].pk}/", "/review/", "/cohort/",
                "/models/", f"/patients/{patient.pk}/export.csv", f"/patients/{patient.pk}/summary/"]:
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/"), url


def test_sign_in_lands_on_the_patient_list(client, alice, course):
    response = client.post("/accounts/login/", {"username": "alice", "password": "pw-for-tests-only"}, follow=True)
    assert response.status_code == 200
    assert "PT-DEMO-01" in response.content.decode()


def test_patient_list_shows_latest_count_flag_trend_and_overdue(as_alice, course):
    patient, draws = course
    body = as_alice.get("/").content.decode()
    assert "PT-DEMO-01" in body
    # Latest analysed draw is the C5D1 repeat: 6 CTC in 7.5 mL, above the cut-off of 5, up from 1.
    # 1 -> 6 in equal volumes is within counting noise (exact test p = 0.125): no "rising" arrow (issue 14).
    assert "6.0" in body and "≥ cut-off" in body and "trend-up" not in body and "within counting noise" in body
    assert "overdue" in body  # last draw 40 days ago, trial interval 21 + 7 days grace


def test_patient_list_filters(as_alice, course, team):
    factories.PatientFactory(care_team=team, study_id="PT-OTHER", cancer_type=factories.cancer_type("prostate_crpc"))
    body = as_alice.get("/", {"cancer_type": "prostate_crpc"}).content.decode()
    assert "PT-OTHER" in body and "PT-DEMO-01" not in body
    body = as_alice.get("/", {"q": "demo"}).content.decode()
    assert "PT-DEMO-01" in body and "PT-OTHER" not in body
    body = as_alice.get("/", {"overdue": "on"}).content.decode()
    assert "PT-DEMO-01" in body and "PT-OTHER" not in body
    body = as_alice.get("/", {"trial": "BRC-01"}).content.decode()
    assert "PT-DEMO-01" in body and "PT-OTHER" not in body


def test_charlie_sees_none_of_alices_patients(as_charlie, course):
    patient, draws = course
    assert "PT-DEMO-01" not in as_charlie.get("/").content.decode()
    assert as_charlie.get(f"/patients/{patient.pk}/").status_code == 404
    assert as_charlie.get(f"/draws/{draws['baseline'].pk}/").status_code == 404
    assert as_charlie.get(f"/patients/{patient.pk}/export.csv").status_code == 404
    assert as_charlie.get(f"/patients/{patient.pk}/summary/").status_code == 404
    assert as_charlie.get(f"/review/?draw={draws['baseline'].pk}").status_code == 404
    event = CellEvent.objects.filter(draw=draws["baseline"]).first()
    assert as_charlie.post(f"/events/{event.pk}/review/", {"call": "ctc"}).status_code == 404
    assert as_charlie.post(f"/patients/{patient.pk}/draws/new/", {}).status_code == 404
    assert "PT-DEMO-01" not in as_charlie.get("/cohort/").content.decode()
    assert "event0" not in as_charlie.get("/review/").content.decode()


def test_patient_page_shows_timeline_table_and_sentence(as_alice, course):
    patient, draws = course
    response = as_alice.get(f"/patients/{patient.pk}/")
    body = response.content.decode()
    assert "Unfavorable at baseline, favorable at C3D1 and C5D1, unfavorable since C5D1 repeat." in body
    assert 'id="fig-timeline"' in body and "assets/plotly-" in body
    assert "Preliminary" in body and "Record a blood draw" in body
    assert AuditEvent.objects.filter(action="view", patient=patient, object_type="Patient").exists()


def test_patient_page_relative_axis(as_alice, course):
    patient, _ = course
    response = as_alice.get(f"/patients/{patient.pk}/", {"axis": "relative", "day0": "treatment"})
    assert "Days since" in response.content.decode()


def test_reviewer_cannot_record_draws_or_export(as_bob, course):
    patient, _ = course
    body = as_bob.get(f"/patients/{patient.pk}/").content.decode()
    assert "Record a blood draw" not in body
    n = BloodDraw.objects.count()
    assert as_bob.post(f"/patients/{patient.pk}/draws/new/", {"timepoint": "x"}).status_code == 403
    assert BloodDraw.objects.count() == n
    assert as_bob.get(f"/patients/{patient.pk}/export.csv").status_code == 403
    assert as_bob.get("/cohort/").status_code == 403


def test_alice_records_a_draw(as_alice, course):
    patient, _ = course
    response = as_alice.post(f"/patients/{patient.pk}/draws/new/", {
        "drawn_at": "2025-06-01T09:30", "timepoint": "C2D1", "volume_ml": "7.5", "assay": "CellSearch"})
    draw = BloodDraw.objects.get(timepoint="C2D1")
    assert response.status_code == 302 and response["Location"] == f"/draws/{draw.pk}/"
    assert draw.created_by.username == "alice"


def test_a_future_draw_is_refused_with_a_clear_message(as_alice, course):
    from django.utils import timezone

    patient, _ = course
    before = BloodDraw.objects.count()
    ahead = timezone.localtime() + dt.timedelta(days=3)
    response = as_alice.post(f"/patients/{patient.pk}/draws/new/", {
        "drawn_at": ahead.strftime("%Y-%m-%dT%H:%M"), "timepoint": "C9D1", "volume_ml": "7.5", "assay": "CellSearch"},
        follow=True)
    body = response.content.decode()
    assert "The draw was not saved" in body and "is in the future" in body
    assert body.count("is in the future") == 1
    assert BloodDraw.objects.count() == before


def test_patient_csv_export_is_audited(as_alice, course):
    patient, _ = course
    response = as_alice.get(f"/patients/{patient.pk}/export.csv")
    text = b"".join(response.streaming_content).decode()
    assert response["Content-Type"].startswith("text/csv")
    assert text.splitlines()[0].startswith("study_id,")
    assert len(text.strip().splitlines()) == 1 + 5
    assert AuditEvent.objects.filter(action="export", patient=patient).exists()


def test_print_summary(as_alice, course):
    patient, _ = course
    body = as_alice.get(f"/patients/{patient.pk}/summary/").content.decode()
    assert "CTC summary" in body and "data-print" in body


def test_draw_page_gallery_filters_and_sort(as_alice, course):
    _, draws = course
    url = f"/draws/{draws['baseline'].pk}/"
    response = as_alice.get(url)
    body = response.content.decode()
    assert 'data-testid="cell"' in body and "Embedding map" in body and 'id="upload-form"' in body
    assert body.count('data-testid="cell"') == 23
    ctc_only = as_alice.get(url, {"call": "ctc"}).content.decode()
    assert ctc_only.count('data-testid="cell"') == 9
    cells = response.context["cells"]
    assert [c.margin for c in cells] == sorted(c.margin for c in cells)  # most uncertain first
    leuko = as_alice.get(url, {"category": "leukocyte"}).context["cells"]
    assert leuko and all(c.category == "leukocyte" for c in leuko)


def test_reviewer_sees_no_upload_form_and_gets_403(as_bob, course):
    _, draws = course
    url = f"/draws/{draws['pending'].pk}/"
    assert 'id="upload-form"' not in as_bob.get(url).content.decode()
    response = as_bob.post(f"/draws/{draws['pending'].pk}/uploads/", {"channels": "DAPI,CK,CD45"})
    assert response.status_code == 403 and "error" in response.json()


def test_upload_endpoint_returns_readable_errors(as_alice, course):
    from django.core.files.uploadedfile import SimpleUploadedFile

    _, draws = course
    url = f"/draws/{draws['pending'].pk}/uploads/"
    response = as_alice.post(url, {"channels": "DAPI,CK,CD45"})
    assert response.status_code == 400 and "file" in response.json()["error"]
    bad = SimpleUploadedFile("notes.txt", b"hello")
    response = as_alice.post(url, {"channels": "DAPI,CK,CD45", "kind": "events", "files": [bad]})
    assert response.status_code == 400 and "unsupported file type" in response.json()["error"]


def test_upload_status_is_scoped(as_charlie, client, alice, course):
    _, draws = course
    upload = draws["baseline"].uploads.get()
    assert as_charlie.get(f"/uploads/{upload.pk}/status/").status_code == 404
    client.force_login(alice)
    data = client.get(f"/uploads/{upload.pk}/status/").json()
    assert data["status"] == "done" and data["progress"] == 100 and data["events"] == 23


def test_review_queue_orders_by_uncertainty_and_override_needs_a_reason(as_bob, course):
    _, draws = course
    response = as_bob.get("/review/")
    cells = response.context["cells"]
    assert [c.margin for c in cells] == sorted(c.margin for c in cells)
    event = cells[0]
    other = "ctc" if event.call == "non_ctc" else "non_ctc"
    response = as_bob.post(f"/events/{event.pk}/review/", {"call": other, "reason": "", "next": "/review/"},
                           follow=True)
    assert "Give a reason" in response.content.decode()
    event.refresh_from_db()
    assert event.reviewed_call == ""
    as_bob.post(f"/events/{event.pk}/review/", {"call": other, "reason": "CK signal is debris", "next": "/review/"})
    event.refresh_from_db()
    assert (event.reviewed_call, event.reviewed_by.username, event.review_reason) == (other, "bob",
                                                                                       "CK signal is debris")
    assert AuditEvent.objects.filter(action="review", object_type="CellEvent", object_id=str(event.pk)).exists()
    body = as_bob.get("/review/").content.decode()
    assert "0.0%" in body and "CK signal is debris" in body  # agreement 0 of 1, the reason shown


def test_a_stale_dashboard_review_is_refused_and_change_review_works(as_bob, alice, course):
    from django.test import Client

    as_alice = Client()
    as_alice.force_login(alice)
    event = as_bob.get("/review/").context["cells"][0]
    as_bob.post(f"/events/{event.pk}/review/", {"call": event.call, "next": "/review/"})
    other = "ctc" if event.call == "non_ctc" else "non_ctc"
    # alice's page still shows the cell as pending: her override is refused with who/when/what.
    body = as_alice.post(f"/events/{event.pk}/review/", {"call": other, "reason": "CK+", "next": "/review/"},
                         follow=True).content.decode()
    assert "Already reviewed by bob at" in body
    event.refresh_from_db()
    assert (event.reviewed_call, event.reviewed_by.username) == (event.call, "bob")
    # Reviewed cells offer "Change review" on the review page (recent reviews) and the draw page.
    assert "Change review" in as_alice.get("/review/").content.decode()
    assert "Change review" in as_alice.get(f"/draws/{event.draw_id}/?reviewed=yes").content.decode()
    body = as_alice.post(f"/events/{event.pk}/review/", {"call": other, "change": "1", "reason": "",
                                                         "next": "/review/"}, follow=True).content.decode()
    assert "Give a reason" in body
    as_alice.post(f"/events/{event.pk}/review/", {"call": other, "change": "1", "reason": "CK+ on recheck"})
    event.refresh_from_db()
    assert (event.reviewed_call, event.reviewed_by.username, event.review_reason) == (other, "alice", "CK+ on recheck")
    audit = AuditEvent.objects.get(action="review", object_id=str(event.pk), detail__change=True)
    assert audit.detail["old"]["by"] == "bob" and audit.detail["new"]["by"] == "alice"


def test_a_draw_becomes_final_when_all_cells_are_reviewed(as_bob, team):
    patient = factories.PatientFactory(care_team=team)
    draw = factories.BloodDrawFactory(patient=patient)
    add_cells(draw, 1, 1, with_images=False)
    for event in CellEvent.objects.filter(draw=draw):
        as_bob.post(f"/events/{event.pk}/review/", {"call": event.call})
    draw.summary.refresh_from_db()
    assert draw.summary.status == SummaryStatus.FINAL


def test_member_cannot_review(client, team, course):
    user = factories.UserFactory(username="mo")
    factories.MembershipFactory(team=team, user=user, role=Role.MEMBER)
    client.force_login(user)
    event = CellEvent.objects.first()
    assert client.post(f"/events/{event.pk}/review/", {"call": event.call}).status_code == 403


def test_cohort_page_and_export(as_alice, course, team, trial_arm):
    trial, arm = trial_arm
    course_patient(team, study_id="PT-DEMO-02", trial=trial, arm=arm, images=False)
    body = as_alice.get("/cohort/").content.decode()
    for part in ("fig-waterfall", "fig-swimmer", "fig-conversion", "BRC-01 / A", "PT-DEMO-02"):
        assert part in body
    body = as_alice.get("/cohort/", {"trial": "BRC-01", "arm": arm.pk}).content.decode()
    assert "BRC-01 / A" in body
    response = as_alice.get("/cohort/export.csv", {"trial": "BRC-01"})
    assert len(b"".join(response.streaming_content).decode().strip().splitlines()) == 1 + 10


def test_models_page_and_manage_permissions(as_alice, client, course):
    # The shape classifier/cli.py writes: one result per evaluation data set.
    v1 = ClassifierVersion.objects.create(version="test-model", is_active=True, metadata={"metrics": {
        "synthetic_test": {"n": 100, "accuracy": 0.97, "balanced_accuracy": 0.95, "roc_auc": 0.99,
                           "confusion": {"tp": 47, "fp": 2, "tn": 50, "fn": 1}},
        "ctc-dev": {"n": 40, "accuracy": 0.9, "roc": {"fpr": [0, 0.1, 1], "tpr": [0, 0.9, 1]}}}})
    v2 = ClassifierVersion.objects.create(version="v2")
    body = as_alice.get("/models/").content.decode()
    assert "97.00%" in body and "fig-cm-" in body and "fig-roc-" in body and "Active" in body
    assert "Promote" not in body
    assert as_alice.post(f"/models/{v2.pk}/promote/").status_code == 403
    admin = factories.UserFactory(username="root", is_superuser=True, is_staff=True)
    client.force_login(admin)
    assert client.post(f"/models/{v2.pk}/promote/").status_code == 302
    v1.refresh_from_db()
    v2.refresh_from_db()
    assert v2.is_active and not v1.is_active
    client.post(f"/models/{v1.pk}/retire/")
    v1.refresh_from_db()
    assert v1.retired


def test_plotly_js_is_served_locally_with_long_caching(client):
    import plotly

    response = client.get(f"/assets/plotly-{plotly.__version__}.min.js", HTTP_ACCEPT_ENCODING="gzip")
    assert response.status_code == 200
    assert "immutable" in response["Cache-Control"] and response["Content-Encoding"] == "gzip"
    assert client.get(f"/assets/plotly-{plotly.__version__}.min.js", HTTP_IF_NONE_MATCH=response["ETag"]
                      ).status_code == 304


# --- Query counts: a later benchmark uses 1,000 patients x 12 draws x 200 events ---------------


def _bulk(team, n_patients=8):
    for i in range(n_patients):
        p = factories.PatientFactory(care_team=team, study_id=f"BULK-{i:03d}")
        for k in range(3):
            d = factories.BloodDrawFactory(patient=p, drawn_at=dt.datetime(2025, 1, 1 + 7 * k, tzinfo=dt.UTC),
                                           timepoint=f"C{k}")
            if k < 2:
                add_cells(d, k + 1, 2, seed=k, with_images=False)


def test_list_page_query_count_does_not_grow_with_patients(as_alice, team, django_assert_max_num_queries):
    _bulk(team)
    with django_assert_max_num_queries(16):
        assert as_alice.get("/").status_code == 200


def test_patient_page_query_count(as_alice, course, django_assert_max_num_queries):
    patient, _ = course
    with django_assert_max_num_queries(14):
        assert as_alice.get(f"/patients/{patient.pk}/").status_code == 200


def test_draw_page_query_count(as_alice, course, django_assert_max_num_queries):
    _, draws = course
    with django_assert_max_num_queries(16):
        assert as_alice.get(f"/draws/{draws['baseline'].pk}/").status_code == 200


def test_review_and_cohort_query_counts(as_alice, team, course, django_assert_max_num_queries):
    _bulk(team)
    # Issue 13 added the per-draw queue, the two-reviewer state of the shown cells and the kappa
    # table (in the cached agreement figures): a fixed number of queries, none per cell.
    with django_assert_max_num_queries(20):
        assert as_alice.get("/review/").status_code == 200
    with django_assert_max_num_queries(20):
        assert as_alice.get("/cohort/").status_code == 200


# --- Preliminary results are labelled; exports carry the draw's context -------------------------


def test_status_sentence_and_print_summary_say_the_counts_are_preliminary(as_alice, course):
    from patients.models import DrawSummary

    patient, draws = course
    body = as_alice.get(f"/patients/{patient.pk}/").content.decode()
    assert "unfavorable since C5D1 repeat. (preliminary: 0 of 4 draws reviewed)" in body
    assert "(preliminary: 0 of 4 draws reviewed)" in as_alice.get(f"/patients/{patient.pk}/summary/").content.decode()
    DrawSummary.objects.filter(draw__patient=patient).exclude(draw=draws["repeat"]).update(status=SummaryStatus.FINAL)
    assert "(preliminary: 3 of 4 draws reviewed)" in as_alice.get(f"/patients/{patient.pk}/").content.decode()
    DrawSummary.objects.filter(draw__patient=patient).update(status=SummaryStatus.FINAL)
    body = as_alice.get(f"/patients/{patient.pk}/").content.decode()
    assert "unfavorable since C5D1 repeat." in body and "(preliminary:" not in body


def test_cohort_page_counts_preliminary_draws_and_patients(as_alice, course, team, trial_arm):
    from patients.models import DrawSummary

    trial, arm = trial_arm
    course_patient(team, study_id="PT-DEMO-02", trial=trial, arm=arm, images=False)
    body = as_alice.get("/cohort/").content.decode()
    assert 'data-testid="cohort-preliminary"' in body
    assert "Preliminary: 8 of 8 analysed draws not fully reviewed" in body
    assert "2 of 2 patients" in body
    from patients.cache import bump_cohort_version

    DrawSummary.objects.update(status=SummaryStatus.FINAL)
    bump_cohort_version()  # a queryset update sends no signal
    body = as_alice.get("/cohort/").content.decode()
    assert "All 8 analysed draws are reviewed (final)." in body


def test_csv_exports_carry_volume_events_fraction_and_model_version(as_alice, course, team, trial_arm):
    import csv
    import io

    patient, draws = course
    BloodDraw.objects.filter(pk=draws["c3"].pk).update(timepoint="=HYPERLINK(\"x\")")
    for url in (f"/patients/{patient.pk}/export.csv", "/cohort/export.csv"):
        response = as_alice.get(url)
        rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
        assert {"volume_ml", "events_analysed", "malignant_fraction", "model_version"} <= set(rows[0])
        base = next(r for r in rows if r["timepoint"] == "baseline")
        assert (base["volume_ml"], base["events_analysed"], base["model_version"]) == ("7.5", "23", "test-model")
        assert float(base["malignant_fraction"]) == pytest.approx(9 / 23, abs=1e-4)
        pending = next(r for r in rows if r["timepoint"] == "L2 C1D1")
        assert (pending["events_analysed"], pending["malignant_fraction"], pending["model_version"]) == ("", "", "")
        assert any(r["timepoint"].startswith("'=HYPERLINK") for r in rows)  # the formula guard still applies


def test_withdraw_an_upload_from_the_draw_page(as_alice, course):
    from patients.models import ImagingUpload

    _, draws = course
    draw = draws["baseline"]
    draw.summary.refresh_from_db()
    before = draw.summary.events_analysed
    upload = ImagingUpload.objects.filter(draw=draw, status="done").first()
    n = upload.events.count()
    body = as_alice.get(f"/draws/{draw.pk}/").content.decode()
    assert "Withdraw upload" in body
    body = as_alice.post(f"/uploads/{upload.pk}/withdraw/", {"reason": ""}, follow=True).content.decode()
    assert "Give a reason" in body
    body = as_alice.post(f"/uploads/{upload.pk}/withdraw/", {"reason": "duplicate files"},
                         follow=True).content.decode()
    assert "withdrawn" in body and "duplicate files" in body
    from patients.models import DrawSummary

    left = DrawSummary.objects.filter(draw=draw).values_list("events_analysed", flat=True).first()
    # the events of the other uploads, or no summary at all when nothing analysed is left (not 0 CTC)
    assert left == (before - n or None)
    assert AuditEvent.objects.filter(action="withdraw", object_id=str(upload.pk)).exists()


def test_member_cannot_withdraw_others_scope_404(as_charlie, course):
    from patients.models import ImagingUpload

    upload = ImagingUpload.objects.first()
    assert as_charlie.post(f"/uploads/{upload.pk}/withdraw/", {"reason": "x"}).status_code == 404
    upload.refresh_from_db()
    assert upload.status != "withdrawn"


def test_uploading_to_a_final_draw_needs_the_confirmation(as_alice, course):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from tests.api.synthetic import CHANNELS, event_tiff

    _, draws = course
    draw = draws["baseline"]
    draw.summary.status = SummaryStatus.FINAL
    draw.summary.save()
    assert "this draw is final" in as_alice.get(f"/draws/{draw.pk}/").content.decode().lower()

    def post(**extra):  # noqa: ANN003, ANN202
        f = SimpleUploadedFile("x.tif", event_tiff("ctc", 5), content_type="image/tiff")
        data = {"files": [f], "channels": CHANNELS, "kind": "events", **extra}
        return as_alice.post(f"/draws/{draw.pk}/uploads/", data)

    r = post()
    assert r.status_code == 400 and "This draw is final" in r.json()["error"]
    r = post(confirm_final="1")
    assert r.status_code == 201 and any("This draw is final" in w for w in r.json()["warnings"])


# --- Accessibility of the filters, favicon, empty patient list -----------------------------------


def test_day0_is_disabled_on_calendar_dates_and_filters_have_an_apply_button(as_alice, course):
    import re

    patient, draws = course
    body = as_alice.get(f"/patients/{patient.pk}/").content.decode()
    assert re.search(r'<select id="day0" name="day0"[^>]*\bdisabled\b', body)
    assert re.search(r'<button class="btn btn-quiet apply-btn" type="submit">Show</button>', body)
    body = as_alice.get(f"/patients/{patient.pk}/", {"axis": "relative"}).content.decode()
    assert not re.search(r'<select id="day0" name="day0"[^>]*\bdisabled\b', body)
    body = as_alice.get(f"/draws/{draws['baseline'].pk}/").content.decode()
    assert '<button class="btn btn-quiet apply-btn" type="submit">Apply</button>' in body
    assert "<noscript><button" not in body


def test_favicon_is_linked_and_served(client, as_alice, course):
    body = as_alice.get("/").content.decode()
    assert '<link rel="icon" href="/static/dashboard/favicon.ico"' in body
    response = client.get("/favicon.ico")
    assert response.status_code == 301 and response["Location"] == "/static/dashboard/favicon.ico"
    from django.contrib.staticfiles import finders

    assert finders.find("dashboard/favicon.ico")


def test_a_user_without_patients_is_told_why_the_list_is_empty(as_charlie, course):
    body = as_charlie.get("/").content.decode()
    assert "No patients are visible to you yet (patients appear when you join their care team)." in body
    assert "No patients match these filters." not in body


def test_filters_matching_no_patient_say_so(as_alice, course):
    body = as_alice.get("/", {"q": "NO-SUCH-PATIENT"}).content.decode()
    assert "No patients match these filters." in body


def test_the_models_page_refuses_to_promote_a_version_whose_weights_are_gone(client, tmp_path):
    v1 = ClassifierVersion.objects.create(version="v1", is_active=True)
    bad = ClassifierVersion.objects.create(version="lab-gone", weights_path=str(tmp_path / "gone.pt"))
    admin = factories.UserFactory(username="root2", is_superuser=True, is_staff=True)
    client.force_login(admin)
    page = client.post(f"/models/{bad.pk}/promote/", follow=True).content.decode()
    assert "lab-gone cannot be made active" in page and "not found" in page
    bad.refresh_from_db()
    v1.refresh_from_db()
    assert v1.is_active and not bad.is_active
