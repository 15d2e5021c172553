from django import forms
from django.contrib import admin
from simple_history.admin import SimpleHistoryAdmin

from patients import models
from patients.validation import check_study_id, check_timepoint


class PatientAdminForm(forms.ModelForm):
    """The admin's patient form: study IDs in the documented character set, as the API."""

    class Meta:
        model = models.Patient
        fields = "__all__"  # noqa: DJ007 - the admin shows every field

    def clean_study_id(self) -> str:
        value = self.cleaned_data["study_id"]
        check_study_id(value)
        return value


class BloodDrawAdminForm(forms.ModelForm):
    """The admin's draw form: timepoints in the documented character set, as the API and dashboard."""

    class Meta:
        model = models.BloodDraw
        fields = "__all__"  # noqa: DJ007

    def clean_timepoint(self) -> str:
        value = self.cleaned_data["timepoint"]
        check_timepoint(value)
        return value


class MembershipInline(admin.TabularInline):
    model = models.Membership
    extra = 0


@admin.register(models.CareTeam)
class CareTeamAdmin(admin.ModelAdmin):
    list_display = ("name", "site")
    inlines = [MembershipInline]


@admin.register(models.CancerType)
class CancerTypeAdmin(admin.ModelAdmin):
    list_display = ("name", "code", "ctc_cutoff", "cutoff_reference")


class ArmInline(admin.TabularInline):
    model = models.TrialArm
    extra = 0


@admin.register(models.Trial)
class TrialAdmin(admin.ModelAdmin):
    list_display = ("code", "title", "draw_interval_days")
    inlines = [ArmInline]
    filter_horizontal = ("coordinators",)


@admin.register(models.Patient)
class PatientAdmin(SimpleHistoryAdmin):
    form = PatientAdminForm
    list_display = ("study_id", "cancer_type", "care_team", "trial", "arm")
    list_filter = ("cancer_type", "care_team", "trial")
    search_fields = ("study_id", "mrn")


@admin.register(models.TreatmentLine)
class TreatmentLineAdmin(SimpleHistoryAdmin):
    list_display = ("patient", "line_number", "regimen", "intent", "start_date", "end_date", "stop_reason")
    list_select_related = ("patient",)


@admin.register(models.ClinicalEvent)
class ClinicalEventAdmin(SimpleHistoryAdmin):
    list_display = ("patient", "date", "kind", "recist")
    list_select_related = ("patient",)


@admin.register(models.BloodDraw)
class BloodDrawAdmin(SimpleHistoryAdmin):
    form = BloodDrawAdminForm
    list_display = ("patient", "drawn_at", "timepoint", "volume_ml")
    list_select_related = ("patient",)


class UploadedFileInline(admin.TabularInline):
    model = models.UploadedFile
    extra = 0
    readonly_fields = ("original_name", "size", "sha256")


@admin.register(models.ImagingUpload)
class ImagingUploadAdmin(SimpleHistoryAdmin):
    list_display = ("pk", "draw", "kind", "status", "progress", "model_version", "created_at")
    list_filter = ("status", "kind")
    inlines = [UploadedFileInline]
    list_select_related = ("draw__patient",)


@admin.register(models.CellEvent)
class CellEventAdmin(SimpleHistoryAdmin):
    list_display = ("pk", "draw", "source", "call", "ctc_probability", "category", "reviewed_call")
    list_filter = ("call", "category")
    raw_id_fields = ("upload", "draw", "reviewed_by")
    exclude = ("thumbnail", "heatmap")
    list_select_related = ("draw__patient",)


@admin.register(models.DrawSummary)
class DrawSummaryAdmin(SimpleHistoryAdmin):
    list_display = ("draw", "events_analysed", "ctc_count", "ctc_per_7_5ml", "malignant_fraction", "status")
    list_select_related = ("draw__patient",)


@admin.register(models.ClassifierVersion)
class ClassifierVersionAdmin(SimpleHistoryAdmin):
    list_display = ("version", "is_active", "retired", "created_at")


@admin.register(models.AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ("at", "user", "action", "object_type", "object_id", "ip_address")
    list_filter = ("action", "object_type")
    readonly_fields = [f.name for f in models.AuditEvent._meta.fields]

    def has_add_permission(self, request):  # the trail is append-only
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
