# Kensa's front door: `make run` starts the whole app on this machine, `make test` runs the test suite.
# `make help` lists every target.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
export PYTHON VENV

# Every command that runs the app's Python works without network access to the Hugging Face Hub.
export HF_HUB_OFFLINE := 1

# Extra arguments for pytest, e.g. `make test PYTEST_ARGS="-k intake -x"`.
PYTEST_ARGS ?=
TEST_ENV := HF_HUB_OFFLINE=1 DJANGO_ALLOW_ASYNC_UNSAFE=true

.PHONY: help venv venv-run system-packages system-packages-test run test test-sqlite test-postgres test-all test-gpu \
	lint format clean-venv

help: ## list the targets
	@grep -E '^[a-z][a-zA-Z_-]*:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-22s %s\n", $$1, $$2}'

# Stamps: pip runs again only when a requirements file is newer than the last successful install.
# The dev requirements include the runtime ones, so installing them refreshes both stamps.
$(VENV)/.installed: requirements.txt scripts/install_venv.sh
	scripts/install_venv.sh requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt scripts/install_venv.sh
	scripts/install_venv.sh requirements-dev.txt
	touch $@ $(VENV)/.installed

venv: $(VENV)/.installed-dev ## .venv with Python 3.11, runtime and development requirements

venv-run: $(VENV)/.installed ## .venv with the runtime requirements only

system-packages: ## redis-server from apt, when missing
	scripts/install_system_packages.sh

system-packages-test: ## redis-server and chromium from apt, when missing
	scripts/install_system_packages.sh --test

run: venv-run system-packages ## migrate, then run redis, Celery workers and the web server on http://127.0.0.1:8000
	HF_HUB_OFFLINE=1 $(PY) scripts/run_all.py

test: venv system-packages-test ## lint checks, every test but the slow ones on SQLite, then the app's on PostgreSQL
	$(PY) scripts/check_env_example.py
	$(PY) -m ruff check .
	$(TEST_ENV) $(PY) -m pytest -m "not slow" $(PYTEST_ARGS)
	$(MAKE) --no-print-directory test-postgres

test-sqlite: venv system-packages-test ## every test but the slow ones, on SQLite only
	$(TEST_ENV) $(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

# The database-backed tests again on PostgreSQL, the database of a fleet of workers: the web app, workers and
# browser tests (tests/ml never touches a database). scripts/ensure_postgres.sh uses a server already on
# 127.0.0.1:5432 or starts Debian's (installing it when missing) and prints the database's URL.
test-postgres: venv system-packages-test ## the web app's tests (not slow) on PostgreSQL
	url=$$(scripts/ensure_postgres.sh); \
		KENSA_TEST_DATABASE_URL=$$url $(TEST_ENV) $(PY) -m pytest -m "not slow" tests/webapp tests/browser $(PYTEST_ARGS)

test-all: venv system-packages-test ## lint checks, then every test including slow ones
	$(PY) scripts/check_env_example.py
	$(PY) -m ruff check .
	$(TEST_ENV) $(PY) -m pytest $(PYTEST_ARGS)

# The tests marked gpu: skipped wherever torch sees no CUDA GPU (make test included), and refused here without one
# rather than passing with every test skipped. No venv prerequisite: on a machine with its own CUDA torch (no
# network to build .venv) run it with that Python, e.g. `make test-gpu PY=python3` (scripts/gpu_check.sh does).
test-gpu: ## the tests marked gpu (needs a CUDA GPU)
	$(PY) -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'make test-gpu: torch sees no CUDA GPU')"
	$(TEST_ENV) $(PY) -m pytest -m gpu $(PYTEST_ARGS)

lint: venv ## ruff check and format check
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: venv ## ruff fix and format
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

clean-venv: ## delete .venv (the next make target rebuilds it)
	rm -rf $(VENV)
