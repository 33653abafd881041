# Testimony Portal — developer commands. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The server alone (no test tools): what `make run` installs.
RUN_STAMP := $(VENV)/.installed-run
APT_PACKAGES := age jq chromium chromium-driver fonts-noto-cjk nodejs npm media-types gnupg tor iproute2
SERVER_APT_PACKAGES := nginx libnginx-mod-http-headers-more-filter
# The container tests (tests/test_container.py): podman with runc, its
# network and init helpers, and mmdebstrap for the stand-in base image.
CONTAINER_APT_PACKAGES := podman runc netavark aardvark-dns catatonit iptables uidmap mmdebstrap
NGINX_MODULE := /usr/lib/nginx/modules/ngx_http_headers_more_filter_module.so
NODE_ORACLE := tests/node_oracle
NODE_ORACLE_STAMP := $(NODE_ORACLE)/node_modules/.installed

.PHONY: help run test test-fast bench lint format system-deps server-deps wheel wheelhouse clean lock pin-base

help: ## list the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@ $(RUN_STAMP)

$(RUN_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e .
	touch $@

server-deps: ## install the Debian packages the server needs (nginx, in front of the app)
	@missing=""; \
	{ command -v nginx || test -x /usr/sbin/nginx; } >/dev/null || missing="$$missing nginx"; \
	test -f $(NGINX_MODULE) || missing="$$missing libnginx-mod-http-headers-more-filter"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	  if command -v systemctl >/dev/null && systemctl is-enabled nginx >/dev/null 2>&1; then \
	    echo "the portal runs its own nginx: disabling the system nginx service that was just installed"; \
	    $$SUDO systemctl disable --now nginx >/dev/null 2>&1 || true; \
	  fi; \
	fi

system-deps: server-deps ## install the Debian packages the server and the tests use (nginx, age CLI, jq, Chromium, CJK fonts, node, MIME table, mkfs.vfat, tor, ss, exiftool, mat2, podman, mmdebstrap)
	@missing=""; \
	command -v age >/dev/null || missing="$$missing age"; \
	command -v jq >/dev/null || missing="$$missing jq"; \
	command -v node >/dev/null || missing="$$missing nodejs"; \
	command -v npm >/dev/null || missing="$$missing npm"; \
	command -v chromium >/dev/null || missing="$$missing chromium chromium-driver"; \
	dpkg -s fonts-noto-cjk >/dev/null 2>&1 || missing="$$missing fonts-noto-cjk"; \
	[ -f /etc/mime.types ] || missing="$$missing media-types"; \
	command -v gpg >/dev/null || missing="$$missing gnupg"; \
	dpkg -s dosfstools >/dev/null 2>&1 || missing="$$missing dosfstools"; \
	command -v tor >/dev/null || missing="$$missing tor"; \
	command -v ss >/dev/null || missing="$$missing iproute2"; \
	command -v exiftool >/dev/null || missing="$$missing libimage-exiftool-perl"; \
	command -v mat2 >/dev/null || missing="$$missing mat2"; \
	for package in $(CONTAINER_APT_PACKAGES); do \
	  dpkg -s $$package >/dev/null 2>&1 || missing="$$missing $$package"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	  if case "$$missing" in *" tor"*) true;; *) false;; esac && command -v systemctl >/dev/null \
	     && systemctl is-enabled tor >/dev/null 2>&1; then \
	    echo "the tests run their own private Tor network: disabling the system tor service that was just installed"; \
	    $$SUDO systemctl disable --now tor >/dev/null 2>&1 || true; \
	  fi; \
	fi

run: server-deps $(RUN_STAMP) ## set up and start the portal on http://127.0.0.1:8080 (demo key if none configured)
	@set -e; \
	if [ -z "$$PORTAL_RECIPIENTS" ] && ! grep -q '^age1' keys/recipients.txt; then \
	  if [ ! -s instance/demo-keys/recipients.txt ]; then \
	    mkdir -p instance/demo-keys instance/demo-reviewer; chmod 700 instance/demo-reviewer; \
	    $(BIN)/testimony-review keygen --no-passphrase --out instance/demo-reviewer/identity.txt \
	      > instance/demo-keys/recipients.txt 2> instance/demo-reviewer/keygen.log \
	      || { cat instance/demo-reviewer/keygen.log >&2; exit 1; }; \
	  fi; \
	  export PORTAL_RECIPIENTS=instance/demo-keys/recipients.txt; \
	  echo "*** DEMO KEY: keys/recipients.txt has no recipients, so a throwaway demo identity is in"; \
	  echo "*** instance/demo-reviewer/identity.txt. It is NOT for real testimony: its private key"; \
	  echo "*** sits on this machine. Decrypt what you submit with:"; \
	  echo "***   $(BIN)/testimony-review open $${PORTAL_DATA_DIR:-instance/data} --identity instance/demo-reviewer/identity.txt --out instance/opened --custody instance/demo-reviewer/custody.jsonl"; \
	fi; \
	if [ -z "$$PORTAL_REPLY_SIGNERS" ] && ! grep -q '^testimony-reply-signer-' keys/reply-signers.txt; then \
	  if [ ! -s instance/demo-keys/reply-signers.txt ]; then \
	    mkdir -p instance/demo-keys instance/demo-reviewer; chmod 700 instance/demo-reviewer; \
	    $(BIN)/testimony-review keygen --signing --no-passphrase --out instance/demo-reviewer/reply-signing-key.txt \
	      > instance/demo-keys/reply-signers.txt 2> instance/demo-reviewer/keygen-signing.log \
	      || { cat instance/demo-reviewer/keygen-signing.log >&2; exit 1; }; \
	  fi; \
	  export PORTAL_REPLY_SIGNERS=instance/demo-keys/reply-signers.txt; \
	  echo "*** DEMO REPLY SIGNING KEY: keys/reply-signers.txt lists no signer, so a throwaway demo"; \
	  echo "*** signing key is in instance/demo-reviewer/reply-signing-key.txt (NOT for real replies)."; \
	  echo "*** Sign replies with: $(BIN)/testimony-review reply ID --from instance/opened --message-file MSG --out OUTBOX --signing-key instance/demo-reviewer/reply-signing-key.txt"; \
	fi; \
	exec $(BIN)/testimony-portal serve

