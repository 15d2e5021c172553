"""The Celery application; configured from Django settings (``CELERY_*``)."""

import os

from celery import Celery
from celery.signals import worker_process_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("ctc")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_process_init.connect
def _classifier_threads(**_kwargs: object) -> None:
    """Torch threads per worker process (``CLASSIFIER_THREADS``, default 1).

    Scale with one worker process per core (``make worker``) rather than OpenMP threads: on
    the shared 2-core machine two torch threads made the model and explanation stages of a
    1,000-event upload 3-7x slower than one thread (see docs/performance.md).
    """
    from django.conf import settings

    threads = int(getattr(settings, "CLASSIFIER_THREADS", 1) or 0)
    if threads > 0:
        import torch

        torch.set_num_threads(threads)
