#!/usr/bin/env bash
# One command for a GPU machine: build the CUDA selective-scan extension, run the GPU parity tests, benchmark the
# kernel and the model, print a short table and write JSON (and logs) to $OUT when it is set.
#
# Needs only a CUDA build of PyTorch and nvcc: no pip install (the repository is used through PYTHONPATH), pytest is
# optional (bench_scan_cuda.py runs its own parity checks). Expected time on an H100: build ~1 min, tests < 1 min,
# benchmarks 2-3 min. Timeouts (build 150 s, tests 100 s, benchmark 210 s with an internal 150 s budget that skips,
# and records, what does not fit, causal conv benchmark 90 s) bound the whole at 9 minutes.
#
# Usage: benchmarks/gpu_check.sh [--quick] [more bench_scan_cuda.py options]
#   --quick            skip pytest and pass --quick to the benchmark (fewer variants, FP16 timings only)
# Environment: PYTHON (default python3), OUT (results folder), M2S2L_EXT_DIR (build folder, default build/torch_ext
#   inside the repository, so a rerun on the same machine reuses the build), TORCH_CUDA_ARCH_LIST (default: the
#   visible GPU's architecture).
# Exit status: 0 all good; 1 a parity test or check failed; 2 the extension did not build or no GPU is visible.
set -uo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${repo}"
py="${PYTHON:-python3}"
export PYTHONPATH="${repo}${PYTHONPATH:+:${PYTHONPATH}}"
export M2S2L_EXT_DIR="${M2S2L_EXT_DIR:-${repo}/build/torch_ext}"
logs="${OUT:-${repo}/build/gpu_check}"
mkdir -p "${logs}"

quick=0
bench_args=()
for arg in "$@"; do
    if [[ "${arg}" == "--quick" ]]; then
        quick=1
    fi
    bench_args+=("${arg}")
done

step() { printf '\n== [%4ds] %s\n' "${SECONDS}" "$*"; }

step "environment"
"${py}" - <<'EOF' 2>&1 | tee "${logs}/environment.txt"
import platform, shutil, subprocess, torch
print(f"python {platform.python_version()}  torch {torch.__version__}  torch CUDA {torch.version.cuda}")
print(f"cuda available: {torch.cuda.is_available()}", end="")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"  {p.name}  sm_{p.major}{p.minor}  {p.multi_processor_count} SMs  {p.total_memory / 2**30:.0f} GiB")
else:
    print()
nvcc = shutil.which("nvcc")
version = "not found"
if nvcc:
    version = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout.strip().splitlines()[-1]
print(f"nvcc: {nvcc} ({version})")
EOF
if command -v nvidia-smi >/dev/null 2>&1; then
    # Driver, clocks and power limit: what a timing needs beside it to be compared with another run.
    nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,power.limit,temperature.gpu \
        --format=csv 2>&1 | tee -a "${logs}/environment.txt"
fi
if ! "${py}" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: no CUDA device visible to PyTorch" >&2
    exit 2
fi

step "build the extension (log: ${logs}/build.log; folder: ${M2S2L_EXT_DIR})"
if ! timeout 150 "${py}" -m m2s2l_edge.ops.cuda_backend build >"${logs}/build.log" 2>&1; then
    tail -n 40 "${logs}/build.log" >&2
    echo "gpu_check: the extension did not build (full log: ${logs}/build.log)" >&2
    exit 2
fi
tail -n 1 "${logs}/build.log"

status=0
if [[ "${quick}" -eq 0 ]] && "${py}" -c "import pytest" 2>/dev/null; then
    step "GPU tests: pytest -m gpu tests/test_cuda_kernel.py (log: ${logs}/pytest_gpu.log)"
    timeout 100 "${py}" -m pytest -q -m gpu -p no:cacheprovider tests/test_cuda_kernel.py >"${logs}/pytest_gpu.log" 2>&1
    rc=$?
    tail -n 15 "${logs}/pytest_gpu.log"
    if [[ ${rc} -ne 0 ]]; then
        echo "gpu_check: GPU tests failed (rc ${rc})" >&2
        status=1
    fi
else
    step "GPU tests: skipped (--quick, or pytest not installed); the benchmark's parity section still runs"
fi

step "benchmark: benchmarks/bench_scan_cuda.py ${bench_args[*]:-}"
timeout 210 "${py}" benchmarks/bench_scan_cuda.py --out "${logs}/bench_scan_cuda.json" --budget-s 150 \
    ${bench_args[@]+"${bench_args[@]}"} 2>&1 | tee "${logs}/bench.log"
rc=${PIPESTATUS[0]}
if [[ ${rc} -ne 0 ]]; then
    echo "gpu_check: benchmark exited with ${rc} (1: a parity check failed; 2: kernel unavailable; 124: timeout)" >&2
    [[ ${rc} -eq 2 ]] && exit 2
    status=1
fi

step "causal conv: benchmarks/bench_causal_conv_cuda.py (causal-conv1d's kernel against the PyTorch path)"
# Times the PyTorch path alone (and says so in the JSON) where causal-conv1d is not installed.
timeout 90 "${py}" benchmarks/bench_causal_conv_cuda.py --json "${logs}/causal_conv.json" 2>&1 \
    | tee "${logs}/causal_conv.log"
rc=${PIPESTATUS[0]}
if [[ ${rc} -ne 0 ]]; then
    echo "gpu_check: causal conv benchmark exited with ${rc} (1: parity failed; 124: timeout)" >&2
    status=1
fi

step "done (status ${status}); results in ${logs}"
exit "${status}"
