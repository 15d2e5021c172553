"""Login lockout, production settings (check --deploy, headers, CSP nonces), no secrets in git."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from django.test import override_settings

from tests.conftest import _database_url

ROOT = Path(__file__).resolve().parents[2]


def _prod_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DEBUG", "PRODUCTION")}
    env.update(DJANGO_SETTINGS_MODULE="config.settings.production", SECRET_KEY=secrets.token_urlsafe(50),
               ALLOWED_HOSTS="ctc.example.org,testserver", PYTHONUNBUFFERED="1", **extra)
    return env


# --- lockout ---------------------------------------------------------------------------------


@pytest.mark.django_db
@override_settings(AXES_ENABLED=True, AXES_FAILURE_LIMIT=10)
def test_the_eleventh_bad_login_is_locked_out_even_with_the_right_password(client, alice):
    from axes.utils import reset

    reset()
    statuses = [client.post("/accounts/login/", {"username": "alice", "password": f"wrong-{i}"}).status_code
                for i in range(10)]
    # The form again (with an error) nine times; the tenth failure trips the lock.
    assert statuses[:9] == [200] * 9 and statuses[9] in (403, 429)
    locked = client.post("/accounts/login/", {"username": "alice", "password": "pw-for-tests-only"})
    assert locked.status_code in (403, 429)
    assert "_auth_user_id" not in client.session
    # The API's token endpoint honours the same lockout.
    token = client.post("/api/auth/token/", {"username": "alice", "password": "pw-for-tests-only"})
    assert token.status_code != 200 and b"token" not in token.content.lower().replace(b"token/", b"")
    reset()
    ok = client.post("/accounts/login/", {"username": "alice", "password": "pw-for-tests-only"})
    assert ok.status_code == 302 and client.session.get("_auth_user_id") == str(alice.pk)


@pytest.mark.django_db
@override_settings(AXES_ENABLED=True, AXES_FAILURE_LIMIT=10)
def test_a_lockout_of_one_account_does_not_lock_others(client, alice, bob):
    from axes.utils import reset

    reset()
    for i in range(11):
        client.post("/accounts/login/", {"username": "alice", "password": f"wrong-{i}"})
    resp = client.post("/accounts/login/", {"username": "bob", "password": "pw-for-tests-only"})
    assert resp.status_code == 302
    reset()


# --- production settings --------------------------------------------------------------------------


def test_check_deploy_is_clean_with_production_settings():
    proc = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
                          cwd=ROOT, env=_prod_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no issues" in proc.stdout


def test_production_refuses_to_start_without_a_secret_key_or_hosts():
    for missing in ("SECRET_KEY", "ALLOWED_HOSTS"):
        env = _prod_env()
        env.pop(missing)
        proc = subprocess.run([sys.executable, "-c", "import django; django.setup()"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode != 0 and missing in proc.stderr, proc.stderr[-2000:]


def test_production_wants_passwords_of_twelve_characters():
    code = ("import django; django.setup()\n"
            "from django.contrib.auth.password_validation import validate_password\n"
            "from django.core.exceptions import ValidationError\n"
            "validate_password('a-long-passphrase-ok')\n"
            "try:\n    validate_password('short-pw-1')\nexcept ValidationError:\n    print('REFUSED')\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_prod_env(), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0 and "REFUSED" in proc.stdout, proc.stderr[-2000:]


_PAGES_SCRIPT = textwrap.dedent("""
    import json, re, sys
    import django
    django.setup()
    from django.contrib.auth import get_user_model
    from django.test import Client
    from patients.models import BloodDraw, Patient
    c = Client(raise_request_exception=False)
    out = {}
    login = c.get("/accounts/login/", secure=True)
    out["login"] = {"status": login.status_code, "headers": dict(login.headers),
                    "cookies": {k: dict(v) for k, v in login.cookies.items()}}
    out["insecure"] = c.get("/accounts/login/").status_code
    c.force_login(get_user_model().objects.get(username="alice"))
    p = Patient.objects.first(); d = BloodDraw.objects.first()
    pages = {}
    for url in ["/", f"/patients/{p.pk}/", f"/draws/{d.pk}/", "/review/", "/cohort/", "/models/", "/api/docs/"]:
        r = c.get(url, secure=True)
        pages[url] = {"status": r.status_code, "csp": r.headers.get("Content-Security-Policy", ""),
                      "body": r.content.decode(errors="replace") if r.status_code == 200 else ""}
    out["pages"] = pages
    # Sliding idle expiry: every response renews the session cookie (SESSION_SAVE_EVERY_REQUEST).
    r = c.get("/", secure=True)
    out["session_cookie"] = dict(r.cookies["sessionid"]) if "sessionid" in r.cookies else None
    from django.contrib.sessions.models import Session
    from django.utils import timezone
    expiry = Session.objects.get(session_key=r.cookies["sessionid"].value).expire_date
    out["session_expires_in_s"] = (expiry - timezone.now()).total_seconds()
    print("RESULT" + json.dumps(out))
