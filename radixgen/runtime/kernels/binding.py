"""The one place where Python meets a C entry point.

Each entry point is declared once, as a `Signature`: its C name, its return type and every
argument in order, a tensor (allowed dtypes, rank, layout, optional) or a scalar (int64, int,
float). `bind` derives the ctypes argtypes from the declaration and returns a `BoundFunction`,
called with keyword arguments named as in the declaration (and in the C source; a unit test
compares the two). Before every call it checks each tensor against its declaration and raises
ValueError naming the kernel and the argument, so a tensor of the wrong dtype, rank or layout
never reaches the C side as a raw pointer. Relations between arguments (this tensor has as many
rows as that one) stay with the kernel's wrapper, which knows what they mean.
"""

from __future__ import annotations

import ctypes
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


class BoundFunction:
    """A declared entry point of a loaded library; call it with every argument by name."""

    def __init__(self, library: ctypes.CDLL, signature: Signature):
        self.signature = signature
        self._function = getattr(library, signature.name)
        self._function.restype = _RETURN_TYPES[signature.returns]
        self._function.argtypes = signature.argtypes()
        self._names = tuple(a.name for a in signature.args)
        self._name_set = frozenset(self._names)
        self._tensors = tuple((i, a) for i, a in enumerate(signature.args) if isinstance(a, Tensor))

    def __call__(self, **arguments: Any) -> Any:
        if arguments.keys() != self._name_set:
            missing = [n for n in self._names if n not in arguments]
            unknown = sorted(set(arguments) - set(self._names))
            raise TypeError(f"{self.signature.name}: missing {missing}, unknown {unknown}")
        values = [arguments[name] for name in self._names]
        for i, spec in self._tensors:
            value = values[i]
            if value is None:
                if not spec.optional:
                    raise ValueError(f"{self.signature.name}: {spec.name} is required")
                continue  # NULL
            spec.check(self.signature.name, value, arguments)
            values[i] = value.data_ptr()
        return self._function(*values)


def bind(library: ctypes.CDLL, signature: Signature) -> BoundFunction:
    """The entry point `signature.name` of `library`, typed and checked by `signature`."""
    return BoundFunction(library, signature)


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
