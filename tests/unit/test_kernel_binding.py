"""The binding layer: each entry point's declaration matches its C prototype, and a tensor that
does not fit its declaration is refused before the call, naming the kernel and the argument."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

from radixgen.runtime.kernels import (
    bf16_block_matmul,
    block_matmul,
    decode_attention,
    decode_step,
    elementwise,
)
from radixgen.runtime.kernels import segment_attention as segment
from radixgen.runtime.kernels.binding import Scalar, Signature, Tensor, bind
from radixgen.runtime.kernels.build import SOURCE_DIR, load_library

DECLARED = {
    "decode_attention": decode_attention.SIGNATURES,
    "segment_attention": segment.SIGNATURES,
    "elementwise": elementwise.SIGNATURES,
    "block_matmul": block_matmul.SIGNATURES,
    "bf16_block_matmul": bf16_block_matmul.SIGNATURES,
    "decode_step": decode_step.SIGNATURES,
}
C_SCALARS = {"int64_t": "int64", "int": "int", "float": "float"}


def c_parameters(source: str, name: str) -> list[tuple[str, str]]:
    """(kind, name) of each parameter of the exported C function `name`: "pointer" or a scalar
    kind. Entry points generated per dtype by a macro (`add_rms_norm_##suffix`) count too."""
    text = re.sub(r"/\*.*?\*/", "", source, flags=re.S).replace("\\\n", " ")
    macro_name = re.sub(r"_(bf16|f32)$", "_##suffix", name)
    for candidate in (name, macro_name):
        found = re.search(rf"(?:^|[\s}}])(?:int|void)\s+{re.escape(candidate)}\s*\(([^)]*)\)", text)
        if found:
            break
    else:
        raise AssertionError(f"no C definition of {name}")
    parameters = []
    for declaration in filter(None, (p.strip() for p in found.group(1).split(","))):
        if declaration == "void":
            continue
        kind, pname = re.fullmatch(r"(.*?)\s*(\w+)", declaration).groups()
        parameters.append(("pointer" if "*" in kind else C_SCALARS[kind.strip()], pname))
    return parameters


@pytest.mark.parametrize("kernel", sorted(DECLARED))
def test_declarations_match_the_c_prototypes(kernel):
    """Names, order and kinds: a swapped, missing or retyped argument fails here, not in C."""
    source = (SOURCE_DIR / f"{kernel}.c").read_text()
    for signature in DECLARED[kernel]:
        declared = [
            ("pointer" if isinstance(a, Tensor) else a.kind, a.name) for a in signature.args
        ]
        assert declared == c_parameters(source, signature.name), signature.name


def test_the_fused_step_layer_table_matches_the_c_enum():
    """decode_step.py writes addresses in the columns decode_step.c reads them from."""
    source = (SOURCE_DIR / "decode_step.c").read_text()
    enum = re.search(r"enum \{(.*?)\};", source, flags=re.S).group(1)
    names = [n.strip().lower() for n in enum.split(",") if n.strip()]
    assert names[-1] == "layer_fields"
    assert tuple(names[:-1]) == decode_step.LAYER_FIELDS


def test_the_prototype_check_can_fail():
    source = "int f(const float *x, int64_t rows, int num_threads, float *out) { return 0; }"
    assert c_parameters(source, "f") == [
        ("pointer", "x"),
        ("int64", "rows"),
        ("int", "num_threads"),
        ("pointer", "out"),
    ]
    assert c_parameters(source, "f") != [("pointer", "x"), ("int", "rows")]


SILU = next(s for s in elementwise.SIGNATURES if s.name == "silu_mul_f32")


@pytest.fixture(scope="module")
def silu_mul():
    library = load_library("elementwise")
    if library is None:
        pytest.skip("no C compiler for the native kernels")
    return bind(library, SILU)


def call(silu_mul, gate_up, out=None):
    rows, width = gate_up.shape[0], gate_up.shape[-1]
    out = torch.empty(rows, width // 2) if out is None else out
    silu_mul(gate_up=gate_up, rows=rows, inter=width // 2, num_threads=1, out=out)
    return out


def test_a_correct_call_matches_torch(silu_mul):
    gate_up = torch.randn(3, 64, generator=torch.Generator().manual_seed(0))
    gate, up = gate_up.chunk(2, dim=-1)
    torch.testing.assert_close(call(silu_mul, gate_up), F.silu(gate) * up)


@pytest.mark.parametrize(
    ("gate_up", "message"),
    [
        (torch.randn(3, 64, dtype=torch.float64), "gate_up must be float32, got torch.float64"),
        (torch.randn(3, 128)[:, ::2], "gate_up must be contiguous"),
        (torch.randn(64), "gate_up must have rank 2, got shape \\(64,\\)"),
        (torch.randn(3, 64).bfloat16(), "gate_up must be float32"),
    ],
)
def test_a_tensor_that_does_not_fit_is_refused_naming_it(silu_mul, gate_up, message):
    with pytest.raises(ValueError, match=f"silu_mul_f32: {message}"):
        call(silu_mul, gate_up, out=torch.empty(3, 32))


def test_the_output_is_checked_too(silu_mul):
    with pytest.raises(ValueError, match="silu_mul_f32: out must be contiguous"):
        call(silu_mul, torch.randn(3, 64), out=torch.empty(32, 3).t())
    with pytest.raises(TypeError, match="out must be a tensor, got int"):
        call(silu_mul, torch.randn(3, 64), out=torch.empty(3, 32).data_ptr())


def test_arguments_go_by_their_declared_names(silu_mul):
    x = torch.randn(1, 8)
    with pytest.raises(TypeError):  # missing `out`
        silu_mul(gate_up=x, rows=1, inter=4, num_threads=1)
    with pytest.raises(TypeError):  # an unknown name
        silu_mul(gate_up=x, rows=1, inter=4, num_threads=1, out=x, outt=x)
    with pytest.raises(TypeError):  # positional
        silu_mul(x, 1, 4, 1, torch.empty(1, 4))


def test_rows_layout_takes_strided_rows_and_optional_tensors_take_none():
    """rotary's x may be a column slice (rows apart); add_rms_norm's delta may be NULL."""
    library = load_library("elementwise")
    if library is None:
        pytest.skip("no C compiler for the native kernels")
    by_name = {s.name: bind(library, s) for s in elementwise.SIGNATURES}
    qkv = torch.randn(2, 3 * 8)
    x = qkv[:, :16].view(2, 2, 8)  # rows 24 apart, heads packed
    cos, sin = torch.ones(2, 1, 8), torch.zeros(2, 1, 8)  # the identity rotation
    rotary, rest = by_name["rotary_f32"], dict(heads=2, head_dim=8, cos=cos, sin=sin, num_threads=1)
    before = qkv.clone()
    rotary(x=x, rows=2, row_stride=24, **rest)
    assert torch.equal(qkv, before)
    with pytest.raises(ValueError, match="rotary_f32: each row of x must be contiguous"):
        strided = torch.randn(2, 8, 2).transpose(1, 2)  # [2, 2, 8], elements 2 apart
        rotary(x=strided, rows=2, row_stride=16, **rest)
    norm = by_name["add_rms_norm_f32"]
    x, weight, out = torch.randn(2, 8), torch.ones(8), torch.empty(2, 8)
    arguments = dict(x=x, weight=weight, rows=2, dim=8, eps=1e-6, num_threads=1, sum_out=x)
    norm(delta=None, out=out, **arguments)
    torch.testing.assert_close(out, F.rms_norm(x, (8,), eps=1e-6))
    with pytest.raises(TypeError, match="x must be a tensor, got NoneType"):
        norm(delta=None, out=out, **{**arguments, "x": None})


def test_same_dtype_rule_and_argtypes():
    floats = (torch.float32, torch.bfloat16)
    a, b = Tensor("a", floats, rank=1), Tensor("b", floats, rank=1, same_dtype_as="a")
    signature = Signature("f", "int", (a, b, Scalar("n", "int64")))
    with pytest.raises(ValueError, match="f: b must have the dtype of a"):
        b.check("f", torch.zeros(2), {"a": torch.zeros(2).bfloat16()})
    b.check("f", torch.zeros(2), {"a": torch.zeros(2)})  # fits: no error
    assert [t.__name__ for t in signature.argtypes()] == ["c_void_p", "c_void_p", "c_long"]