# The age authors' TypeScript age (npm age-encryption), pinned by the committed
# package-lock.json: the post-quantum interoperability oracle.
$(NODE_ORACLE_STAMP): $(NODE_ORACLE)/package.json $(NODE_ORACLE)/package-lock.json
	npm ci --prefix $(NODE_ORACLE) --no-audit --no-fund --loglevel=error
	touch $@

test: system-deps $(STAMP) $(NODE_ORACLE_STAMP) ## set up and run every test (unit, server, browser, interop)
	$(BIN)/python -m pytest

test-fast: $(STAMP) ## the tests without the real browser and the slow server runs
	$(BIN)/python -m pytest -m "not browser and not slow"

bench: $(STAMP) system-deps ## the speed table of issue 14 (portal vs references, ratios), then the other benchmarks (takes minutes)
	$(BIN)/python bench/bench_speed.py
	$(BIN)/python bench/profile_submission.py
	$(BIN)/python bench/bench_age_writer.py
	$(BIN)/python bench/bench_upload.py
	$(BIN)/python bench/bench_open.py
	$(BIN)/python bench/load.py --attack
	$(BIN)/python bench/page_weight.py
	$(BIN)/python bench/bench_pq.py
	$(BIN)/python bench/bench_nodes.py
	$(BIN)/python bench/bench_tor_flood.py
	$(BIN)/python bench/bench_desk.py

lint: $(STAMP) ## ruff (lint and format check) and mypy
	$(BIN)/ruff check portal tests bench
	$(BIN)/ruff format --check portal tests bench
	$(BIN)/mypy

format: $(STAMP) ## apply ruff's formatting
	$(BIN)/ruff format portal tests bench
	$(BIN)/ruff check --fix portal tests bench

wheel: $(STAMP) ## build the wheel into dist/
	$(BIN)/python -m build --wheel --outdir dist .

# The image's Python packages, pinned by hash (the Dockerfile installs them
# with --require-hashes). Run after changing pyproject.toml's dependencies.
# The machine's own pip settings (local indexes, constraints) are left out,
# so the hashes are PyPI's.
PIP_COMPILE := env -u PIP_FIND_LINKS -u PIP_CONSTRAINT -u PIP_EXTRA_INDEX_URL PIP_CONFIG_FILE=/dev/null \
	CUSTOM_COMPILE_COMMAND="make lock" \
	$(BIN)/pip-compile --quiet --generate-hashes --strip-extras --allow-unsafe --no-emit-index-url --no-emit-find-links
lock: $(STAMP) ## regenerate requirements.lock and requirements-build.lock (hashes) from pyproject.toml
	$(BIN)/pip install --quiet pip-tools
	$(PIP_COMPILE) --upgrade --extra s3 --output-file requirements.lock pyproject.toml
	$(PIP_COMPILE) --upgrade --output-file requirements-build.lock requirements-build.in

# The Dockerfile's base image, pinned by digest: the digest the registry
# gives for python:3.11-slim today (needs skopeo and registry access).
BASE_IMAGE := docker.io/library/python:3.11-slim
pin-base: ## rewrite the Dockerfile's BASE to python:3.11-slim's current digest
	@digest=$$(skopeo inspect --format '{{.Digest}}' docker://$(BASE_IMAGE)) && \
	  test -n "$$digest" && \
	  sed -i "s|^ARG BASE=.*|ARG BASE=$(BASE_IMAGE)@$$digest|" Dockerfile && \
	  grep '^ARG BASE=' Dockerfile

WHEELHOUSE ?= wheelhouse
wheelhouse: $(STAMP) ## folder of wheels to install the reviewer tool offline (pip install --no-index)
	rm -rf $(WHEELHOUSE)
	$(BIN)/pip wheel --quiet --wheel-dir $(WHEELHOUSE) .
	@echo "$(WHEELHOUSE)/ ready: on the offline machine run"
	@echo "  python3 -m venv review-env && review-env/bin/pip install --no-index --find-links $(WHEELHOUSE) testimony-portal"

clean: ## remove the virtualenv and build output (keeps instance/)
	rm -rf $(VENV) dist build wheelhouse .pytest_cache .mypy_cache .ruff_cache $(NODE_ORACLE)/node_modules
