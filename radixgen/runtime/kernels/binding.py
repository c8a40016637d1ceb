"""The one place where Python meets a C entry point.

Each entry point is declared once, as a `Signature`: its C name, its return type and every
argument in order, a tensor (allowed dtypes, rank, layout, optional) or a scalar (int64, int,
float). `bind` derives the ctypes argtypes from the declaration and returns a function called
with keyword arguments named as in the declaration (and in the C source; a unit test compares
the two). Before every call it checks each tensor against its declaration and raises
ValueError naming the kernel and the argument, so a tensor of the wrong dtype, rank or layout
never reaches the C side as a raw pointer. Relations between arguments (this tensor has as many
rows as that one) stay with the kernel's wrapper, which knows what they mean.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch

_SCALAR_TYPES = {"int64": ctypes.c_int64, "int": ctypes.c_int, "float": ctypes.c_float}
_RETURN_TYPES = {"int": ctypes.c_int, "void": None}
Layout = Literal["contiguous", "rows"]


@dataclass(frozen=True)
class Tensor:
    """A tensor argument, passed as its data pointer.

    `layout` "contiguous": the whole tensor is packed. "rows": each row (index along the first
    dimension) is packed but rows may lie any distance apart (a column slice of a wider matrix);
    the kernel then takes the row stride as a separate argument. `optional`: None passes NULL.
    `same_dtype_as`: the name of an earlier tensor argument whose dtype this one must share."""

    name: str
    dtypes: tuple[torch.dtype, ...]
    rank: int
    layout: Layout = "contiguous"
    optional: bool = False
    same_dtype_as: str | None = None

    def check(self, kernel: str, value: Any, arguments: dict[str, Any]) -> None:
        """Raise ValueError (TypeError for a non-tensor) unless `value` fits this argument."""
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{kernel}: {self.name} must be a tensor, got {type(value).__name__}")
        if value.dtype not in self.dtypes:
            raise ValueError(
                f"{kernel}: {self.name} must be {_names(self.dtypes)}, got {value.dtype}"
            )
        if self.same_dtype_as is not None and value.dtype != arguments[self.same_dtype_as].dtype:
            raise ValueError(f"{kernel}: {self.name} must have the dtype of {self.same_dtype_as}")
        if not value.is_cpu:
            raise ValueError(f"{kernel}: {self.name} must be on the CPU, got {value.device}")
        if value.dim() != self.rank:
            raise ValueError(
                f"{kernel}: {self.name} must have rank {self.rank}, got shape {tuple(value.shape)}"
            )
        if self.layout == "contiguous":
            if not value.is_contiguous():
                raise ValueError(f"{kernel}: {self.name} must be contiguous")
        elif not _rows_packed(value):
            raise ValueError(f"{kernel}: each row of {self.name} must be contiguous")


@dataclass(frozen=True)
class Scalar:
    """A scalar argument: C `int64_t` ("int64"), `int` ("int") or `float` ("float")."""

    name: str
    kind: Literal["int64", "int", "float"]


@dataclass(frozen=True)
class Signature:
    """One C entry point: `returns` is "int" (a status) or "void"."""

    name: str
    returns: Literal["int", "void"]
    args: tuple[Tensor | Scalar, ...]

    def argtypes(self) -> list[type]:
        return [
            ctypes.c_void_p if isinstance(a, Tensor) else _SCALAR_TYPES[a.kind] for a in self.args
        ]


def bind(library: ctypes.CDLL, signature: Signature) -> Callable[..., Any]:
    """The entry point `signature.name` of `library`, typed and checked by `signature`: a
    function taking every argument by keyword, as declared.

    It runs on every layer of every forward pass, so it is compiled from the declaration into
    one plain function (its text is the returned function's `source`): keyword-only parameters,
    one expression per tensor (dtype, device, rank, layout) and the ctypes call. When a tensor's
    expression fails, its declaration's `check` raises the error that names the argument."""
    function = getattr(library, signature.name)
    function.restype = _RETURN_TYPES[signature.returns]
    function.argtypes = signature.argtypes()
    source, namespace = _compile(signature)
    namespace["_function"] = function
    exec(source, namespace)  # our own declaration's text, not input
    bound = namespace[signature.name]
    bound.signature, bound.source = signature, source
    return bound


def _compile(signature: Signature) -> tuple[str, dict[str, Any]]:
    """The source of a checked call of `signature`, and the namespace it runs in."""
    namespace: dict[str, Any] = {}
    names = ", ".join(a.name for a in signature.args)
    lines = [f"def {signature.name}(*, {names}):" if names else f"def {signature.name}():"]
    passed = []
    for i, arg in enumerate(signature.args):
        if isinstance(arg, Scalar):
            passed.append(arg.name)
            continue
        n = arg.name
        namespace[f"_spec{i}"], namespace[f"_dtypes{i}"] = arg, arg.dtypes
        layout = f"{n}.is_contiguous()" if arg.layout == "contiguous" else _rows_test(n, arg.rank)
        test = f"{n}.dtype in _dtypes{i} and {n}.is_cpu and {n}.dim() == {arg.rank} and {layout}"
        if arg.same_dtype_as is not None:
            test += f" and {n}.dtype == {arg.same_dtype_as}.dtype"
        pad = "    "
        if arg.optional:
            lines.append(f"    if {n} is not None:")
            pad = "        "
        lines += [
            f"{pad}try:",
            f"{pad}    fits = {test}",
            f"{pad}except AttributeError:",  # not a tensor
            f"{pad}    fits = False",
            f"{pad}if not fits:",
            f"{pad}    _spec{i}.check({signature.name!r}, {n}, locals())",
        ]
        pointer = f"{n}.data_ptr()"
        passed.append(f"None if {n} is None else {pointer}" if arg.optional else pointer)
    lines.append(f"    return _function({', '.join(passed)})")
    return "\n".join(lines) + "\n", namespace


def _rows_test(name: str, rank: int) -> str:
    """An expression true when every dimension of `name` but the first is packed: stride(d) is
    the product of the sizes after d. Stricter than `_rows_packed` (a dimension of size 1 may
    have any stride), which `check` applies when this fails."""
    tests = []
    for dim in range(rank - 1, 0, -1):
        packed = " * ".join(f"{name}.size({d})" for d in range(dim + 1, rank)) or "1"
        tests.append(f"{name}.stride({dim}) == {packed}")
    return " and ".join(tests)


def _rows_packed(t: torch.Tensor) -> bool:
    """Whether every dimension but the first is packed (each row is one contiguous run)."""
    expected = 1
    for size, stride in zip(reversed(t.shape[1:]), reversed(t.stride()[1:]), strict=True):
        if size != 1 and stride != expected:
            return False
        expected *= size
    return True


def _names(dtypes: tuple[torch.dtype, ...]) -> str:
    return " or ".join(str(d).removeprefix("torch.") for d in dtypes)
