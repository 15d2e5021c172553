# Operations (issue 15): the queue lane of an upload and the worker process that owns its job.

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('patients', '0007_upload_domain_check'),
    ]

    _lane = dict(choices=[('interactive', 'Interactive'), ('bulk', 'Bulk')], default='interactive', max_length=12)

    operations = [
        migrations.AddField(model_name='historicalimagingupload', name='lane', field=models.CharField(**_lane)),
        migrations.AddField(model_name='imagingupload', name='lane', field=models.CharField(**_lane)),
        migrations.AddField(model_name='imagingupload', name='owner', field=models.JSONField(blank=True, null=True)),
    ]
