"""The Celery application; configured from Django settings (``CELERY_*``)."""

import logging
import os
import threading
import time

from celery import Celery
from celery.signals import beat_init, celeryd_after_setup, celeryd_init, worker_process_init, worker_ready

# Local by default (make run, make worker); compose and deployments set DJANGO_SETTINGS_MODULE.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

app = Celery("ctc")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@celeryd_init.connect
@beat_init.connect
def _prepare_local_state(**_kwargs: object) -> None:
    """A starting worker (``make worker`` on a fresh checkout) or beat creates the folders and
    local key its settings point at (the file-system broker's folders); importing creates none."""
    from django.conf import settings

    from config.local_state import prepare

    prepare(settings)


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


# --- Operations (issue 15): both lanes in every worker, and recovery without a scheduler -------


@celeryd_after_setup.connect
def _serve_the_bulk_lane_too(sender: str, instance: object, **_kwargs: object) -> None:
    """A worker started with ``-Q ctc`` (``make run``, ``make worker``, compose, the tests)
    also consumes ``ctc-bulk``, listed after ``ctc`` so interactive jobs are taken first.

    ``CELERY_SERVE_BULK=0`` keeps a worker for the clinic's uploads only. A worker given only a
    bulk queue (``-Q ctc-bulk``) stays on it."""
    if os.environ.get("CELERY_SERVE_BULK", "1") == "0":
        return
    from django.conf import settings

    queues = instance.app.amqp.queues  # type: ignore[attr-defined]
    wanted = list(queues.consume_from or {})
    for name in wanted:
        if name.endswith("-bulk") or name == getattr(settings, "CELERY_BULK_QUEUE", ""):
            continue
        bulk = getattr(settings, "CELERY_BULK_QUEUE", "") or f"{name}-bulk"
        if bulk not in wanted:
            queues.select_add(bulk)


@worker_ready.connect
def _reclaim_loop(**_kwargs: object) -> None:
    """Every worker reclaims jobs whose owner is gone: once at start, then every
    ``UPLOAD_RECLAIM_INTERVAL_S`` (a daemon thread of the main worker process, which outlives
    its pool children). No beat needed for an interrupted upload to finish; the reclaim is one
    conditional UPDATE per job, so many workers doing it at once reclaim each job once."""
    from django.conf import settings

    interval = float(getattr(settings, "UPLOAD_RECLAIM_INTERVAL_S", 0) or 0)

    def loop() -> None:
        from django.db import connection

        from patients.tasks import reclaim_and_requeue

        while True:
            try:
                reclaim_and_requeue()
            except Exception:  # noqa: BLE001 - the database restarting: try again next round
                logging.getLogger("patients.tasks").warning("reclaim failed; retrying", exc_info=True)
            finally:
                connection.close()
            if interval <= 0:
                return
            time.sleep(interval)

    threading.Thread(target=loop, name="reclaim", daemon=True).start()
