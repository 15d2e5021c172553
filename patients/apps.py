from django.apps import AppConfig


class PatientsConfig(AppConfig):
    name = "patients"
    verbose_name = "Patients and blood draws"

    def ready(self) -> None:
        # Cached cohort results go stale on writes to what they are made of (patients/cache.py).
        from patients.cache import connect_signals

        connect_signals()
