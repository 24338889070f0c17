#!/usr/bin/env bash
# Fetches TensorRT's public C++ headers (the include/ folder of github.com/NVIDIA/TensorRT, Apache-2.0) for a
# compile check of the plugin on a machine without TensorRT: third_party/tensorrt-<version>/include.
# third_party/ is git-ignored: never commit these headers.
#
# Usage: plugins/fetch_trt_headers.sh [TAG ...]
#   Default tags: v10.3.0 (JetPack 6), v10.13.3 (JetPack 7) and v11.1 (newest at the time of writing;
#   list the others with: git ls-remote --tags https://github.com/NVIDIA/TensorRT.git).
#   Environment: TRT_GIT_DIR=<path>  use an existing clone or bare mirror instead of the network;
#                TRT_REPO_URL=<url>  clone from elsewhere (default https://github.com/NVIDIA/TensorRT.git);
#                FORCE=1             replace header sets that are already there.
#
# What it runs for each tag, by hand:
#   git clone --depth 1 --branch v10.3.0 --filter=blob:none --sparse https://github.com/NVIDIA/TensorRT.git trt
#   git -C trt sparse-checkout set include
#   mkdir -p third_party/tensorrt-10.3.0 && cp -r trt/include third_party/tensorrt-10.3.0/
# Then: plugins/check_compile.sh   (compiles the plugin against every third_party/tensorrt-*/include)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "${here}/.." && pwd)"
url="${TRT_REPO_URL:-https://github.com/NVIDIA/TensorRT.git}"

if [[ $# -gt 0 ]]; then
    tags=("$@")
else
    tags=(v10.3.0 v10.13.3 v11.1)
fi

tmp="$(mktemp -d)"
trap 'rm -rf "${tmp}"' EXIT

for tag in "${tags[@]}"; do
    version="${tag#v}"
    dest="${repo}/third_party/tensorrt-${version}"
    if [[ -f "${dest}/include/NvInferRuntime.h" && "${FORCE:-0}" != 1 ]]; then
        echo "have   ${dest}/include (FORCE=1 to replace)"
        continue
    fi
    rm -rf "${dest}"
    mkdir -p "${dest}"
    if [[ -n "${TRT_GIT_DIR:-}" ]]; then
        git --git-dir="$(git -C "${TRT_GIT_DIR}" rev-parse --absolute-git-dir)" \
            archive "${tag}" include | tar -x -C "${dest}"
    else
        clone="${tmp}/${version}"
        # A blob-less sparse clone downloads the headers only, not the whole repository.
        clone_args=(-c advice.detachedHead=false clone --quiet --depth 1 --branch "${tag}")
        if ! git "${clone_args[@]}" --filter=blob:none --sparse "${url}" "${clone}"; then
            rm -rf "${clone}"
            git "${clone_args[@]}" "${url}" "${clone}"
        fi
        git -C "${clone}" sparse-checkout set include 2>/dev/null || true
        cp -r "${clone}/include" "${dest}/"
    fi
    if [[ ! -f "${dest}/include/NvInferRuntime.h" ]]; then
        echo "fetch_trt_headers: ${tag} gave no include/NvInferRuntime.h" >&2
        exit 1
    fi
    echo "fetched ${tag} -> ${dest}/include"
done
