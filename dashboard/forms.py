"""Forms of the dashboard: list filters, a new blood draw, an imaging upload."""

from __future__ import annotations

from django import forms
from django.db.models import Exists, OuterRef
from django.utils import timezone

from patients.models import BloodDraw, CancerType, CareTeam, ImagingUpload, Patient, Trial, TrialArm


def errors_text(form: forms.Form) -> str:
    """A rejected form's errors as one line for a flash message: "Label: message; ..."
    (a non-field error under its key, so nothing is dropped)."""
    return "; ".join(f"{form.fields[k].label if k in form.fields else k}: {' '.join(v)}"
                     for k, v in form.errors.items())


class PatientFilterForm(forms.Form):
    q = forms.CharField(label="Search", required=False, widget=forms.TextInput(
        attrs={"placeholder": "Study ID or MRN", "type": "search", "autocomplete": "off"}))
    cancer_type = forms.ModelChoiceField(CancerType.objects.all(), required=False, empty_label="All cancer types",
                                         to_field_name="code")
    trial = forms.ModelChoiceField(Trial.objects.none(), required=False, empty_label="All trials", to_field_name="code")
    arm = forms.ModelChoiceField(TrialArm.objects.none(), required=False, empty_label="All arms")
    team = forms.ModelChoiceField(CareTeam.objects.none(), required=False, empty_label="All care teams",
                                  label="Care team")
    overdue = forms.BooleanField(label="Overdue draws only", required=False)

    def __init__(self, *args, patients=None, **kwargs) -> None:  # noqa: ANN001 - visible patient queryset
        super().__init__(*args, **kwargs)
        # Options that occur among the visible patients: one EXISTS probe per option (few rows),
        # not a join over every visible patient.
        seen = patients.order_by() if patients is not None else Patient.objects.none()
        self.fields["trial"].queryset = Trial.objects.filter(Exists(seen.filter(trial=OuterRef("pk"))))
        self.fields["arm"].queryset = TrialArm.objects.filter(Exists(seen.filter(arm=OuterRef("pk")))).select_related(
            "trial")
        self.fields["team"].queryset = CareTeam.objects.filter(Exists(seen.filter(care_team=OuterRef("pk"))))

    def apply(self, qs):  # noqa: ANN001, ANN201 - Patient queryset in, filtered queryset out
        if not self.is_valid():
            return qs
        d = self.cleaned_data
        if d["q"]:
            from django.db.models import Q

            qs = qs.filter(Q(study_id__icontains=d["q"].strip()) | Q(mrn__iexact=d["q"].strip()))
        if d["cancer_type"]:
            qs = qs.filter(cancer_type=d["cancer_type"])
        if d["trial"]:
            qs = qs.filter(trial=d["trial"])
        if d["arm"]:
            qs = qs.filter(arm=d["arm"])
        if d["team"]:
            qs = qs.filter(care_team=d["team"])
        return qs


class CohortFilterForm(PatientFilterForm):
    site = forms.ChoiceField(required=False, label="Site")
    # Issue 14: "follow-up" as trials define it (a landmark such as C2D1), not always the latest draw.
    follow_up = forms.ChoiceField(required=False, label="Follow-up")

    def __init__(self, *args, patients=None, **kwargs) -> None:  # noqa: ANN001
        super().__init__(*args, patients=patients, **kwargs)
        teams = self.fields["team"].queryset
        del self.fields["q"], self.fields["overdue"], self.fields["team"]
        names = teams.exclude(site="").values_list("site", flat=True).distinct().order_by("site")
        self.fields["site"].choices = [("", "All sites")] + [(s, s) for s in names]
        # Day 1 of cycles 2-12, as trial schedules name their visits (no query: the page's cache hit
        # stays at its query budget); a cohort without such a draw simply has no follow-up there.
        self.fields["follow_up"].choices = [("", "Latest draw after baseline")] + [
            (f"C{c}D1", f"C{c}D1") for c in range(2, 13)]

    def landmark(self) -> str:
        """The chosen follow-up timepoint, "" for the latest analysed draw after baseline."""
        return (self.cleaned_data.get("follow_up") or "") if self.is_bound and self.is_valid() else ""

    def apply(self, qs):  # noqa: ANN001, ANN201
        if not self.is_valid():
            return qs
        d = self.cleaned_data
        for key in ("cancer_type", "trial", "arm"):
            if d.get(key):
                qs = qs.filter(**{key: d[key]})
        if d.get("site"):
            qs = qs.filter(care_team__site=d["site"])
        return qs


