"""Query filters for the list endpoints (``?patient=``, ``?trial=``, ``?arm=``, date ranges)."""

from __future__ import annotations

import datetime as dt

import django_filters as filters
from django import forms
from django_filters.fields import IsoDateTimeField

from patients.models import (
    BloodDraw,
    Call,
    CellEvent,
    ClinicalEvent,
    DrawSummary,
    ImagingUpload,
    Patient,
    SummaryStatus,
    TreatmentLine,
    UploadStatus,
)

#: The largest id PostgreSQL's bigint holds; past it a lookup was a DataError (500) on the foreign keys.
MAX_ID = 2**63 - 1


class IdField(forms.IntegerField):
    """A record id: a whole number from 1 to :data:`MAX_ID` (else the filter answers 400 with why)."""

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003 - django form field signature
        kwargs.setdefault("min_value", 1)
        kwargs.setdefault("max_value", MAX_ID)
        super().__init__(*args, **kwargs)


class IdFilter(filters.NumberFilter):
    """``?patient=``, ``?draw=``, ``?care_team=`` ...: an integer id in bigint range.

    django-filter's ``NumberFilter`` parses a ``Decimal``: ``2**63`` or ``1e400`` went to
    PostgreSQL and came back as a 500. An ``IntegerField`` with bounds refuses them.
    """

    field_class = IdField


class MomentField(IsoDateTimeField):
    """An ISO 8601 moment from 1900 to 2999, handed to the database in UTC.

    PostgreSQL refuses a UTC offset past +-15:59 (``+17:52`` parsed fine in Python and came
    back as a DataError, a 500), and a year-1 moment cannot be moved to UTC at all.
    """

    def to_python(self, value):  # noqa: ANN001, ANN201 - django form field signature
        moment = super().to_python(value)
        if moment is None:
            return None
        if not 1900 <= moment.year <= 2999:
            raise forms.ValidationError("Give a date and time between the years 1900 and 2999.", code="range")
        return moment.astimezone(dt.UTC) if moment.tzinfo else moment


class MomentFilter(filters.IsoDateTimeFilter):
    """``?drawn_after=`` / ``?drawn_before=``: see :class:`MomentField`."""

    field_class = MomentField


class PatientFilter(filters.FilterSet):
    cancer_type = filters.CharFilter(field_name="cancer_type__code",
                                     help_text="Cancer type code, e.g. breast_metastatic")
    trial = filters.CharFilter(field_name="trial__code", help_text="Trial code")
    arm = filters.CharFilter(field_name="arm__code", help_text="Arm code (with or without ?trial=)")
    care_team = IdFilter(field_name="care_team_id")
    study_id = filters.CharFilter(field_name="study_id", lookup_expr="iexact")

    class Meta:
        model = Patient
        fields = ["cancer_type", "trial", "arm", "care_team", "study_id"]


class PatientScopedFilter(filters.FilterSet):
    """Common filters for rows that belong to one patient."""

    patient = IdFilter(field_name="patient_id", help_text="Patient id")
    trial = filters.CharFilter(field_name="patient__trial__code", help_text="Trial code")
    arm = filters.CharFilter(field_name="patient__arm__code", help_text="Arm code")


class DrawFilter(PatientScopedFilter):
    drawn_after = MomentFilter(field_name="drawn_at", lookup_expr="gte", help_text="ISO 8601, inclusive")
    drawn_before = MomentFilter(field_name="drawn_at", lookup_expr="lt", help_text="ISO 8601, exclusive")
    timepoint = filters.CharFilter(field_name="timepoint", lookup_expr="iexact")
    status = filters.ChoiceFilter(field_name="summary__status", choices=SummaryStatus.choices,
                                  help_text="Summary status")

    class Meta:
        model = BloodDraw
        fields = ["patient", "trial", "arm", "drawn_after", "drawn_before", "timepoint", "status"]


class TreatmentLineFilter(PatientScopedFilter):
    started_after = filters.DateFilter(field_name="start_date", lookup_expr="gte")
    started_before = filters.DateFilter(field_name="start_date", lookup_expr="lte")

    class Meta:
        model = TreatmentLine
        fields = ["patient", "trial", "arm", "intent", "started_after", "started_before"]


class ClinicalEventFilter(PatientScopedFilter):
    date_after = filters.DateFilter(field_name="date", lookup_expr="gte")
    date_before = filters.DateFilter(field_name="date", lookup_expr="lte")

    class Meta:
        model = ClinicalEvent
        fields = ["patient", "trial", "arm", "kind", "date_after", "date_before"]


class UploadFilter(filters.FilterSet):
    draw = IdFilter(field_name="draw_id")
    patient = IdFilter(field_name="draw__patient_id")
    status = filters.ChoiceFilter(choices=UploadStatus.choices)

    class Meta:
        model = ImagingUpload
        fields = ["draw", "patient", "status", "kind"]


class CellEventFilter(filters.FilterSet):
    draw = IdFilter(field_name="draw_id")
    upload = IdFilter(field_name="upload_id")
    call = filters.ChoiceFilter(choices=Call.choices, help_text="The model's call")
    category = filters.CharFilter()
    reviewed = filters.BooleanFilter(method="filter_reviewed",
                                     help_text="true: reviewed events only; false: unreviewed only")
    source = filters.CharFilter(field_name="source", lookup_expr="exact")

    class Meta:
        model = CellEvent
        fields = ["draw", "upload", "call", "category", "reviewed", "source"]

    def filter_reviewed(self, queryset, name, value):  # noqa: ANN001, ANN201 - django-filter signature
        return queryset.exclude(reviewed_call="") if value else queryset.filter(reviewed_call="")


class SummaryFilter(filters.FilterSet):
    patient = IdFilter(field_name="draw__patient_id")
    trial = filters.CharFilter(field_name="draw__patient__trial__code")
    arm = filters.CharFilter(field_name="draw__patient__arm__code")
    status = filters.ChoiceFilter(choices=SummaryStatus.choices)
    drawn_after = MomentFilter(field_name="draw__drawn_at", lookup_expr="gte")
    drawn_before = MomentFilter(field_name="draw__drawn_at", lookup_expr="lt")

    class Meta:
        model = DrawSummary
        fields = ["patient", "trial", "arm", "status", "drawn_after", "drawn_before"]
