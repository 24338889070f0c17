# Fresh machine: `make demo` (set up + run the main job on built-in data) or `make test` (set up + run the tests).
# The CPU build of torch is pinned for new machines; a GPU user keeps their own torch with `make TORCH_SPEC= ...`
# (any torch >= 2.4, < 2.14 satisfies the package).
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: setup demo test profile bench lint clean

setup: $(VENV)/.installed
	@echo "$(VENV) is ready: $(BIN)/m2s2l-edge --help"

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	if [ -n "$(TORCH_SPEC)" ]; then $(BIN)/python -m pip install -q "$(TORCH_SPEC)"; fi
	$(BIN)/python -m pip install -q -e ".[onnx,dev]"
	touch $@

demo: setup
	$(BIN)/m2s2l-edge demo

test: setup
	$(BIN)/python -m pytest -q tests

profile: setup
	$(BIN)/m2s2l-edge profile --preset paper --fps

bench: setup
	$(BIN)/m2s2l-edge bench --preset paper

lint: setup
	$(BIN)/ruff check m2s2l_edge export tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
