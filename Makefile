# make demo / make test on a fresh machine: Python 3.11+ and make are all they assume.
# The environment is created from the lock file (uv.lock) by uv, itself installed
# into a private tools venv so that nothing global is touched.
PYTHON ?= python3
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)
export LITELLM_LOCAL_MODEL_COST_MAP := True
export LITELLM_TELEMETRY := False

.PHONY: env demo test bench lint dashboard dist clean validate

# Every folder of Python we write is linted (ruff, line length 100 included).
LINTED := amm telemetry analytics dashboards benchmarks tests examples

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check 'uv>=0.5,<1'

$(VENV)/.synced: $(UV) uv.lock pyproject.toml
	$(UV) sync --frozen --extra dev --python $(PYTHON)
	touch $@

env: $(VENV)/.synced

demo: env
	$(VENV)/bin/amm demo
	@echo
	@echo "Open the report on this store:  $(VENV)/bin/amm dashboard"

# Includes tests/test_packaging.py: the wheel built and installed into fresh venvs
# (about a minute with uv's cache warm from `make env`; PyPI for what it lacks).
test: env
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/mypy
	$(VENV)/bin/python -m pytest -q

bench: env
	$(VENV)/bin/python -m benchmarks

lint: env
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/mypy

# The A/B and degradation simulations at full size (1,000 runs per row; ~15 min).
validate: env
	$(VENV)/bin/python -m analytics.validate > docs/validation.md
	@cat docs/validation.md

dashboard: env
	$(VENV)/bin/amm dashboard

# The wheel and sdist of amm-sdk, in dist/.
dist: $(UV)
	$(UV) build --out-dir dist

clean:
	rm -rf $(VENV) $(TOOLS) data dist .pytest_cache
