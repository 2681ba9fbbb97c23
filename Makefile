# The two commands of the README: `make demo` and `make test`. Both create .venv on demand.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch first, pinned to the CPU build (a looser requirement pulls a multi-GB CUDA build)
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: demo test install lint typecheck pytest bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q ".[dev]"
	touch $(STAMP)

# Install the package itself (not editable): tests and mypy run against what a user installs.
# The twin's engine is compiled with mypyc (setup.py); without a C compiler it stays Python.
install: $(STAMP)
	TAKTLINE_COMPILE=1 $(BIN)/pip install -q --no-deps --force-reinstall . \
	  || (echo "taktline: compiling the twin failed; installing it as pure Python" >&2 \
	      && $(BIN)/pip install -q --no-deps --force-reinstall .)

demo: install
	cd $(CURDIR) && $(abspath $(BIN))/taktline demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	cd /tmp && $(abspath $(BIN))/mypy --config-file $(abspath pyproject.toml) -p taktline.envs -p taktline.serving -p taktline.agents

# make install compiles the twin, so a test run here expects the compiled engine (not a fallback).
# The plant view's browser test needs Debian's chromium and chromium-driver: installed here when
# missing and running as root; where that fails the test skips and says why.
pytest: install
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null \
	  || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	       && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null 2>&1; } \
	  || echo "taktline: chromium/chromium-driver not installed; the browser test will skip" >&2
	TAKTLINE_REQUIRE_COMPILED=1 $(BIN)/python -m pytest -q -p no:cacheprovider --timeout=900

test: lint typecheck pytest

bench: install
	$(BIN)/python bench/bench_twin.py

clean:
	rm -rf $(VENV) build dist *.egg-info
