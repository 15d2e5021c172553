"""Settings come from the environment through config.settings.{local,production,test}; with none set,
the embedded default serves. Importing a settings module creates nothing on disk: the commands that
need the embedded default's folders and the local key create them (config/local_state.py)."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PROBE = (
    "import json, django; from django.conf import settings as s; django.setup();"
    "print(json.dumps({'engine': s.DATABASES['default']['ENGINE'], 'name': str(s.DATABASES['default']['NAME']),"
    "'broker': s.CELERY_BROKER_URL, 'debug': s.DEBUG, 'hosts': s.ALLOWED_HOSTS, 'media': str(s.MEDIA_ROOT),"
    "'vt': s.CELERY_BROKER_TRANSPORT_OPTIONS.get('visibility_timeout'), 'limit': s.CELERY_TASK_TIME_LIMIT,"
    "'acks_late': s.CELERY_TASK_ACKS_LATE, 'prefetch': s.CELERY_WORKER_PREFETCH_MULTIPLIER,"
    "'accept': s.CELERY_ACCEPT_CONTENT}))"
)
KEYS = ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "DEBUG", "ALLOWED_HOSTS", "MEDIA_ROOT", "PRODUCTION", "VAR_DIR",
        "DJANGO_SETTINGS_MODULE", "TEST_DATABASE_NAME")


def clean_env(**env: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if k not in KEYS}
    clean.update(PYTHONPATH=str(ROOT), **env)
    return clean


def run(code: str, cwd: Path = ROOT, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=clean_env(**env), capture_output=True,
                          text=True, timeout=120)


def probe(**env: str) -> dict:
    out = run(PROBE, **{"DJANGO_SETTINGS_MODULE": "config.settings.local", **env})
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_embedded_default_needs_no_server(tmp_path):
    s = probe(VAR_DIR=str(tmp_path / "var"))
    assert s["engine"] == "django.db.backends.sqlite3"
    assert s["name"] == str(tmp_path / "var" / "ctc.sqlite3")
    assert s["broker"].startswith("filesystem://")
    assert s["debug"] is False


def test_environment_selects_postgres_and_redis():
    s = probe(DATABASE_URL="postgres://u@db.example:5432/ctc", REDIS_URL="redis://cache.example:6379/1",
              DEBUG="1", ALLOWED_HOSTS="ctc.example,localhost", MEDIA_ROOT="/srv/media", SECRET_KEY="x" * 50)
    assert s["engine"] == "django.db.backends.postgresql" and s["name"] == "ctc"
    assert s["broker"] == "redis://cache.example:6379/1"
    assert s["debug"] is True and s["hosts"] == ["ctc.example", "localhost"] and s["media"] == "/srv/media"


def test_celery_is_json_only_acks_late_prefetch_one_and_visibility_above_longest_job():
    s = probe(REDIS_URL="redis://127.0.0.1:6379/0")
    assert s["accept"] == ["json"]
    assert s["acks_late"] is True and s["prefetch"] == 1
    assert s["vt"] > s["limit"]


# --- no file-system side effects at import -------------------------------------------------------

IMPORT = ("import importlib, os, django; from django.conf import settings;"
          "importlib.import_module(os.environ['DJANGO_SETTINGS_MODULE']); settings.INSTALLED_APPS; django.setup();"
          "print('loaded', settings.SETTINGS_MODULE)")


@pytest.mark.parametrize("module, env", [
    ("config.settings.local", {}),
    ("config.settings.local", {"DEBUG": "1"}),
    ("config.settings.test", {}),
    ("config.settings.production", {"SECRET_KEY": "p" * 50, "ALLOWED_HOSTS": "ctc.example"}),
])
def test_importing_settings_creates_no_file_or_folder(tmp_path, module, env):
    """Before the split, importing config.settings wrote VAR_DIR/secret_key and made VAR_DIR, the
    SQLite folder and three broker folders: any process that merely loaded settings did."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    var = tmp_path / "var"
    out = run(IMPORT, cwd=cwd, DJANGO_SETTINGS_MODULE=module, VAR_DIR=str(var), **env)
    assert out.returncode == 0 and f"loaded {module}" in out.stdout, out.stderr[-3000:]
    assert not var.exists()
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["cwd"]


# --- what the commands create instead --------------------------------------------------------------

KEY_OF = ("import json; from django.conf import settings; {call}"
          "print(json.dumps(settings.SECRET_KEY))")


