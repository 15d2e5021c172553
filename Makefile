# The two commands of the README: `make run` and `make test`. Everything else helps them.
SHELL := /bin/bash
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Tests and `make worker` with Redis/PostgreSQL use these unless the environment says otherwise.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/ctc
TEST_REDIS_URL ?= redis://127.0.0.1:6379/0
# Settings module of run / worker / seed (config/settings/local.py; DJANGO_SETTINGS_MODULE overrides).
# `make test` uses config.settings.test, named in pyproject.toml.
LOCAL := DJANGO_SETTINGS_MODULE=$${DJANGO_SETTINGS_MODULE:-config.settings.local}

.PHONY: install run serve worker training-worker seed test lint bench clean

install: $(STAMP)

$(STAMP): requirements/lock.txt
	@command -v $(PY) >/dev/null || { echo "Python 3.11 is required ($(PY) not found)"; exit 1; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements/lock.txt
	touch $(STAMP)

# Set up, serve on :8000 with a worker, seed the demo cohort (classified by that worker). Ctrl-C stops all.
run: install
	$(LOCAL) $(BIN)/python manage.py migrate --noinput
	$(LOCAL) $(BIN)/python scripts/run_local.py

# One more worker with the same settings as `make run` (scale out, or restart one by hand). It serves
# both lanes (ctc, then ctc-bulk) and at start takes back any job whose worker died (no beat needed).
worker: install
	$(LOCAL) $(BIN)/celery -A config worker --loglevel=INFO --concurrency=1 -Q $${CELERY_QUEUE:-ctc}

# The lab-model training / shadow worker (queue "training"); `make run` starts one already.
training-worker: install
	$(LOCAL) $(BIN)/celery -A config worker --loglevel=INFO --concurrency=1 -Q $${CELERY_TRAINING_QUEUE:-training} -n training@%h

seed: install
	$(LOCAL) $(BIN)/python manage.py seed_demo

test: install
	DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} REDIS_URL=$${REDIS_URL:-$(TEST_REDIS_URL)} \
	  $(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .

bench: install
	$(BIN)/python -m bench.classifier
	$(BIN)/python -m bench.pipeline
	$(BIN)/python -m bench.dashboard

clean:
	rm -rf $(VENV) var staticfiles
