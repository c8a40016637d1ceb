"""Plain C + ctypes (radixgen's kernel binding) against torch.utils.cpp_extension, on one kernel.

The same SiLU(gate) * up loop over a float32 [1, 2 x 1536] gate|up row (SmolLM2's MLP width,
one decode token) is built both ways from a cold cache, then called many times on that tiny
tensor, where the cost of crossing from Python into the kernel dominates:

    ctypes, raw           data_ptr()s passed to a ctypes function: the floor of ctypes
    ctypes, binding       the same through radixgen.runtime.kernels.binding (declared
                          signature, keyword arguments, every tensor checked)
    radixgen FusedOps     radixgen's own silu_mul (elementwise.c) through its wrapper: what the
                          model calls, output allocation and dtype dispatch included
    cpp_extension         load_inline: a pybind11 function taking and returning torch::Tensor
    torch eager           F.silu(gate) * up, for scale

Prints a Markdown table (median per call, and first-build / warm-load times) with the CPU,
torch version and date, then the ratios, and the cold build time of each of radixgen's kernels.
Builds in temporary directories; nothing is cached.

    python -m benchmarks.bench_kernel_binding [--calls 20000]
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from radixgen.runtime.kernels import build
from radixgen.runtime.kernels.binding import Scalar, Signature, Tensor, bind
from radixgen.runtime.kernels.cpu import cpu_features
from radixgen.runtime.kernels.elementwise import FusedOps

C_SOURCE = r"""
#include <math.h>
#include <stdint.h>
void silu_mul_f32(const float *gate_up, int64_t rows, int64_t inter, float *out) {
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t i = 0; i < inter; ++i) {
            const float g = gate_up[r * 2 * inter + i];
            out[r * inter + i] = g / (1.0f + expf(-g)) * gate_up[r * 2 * inter + inter + i];
        }
}
"""

CPP_SOURCE = r"""
#include <torch/extension.h>
#include <cmath>
torch::Tensor silu_mul(torch::Tensor gate_up) {
    TORCH_CHECK(gate_up.scalar_type() == torch::kFloat32, "gate_up must be float32");
    TORCH_CHECK(gate_up.dim() == 2 && gate_up.is_contiguous(), "gate_up: contiguous rank 2");
    const int64_t rows = gate_up.size(0), inter = gate_up.size(1) / 2;
    auto out = torch::empty({rows, inter}, gate_up.options());
    const float *in = gate_up.data_ptr<float>();
    float *o = out.data_ptr<float>();
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t i = 0; i < inter; ++i) {
            const float g = in[r * 2 * inter + i];
            o[r * inter + i] = g / (1.0f + std::exp(-g)) * in[r * 2 * inter + inter + i];
        }
    return out;
}
"""

FLAGS = ["-O3", "-march=native", "-ffast-math"]
SIGNATURE = Signature(
    "silu_mul_f32",
    "void",
    (
        Tensor("gate_up", (torch.float32,), rank=2),
        Scalar("rows", "int64"),
        Scalar("inter", "int64"),
        Tensor("out", (torch.float32,), rank=2),
    ),
)


def build_ctypes(directory: Path) -> tuple[ctypes.PyDLL, float]:
    """Compile C_SOURCE with the system compiler as radixgen's build does; (library, seconds)."""
    source, target = directory / "silu_mul.c", directory / "silu_mul.so"
    source.write_text(C_SOURCE)
    start = time.perf_counter()
    compiler = os.environ.get("CC", "cc")
    subprocess.run(
        [compiler, *FLAGS, "-fPIC", "-shared", str(source), "-o", str(target), "-lm"], check=True
    )
    library = ctypes.PyDLL(str(target))
    return library, time.perf_counter() - start


def build_cpp_extension(directory: Path):
    """load_inline CPP_SOURCE into `directory`; (module, seconds)."""
    from torch.utils.cpp_extension import load_inline

    start = time.perf_counter()
    module = load_inline(
        "radixgen_bench_silu_mul",
        cpp_sources=[CPP_SOURCE],
        functions=["silu_mul"],
        extra_cflags=FLAGS,
        build_directory=str(directory),
    )
    return module, time.perf_counter() - start


