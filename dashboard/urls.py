from django.contrib.auth import views as auth_views
from django.http import HttpRequest, HttpResponsePermanentRedirect
from django.templatetags.static import static
from django.urls import path

from dashboard import review_views, views

app_name = "dashboard"


def favicon(request: HttpRequest) -> HttpResponsePermanentRedirect:
    """Browsers ask for /favicon.ico whatever the page links: no 404 in every page's log."""
    return HttpResponsePermanentRedirect(static("dashboard/favicon.ico"))


urlpatterns = [
    path("accounts/login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("assets/plotly-<str:version>.min.js", views.plotly_js, name="plotly_js"),
    path("favicon.ico", favicon, name="favicon"),
    path("", views.patient_list, name="patients"),
    path("patients/<int:pk>/", views.patient_detail, name="patient"),
    path("patients/<int:pk>/draws/new/", views.draw_create, name="draw_create"),
    path("patients/<int:pk>/summary/", views.patient_print, name="patient_print"),
    path("patients/<int:pk>/export.csv", views.patient_export, name="patient_export"),
    path("draws/<int:pk>/", views.draw_detail, name="draw"),
    path("draws/<int:pk>/uploads/", views.upload_create, name="upload_create"),
    path("uploads/<int:pk>/status/", views.upload_status, name="upload_status"),
    path("uploads/<int:pk>/withdraw/", views.upload_withdraw, name="upload_withdraw"),
    path("review/", review_views.review_queue, name="review"),
    path("events/<int:pk>/review/", review_views.review_cell, name="review_cell"),
    path("draws/<int:pk>/review/", review_views.draw_review, name="draw_review"),
    path("review/adjudication/", review_views.adjudication, name="adjudication"),
    path("review/training-set.zip", review_views.training_set, name="training_set"),
    path("models/train/", review_views.training_start, name="training_start"),
    path("models/<int:pk>/shadow/", review_views.model_shadow, name="model_shadow"),
    path("models/training/<int:pk>/status/", review_views.training_status, name="training_status"),
    path("draws/<int:pk>/review/confirm/", review_views.review_confirm_remaining, name="review_confirm_remaining"),
    path("cohort/", views.cohort, name="cohort"),
    path("cohort/export.csv", views.cohort_export, name="cohort_export"),
    path("models/", views.models_page, name="models"),
    path("models/<int:pk>/<str:action>/", views.model_action, name="model_action"),
]
# The audit page (administrators only) belongs to the security work: dashboard/audit_views.py.
urlpatterns.append(path("audit/", __import__("dashboard.audit_views", fromlist=["audit_log"]).audit_log, name="audit"))
# Survival by CTC status (issue 14): dashboard/survival_views.py.
_survival = __import__("dashboard.survival_views", fromlist=["survival"])
urlpatterns += [
    path("cohort/survival/", _survival.survival, name="survival"),
    path("cohort/survival/export.csv", _survival.survival_export, name="survival_export"),
    path("patients/<int:pk>/outcomes/", __import__("dashboard.outcome_views", fromlist=["patient_outcomes"])
         .patient_outcomes, name="patient_outcomes"),
]
# Re-running a draw with another classifier version (issue 13.5, administrators): dashboard/rerun_views.py.
urlpatterns.append(path("draws/<int:pk>/rerun/", __import__("dashboard.rerun_views", fromlist=["draw_rerun"])
                       .draw_rerun, name="draw_rerun"))