class DrawForm(forms.ModelForm):
    """A new draw; a future ``drawn_at`` is refused by ``BloodDraw.clean`` (patients/validation.py, as the API)."""

    drawn_at = forms.DateTimeField(label="Drawn at", widget=forms.DateTimeInput(attrs={"type": "datetime-local"},
                                                                                format="%Y-%m-%dT%H:%M"))

    class Meta:
        model = BloodDraw
        fields = ["drawn_at", "timepoint", "volume_ml", "assay"]
        labels = {"volume_ml": "Volume analysed (mL)"}
        widgets = {"timepoint": forms.TextInput(attrs={"placeholder": "baseline, C3D1, …"})}

    def clean_timepoint(self) -> str:
        """The documented character set (``patients.validation.check_timepoint``, as the API and admin)."""
        from patients.validation import check_timepoint

        value = self.cleaned_data["timepoint"]
        check_timepoint(value)
        return value

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not self.is_bound:
            self.initial.setdefault("drawn_at", timezone.localtime().replace(second=0, microsecond=0))
            self.initial.setdefault("volume_ml", "7.5")

    #: Session key of the values of a refused draw form (the patient page redirects after a POST).
    SESSION_KEY = "draw_form_typed"

    @classmethod
    def keep_typed(cls, request) -> None:  # noqa: ANN001
        """Keep what the user typed in a refused form, so the patient page shows it again with the
        errors instead of wiping the timepoint (issue 13)."""
        request.session[cls.SESSION_KEY] = {k: request.POST.get(k, "") for k in cls._meta.fields}

    @classmethod
    def from_session(cls, request) -> DrawForm:  # noqa: ANN001
        """The blank form, or the refused one (bound, with its errors) when the last post failed."""
        typed = request.session.pop(cls.SESSION_KEY, None)
        if typed:
            form = cls(typed)
            form.is_valid()  # fills errors for the template
            return form
        return cls()


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class UploadForm(forms.Form):
    """The fields of the upload form; the endpoint passes them to ``create_upload``."""

    files = forms.FileField(label="Image files", widget=MultipleFileInput(
        attrs={"multiple": True, "accept": ".tif,.tiff,.png,.jpg,.jpeg,.zip"}),
        help_text="TIFF/OME-TIFF, PNG, JPEG or a zip of them")
    #: The four-channel CellSearch-style order the hint and the demo data use (issue 13: the
    #: field said DAPI,CK,CD45 while the hint said DAPI,CK,AF,CD45 and the first upload failed). Only the
    #: fallback: the draw page proposes the channels of the draw's, else the patient's, latest upload.
    DEFAULT_CHANNELS = "DAPI,CK,AF,CD45"
    channels = forms.CharField(label="Channels in file order", initial=DEFAULT_CHANNELS,
                               help_text="Comma-separated, e.g. DAPI,CK,AF,CD45. An RGB colour PNG/JPEG: its 3 "
                                         "planes in the order red, green, blue, e.g. CD45,CK,DAPI for red CD45, "
                                         "green CK, blue DAPI")
    confirm_duplicates = forms.BooleanField(
        required=False, label="Upload anyway: these files are identical to ones already uploaded to this draw")
    pixel_size_um = forms.FloatField(label="Pixel size (µm)", required=False, min_value=0.01, max_value=50,
                                     widget=forms.NumberInput(attrs={"step": "0.001", "placeholder": "optional"}))
    kind = forms.ChoiceField(label="Kind", choices=ImagingUpload.Kind.choices, initial=ImagingUpload.Kind.EVENTS)
