#!/usr/bin/env bash
# Compile-checks the TensorRT plugin sources against TensorRT's public headers, without TensorRT installed.
#
# Usage: plugins/check_compile.sh [TRT_INCLUDE_DIR ...]
#   With no argument, checks one include/ per TensorRT version found in third_party/tensorrt-*/include (see
#   plugins/fetch_trt_headers.sh) or in ../shared/third_party/tensorrt-*/include beside the clone (for a git
#   worktree, also beside the checkout it belongs to); the checkout's own third_party/ wins for a version in both.
#   Environment: CXX (default g++), CUDA_INCLUDE_DIR (default: nvcc's toolkit, CUDA_HOME, /usr/local/cuda),
#                CHECK_MODE=-fsyntax-only (default) or -c (full code generation into a temporary directory).
#
# Each plugin .cpp is compiled with -std=c++17 -Wall -Wextra -Wpedantic -Wshadow -Werror. TensorRT and CUDA headers
# are -isystem, as CMake's imported targets make them, so only warnings in our own code fail the check.
# Exit status: 0 when every file compiles against every header set, 1 otherwise, 2 on a usage problem.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "${here}/.." && pwd)"
src_dir="${here}/selective_scan"
sources=(selectiveScanPlugin.cpp pluginEntry.cpp pluginStaticRegistration.cpp)

cxx="${CXX:-g++}"
mode="${CHECK_MODE:--fsyntax-only}"

if [[ -z "${CUDA_INCLUDE_DIR:-}" ]]; then
    # Ask nvcc where its toolkit is (it may be a wrapper script or a symlink), then fall back to the usual places.
    candidates=()
    if command -v nvcc >/dev/null 2>&1; then
        top="$(nvcc --dryrun -c -x cu /dev/null -o /dev/null 2>&1 | sed -n 's/^#\$ TOP=//p' | head -n 1)"
        [[ -n "${top}" ]] && candidates+=("${top}/include")
    fi
    candidates+=("${CUDA_HOME:-/nonexistent}/include" "${CUDA_PATH:-/nonexistent}/include" /usr/local/cuda/include)
    for c in "${candidates[@]}"; do
        if [[ -f "${c}/cuda_runtime_api.h" ]]; then
            CUDA_INCLUDE_DIR="$(cd "${c}" && pwd -P)"
            break
        fi
    done
fi
if [[ ! -f "${CUDA_INCLUDE_DIR:-/nonexistent}/cuda_runtime_api.h" ]]; then
    echo "check_compile: cuda_runtime_api.h not found (nvcc, CUDA_HOME, /usr/local/cuda); set CUDA_INCLUDE_DIR" >&2
    exit 2
fi

if [[ $# -gt 0 ]]; then
    include_dirs=("$@")
else
    roots=("${repo}/third_party" "${repo}/../shared/third_party")
    if common="$(git -C "${repo}" rev-parse --path-format=absolute --git-common-dir 2>/dev/null)"; then
        roots+=("$(dirname "${common}")/../shared/third_party")
    fi
    include_dirs=()
    declare -A seen=()
    shopt -s nullglob
    for root in "${roots[@]}"; do
        for inc in "${root}"/tensorrt-*/include; do
            version="$(basename "$(dirname "${inc}")")"
            if [[ -f "${inc}/NvInferRuntime.h" && -z "${seen[${version}]:-}" ]]; then
                seen["${version}"]=1
                include_dirs+=("$(cd "${inc}" && pwd -P)")
            fi
        done
    done
    shopt -u nullglob
fi
if [[ ${#include_dirs[@]} -eq 0 ]]; then
    echo "check_compile: no TensorRT headers in third_party/ or ../shared/third_party/; run" \
        "plugins/fetch_trt_headers.sh or pass an include directory" >&2
    exit 2
fi

tmp="$(mktemp -d)"
trap 'rm -rf "${tmp}"' EXIT

status=0
for inc in "${include_dirs[@]}"; do
    if [[ ! -f "${inc}/NvInferRuntime.h" ]]; then
        echo "check_compile: ${inc} has no NvInferRuntime.h" >&2
        status=1
        continue
    fi
    for src in "${sources[@]}"; do
        cmd=("${cxx}" -std=c++17 -Wall -Wextra -Wpedantic -Wshadow -Werror -fPIC
            -isystem "${inc}" -isystem "${CUDA_INCLUDE_DIR}" -I "${src_dir}" "${mode}" "${src_dir}/${src}")
        if [[ "${mode}" == "-c" ]]; then
            cmd+=(-o "${tmp}/${src%.cpp}.o")
        fi
        if "${cmd[@]}"; then
            echo "OK    ${src}  [${inc}]"
        else
            echo "FAIL  ${src}  [${inc}]" >&2
            echo "      ${cmd[*]}" >&2
            status=1
        fi
    done
done
exit "${status}"
