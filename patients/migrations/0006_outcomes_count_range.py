"""Issue 14: patient outcome fields (progression, death, last follow-up, who recorded them) and the
model-uncertainty range of each draw's count (DrawSummary.ctc_count_min/max), filled for existing
summaries with the rule of patients/summary.py as it stood (one UPDATE with subqueries)."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models
from django.db.models import Count, F, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce

UNSURE_MARGIN = 0.1  # patients.summary.UNSURE_MARGIN when this was written
KNOWN = ("ctc", "apoptotic_ctc", "leukocyte", "ck_debris", "artifact")


def fill_ranges(apps, schema_editor):
    CellEvent = apps.get_model("patients", "CellEvent")
    DrawSummary = apps.get_model("patients", "DrawSummary")
    disagree = (Q(call="ctc") & ~Q(category="ctc") & Q(category__in=KNOWN)) | (Q(call="non_ctc") & Q(category="ctc"))
    unsure = Q(reviewed_call="") & (Q(margin__lt=UNSURE_MARGIN) | disagree)

    def count(call):
        return Subquery(
            CellEvent.objects.filter(unsure, draw=OuterRef("draw"), upload__status="done", call=call)
            .order_by().values("draw").annotate(c=Count("pk")).values("c")[:1]
        )

    DrawSummary.objects.update(ctc_count_min=F("ctc_count") - Coalesce(count("ctc"), 0),
                               ctc_count_max=F("ctc_count") + Coalesce(count("non_ctc"), 0))


class Migration(migrations.Migration):

    dependencies = [
        ('patients', '0005_margin_from_threshold'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name='drawsummary',
            name='ctc_count_max',
            field=models.PositiveIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='drawsummary',
            name='ctc_count_min',
            field=models.PositiveIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='historicaldrawsummary',
            name='ctc_count_max',
            field=models.PositiveIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='historicaldrawsummary',
            name='ctc_count_min',
            field=models.PositiveIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='historicalpatient',
            name='death_date',
            field=models.DateField(blank=True, help_text='Date of death; empty: alive at last follow-up', null=True),
        ),
        migrations.AddField(
            model_name='historicalpatient',
            name='last_follow_up',
            field=models.DateField(blank=True, help_text='Last date the patient was known alive and assessed', null=True, verbose_name='Last follow-up'),
        ),
        migrations.AddField(
            model_name='historicalpatient',
            name='outcome_recorded_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='historicalpatient',
            name='outcome_recorded_by',
            field=models.ForeignKey(blank=True, db_constraint=False, null=True, on_delete=django.db.models.deletion.DO_NOTHING, related_name='+', to=settings.AUTH_USER_MODEL),
        ),
        migrations.AddField(
            model_name='historicalpatient',
            name='progression_date',
            field=models.DateField(blank=True, help_text='Date of progression (RECIST or clinical); empty: none so far', null=True),
        ),
        migrations.AddField(
            model_name='patient',
            name='death_date',
            field=models.DateField(blank=True, help_text='Date of death; empty: alive at last follow-up', null=True),
        ),
        migrations.AddField(
            model_name='patient',
            name='last_follow_up',
            field=models.DateField(blank=True, help_text='Last date the patient was known alive and assessed', null=True, verbose_name='Last follow-up'),
        ),
        migrations.AddField(
            model_name='patient',
            name='outcome_recorded_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='patient',
            name='outcome_recorded_by',
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL),
        ),
        migrations.AddField(
            model_name='patient',
            name='progression_date',
            field=models.DateField(blank=True, help_text='Date of progression (RECIST or clinical); empty: none so far', null=True),
        ),
        migrations.RunPython(fill_ranges, migrations.RunPython.noop),
    ]
