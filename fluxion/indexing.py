"""``tensor[key]`` and ``tensor[key] = value``: NumPy's (and PyTorch's) indexing rules."""

from __future__ import annotations

from typing import Any

import numpy as np

from fluxion.ops import OPS, apply
from fluxion.ops.registry import label
from fluxion.tensor import Tensor


def _convert(item: Any) -> Any:
    if isinstance(item, Tensor):
        arr = item._data
        if arr.dtype.kind == "f":
            raise IndexError("tensors used as indices must be long, int, byte or bool tensors "
                             f"(got {item.dtype})")
        return arr if arr.dtype.kind == "b" else arr.astype(np.int64, copy=False)
    if isinstance(item, (list, np.ndarray)) and not isinstance(item, bool):
        arr = np.asarray(item)
        if arr.dtype.kind == "f":
            raise IndexError("tensors used as indices must be long, int, byte or bool tensors")
        if arr.dtype == object:
            raise IndexError(f"index {item!r} mixes types that cannot form an index")
        return arr
    if isinstance(item, slice):
        if item.step is not None and int(item.step) <= 0:
            raise ValueError("step must be greater than zero")
        return item
    if item is None or item is Ellipsis or isinstance(item, (int, np.integer)):
        return item
    raise (IndexError if isinstance(item, (float, np.floating)) else TypeError)(
        f"only integers, slices (`:`), ellipsis (`...`), None and long or byte Variables are "
        f"valid indices (got {type(item).__name__})"
    )


def normalize(x: Tensor, key: Any) -> tuple[tuple, bool]:
    """The key as a tuple NumPy understands, and whether it needs advanced indexing."""
    items = key if isinstance(key, tuple) else (key,)
    out = tuple(_convert(k) for k in items)
    advanced = any(isinstance(k, np.ndarray) for k in out)
    used = sum(
        (k.ndim if isinstance(k, np.ndarray) and k.dtype.kind == "b" else 1)
        for k in out if k is not None and k is not Ellipsis
    )
    if used > x.ndim:
        raise IndexError(f"too many indices for tensor of dimension {x.ndim}")
    if not advanced:
        dim = 0
        for k in out:
            if k is Ellipsis:
                dim = x.ndim - sum(1 for j in out if j is not None and j is not Ellipsis) + dim
                continue
            if k is None:
                continue
            if isinstance(k, (int, np.integer)):
                size = x._data.shape[dim]
                if not -size <= k < size:
                    raise IndexError(
                        f"index {k} is out of bounds for dimension {dim} with size {size}"
                    )
            dim += 1
    return out, advanced


def getitem(x: Tensor, key: Any) -> Tensor:
    """``x[key]``: basic indexing gives a view, advanced indexing a copy."""
    k, advanced = normalize(x, key)
    if advanced:
        try:
            return apply(OPS["index"], x, key=k)
        except RuntimeError as e:
            raise IndexError(str(e).removeprefix("index: ")) from None
    out = apply(OPS["slice"], x, key=k)
    ints = any(isinstance(i, (int, np.integer)) for i in k)
    return label(out, "SelectBackward0" if ints else "SliceBackward0")


def setitem(x: Tensor, key: Any, value: Any) -> None:
    """``x[key] = value``: an in-place write, recorded for autograd when needed."""
    from fluxion._tensor_methods import commit_inplace, recording_inplace

    k, _ = normalize(x, key)
    if isinstance(value, Tensor):
        v: Any = value if value.dtype is x.dtype else value.to(x.dtype)
    elif isinstance(value, (bool, int, float, np.generic)):
        v = value
    else:
        from fluxion.creation import tensor

        v = tensor(value, dtype=x.dtype)
    if not recording_inplace(x, v):
        x._check_writeable("__setitem__")
        try:
            x._data[k] = v._data if isinstance(v, Tensor) else v
        except (ValueError, IndexError) as e:
            raise type(e)(f"setitem: {e} (tensor shape {list(x.shape)})") from None
        x._vbox[0] += 1
        return
    commit_inplace(x, apply(OPS["index_put"], x, v, key=k), "index_put_")
