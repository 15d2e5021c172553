from __future__ import annotations

from rest_framework import serializers

from patients.models import BloodDraw, CareTeam, DrawSummary, Patient


class DrawSummarySerializer(serializers.ModelSerializer):
    class Meta:
        model = DrawSummary
        fields = ["events_analysed", "ctc_count", "ctc_per_7_5ml", "malignant_fraction", "reviewed_events",
                  "status", "model_version", "updated_at"]


class PatientSerializer(serializers.ModelSerializer):
    cancer_type = serializers.SlugRelatedField(slug_field="code", read_only=True)

    class Meta:
        model = Patient
        fields = ["id", "study_id", "cancer_type", "stage", "diagnosis_date", "care_team", "trial", "arm",
                  "enrolled_on"]


class DrawSerializer(serializers.ModelSerializer):
    summary = DrawSummarySerializer(read_only=True, allow_null=True)

    class Meta:
        model = BloodDraw
        fields = ["id", "patient", "drawn_at", "volume_ml", "timepoint", "assay", "summary"]


__all__ = ["CareTeam", "DrawSerializer", "PatientSerializer"]