""")


@pytest.mark.django_db(transaction=True)
def test_production_pages_send_hsts_csp_secure_cookies_and_every_inline_script_has_the_nonce(alice, draw):
    proc = subprocess.run([sys.executable, "-c", _PAGES_SCRIPT], cwd=ROOT, timeout=180, capture_output=True,
                          text=True, env=_prod_env(DATABASE_URL=_database_url(), SECURE_SSL_REDIRECT="1"))
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT")), None)
    assert line, proc.stdout[-2000:] + proc.stderr[-4000:]
    out = json.loads(line[len("RESULT"):])
    h = out["login"]["headers"]
    assert out["insecure"] == 301  # plain http is redirected to https
    assert "max-age=31536000" in h["Strict-Transport-Security"] and "includeSubDomains" in h[
        "Strict-Transport-Security"]
    assert "default-src 'self'" in h["Content-Security-Policy"] and "frame-ancestors 'none'" in h[
        "Content-Security-Policy"]
    assert h["X-Frame-Options"] == "DENY" and h["X-Content-Type-Options"] == "nosniff"
    csrf = out["login"]["cookies"]["csrftoken"]
    assert csrf["secure"] and csrf["samesite"] == "Lax"
    session = out["session_cookie"]
    assert session, "an authenticated response must renew the session cookie (idle timeout)"
    # A browser-session cookie (gone when the browser closes) whose server-side session ends
    # after 30 idle minutes: each request pushes the expiry 30 minutes ahead.
    assert session["secure"] and session["httponly"] and not session["max-age"]
    assert 1700 < out["session_expires_in_s"] <= 1800
    ok = [url for url, page in out["pages"].items() if page["status"] == 200]
    assert "/" in ok and any(u.startswith("/patients/") for u in ok), {u: p["status"] for u, p in out["pages"].items()}
    problems = []
    for url, page in out["pages"].items():
        if page["status"] != 200:
            continue
        assert "script-src 'self'" in page["csp"], f"{url}: no CSP"
        # django-csp adds the nonce to the header only when the page used it.
        m = re.search(r"'nonce-([^']+)'", page["csp"])
        nonce = m.group(1) if m else "\x00no nonce in the header"
        for tag in re.findall(r"<script\b[^>]*>", page["body"], flags=re.I):
            if "src=" in tag or 'type="application/json"' in tag:
                continue  # same-origin script files and JSON data blocks are allowed without a nonce
            if f'nonce="{nonce}"' not in tag:
                problems.append(f"{url}: inline {tag} has no CSP nonce (the browser will block it)")
        if re.search(r"\son(click|load|change|submit|input)=", page["body"], flags=re.I):
            problems.append(f"{url}: inline event handler attribute (blocked by the CSP)")
    assert not problems, "\n".join(problems)


_SPOOF_SCRIPT = textwrap.dedent("""
    import django
    django.setup()
    from django.test import Client
    c = Client(raise_request_exception=False)
    codes = []
    for i in range(11):
        r = c.post("/accounts/login/", {"username": "alice", "password": f"guess-{i}"}, secure=True,
                   HTTP_X_FORWARDED_FOR=f"81.2.69.{i + 1}, 81.2.70.{i + 1}")  # public: ipware skips private ones
        codes.append(r.status_code)
    print("CODES", *codes)
""")


@pytest.mark.django_db(transaction=True)
def test_production_lockout_cannot_be_dodged_with_a_forged_x_forwarded_for(alice):
    proc = subprocess.run([sys.executable, "-c", _SPOOF_SCRIPT], cwd=ROOT, timeout=180, capture_output=True,
                          text=True, env=_prod_env(DATABASE_URL=_database_url()))
    line = next((x for x in proc.stdout.splitlines() if x.startswith("CODES")), None)
    assert line, proc.stderr[-3000:]
    codes = [int(c) for c in line.split()[1:]]
    assert codes[:9] == [200] * 9 and codes[10] in (403, 429), codes


# --- no secrets in the repository ---------------------------------------------------------------

SECRET_PATTERNS = [
    (re.compile(r"-----BEGIN (RSA |EC |OPENSSH |DSA )?PRIVATE KEY-----"), "private key"),
    (re.compile(r"AKIA[0-9A-Z]{16}"), "AWS access key"),
    (re.compile(r"""SECRET_KEY\\s*=\\s*['"][^'"]{20,}['"]"""), "hard-coded SECRET_KEY"),
    (re.compile(r"django-insecure-"), "Django's generated insecure key"),
    (re.compile(r"""(?i)(api[_-]?key|auth[_-]?token|password)\\s*[:=]\\s*['"][A-Za-z0-9+/_\\-]{24,}['"]"""),
     "credential literal"),
]


def test_no_secrets_are_tracked_in_git():
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(b"\\0")
    names = [f.decode() for f in files if f]
    assert not [n for n in names if re.search(r"(^|/)(\\.env|secret_key|.*\\.pem|.*\\.key|id_rsa)$", n)]
    found = []
    for name in names:
        path = ROOT / name
        if not path.is_file() or path.stat().st_size > 2_000_000 or name.startswith("tests/security/"):
            continue
        try:
            text = path.read_text(errors="strict")
        except (UnicodeDecodeError, OSError):
            continue
        for pattern, what in SECRET_PATTERNS:
            if pattern.search(text):
                found.append(f"{name}: {what}")
    assert not found, found


def test_local_secret_key_and_env_files_are_ignored_by_git():
    for path in ("var/secret_key", ".env"):
        proc = subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT)
        assert proc.returncode == 0, f"{path} is not ignored by git"
