from django.urls import include, path
from rest_framework.routers import DefaultRouter

from api import views

router = DefaultRouter()
router.register("patients", views.PatientViewSet, basename="patient")
router.register("draws", views.DrawViewSet, basename="draw")

app_name = "api"
urlpatterns = [
    path("auth/token/", views.ObtainTokenView.as_view(), name="token"),
    path("", include(router.urls)),
]
