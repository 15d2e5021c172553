"""Production settings: ``DJANGO_SETTINGS_MODULE=config.settings.production`` (the Docker image's
default; compose and other deployments name it).

Everything of ``config.settings.base`` (read from the environment), plus the hardening a
clinical deployment needs. Required in the environment: ``SECRET_KEY`` and
``ALLOWED_HOSTS``; in practice also ``DATABASE_URL`` (PostgreSQL) and ``REDIS_URL``.
The service is expected behind a TLS-terminating reverse proxy that sets
``X-Forwarded-Proto`` (and strips it from clients). ``python manage.py check --deploy``
is clean with these settings (tests/security/test_hardening.py runs it).

What each setting protects against is written down in docs/security.md.
"""

from __future__ import annotations

from datetime import timedelta

from csp.constants import NONCE, NONE, SELF
from django.core.exceptions import ImproperlyConfigured

from config.settings.base import *  # noqa: F403
from config.settings.base import INSTALLED_APPS, MIDDLEWARE, env

DEBUG = False
# No defaults: a production key and host list must be given explicitly (an empty one too is refused).
SECRET_KEY = env("SECRET_KEY")
if not SECRET_KEY.strip():
    raise ImproperlyConfigured("SECRET_KEY must be set in production (50 random characters)")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS")

# --- TLS, cookies, headers -----------------------------------------------------
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)  # one year
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=True)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_SECURE = True
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SECURE = True
CSRF_COOKIE_HTTPONLY = True

# --- Sessions: idle timeout ------------------------------------------------------
# A shared ward workstation must not stay logged in: 30 minutes without a request ends
# the session (sliding expiry: every request renews it), and closing the browser too.
SESSION_COOKIE_AGE = env.int("SESSION_COOKIE_AGE", default=30 * 60)
SESSION_SAVE_EVERY_REQUEST = True
SESSION_EXPIRE_AT_BROWSER_CLOSE = True

# --- Passwords ------------------------------------------------------------------
# Longer than Django's default 8 for accounts that open patient records.
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
     "OPTIONS": {"min_length": env.int("PASSWORD_MIN_LENGTH", default=12)}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# --- Login throttling (django-axes) ---------------------------------------------
AXES_ENABLED = True
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=10)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("AXES_COOLOFF_MINUTES", default=15))
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
# The client address for the lockout is patients.audit.client_ip (AXES_CLIENT_IP_CALLABLE in
# config/settings/base.py): REMOTE_ADDR unless CTC_TRUSTED_PROXIES says how many proxies in front
# append to X-Forwarded-For. A forged header cannot give every guess a new "address"
# (tests/security/test_hardening.py, test_hostile_users.py); the API throttles and the
# audit trail use the same rule (docs/security.md).

# --- Content security policy (django-csp) ---------------------------------------
# Scripts only from this origin or inline with the per-request nonce
# (``<script nonce="{{ request.csp_nonce }}">``); Plotly sets inline styles, hence
# 'unsafe-inline' for styles only. Thumbnails/heat maps may be data: URIs.
INSTALLED_APPS = [*INSTALLED_APPS, "csp"]
MIDDLEWARE = [*MIDDLEWARE, "csp.middleware.CSPMiddleware"]
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF, NONCE],
        "style-src": [SELF, "'unsafe-inline'"],
        "img-src": [SELF, "data:", "blob:"],
        "font-src": [SELF, "data:"],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    },
}

# --- API ------------------------------------------------------------------------
REST_FRAMEWORK = {
    **REST_FRAMEWORK,  # noqa: F405
    # No browsable HTML API in production: JSON only (its forms need inline scripts).
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
}
