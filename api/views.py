from __future__ import annotations

from rest_framework import viewsets
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.throttling import ScopedRateThrottle

from api.serializers import DrawSerializer, PatientSerializer
from patients.models import BloodDraw, Patient


class ObtainTokenView(ObtainAuthToken):
    """Username + password -> ``{"token": ...}``; throttled against guessing."""

    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "token"


class PatientViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = PatientSerializer
    filterset_fields = ["cancer_type__code", "trial", "arm", "care_team"]
    ordering_fields = ["study_id", "diagnosis_date"]

    def get_queryset(self):
        return Patient.objects.for_user(self.request.user).select_related("cancer_type").order_by("study_id")


class DrawViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = DrawSerializer
    filterset_fields = ["patient"]
    ordering_fields = ["drawn_at"]

    def get_queryset(self):
        return BloodDraw.objects.for_user(self.request.user).select_related("summary").order_by("drawn_at", "pk")
