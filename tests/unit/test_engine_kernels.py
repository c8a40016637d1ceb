"""EngineKernels: the kernels are chosen once, from the engine's options and the CPU's features;
`disable_native_kernels` leaves every operation on PyTorch, with the same results."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from radixgen.runtime.config import EngineConfig, ModelConfig
from radixgen.runtime.kernels.cpu import CpuFeatures, cpu_features
from radixgen.runtime.kernels.engine_kernels import EngineKernels
from radixgen.runtime.model.llama import LlamaForCausalLM

AVX2_ONLY = CpuFeatures("Test CPU", True, False, False, False, "AVX2")
NO_AVX2 = CpuFeatures("Old CPU", False, False, False, False, "DEFAULT")


def test_disabled_native_kernels_leave_every_operation_on_torch():
    for dtype in ("float32", "bfloat16"):
        kernels = EngineKernels.choose(
            EngineConfig(dtype=dtype, disable_native_kernels=True), head_dim=64
        )
        assert kernels.decode_attention is None and kernels.segment_attention is None
        assert kernels.block_matmul is None and not kernels.elementwise.is_native
    off = EngineConfig(dtype="float32", disable_native_kernels=True)
    assert EngineKernels.choose(off, head_dim=64).int4 is None  # float32 4-bit is native only
    off = EngineConfig(dtype="bfloat16", disable_native_kernels=True)
    assert EngineKernels.choose(off, head_dim=64).int4.dtype == torch.bfloat16  # PyTorch's


def test_the_option_is_a_cli_flag():
    from radixgen.cli import build_parser, engine_config_from_args

    args = build_parser().parse_args(["serve", "--disable-native-kernels"])
    assert engine_config_from_args(args).disable_native_kernels is True
    assert EngineConfig().disable_native_kernels is False


def test_the_choice_follows_the_cpu_features(native_kernels):
    if native_kernels.decode_attention is None:
        pytest.skip("no C compiler for the native kernels")
    float32 = EngineConfig(dtype="float32")
    on_avx2 = EngineKernels.choose(float32, head_dim=64, cpu=AVX2_ONLY)
    assert on_avx2.block_matmul is not None and on_avx2.int4.dtype == torch.float32
    assert on_avx2.cpu is AVX2_ONLY and "Test CPU (avx2)" in on_avx2.describe()
    without_avx2 = EngineKernels.choose(float32, head_dim=64, cpu=NO_AVX2)
    assert without_avx2.block_matmul is None and without_avx2.int4 is None
    assert without_avx2.decode_attention is not None  # plain loops: any CPU
    bfloat16 = EngineConfig(dtype="bfloat16")
    assert EngineKernels.choose(bfloat16, head_dim=64, cpu=AVX2_ONLY).segment_attention is None
    amx = dataclasses.replace(AVX2_ONLY, avx512f=True, avx512_bf16=True, amx=True)
    native_attention = EngineConfig(dtype="bfloat16", attention_backend="native")
    assert EngineKernels.choose(native_attention, head_dim=64, cpu=amx).segment_attention is None
    assert EngineKernels.choose(bfloat16, head_dim=128, cpu=amx).segment_attention is None
    if cpu_features().amx:
        assert EngineKernels.choose(bfloat16, head_dim=64, cpu=amx).segment_attention is not None


def test_a_device_other_than_the_cpu_gets_no_native_kernel():
    kernels = EngineKernels.choose(EngineConfig(device="meta", dtype="float32"), head_dim=64)
    assert kernels.cpu is None and kernels.decode_attention is None
    assert not kernels.elementwise.is_native and kernels.int4 is None


TINY = ModelConfig(
    architecture="llama",
    vocab_size=96,
    hidden_size=64,
    intermediate_size=128,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=16,
    rope_theta=10000.0,
    rms_norm_eps=1e-5,
    max_position_embeddings=64,
    tie_word_embeddings=True,
)


def test_the_model_runs_on_the_kernels_it_is_given(native_kernels):
    """Every layer holds the element-wise ops it was built with; the same weights on the native
    kernels and on the torch chains agree in float32 to rounding."""
    if not native_kernels.elementwise.is_native:
        pytest.skip("no C compiler for the native kernels")
    torch.manual_seed(0)
    off = EngineKernels.choose(EngineConfig(dtype="float32", disable_native_kernels=True), 16)
    reference = LlamaForCausalLM(TINY, 64, off).eval()
    model = LlamaForCausalLM(TINY, 64, native_kernels).eval()
    model.load_state_dict(reference.state_dict())
    for layer in model.layers:
        assert layer.mlp.ops is native_kernels.elementwise
        assert layer.self_attn.ops is layer.input_layernorm.ops is native_kernels.elementwise
    assert reference.norm.ops is off.elementwise and not off.elementwise.is_native
    hidden = torch.randn(5, TINY.hidden_size)
    with torch.inference_mode():
        for native, ref in zip(model.layers, reference.layers, strict=True):
            torch.testing.assert_close(native.mlp(hidden), ref.mlp(hidden))
            torch.testing.assert_close(
                native.input_layernorm.add_and_norm(hidden, hidden),
                ref.input_layernorm.add_and_norm(hidden, hidden),
            )


def test_cpu_features_read_proc_cpuinfo_and_torch():
    cpuinfo = (
        "processor\t: 0\nmodel name\t: Example Xeon\n"
        "flags\t\t: fpu avx avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n\n"
        "processor\t: 1\nmodel name\t: Example Xeon\nflags\t\t: fpu\n"
    )
    xeon = CpuFeatures.parse(cpuinfo, "AVX512")
    assert (xeon.avx2, xeon.avx512f, xeon.avx512_bf16, xeon.amx) == (True, True, True, True)
    assert xeon.describe() == "Example Xeon (avx2 avx512f avx512_bf16 amx)"
    no_file = CpuFeatures.parse("", "AVX2")  # no /proc/cpuinfo: what torch reports
    assert no_file.avx2 and not no_file.avx512f and not no_file.amx
    here = cpu_features()
    assert here.torch_capability == torch.backends.cpu.get_cpu_capability()
    assert here.model
