"""docker-compose.yml cannot run here (no Docker engine); check its shape instead."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_has_the_services_of_the_stack():
    assert {"postgres", "redis", "web", "worker", "worker-gpu"} <= set(compose()["services"])


def test_every_service_has_a_health_check():
    for name, svc in compose()["services"].items():
        assert "healthcheck" in svc, name
        assert svc["healthcheck"]["test"], name


def test_app_services_wait_for_healthy_database_and_broker():
    for name in ("web", "worker", "worker-gpu"):
        deps = compose()["services"][name]["depends_on"]
        assert deps["postgres"]["condition"] == "service_healthy", name
        assert deps["redis"]["condition"] == "service_healthy", name


def test_app_services_get_database_and_broker_from_the_environment():
    for name in ("web", "worker", "worker-gpu"):
        env = compose()["services"][name]["environment"]
        assert env["DATABASE_URL"].startswith("postgres://"), name
        assert env["REDIS_URL"].startswith("redis://"), name


def test_gpu_worker_is_behind_a_profile_with_an_nvidia_reservation():
    gpu = compose()["services"]["worker-gpu"]
    assert gpu["profiles"] == ["gpu"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert compose()["services"]["worker"]["environment"]["CLASSIFIER_DEVICE"] == "cpu"


def test_env_example_names_the_settings_and_holds_no_real_secret():
    text = (ROOT / ".env.example").read_text()
    for key in ("SECRET_KEY", "POSTGRES_PASSWORD", "DATABASE_URL", "REDIS_URL", "ALLOWED_HOSTS", "MEDIA_ROOT"):
        assert key in text
    assert "SECRET_KEY=change-me" in text


def test_ci_script_starts_services_and_runs_make_test():
    text = (ROOT / ".ci" / "run").read_text()
    assert "make test" in text
    assert "pg_ctlcluster" in text and "redis-server" in text and "apt-get install" in text
