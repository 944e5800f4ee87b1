"""PyTorch-like ``repr`` of tensors."""

from __future__ import annotations

import numpy as np

from fluxion import _dtype


def _float_formatter(data: np.ndarray):
    finite = data[np.isfinite(data)].astype(np.float64)
    if finite.size == 0:
        return lambda v: f"{v}"
    absf = np.abs(finite)
    nonzero = absf[absf > 0]
    if np.all(finite == np.round(finite)) and (absf.max() < 1e8):
        width = max(len(f"{v:.0f}.") for v in (finite.min(), finite.max()))
        return lambda v: (f"{v:.0f}." if np.isfinite(v) else str(v)).rjust(width)
    if nonzero.size and (nonzero.max() / nonzero.min() > 1000 or nonzero.max() >= 1e8
                         or nonzero.min() < 1e-4):
        return lambda v: f"{v:.4e}"
    width = max(len(f"{v:.4f}") for v in (finite.min(), finite.max()))
    return lambda v: (f"{v:.4f}" if np.isfinite(v) else str(v)).rjust(width)


def format_tensor(t) -> str:
    """``tensor([...], dtype=..., requires_grad=True)`` as PyTorch prints it."""
    data = t._data
    d = t.dtype
    if data.size == 0:
        body = "[]" if data.ndim == 1 else f"size={tuple(data.shape)}"
        if body != "[]":
            body = "[], " + body
    else:
        fmt = {}
        if d.is_floating_point:
            fmt["float_kind"] = _float_formatter(data)
        elif d is _dtype.bool_:
            width = 4 if data.all() else 5
            fmt["bool"] = lambda v: ("True" if v else "False").rjust(width)
        body = np.array2string(
            data, separator=", ", prefix="tensor(", formatter=fmt, threshold=1000,
            edgeitems=3, max_line_width=80,
        )
    extras = []
    if d not in (_dtype.get_default_dtype(), _dtype.int64, _dtype.bool_) or (
        data.size == 0 and d is not _dtype.get_default_dtype()
    ):
        extras.append(f"dtype={d!r}")
    if t.grad_fn is not None:
        extras.append(f"grad_fn=<{t.grad_fn.name()}>")
    elif t.requires_grad:
        extras.append("requires_grad=True")
    return "tensor(" + ", ".join([body, *extras]) + ")"