def test_prepare_makes_the_local_state_once_and_every_process_shares_its_key(tmp_path):
    var = tmp_path / "var"
    env = {"DJANGO_SETTINGS_MODULE": "config.settings.local", "VAR_DIR": str(var)}
    prepared = run(KEY_OF.format(call="from config.local_state import prepare; prepare(settings);"), **env)
    assert prepared.returncode == 0, prepared.stderr[-3000:]
    key = json.loads(prepared.stdout.strip().splitlines()[-1])
    key_file = var / "secret_key"
    assert key_file.read_text().strip() == key and len(key) >= 50
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    for folder in ("out", "processed", "control"):
        assert (var / "broker" / folder).is_dir()
    assert sorted(p.name for p in var.iterdir()) == ["broker", "secret_key"]  # no temporary file left
    # Another process (a gunicorn worker, the seeding) reads the same key without writing anything,
    # and preparing again keeps it.
    for call in ("", "from config.local_state import prepare; prepare(settings);"):
        again = run(KEY_OF.format(call=call), **env)
        assert json.loads(again.stdout.strip().splitlines()[-1]) == key, again.stderr[-3000:]


def test_a_starting_worker_prepares_the_broker_folders_of_a_fresh_checkout(tmp_path):
    """`make worker` before anything else: the worker-start signal makes the folders it reads."""
    var = tmp_path / "var"
    code = ("from celery.signals import celeryd_init; import config;"
            "celeryd_init.send(sender='w@h', instance=None, conf=None, options={})")
    out = run(code, DJANGO_SETTINGS_MODULE="config.settings.local", VAR_DIR=str(var))
    assert out.returncode == 0, out.stderr[-3000:]
    assert (var / "broker" / "out").is_dir() and (var / "secret_key").is_file()


def test_prepare_creates_nothing_when_the_environment_names_the_services_and_key(tmp_path):
    var = tmp_path / "var"
    out = run("from django.conf import settings; from config.local_state import prepare; prepare(settings)",
              DJANGO_SETTINGS_MODULE="config.settings.local", VAR_DIR=str(var), SECRET_KEY="k" * 50,
              DATABASE_URL="postgres://u@db.example:5432/ctc", REDIS_URL="redis://cache.example:6379/1")
    assert out.returncode == 0, out.stderr[-3000:]
    assert not var.exists()


# --- refusals ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("secret_key", [None, ""])
def test_production_refuses_to_start_without_a_secret_key(tmp_path, secret_key):
    env = {"DJANGO_SETTINGS_MODULE": "config.settings.production", "ALLOWED_HOSTS": "ctc.example",
           "VAR_DIR": str(tmp_path / "var")}
    if secret_key is not None:
        env["SECRET_KEY"] = secret_key
    out = run(PROBE, **env)
    assert out.returncode != 0 and "SECRET_KEY" in out.stderr


def test_production_one_is_refused_rather_than_half_hardened(tmp_path):
    """PRODUCTION=1 once hardened config.settings with a partial copy of the production settings
    (no CSP, 8-character passwords, no idle timeout, any host); it now names the module to use."""
    out = run(PROBE, DJANGO_SETTINGS_MODULE="config.settings.local", PRODUCTION="1", SECRET_KEY="x" * 50,
              VAR_DIR=str(tmp_path / "var"))
    assert out.returncode != 0 and "config.settings.production" in out.stderr


def test_the_old_module_name_is_refused_with_the_new_names(tmp_path):
    out = run(PROBE, DJANGO_SETTINGS_MODULE="config.settings", VAR_DIR=str(tmp_path / "var"))
    assert out.returncode != 0 and "config.settings.local" in out.stderr


# --- every command names a module that exists ---------------------------------------------------------

NAMED = re.compile(r"DJANGO_SETTINGS_MODULE\W+(config\.settings[\w.]*)")


def test_every_named_settings_module_exists_and_each_deployment_names_one():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    own = {"tests/foundation/test_settings.py", "config/settings/__init__.py"}  # name the old module on purpose
    named: dict[str, set[str]] = {}
    for path in tracked:
        file = ROOT / path
        if path in own or not file.is_file() or file.suffix in {".png", ".pt", ".npz", ".gz", ".zip", ".tif"}:
            continue
        for module in NAMED.findall(file.read_text(errors="replace")):
            named.setdefault(module, set()).add(path)
    assert named, "no DJANGO_SETTINGS_MODULE found"
    stale = {m: sorted(p) for m, p in named.items()
             if not (ROOT / (m.replace(".", "/") + ".py")).is_file() or m == "config.settings.base"}
    assert stale == {}, stale
    for path in ("manage.py", "config/wsgi.py", "config/celery_app.py", "scripts/run_local.py", "Makefile",
                 "docker-compose.yml", "Dockerfile", "pyproject.toml"):
        assert any(path in paths for paths in named.values()), f"{path} names no settings module"
    assert "pyproject.toml" in named["config.settings.test"]
    assert "Dockerfile" in named["config.settings.production"]
