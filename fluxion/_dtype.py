"""Fluxion's dtypes and PyTorch's type-promotion rules."""

from __future__ import annotations

import numpy as np


class dtype:  # noqa: N801 - PyTorch's name
    """A tensor element type, printed and compared like ``torch.dtype``.

    >>> import fluxion
    >>> fluxion.float32, fluxion.float32.is_floating_point
    (fluxion.float32, True)
    """

    __slots__ = ("name", "np", "category", "itemsize", "is_floating_point", "is_signed")

    def __init__(self, name: str, np_dtype: type, category: int) -> None:
        self.name = name
        self.np = np.dtype(np_dtype)
        self.category = category  # 0 bool, 1 integer, 2 floating: promotion order
        self.itemsize = self.np.itemsize
        self.is_floating_point = category == 2
        self.is_signed = self.np.kind in "fi"

    def __repr__(self) -> str:
        return f"fluxion.{self.name}"

    def __reduce__(self) -> str:
        return self.name


bool_ = dtype("bool", np.bool_, 0)
uint8 = dtype("uint8", np.uint8, 1)
int8 = dtype("int8", np.int8, 1)
int16 = dtype("int16", np.int16, 1)
int32 = dtype("int32", np.int32, 1)
int64 = dtype("int64", np.int64, 1)
float16 = dtype("float16", np.float16, 2)
float32 = dtype("float32", np.float32, 2)
float64 = dtype("float64", np.float64, 2)

ALL: tuple[dtype, ...] = (bool_, uint8, int8, int16, int32, int64, float16, float32, float64)
FLOATING: tuple[dtype, ...] = (float16, float32, float64)
_FROM_NP: dict[np.dtype, dtype] = {d.np: d for d in ALL}

_default_float = float32


def from_numpy_dtype(npd: np.dtype) -> dtype:
    """The Fluxion dtype of a NumPy dtype; a clear TypeError for ones we do not support."""
    try:
        return _FROM_NP[npd]
    except KeyError:
        raise TypeError(
            f"NumPy dtype {npd} has no Fluxion equivalent; supported: "
            + ", ".join(d.name for d in ALL)
        ) from None


def get_default_dtype() -> dtype:
    """The dtype Python floats become (``float32`` unless changed).

    >>> import fluxion
    >>> fluxion.get_default_dtype()
    fluxion.float32
    """
    return _default_float


def set_default_dtype(d: dtype) -> None:
    """Set the dtype Python floats become; only floating dtypes are allowed.

    >>> import fluxion
    >>> fluxion.set_default_dtype(fluxion.float64); fluxion.set_default_dtype(fluxion.float32)
    """
    global _default_float
    if not isinstance(d, dtype) or not d.is_floating_point:
        raise TypeError(f"set_default_dtype: only floating dtypes are supported, got {d!r}")
    _default_float = d


def promote_types(a: dtype, b: dtype) -> dtype:
    """PyTorch's promotion of two dtypes: the higher category wins, then the wider type.

    >>> import fluxion
    >>> fluxion.promote_types(fluxion.uint8, fluxion.int8)
    fluxion.int16
    """
    if a is b:
        return a
    if a.category != b.category:
        return a if a.category > b.category else b
    return _FROM_NP[np.promote_types(a.np, b.np)]


def scalar_dtype(x: bool | int | float) -> dtype:
    """The dtype a Python scalar gets on its own (``fluxion.tensor(3)`` is int64)."""
    if isinstance(x, bool):
        return bool_
    if isinstance(x, int):
        return int64
    return _default_float


def _category_of_scalar(x: object) -> int:
    return 0 if isinstance(x, bool) else 1 if isinstance(x, int) else 2


def result_type(*operands: object) -> dtype:
    """PyTorch's result type: dimensioned tensors outrank 0-dim tensors outrank Python
    scalars; a lower tier only matters when it brings a higher category.

    >>> import fluxion
    >>> fluxion.result_type(fluxion.tensor([1, 2], dtype=fluxion.int32), 2.5)
    fluxion.float32
    """
    dim_t: dtype | None = None
    zero_t: dtype | None = None
    scalar_cat = -1
    for x in operands:
        d = getattr(x, "dtype", None)
        if isinstance(d, dtype):
            if x.ndim:  # type: ignore[attr-defined]
                dim_t = d if dim_t is None else promote_types(dim_t, d)
            else:
                zero_t = d if zero_t is None else promote_types(zero_t, d)
        else:
            scalar_cat = max(scalar_cat, _category_of_scalar(x))
    out = dim_t
    if zero_t is not None and (out is None or zero_t.category > out.category):
        out = zero_t
    if scalar_cat >= 0 and (out is None or scalar_cat > out.category):
        out = (bool_, int64, _default_float)[scalar_cat]
    assert out is not None
    return out
