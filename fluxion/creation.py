"""Creating tensors: from data, filled, ranges, identity."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from fluxion import _dtype
from fluxion._dtype import dtype as DType
from fluxion.backends import resolve
from fluxion.tensor import Tensor


def _np_dtype(d: DType | None) -> np.dtype | None:
    if d is None:
        return None
    _check_dtype(d)
    return d.np


def _check_dtype(d: Any) -> None:
    if d is not None and not isinstance(d, DType):
        raise TypeError(f"dtype must be a fluxion.dtype (e.g. fluxion.float32), got {d!r}")


def _tensor_data(data: Any, dtype: DType | None, copy: bool = True) -> np.ndarray:
    """Turn data (nested lists, scalars, arrays, tensors) into an array with PyTorch's
    dtype inference: Python floats become the default float, ints int64."""
    if isinstance(data, Tensor):
        arr = data._data
        return arr.astype(dtype.np) if dtype is not None and arr.dtype != dtype.np else (
            arr.copy() if copy else arr
        )
    if isinstance(data, np.ndarray):
        if dtype is None and data.dtype not in _dtype._FROM_NP:
            _dtype.from_numpy_dtype(data.dtype)  # raises the clear TypeError
        if copy:
            return np.array(data, dtype=_np_dtype(dtype))
        return np.asarray(data, dtype=_np_dtype(dtype))
    try:
        arr = np.array(data)
    except ValueError as e:
        raise ValueError(f"tensor(): could not build a tensor from the data ({e})") from None
    if arr.dtype == object:
        raise TypeError(
            f"tensor(): could not infer a dtype for data of type {type(data).__name__}; "
            "expected numbers, nested sequences of equal length, or arrays"
        )
    if dtype is not None:
        return arr.astype(dtype.np, copy=False)
    if arr.dtype.kind == "f":
        if not _holds_float_arrays(data):
            arr = arr.astype(_dtype.get_default_dtype().np, copy=False)
    elif arr.dtype.kind in "iu" and arr.dtype not in _dtype._FROM_NP:
        arr = arr.astype(np.int64)
    elif arr.dtype.kind in "iu" and not _holds_arrays(data):
        arr = arr.astype(np.int64, copy=False)
    elif arr.dtype.kind not in "biuf":
        raise TypeError(f"tensor(): unsupported data of dtype {arr.dtype}")
    return arr


def _holds_arrays(data: Any) -> bool:
    if isinstance(data, (Tensor, np.ndarray, np.generic)):
        return True
    if isinstance(data, (list, tuple)) and data:
        return _holds_arrays(data[0])
    return False


def _holds_float_arrays(data: Any) -> bool:
    """Whether the floats come from arrays/tensors (their dtype counts) rather than Python
    floats (which become the default dtype)."""
    if isinstance(data, (Tensor, np.ndarray, np.generic)):
        return np.asarray(data).dtype.kind == "f"
    if isinstance(data, (list, tuple)) and data:
        return _holds_float_arrays(data[0])
    return False


def _finish(arr: np.ndarray, requires_grad: bool) -> Tensor:
    t = Tensor._make(arr)
    if requires_grad:
        t.requires_grad_(True)
    return t


def tensor(
    data: Any, *, dtype: DType | None = None, device: Any = None, requires_grad: bool = False,
    pin_memory: bool = False,
) -> Tensor:
    """A new tensor holding a copy of ``data``.

    >>> import fluxion
    >>> fluxion.tensor([[1, 2], [3, 4]])
    tensor([[1, 2],
            [3, 4]])
    """
    resolve(device)
    _check_dtype(dtype)
    return _finish(_tensor_data(data, dtype), requires_grad)


def as_tensor(data: Any, dtype: DType | None = None, device: Any = None) -> Tensor:
    """Like ``tensor`` but shares memory with a tensor or array when it can.

    >>> import fluxion, numpy as np
    >>> a = np.zeros(2); t = fluxion.as_tensor(a); a[0] = 1; t
    tensor([1., 0.], dtype=fluxion.float64)
    """
    resolve(device)
    _check_dtype(dtype)
    if isinstance(data, Tensor) and (dtype is None or data.dtype is dtype):
        return data
    return Tensor._make(_tensor_data(data, dtype, copy=False))


def from_numpy(arr: np.ndarray) -> Tensor:
    """A tensor sharing memory with a NumPy array.

    >>> import fluxion, numpy as np
    >>> fluxion.from_numpy(np.arange(3))
    tensor([0, 1, 2])
    """
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"from_numpy(): expected np.ndarray (got {type(arr).__name__})")
    _dtype.from_numpy_dtype(arr.dtype)
    return Tensor._make(arr)


def _size(size: Sequence[Any]) -> tuple[int, ...]:
    """Accept ``f(2, 3)``, ``f((2, 3))``, ``f([2, 3])`` and ``f(t.shape)``."""
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = size[0]
    out = []
    for s in size:
        if isinstance(s, Tensor):
            s = int(s)
        if not isinstance(s, (int, np.integer)) or isinstance(s, bool):
            raise TypeError(f"size must be a sequence of ints, got {type(s).__name__} in {size}")
        if s < 0:
            raise RuntimeError(f"Trying to create tensor with negative dimension {s}: {list(size)}")
        out.append(int(s))
    return tuple(out)


def _dt(dtype: DType | None) -> np.dtype:
    _check_dtype(dtype)
    return (dtype or _dtype.get_default_dtype()).np


def zeros(*size: Any, dtype: DType | None = None, device: Any = None,
          requires_grad: bool = False) -> Tensor:
    """A tensor of zeros.

    >>> import fluxion
    >>> fluxion.zeros(2, 3).shape
    fluxion.Size([2, 3])
    """
    resolve(device)
    return _finish(np.zeros(_size(size), _dt(dtype)), requires_grad)


def ones(*size: Any, dtype: DType | None = None, device: Any = None,
         requires_grad: bool = False) -> Tensor:
    """A tensor of ones.

    >>> import fluxion
    >>> fluxion.ones(2)
    tensor([1., 1.])
    """
    resolve(device)
    return _finish(np.ones(_size(size), _dt(dtype)), requires_grad)


def empty(*size: Any, dtype: DType | None = None, device: Any = None,
          requires_grad: bool = False, memory_format: Any = None) -> Tensor:
    """An uninitialised tensor.

    >>> import fluxion
    >>> fluxion.empty(2, 2).shape
    fluxion.Size([2, 2])
    """
    resolve(device)
    return _finish(np.empty(_size(size), _dt(dtype)), requires_grad)


def full(size: Any, fill_value: bool | int | float, *, dtype: DType | None = None,
         device: Any = None, requires_grad: bool = False) -> Tensor:
    """A tensor filled with ``fill_value``; the dtype follows the value as in PyTorch.

    >>> import fluxion
    >>> fluxion.full((2,), 7)
    tensor([7, 7])
    """
    resolve(device)
    if isinstance(fill_value, Tensor):
        fill_value = fill_value.item()
    d = dtype or _dtype.scalar_dtype(fill_value)
    return _finish(np.full(_size((size,)), fill_value, d.np), requires_grad)


def _like(t: Tensor, dtype: DType | None) -> tuple[tuple[int, ...], np.dtype]:
    if not isinstance(t, Tensor):
        raise TypeError(f"expected a Tensor as input, got {type(t).__name__}")
    return t._data.shape, (dtype.np if dtype is not None else t._data.dtype)


def zeros_like(input: Tensor, *, dtype: DType | None = None, device: Any = None,
               requires_grad: bool = False, memory_format: Any = None) -> Tensor:
    """Zeros with the shape (and dtype) of ``input``.

    >>> import fluxion
    >>> fluxion.zeros_like(fluxion.ones(2, dtype=fluxion.int32))
    tensor([0, 0], dtype=fluxion.int32)
    """
    shape, d = _like(input, dtype)
    return _finish(np.zeros(shape, d), requires_grad)


def ones_like(input: Tensor, *, dtype: DType | None = None, device: Any = None,
              requires_grad: bool = False, memory_format: Any = None) -> Tensor:
    """Ones with the shape (and dtype) of ``input``.

    >>> import fluxion
    >>> fluxion.ones_like(fluxion.zeros(2))
    tensor([1., 1.])
    """
    shape, d = _like(input, dtype)
    return _finish(np.ones(shape, d), requires_grad)


def empty_like(input: Tensor, *, dtype: DType | None = None, device: Any = None,
               requires_grad: bool = False, memory_format: Any = None) -> Tensor:
    """Uninitialised, with the shape (and dtype) of ``input``.

    >>> import fluxion
    >>> fluxion.empty_like(fluxion.zeros(3)).shape
    fluxion.Size([3])
    """
    shape, d = _like(input, dtype)
    return _finish(np.empty(shape, d), requires_grad)


def full_like(input: Tensor, fill_value: bool | int | float, *,
              dtype: DType | None = None, device: Any = None,
              requires_grad: bool = False, memory_format: Any = None) -> Tensor:
    """``fill_value`` everywhere, with the shape (and dtype) of ``input``.

    >>> import fluxion
    >>> fluxion.full_like(fluxion.zeros(2), 3)
    tensor([3., 3.])
    """
    shape, d = _like(input, dtype)
    return _finish(np.full(shape, fill_value, d), requires_grad)


def arange(start: float = 0, end: float | None = None, step: float = 1, *,
           dtype: DType | None = None, device: Any = None,
           requires_grad: bool = False) -> Tensor:
    """Values from ``start`` to ``end`` (excluded) by ``step``; int64 when all are ints.

    >>> import fluxion
    >>> fluxion.arange(5), fluxion.arange(0, 1, 0.25)
    (tensor([0, 1, 2, 3, 4]), tensor([0.0000, 0.2500, 0.5000, 0.7500]))
    """
    resolve(device)
    if end is None:
        start, end = 0, start
    vals = [v.item() if isinstance(v, Tensor) else v for v in (start, end, step)]
    start, end, step = vals
    if step == 0:
        raise RuntimeError("arange(): step must be nonzero")
    if (end - start) / step < 0:
        raise RuntimeError(
            f"arange(): upper bound and larger bound inconsistent with step sign "
            f"(start={start}, end={end}, step={step})"
        )
    all_int = all(isinstance(v, int) for v in vals)
    d = dtype or (_dtype.int64 if all_int else _dtype.get_default_dtype())
    n = math.ceil((end - start) / step)
    # computed in float64 as PyTorch does, then cast
    arr = (start + np.arange(n, dtype=np.float64) * step) if not all_int else np.arange(
        start, end, step, dtype=np.int64
    )
    return _finish(arr.astype(d.np, copy=False), requires_grad)


def linspace(start: float, end: float, steps: int, *, dtype: DType | None = None,
             device: Any = None, requires_grad: bool = False) -> Tensor:
    """``steps`` evenly spaced values from ``start`` to ``end`` inclusive.

    >>> import fluxion
    >>> fluxion.linspace(0, 1, 5)
    tensor([0.0000, 0.2500, 0.5000, 0.7500, 1.0000])
    """
    resolve(device)
    if steps < 0:
        raise RuntimeError("linspace(): number of steps must be non-negative")
    d = dtype or _dtype.get_default_dtype()
    return _finish(np.linspace(start, end, steps).astype(d.np), requires_grad)


def logspace(start: float, end: float, steps: int, base: float = 10.0, *,
             dtype: DType | None = None, device: Any = None,
             requires_grad: bool = False) -> Tensor:
    """``base ** linspace(start, end, steps)``.

    >>> import fluxion
    >>> fluxion.logspace(0, 2, 3)
    tensor([  1.,  10., 100.])
    """
    d = dtype or _dtype.get_default_dtype()
    return _finish(np.logspace(start, end, steps, base=base).astype(d.np), requires_grad)


def eye(n: int, m: int | None = None, *, dtype: DType | None = None, device: Any = None,
        requires_grad: bool = False) -> Tensor:
    """The identity matrix (n x m).

    >>> import fluxion
    >>> fluxion.eye(2)
    tensor([[1., 0.],
            [0., 1.]])
    """
    resolve(device)
    return _finish(np.eye(n, m, dtype=_dt(dtype)), requires_grad)
