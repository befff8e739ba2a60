# pgaasctl developer entry points. GNU make.
#   make setup   system packages (PostgreSQL 15, chromium), .venv, editable install, npm assets; idempotent
#   make test    the whole suite, two xdist workers (each starts its own PostgreSQL)
#   make demo    scripts/demo.sh
#   make clean   drop local state databases

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := test

PYTHON3 ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
PIP     := $(PY) -m pip
PYTEST  := $(VENV)/bin/pytest
STAMP   := $(VENV)/.installed
PG_BIN  := /usr/lib/postgresql/15/bin
PG_PKGS := postgresql-15 postgresql-client-15 postgresql-15-repmgr openssh-server openssh-client keepalived iproute2 curl chromium apache2-utils git sudo util-linux
XDIST_WORKERS ?= 2

NODE_STAMP := node_modules/.installed

.PHONY: setup system-packages test demo clean

setup: system-packages $(STAMP) $(NODE_STAMP)
	@# bytecode for our own modules: where PYTHONDONTWRITEBYTECODE is set, every command would compile them anew
	@$(PY) -m compileall -q pgaasctl providers >/dev/null

# PostgreSQL 15, repmgr and sshd from Debian (provider local runs a sshd and a
# PostgreSQL per node). Installing postgresql-15 also creates and starts a
# "main" cluster on localhost:5432; nothing here uses it.
system-packages:
	@missing=""; \
	for p in $(PG_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" -ne 0 ]; then \
	  echo "missing packages:$$missing. As root, run:" >&2; \
	  echo "  apt-get update && apt-get install -y$$missing" >&2; \
	  exit 1; \
	fi; \
	echo "installing$$missing"; \
	apt-get update -q; \
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing

$(PY):
	$(PYTHON3) -m venv $(VENV)

# Reinstall only when pyproject.toml is newer than the stamp.
$(STAMP): pyproject.toml | $(PY)
	$(PIP) install -q -e '.[test]'
	touch $@

# The console's browser assets (htmx, Pico CSS, uPlot) and axe-core for its tests, at the versions
# package-lock.json pins; served from node_modules by `pgaasctl serve`.
$(NODE_STAMP): package.json package-lock.json
	@if ! command -v npm >/dev/null; then \
	  if [ "$$(id -u)" -ne 0 ]; then echo "npm is missing. As root, run: apt-get install -y nodejs npm" >&2; exit 1; fi; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs npm; \
	fi
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

test: setup
	$(PYTEST) -n $(XDIST_WORKERS) tests

demo: setup
	bash scripts/demo.sh

clean:
	rm -f state/*.db
