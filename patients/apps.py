from django.apps import AppConfig


class PatientsConfig(AppConfig):
    name = "patients"
    verbose_name = "Patients and blood draws"

    def ready(self) -> None:
        # Cached cohort results go stale on writes to what they are made of (patients/cache.py).
        from patients.cache import connect_signals

        connect_signals()

        # Sign-ins, sign-outs and failed sign-ins go into the audit trail (patients/signins.py).
        from patients import signins

        signins.connect_signals()
