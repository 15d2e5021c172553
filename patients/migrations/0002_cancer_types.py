"""Prognostic CTC cut-offs per 7.5 mL (product.md): data an administrator can edit."""

from django.db import migrations

CANCER_TYPES = [
    ("breast_metastatic", "Metastatic breast cancer", 5, "Cristofanilli et al., N Engl J Med 2004;351:781-791"),
    ("prostate_crpc", "Castration-resistant prostate cancer", 5, "de Bono et al., Clin Cancer Res 2008;14:6302-6309"),
    ("colorectal_metastatic", "Metastatic colorectal cancer", 3, "Cohen et al., J Clin Oncol 2008;26:3213-3221"),
    ("breast_early", "Early breast cancer", 1, "Janni et al. (pooled analysis), Clin Cancer Res 2016;22:2583-2593"),
]


def add(apps, schema_editor):
    CancerType = apps.get_model("patients", "CancerType")
    for code, name, cutoff, ref in CANCER_TYPES:
        CancerType.objects.update_or_create(
            code=code, defaults={"name": name, "ctc_cutoff": cutoff, "cutoff_reference": ref}
        )


def remove(apps, schema_editor):
    apps.get_model("patients", "CancerType").objects.filter(code__in=[c[0] for c in CANCER_TYPES]).delete()


class Migration(migrations.Migration):
    dependencies = [("patients", "0001_initial")]
    operations = [migrations.RunPython(add, remove)]
