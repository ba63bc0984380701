# kubeslim: the two commands a newcomer needs are `make demo` and `make test`.
# Each area keeps its targets in hack/make/<area>.mk; the dev environment's are in devenv/*.mk
# (devenv/README.md: what it produces and guarantees).
SHELL := /bin/bash
.DEFAULT_GOAL := help
REPO := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
VENV := $(REPO)/.venv
PY := $(VENV)/bin/python
export KUBESLIM_CACHE ?= $(HOME)/.cache/kubeslim
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help
help:
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | sort

# The venv is rebuilt when the packaging changes.
$(VENV)/.installed: pyproject.toml hack/dev/pyproject.toml
	@hack/host-packages.sh
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[operator,job,dev]'
	@# kubeslim_dev (hack/dev): the helpers tests, demo and benchmarks share; in no image.
	$(PY) -m pip install -q -e hack/dev
	@# paddleslim 2.6.0 pins opencv-python==4.6 and more; its real imports are in the job extra.
	$(PY) -m pip install -q --no-deps paddleslim==2.6.0
	@# The model zoo's architecture code (hack/dev/kubeslim_dev/zoo.py); their pins would downgrade numpy.
	$(PY) -m pip install -q --no-deps paddledet==2.6.0 paddleclas==2.6.0
	@touch $@

.PHONY: venv host-packages
host-packages: ## install the Debian packages the tests need (libgomp1, python3-venv, ...), only those missing
	@hack/host-packages.sh

venv: $(VENV)/.installed ## create .venv with the operator, job and dev dependencies

include $(wildcard devenv/*.mk hack/make/*.mk)

.PHONY: test test-unit
test: venv host-packages ## every test tier: unit, cluster (real control plane + S3), e2e (real pods, real Paddle); starts the devenv if needed
	$(PY) -m pytest tests -p no:cacheprovider $(PYTEST_ARGS)

test-unit: venv host-packages ## pure-function tests only (no devenv)
	$(PY) -m pytest tests -m unit -p no:cacheprovider $(PYTEST_ARGS)
