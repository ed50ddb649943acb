# realtime-relay: `make run` and `make test` work on a fresh clone (README.md).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
PYTEST_ARGS ?=

# System packages for the audio and browser tiers and the deploy checks, and the C compiler and headers the native
# record writer is built with (Debian).
SYSTEM_PACKAGES := pulseaudio pulseaudio-utils libportaudio2 libasound2-plugins espeak-ng sox chromium nginx-light systemd openssl nodejs gcc libc6-dev python3-dev

.PHONY: run test system-deps lint bench clean venv install install-test lock lowest

# setuptools too: `bench.ab` builds the native record writer in the trees it compares with the venv's own, and
# pyproject's SPDX license needs 77 or later (a fresh venv may have an older one).
$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip 'setuptools>=77'

# Installs are pinned by requirements/constraints.txt, the exact versions CI and the Docker image use
# (docs/configuration.md); the tier tools of requirements/ci.txt are CI's, not extras of the package.
CONSTRAINTS := requirements/constraints.txt

$(VENV)/.installed: $(PY) pyproject.toml setup.py relay/eventlog/_flatrecord.c relay/links/_wsframes.c relay/recording/_intake.c $(CONSTRAINTS)
	$(PIP) install --quiet --constraint $(CONSTRAINTS) -e .
	touch $@

$(VENV)/.installed-test: $(PY) pyproject.toml setup.py relay/eventlog/_flatrecord.c relay/links/_wsframes.c relay/recording/_intake.c $(CONSTRAINTS) requirements/ci.txt
	$(PIP) install --quiet --constraint $(CONSTRAINTS) -e '.[test,dev]' -r requirements/ci.txt
	touch $(VENV)/.installed $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

run: install
	$(VENV)/bin/realtime-relay serve

# As root on Debian, install the tiers' system parts first; elsewhere those tiers skip with a reason.
# System packages first: the install builds the native record writer with the C compiler they bring.
test:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then $(MAKE) --no-print-directory system-deps; fi
	@$(MAKE) --no-print-directory install-test
	$(PY) -m pytest $(PYTEST_ARGS)

system-deps:
	@missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	else echo "system packages present"; fi

lint: install-test
	$(VENV)/bin/ruff check relay audio tests bench
	$(VENV)/bin/mypy

BENCH_ARGS ?=
bench: install-test
	$(PY) -m bench $(BENCH_ARGS)

# Re-resolve requirements/constraints.txt: the newest versions pyproject.toml and requirements/ci.txt allow.
lock:
	rm -rf build/lock-venv && $(PYTHON) -m venv build/lock-venv
	build/lock-venv/bin/pip install --quiet --upgrade pip
	build/lock-venv/bin/pip install --quiet '.[test,dev]' -r requirements/ci.txt
	{ sed -n '/^#/p' $(CONSTRAINTS); build/lock-venv/bin/pip freeze --exclude-editable | grep -v '^realtime-relay'; } > $(CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS) && rm -rf build/lock-venv

# The lowest versions pyproject.toml allows, in a fresh venv: serve, an SDK turn and the upstream link's tests.
lowest:
	.ci/lowest-versions

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache tests/artifacts
	find relay -name '*.so' -delete
