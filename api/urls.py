from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.routers import DefaultRouter

from api import views


class Router(DefaultRouter):
    # No ".json" suffix routes: one URL per resource (the format is negotiated, or ?format=csv on exports).
    include_format_suffixes = False


router = Router()
router.register("patients", views.PatientViewSet, basename="patient")
router.register("care-teams", views.CareTeamViewSet, basename="careteam")
router.register("cancer-types", views.CancerTypeViewSet, basename="cancertype")
router.register("trials", views.TrialViewSet, basename="trial")
router.register("treatment-lines", views.TreatmentLineViewSet, basename="treatmentline")
router.register("clinical-events", views.ClinicalEventViewSet, basename="clinicalevent")
router.register("draws", views.DrawViewSet, basename="draw")
router.register("uploads", views.UploadViewSet, basename="upload")
router.register("events", views.CellEventViewSet, basename="event")
router.register("summaries", views.DrawSummaryViewSet, basename="summary")
router.register("models", views.ClassifierVersionViewSet, basename="classifierversion")
router.register("trainings", views.LabTrainingViewSet, basename="labtraining")

app_name = "api"
urlpatterns = [
    path("auth/token/", views.ObtainTokenView.as_view(), name="token"),
    path("cohort/", views.CohortView.as_view(), name="cohort"),
    path("cohort/survival/", views.SurvivalView.as_view(), name="cohort-survival"),
    path("export/deidentified/", views.DeidentifiedExportView.as_view(), name="export-deidentified"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves its init script as a file: no inline script for the production CSP.
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="api:schema"), name="docs"),
    path("", include(router.urls)),
]
