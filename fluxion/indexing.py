"""``tensor[key]`` and ``tensor[key] = value``: NumPy's (and PyTorch's) indexing rules."""

from __future__ import annotations

from typing import Any

import numpy as np

from fluxion.ops import OPS, apply
from fluxion.ops.registry import label
from fluxion.tensor import Tensor


def _is_array(k: Any) -> bool:
    """An index array (NumPy's, or a value ``fluxion.compile`` has not computed yet)."""
    return hasattr(k, "shape") and hasattr(k, "dtype") and not isinstance(k, np.generic)


def _convert(item: Any) -> Any:
    if isinstance(item, Tensor):
        arr = item._data
        if type(arr) is not np.ndarray and arr.dtype.kind == "b":
            # the result's size depends on the mask's values
            arr = item._arr("indexing with a boolean mask (the result's size depends on it)")
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


def normalize(x: Tensor, key: Any) -> tuple[tuple, tuple | None]:
    """Split a key the way PyTorch applies it: a basic part (ints, slices, None; a view)
    and, when index arrays are present, an advanced part applied to that view.

    NumPy alone would treat ints as advanced indices and ``...``/``None`` as separators,
    which places the indexed dimensions differently from PyTorch."""
    items = key if isinstance(key, tuple) else (key,)
    out = [_convert(k) for k in items]
    consumed = [
        (k.ndim if k.dtype.kind == "b" else 1) if _is_array(k) else
        0 if k is None or k is Ellipsis else 1
        for k in out
    ]
    if sum(consumed) > x.ndim:
        raise IndexError(f"too many indices for tensor of dimension {x.ndim}")
    if sum(1 for k in out if k is Ellipsis) > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    basic: list = []
    adv: list = []
    dim = 0
    for k, n in zip(out, consumed):
        if k is Ellipsis:
            span = x.ndim - sum(consumed)
            basic.extend([slice(None)] * span)
            adv.extend([slice(None)] * span)
            dim += span
        elif k is None:
            basic.append(None)
            adv.append(slice(None))
        elif _is_array(k):
            basic.extend([slice(None)] * n)
            adv.append(k)
            dim += n
        else:
            if isinstance(k, (int, np.integer)):
                size = x._data.shape[dim]
                if not -size <= k < size:
                    raise IndexError(
                        f"index {k} is out of bounds for dimension {dim} with size {size}"
                    )
            else:
                adv.append(slice(None))
            basic.append(k)
            dim += 1
    if not any(_is_array(k) for k in adv):
        return tuple(basic), None
    return tuple(basic), tuple(adv)


def getitem(x: Tensor, key: Any) -> Tensor:
    """``x[key]``: basic indexing gives a view, advanced indexing a copy."""
    basic, adv = normalize(x, key)
    if any(k != slice(None) for k in basic) or adv is None:
        view = apply(OPS["slice"], x, key=basic)
        ints = any(isinstance(i, (int, np.integer)) for i in basic)
        label(view, "SelectBackward0" if ints else "SliceBackward0")
    else:
        view = x
    if adv is None:
        return view
    try:
        return apply(OPS["index"], view, key=adv)
    except RuntimeError as e:
        raise IndexError(str(e).removeprefix("index: ")) from None


def setitem(x: Tensor, key: Any, value: Any) -> None:
    """``x[key] = value``: an in-place write, recorded for autograd when needed."""
    from fluxion._tensor_methods import commit_inplace, recording_inplace

    basic, adv = normalize(x, key)
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
            if adv is None:
                x._data[basic] = v._data if isinstance(v, Tensor) else v
            else:
                x._data[basic][adv] = v._data if isinstance(v, Tensor) else v
        except (ValueError, IndexError) as e:
            raise type(e)(f"setitem: {e} (tensor shape {list(x.shape)})") from None
        x._vbox[0] += 1
        return
    if adv is None:
        commit_inplace(x, apply(OPS["index_put"], x, v, key=basic), "index_put_")
        return
    # write through the basic view so the write reaches x (and its graph) via the view
    target = x if all(k == slice(None) for k in basic) else apply(OPS["slice"], x, key=basic)
    commit_inplace(target, apply(OPS["index_put"], target, v, key=adv), "index_put_")