def median_call_us(call: Callable[[], object], calls: int) -> float:
    """Median over `calls` single calls, in microseconds (after a warm-up)."""
    for _ in range(200):
        call()
    times = []
    clock = time.perf_counter_ns
    for _ in range(calls):
        start = clock()
        call()
        times.append(clock() - start)
    return statistics.median(times) / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=20000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    gate_up = torch.randn(1, 2 * 1536)
    rows, inter = gate_up.shape[0], gate_up.shape[1] // 2

    with tempfile.TemporaryDirectory() as c_dir, tempfile.TemporaryDirectory() as cpp_dir:
        library, c_build = build_ctypes(Path(c_dir))
        module, cpp_build = build_cpp_extension(Path(cpp_dir))
        start = time.perf_counter()
        ctypes.PyDLL(str(Path(c_dir) / "silu_mul.so"))
        c_warm = time.perf_counter() - start
        _, cpp_warm = build_cpp_extension(Path(cpp_dir))  # cached: hash check and import

        raw = library.silu_mul_f32
        raw.restype = None
        raw.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
        bound = bind(library, SIGNATURE)
        ops = FusedOps(build.load_library("elementwise"))

        def ctypes_raw():
            out = torch.empty(rows, inter)
            raw(gate_up.data_ptr(), rows, inter, out.data_ptr())
            return out

        def ctypes_binding():
            out = torch.empty(rows, inter)
            bound(gate_up=gate_up, rows=rows, inter=inter, out=out)
            return out

        def torch_eager():
            gate, up = gate_up.chunk(2, dim=-1)
            return F.silu(gate) * up

        def cpp_extension():
            return module.silu_mul(gate_up)

        expected = torch_eager()
        for variant in (ctypes_raw, ctypes_binding, cpp_extension, lambda: ops.silu_mul(gate_up)):
            torch.testing.assert_close(variant(), expected)
        per_call = {
            "ctypes, raw": median_call_us(ctypes_raw, args.calls),
            "ctypes, radixgen binding (checked)": median_call_us(ctypes_binding, args.calls),
            "radixgen FusedOps.silu_mul": median_call_us(lambda: ops.silu_mul(gate_up), args.calls),
            "cpp_extension (pybind11)": median_call_us(cpp_extension, args.calls),
            "torch eager chain": median_call_us(torch_eager, args.calls),
        }

    cpu = cpu_features()
    print(
        f"CPU: {cpu.describe()}; torch {torch.__version__}; {datetime.date.today()}; "
        f"1 thread, median of {args.calls} calls, silu_mul over float32 [1, 3072] -> [1, 1536]"
    )
    compiler = shutil.which(os.environ.get("CC", "cc"))
    print(f"C compiler: {compiler}\n")
    print("| binding | first build (cold) | warm load | per call |")
    print("|---|---:|---:|---:|")
    builds = {
        "ctypes, raw": (c_build, c_warm),
        "ctypes, radixgen binding (checked)": (c_build, c_warm),
        "cpp_extension (pybind11)": (cpp_build, cpp_warm),
    }
    for name, micros in per_call.items():
        seconds, warm = builds.get(name, (None, None))
        cold = "—" if seconds is None else f"{seconds:.2f} s"
        loaded = "—" if warm is None else f"{warm * 1000:.1f} ms"
        print(f"| {name} | {cold} | {loaded} | {micros:.2f} µs |")
    print()
    print(f"first build, cpp_extension / ctypes: {cpp_build / c_build:.0f}x")
    checked = per_call["ctypes, radixgen binding (checked)"]
    ext = per_call["cpp_extension (pybind11)"]
    print(f"per call, radixgen binding / cpp_extension: {checked / ext:.2f}x")
    print(f"per call, raw ctypes / cpp_extension: {per_call['ctypes, raw'] / ext:.2f}x")
    wrapper = per_call["radixgen FusedOps.silu_mul"]
    print(f"per call, FusedOps / cpp_extension: {wrapper / ext:.2f}x")
    print("\ncold build of radixgen's kernels (build.py, this host's flags):")
    for name, seconds in kernel_build_times().items():
        print(f"  {name}.c: {seconds:.2f} s")


def kernel_build_times() -> dict[str, float]:
    """Seconds to compile each kernel source from a cold cache, as the engine's first start."""
    compiler = shutil.which(os.environ.get("CC", "cc"))
    times = {}
    with tempfile.TemporaryDirectory() as cache:
        os.environ["RADIXGEN_KERNEL_CACHE"] = cache
        for source in sorted(build.SOURCE_DIR.glob("*.c")):
            start = time.perf_counter()
            build.build(source.stem, compiler, [*build.BASE_FLAGS, *build.TARGET_FLAGS[0]])
            times[source.stem] = time.perf_counter() - start
    return times


if __name__ == "__main__":
    main()
