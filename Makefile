# One-command entry points: `make demo` (set up, build, run the main job) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# CPU wheel of torch (a looser pin pulls the multi-GB CUDA build).
TORCH := torch==2.13.0

.PHONY: setup demo test bench clean tinyproxy

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.deps: $(BIN)/python
	$(BIN)/pip install --quiet $(TORCH) pybind11 scikit-build-core ninja cmake
	touch $@

# Rebuilt whenever the C++ sources, the build files or the package change.
$(VENV)/.installed: $(VENV)/.deps pyproject.toml CMakeLists.txt $(wildcard csrc/*) $(shell find python -name "*.py")
	$(BIN)/pip install --quiet --no-build-isolation -e ".[test]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/warpload generate --model gpt2 --ids "464,2068,7586,21831" --max-new-tokens 8
	$(BIN)/warpload bench --repeat 3

# The hub tests' HTTP proxy is tinyproxy, from Debian's packages: installed when missing and apt-get
# can run (root, as on CI); elsewhere the proxy tests skip saying how to install it (on CI they fail).
tinyproxy:
	@command -v tinyproxy >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tinyproxy >/dev/null; } || \
		echo "tinyproxy not installed: the proxy tests will skip (apt-get install tinyproxy)"

# lint-imports checks the package's layers and that no module imports in a circle (pyproject's contracts).
test: setup tinyproxy
	$(BIN)/lint-imports
	$(BIN)/python -m pytest tests -q

bench: setup
	$(BIN)/pip install --quiet ".[bench]" --no-build-isolation
	$(BIN)/warpload bench --model gpt2-medium

clean:
	rm -rf build $(VENV)
