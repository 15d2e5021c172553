"""Settings every deployment shares, read from the environment (django-environ).

Not used on its own: each command names one of ``config.settings.local`` (``make run``,
``manage.py``, celery, gunicorn, compose by default), ``config.settings.production`` (the Docker
image, a TLS-fronted deployment) or ``config.settings.test`` (pytest). See ``__init__.py``.

With no ``DATABASE_URL`` / ``REDIS_URL`` the *embedded default* serves: SQLite in ``VAR_DIR`` and
kombu's file-system transport as the Celery broker, so ``make run`` works on a bare machine, still
with a real worker process. Importing this module touches no file: the folders that default needs
(``LOCAL_STATE_DIRS``) are created by ``config.local_state.prepare``, which the commands call
(``manage.py``, ``scripts/run_local.py``, gunicorn through ``config.wsgi``, a starting worker).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()
# A .env beside manage.py is read if present (see .env.example); real env wins.
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)
# Local state of the embedded default (SQLite, broker folder, media, the local secret key).
VAR_DIR = Path(env("VAR_DIR", default=str(BASE_DIR / "var")))
#: Folders the configuration below writes into and nothing else creates (SQLite makes its file but
#: not the folder; kombu's file-system transport wants its folders to exist). Filled in below;
#: created by config.local_state.prepare, never at import.
LOCAL_STATE_DIRS: list[Path] = []

DEBUG = env.bool("DEBUG", default=False)
# SECRET_KEY: config.settings.local (a per-checkout key in VAR_DIR), production (required), test.

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI served locally: clinics are often offline
    "simple_history",
    "axes",
    "patients",
    "dashboard",
    "api",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "simple_history.middleware.HistoryRequestMiddleware",
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database ---------------------------------------------------------------
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'ctc.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    if DATABASES["default"]["NAME"] != ":memory:":
        LOCAL_STATE_DIRS.append(Path(DATABASES["default"]["NAME"]).parent)
    # The web server and the worker write concurrently: WAL + a busy timeout.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 30, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"}
    )
else:
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True  # survive a PostgreSQL restart
    # PostgreSQL's JIT compiles plans above jit_above_cost: 0.2-5 s per query on 2 cores for the
    # review/cohort aggregates over millions of cell events, far more than it saves (docs/performance.md).
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault("options", "-c jit=off")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Auth --------------------------------------------------------------------
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"
SESSION_COOKIE_AGE = env.int("SESSION_COOKIE_AGE", default=8 * 3600)
SESSION_EXPIRE_AT_BROWSER_CLOSE = True
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=10)
AXES_COOLOFF_TIME = timedelta(minutes=15)
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
#: Reverse proxies in front of the app that append the client's address to X-Forwarded-For
#: (0: none, the client address is REMOTE_ADDR). One rule (patients.audit.client_ip) for the
#: audit trail, django-axes and the API throttles (docs/security.md).
CTC_TRUSTED_PROXIES = env.int("CTC_TRUSTED_PROXIES", default=0)
AXES_CLIENT_IP_CALLABLE = "patients.audit.client_ip"

# --- i18n / static / media ---------------------------------------------------
LANGUAGE_CODE = "en-gb"
TIME_ZONE = env("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True
STATIC_URL = "/static/"
STATIC_ROOT = env.path("STATIC_ROOT", default=BASE_DIR / "staticfiles")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True  # serve app static (plotly.js) without collectstatic in dev
MEDIA_ROOT = env.path("MEDIA_ROOT", default=VAR_DIR / "media")
MEDIA_URL = "/media/"
# Operations (issue 15.3): uploaded images in an S3-compatible bucket (AWS S3, MinIO, Ceph, ...)
# when S3_BUCKET is set, so workers on other hosts read them; the local MEDIA_ROOT otherwise.
# Workers stream objects to a temporary file per job (patients/storage.py). docs/operations.md.
S3_BUCKET = env("S3_BUCKET", default="")
if S3_BUCKET:
    _s3_endpoint = env("S3_ENDPOINT_URL", default="") or None
    STORAGES["default"] = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": S3_BUCKET,
            "endpoint_url": _s3_endpoint,
            # Empty: boto3's own chain (AWS_ACCESS_KEY_ID, an instance role, ~/.aws).
            "access_key": env("S3_ACCESS_KEY_ID", default="") or None,
            "secret_key": env("S3_SECRET_ACCESS_KEY", default="") or None,
            "region_name": env("S3_REGION", default="") or None,
            "location": env("S3_PREFIX", default="media"),
            # Path-style URLs for self-hosted servers (MinIO and friends rarely have wildcard DNS).
            "addressing_style": env("S3_ADDRESSING_STYLE", default="path" if _s3_endpoint else "auto"),
            "file_overwrite": False,  # upload_file_path names are unique anyway; never replace an image
            "default_acl": None,  # private, the bucket's policy decides
            "querystring_auth": True,
        },
    }

# --- Uploads -----------------------------------------------------------------
UPLOAD_MAX_BYTES = env.int("UPLOAD_MAX_BYTES", default=512 * 1024 * 1024)
UPLOAD_MAX_FILES = env.int("UPLOAD_MAX_FILES", default=2000)
DATA_UPLOAD_MAX_NUMBER_FILES = UPLOAD_MAX_FILES
FILE_UPLOAD_MAX_MEMORY_SIZE = 4 * 1024 * 1024

# --- Cache -------------------------------------------------------------------
# Shared by every web process: the token endpoint's throttle counts (per process, three
# gunicorn workers would allow three times the rate) and the cohort/review page caches.
REDIS_URL = env("REDIS_URL", default="")
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL,
                          "KEY_PREFIX": env("CACHE_KEY_PREFIX", default="ctc")}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
                          "LOCATION": str(VAR_DIR / "cache")}}

# --- Celery ------------------------------------------------------------------
if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
else:
    # Embedded default: a broker that needs no server (kombu filesystem transport).
    _broker = VAR_DIR / "broker"
    LOCAL_STATE_DIRS += [_broker / "out", _broker / "processed", _broker / "control"]
    # The host part means nothing to this transport; naming one keeps kombu from warning
    # "No hostname was supplied" on every connection.
    CELERY_BROKER_URL = "filesystem://localhost/"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker / "out"),
        "data_folder_out": str(_broker / "out"),
        "data_folder_processed": str(_broker / "processed"),
        # Exchange tables; kombu's default is "control" in the working directory.
        "control_folder": str(_broker / "control"),
        "store_processed": False,
    }
CELERY_TASK_DEFAULT_QUEUE = env("CELERY_QUEUE", default="ctc")
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True  # state lives in the database, not a result backend
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True  # a killed worker's job goes back to the queue
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=3600)
CELERY_TASK_SOFT_TIME_LIMIT = CELERY_TASK_TIME_LIMIT - 60
if REDIS_URL:
    # Must exceed the longest job, or Redis re-delivers a job that is still running.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_TASK_TIME_LIMIT + 600}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BEAT_SCHEDULE = {
    "requeue-stale-uploads": {
        "task": "patients.tasks.requeue_stale_uploads",
        "schedule": env.float("UPLOAD_SWEEP_INTERVAL_S", default=60.0),  # seconds; the fault tests use ~2
    },
}
#: An upload queued (or running without a heartbeat) this long is re-queued by the sweep.
UPLOAD_STALE_AFTER = timedelta(seconds=env.int("UPLOAD_STALE_AFTER_S", default=300))

# --- Operations (issue 15): priority lanes and recovery without a scheduler ----------------
#: Bulk work (demo seeding, imports, re-runs, training) goes to its own queue; interactive
#: uploads (dashboard, API) to CELERY_QUEUE. `make run` / `make worker` consume both, interactive
#: first: Redis pops the queues in the order given (queue_order_strategy "priority"); the
#: embedded file-system broker alternates between them (at most one bulk job ahead).
#: Empty: "<the default queue>-bulk"; a worker started with `-Q ctc` also consumes "ctc-bulk",
#: after "ctc" (config/celery_app.py).
CELERY_BULK_QUEUE = env("CELERY_BULK_QUEUE", default="")
if REDIS_URL:
    CELERY_BROKER_TRANSPORT_OPTIONS = {**CELERY_BROKER_TRANSPORT_OPTIONS, "queue_order_strategy": "priority"}
#: A running job's worker writes its heartbeat this often (a thread, whatever stage it is in) ...
UPLOAD_HEARTBEAT_S = env.float("UPLOAD_HEARTBEAT_S", default=10.0)
#: ... and any worker reclaims a job whose heartbeat is older than this (owner on another host
#: gone), or at once when the owner was on this host and its process is gone.
UPLOAD_OWNER_STALE_AFTER = timedelta(seconds=env.float("UPLOAD_OWNER_STALE_S", default=45.0))
#: Every worker runs the reclaim at start and then this often (0 = never; beat's sweep remains).
UPLOAD_RECLAIM_INTERVAL_S = env.float("UPLOAD_RECLAIM_INTERVAL_S", default=15.0)

# --- Classifier --------------------------------------------------------------
#: "cpu" forces the CPU even when CUDA is available; empty = CUDA when present.
CLASSIFIER_DEVICE = env("CLASSIFIER_DEVICE", default="")
CLASSIFIER_WEIGHTS = env("CLASSIFIER_WEIGHTS", default="")  # empty = shipped weights
#: torch threads in each worker process (0 = torch's default, one per core); see config/celery_app.py.
CLASSIFIER_THREADS = env.int("CLASSIFIER_THREADS", default=1)

# --- Clinical defaults -------------------------------------------------------
#: Interval between draws for patients outside a trial; a draw is overdue after it plus grace.
DEFAULT_DRAW_INTERVAL_DAYS = env.int("DEFAULT_DRAW_INTERVAL_DAYS", default=28)
DRAW_GRACE_DAYS = env.int("DRAW_GRACE_DAYS", default=7)

# --- REST framework ----------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_THROTTLE_RATES": {"token": env("TOKEN_THROTTLE_RATE", default="20/min")},
    "NUM_PROXIES": CTC_TRUSTED_PROXIES,  # DRF's own throttles: the same rule as patients.audit.client_ip
    # JSON bodies nested past api.parsers.MAX_DEPTH are a 400 (Python's decoder raised RecursionError: 500).
    "DEFAULT_PARSER_CLASSES": [
        "api.parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
}
SPECTACULAR_SETTINGS = {
    "TITLE": "CTC Monitor API",
    "DESCRIPTION": "Circulating tumor cell monitoring: patients, draws, imaging uploads, cell calls, FHIR export.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "CallEnum": "api.enums.CALL",
        "UploadKindEnum": "api.enums.UPLOAD_KIND",
        "ClinicalEventKindEnum": "api.enums.CLINICAL_EVENT_KIND",
        "UploadStatusEnum": "api.enums.UPLOAD_STATUS",
        "SummaryStatusEnum": "api.enums.SUMMARY_STATUS",
        "DomainStatusEnum": "api.enums.DOMAIN_STATUS",
    },
}

# --- Cookies (config.settings.production adds TLS, HSTS, secure cookies, CSP) ---------------
SESSION_COOKIE_HTTPONLY = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    # A refused request (403 PermissionDenied, 400) is one warning line, not a traceback; 5xx keep theirs.
    "filters": {"client_errors_one_line": {"()": "config.logging_filters.ClientErrorsWithoutTraceback"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "django.request": {"filters": ["client_errors_one_line"]},
    },
}
