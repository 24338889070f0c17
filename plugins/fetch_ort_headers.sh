#!/usr/bin/env bash
# Fetches ONNX Runtime's C/C++ headers (MIT) for building the native SelectiveScan op library
# (m2s2l_edge/ops/csrc/scan_ort_op.cpp) on a machine whose ONNX Runtime came from pip, which ships no headers.
# It downloads Debian 13's libonnxruntime-dev package with apt (signed package lists, checked hashes) through a
# throw-away sources list and state folder, so the system's apt configuration and packages are left untouched, and
# unpacks only its include/onnxruntime folder (and the package's copyright file) into
#   ${M2S2L_CACHE_DIR:-~/.cache/m2s2l_edge}/onnxruntime/include
# where the build looks for them (m2s2l_edge/ops/ort_library.py). Nothing is written into the repository.
#
# Needs apt-get, dpkg-deb and Debian's archive keyring (any Debian or Debian-based system with
# debian-archive-keyring). Elsewhere: `apt install libonnxruntime-dev` where the distribution has it, or unpack an
# ONNX Runtime release archive and set M2S2L_ORT_INCLUDE=<its include/ folder>.
# Environment: DEBIAN_MIRROR (default http://deb.debian.org/debian), DEBIAN_SUITE (default trixie), FORCE=1 to
# replace headers that are already there.
set -euo pipefail

cache="${M2S2L_CACHE_DIR:-${HOME}/.cache/m2s2l_edge}/onnxruntime"
dest="${cache}/include"
if [[ -f "${dest}/onnxruntime_c_api.h" && "${FORCE:-0}" != 1 ]]; then
    echo "have   ${dest} (FORCE=1 to replace)"
    exit 0
fi
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
for tool in apt-get dpkg-deb; do
    command -v "${tool}" >/dev/null || { echo "fetch_ort_headers: ${tool} not found (see the header of $0)" >&2; exit 1; }
done
[[ -f "${keyring}" ]] || { echo "fetch_ort_headers: ${keyring} missing: apt-get install debian-archive-keyring" >&2; exit 1; }

mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
suite="${DEBIAN_SUITE:-trixie}"
tmp="$(mktemp -d)"
trap 'rm -rf "${tmp}"' EXIT
# apt's download sandbox user must be able to write here.
chmod 755 "${tmp}"
mkdir -p "${tmp}/lists/partial" "${tmp}/cache/archives/partial" "${tmp}/deb"
echo "deb [signed-by=${keyring}] ${mirror} ${suite} main" >"${tmp}/sources.list"
apt_opts=(
    -o "Dir::Etc::SourceList=${tmp}/sources.list"
    -o "Dir::Etc::SourceParts=/dev/null"
    -o "Dir::State::Lists=${tmp}/lists"
    -o "Dir::Cache=${tmp}/cache"
    -o "APT::Sandbox::User=root"
    -o "Debug::NoLocking=1"
)
apt-get "${apt_opts[@]}" -qq update
(cd "${tmp}/deb" && apt-get "${apt_opts[@]}" -qq download libonnxruntime-dev)
deb="$(ls "${tmp}"/deb/libonnxruntime-dev_*.deb)"
dpkg-deb -x "${deb}" "${tmp}/root"
[[ -f "${tmp}/root/usr/include/onnxruntime/onnxruntime_c_api.h" ]] || {
    echo "fetch_ort_headers: ${deb} holds no usr/include/onnxruntime/onnxruntime_c_api.h" >&2
    exit 1
}
mkdir -p "${cache}"
rm -rf "${dest}.new"
cp -r "${tmp}/root/usr/include/onnxruntime" "${dest}.new"
cp "${tmp}/root/usr/share/doc/libonnxruntime-dev/copyright" "${cache}/copyright" 2>/dev/null || true
rm -rf "${dest}"
mv "${dest}.new" "${dest}"
echo "fetched $(basename "${deb}") -> ${dest}"
