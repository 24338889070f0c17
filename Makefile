# Fresh machine: `make demo` (set up + run the main job on built-in data) or `make test` (set up + run the tests).
# The CPU build of torch is pinned for new machines; a GPU user keeps their own torch with `make TORCH_SPEC= ...`
# (any torch >= 2.4, < 2.14 satisfies the package).
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
# A second, isolated venv for a real Triton server on the CPU (tests/test_triton_server.py, benchmarks/bench_serving.py):
# nvidia-pytriton ships tritonserver 2.51 with the Python backend, and needs numpy < 2. The server's Python model
# imports our package (installed without its dependencies) and runs the ONNX in onnxruntime.
TRITON_VENV ?= .venv-triton
TRITON_SPEC ?= nvidia-pytriton==0.7.0

.PHONY: setup triton-env ort-op demo test profile bench lint clean

setup: $(VENV)/.installed
	@echo "$(VENV) is ready: $(BIN)/m2s2l-edge --help"

# Each step says what it does and pip shows its progress (a first install takes a few minutes).
$(VENV)/.installed: pyproject.toml
	@echo "[1/4] creating $(VENV)"
	$(PYTHON) -m venv $(VENV)
	@echo "[2/4] upgrading pip"
	$(BIN)/python -m pip install -q --upgrade pip
	@echo "[3/4] installing PyTorch ($(or $(TORCH_SPEC),your own: TORCH_SPEC is empty))"
	if [ -n "$(TORCH_SPEC)" ]; then $(BIN)/python -m pip install "$(TORCH_SPEC)"; fi
	@echo "[4/4] installing m2s2l-edge and its dependencies (onnx, watch, ui, serve, dev extras)"
	$(BIN)/python -m pip install -e ".[onnx,watch,ui,serve,dev]"
	$(BIN)/python -c "import m2s2l_edge, torch; print('m2s2l-edge', m2s2l_edge.__version__, 'with torch', torch.__version__)"
	touch $@

triton-env: $(TRITON_VENV)/.installed
	@echo "$(TRITON_VENV) is ready: tritonserver for m2s2l-edge serve local and tests/test_triton_server.py"

$(TRITON_VENV)/.installed: pyproject.toml
	@echo "building $(TRITON_VENV): tritonserver from the nvidia-pytriton wheel (about 0.5 GB)"
	$(PYTHON) -m venv $(TRITON_VENV)
	$(TRITON_VENV)/bin/python -m pip install "numpy<2" "$(TRITON_SPEC)" "onnxruntime>=1.18" "onnx>=1.16"
	$(TRITON_VENV)/bin/python -m pip install -q --no-deps -e .
	touch $@

# The native ONNX Runtime SelectiveScan op (m2s2l_edge/ops/ort_library.py): ONNX Runtime's C++ headers (Debian's
# libonnxruntime-dev, unpacked into the user's cache; the pip wheel has none), then the library, built with g++.
ort-op: setup
	bash plugins/fetch_ort_headers.sh
	$(BIN)/m2s2l-edge plugin build --onnxruntime

demo: setup
	$(BIN)/m2s2l-edge demo

test: setup
	@# In CI (CI=true) the real-server tests must run, so a failed build fails; elsewhere they skip with the reason.
	$(MAKE) triton-env || { if [ -n "$$CI" ]; then exit 1; fi; \
		echo "warning: the Triton environment could not be built; the Triton server tests skip"; }
	$(MAKE) ort-op || { if [ -n "$$CI" ]; then exit 1; fi; \
		echo "warning: the ONNX Runtime op library could not be built; its tests skip (plugin-flavour models use the Python op)"; }
	$(BIN)/python -m pytest -q tests

profile: setup
	$(BIN)/m2s2l-edge profile --preset paper --fps

bench: setup
	$(BIN)/m2s2l-edge bench --preset paper

lint: setup
	$(BIN)/ruff check m2s2l_edge export tests benchmarks

clean:
	rm -rf $(VENV) $(TRITON_VENV) build *.egg-info .pytest_cache
