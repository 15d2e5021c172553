"""Seed the local demo cohort (idempotent): `python manage.py seed_demo [--wait N] [--review-wait N]`."""

from __future__ import annotations

import time

from django.core.management.base import BaseCommand

from patients.demo import DEMO_ADMIN, DEMO_PASSWORD, DEMO_USER, PARTNER_TEAM, SEEDED_REVIEWS, review_seeded, seed
from patients.models import ImagingUpload, UploadStatus

#: The two demo logins and what each may do (`make run` prints the same; README "Quick start").
LOGINS = (
    f"Sign in as {DEMO_USER} / {DEMO_PASSWORD} (oncologist and trial coordinator: patients, draws, review) "
    f"or {DEMO_ADMIN} / {DEMO_PASSWORD} (administrator: also models, lab-model training). Local demo only."
)


class Command(BaseCommand):
    help = "Create the demo cohort and queue its imaging for the worker (local demo only)."

    def add_arguments(self, parser):
        parser.add_argument("--seed", type=int, default=7)
        parser.add_argument("--events-per-draw", type=int, default=30)
        parser.add_argument("--wait", type=float, default=0, help="Wait up to N seconds for the worker to finish")
        parser.add_argument("--no-outcomes", action="store_true",
                            help="Leave out the synthetic outcome cohort (its patients only fill the survival "
                                 "page): a demo of a third of the uploads, classified in a third of the time")
        parser.add_argument("--review-wait", type=float, default=0,
                            help=f"Wait up to N seconds for the uploads of {', '.join(SEEDED_REVIEWS)} and "
                                 "review their cells with the generator's labels as they finish (0: review what "
                                 f"is finished now; {PARTNER_TEAM} counts apoptotic CTCs as CTCs)")

    def handle(self, *args, **opts):
        self.stdout.write("Seeding the demo cohort ...")
        queued = seed(seed=opts["seed"], events_per_draw=opts["events_per_draw"], log=self.stdout.write,
                      outcomes=not opts["no_outcomes"])
        self.stdout.write(self.style.SUCCESS(f"{len(queued)} upload(s) queued. {LOGINS}"))
        deadline = time.monotonic() + opts["wait"]
        pending = ImagingUpload.objects.filter(status__in=[UploadStatus.QUEUED, UploadStatus.RUNNING])
        while opts["wait"] and pending.exists() and time.monotonic() < deadline:
            time.sleep(2)
            self.stdout.write(f"  waiting for the worker: {pending.count()} upload(s) to go")
        review_seeded(wait_s=opts["review_wait"], log=self.stdout.write)
