#!/usr/bin/env bash
# Build llama.cpp's own C++ llama-server and llama-bench for this CPU: the peer the
# benchmarks compare against. The sources come from llama-cpp-python's source
# distribution (PyPI is the only network we have), which vendors llama.cpp.
#
#   bash scripts/build_llama_cpp.sh [DEST]     # default DEST: .peers/llama.cpp
#
# Takes ~10-15 minutes on 2 cores. Binaries land in DEST/build/bin; the benchmarks
# look there (or at $RADIXGEN_LLAMA_CPP_BIN).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="${1:-$root/.peers/llama.cpp}"
version="0.3.36"
if [[ -x "$dest/build/bin/llama-server" && -x "$dest/build/bin/llama-bench" ]]; then
    echo "llama.cpp already built in $dest/build/bin"
    exit 0
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -m pip download --quiet --no-deps --no-binary :all: "llama-cpp-python==$version" -d "$work"
tar -xzf "$work"/llama_cpp_python-"$version".tar.gz -C "$work"
mkdir -p "$(dirname "$dest")"
rm -rf "$dest"
cp -r "$work/llama_cpp_python-$version/vendor/llama.cpp" "$dest"
cd "$dest"
cmake -B build -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" --target llama-server llama-bench
echo "built: $dest/build/bin/llama-server, $dest/build/bin/llama-bench"
