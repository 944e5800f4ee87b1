"""``repr`` of tensors, laid out as PyTorch prints them (precision 4, line width 80,
summarised above 1000 elements with 3 edge items)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fluxion import _dtype

PRECISION, THRESHOLD, EDGEITEMS, LINEWIDTH = 4, 1000, 3, 80


def _summary_values(data: np.ndarray, summarize: bool) -> np.ndarray:
    """The values that will be printed (edges only when summarising)."""
    if not summarize or data.ndim == 0:
        return data.reshape(-1)
    if data.shape[0] > 2 * EDGEITEMS:
        parts = [data[:EDGEITEMS], data[-EDGEITEMS:]]
    else:
        parts = [data]
    return np.concatenate([_summary_values(p_i, True) for p in parts for p_i in p]
                          or [np.empty(0, data.dtype)])


class _Formatter:
    """Decides integer/fixed/scientific mode and the column width from the values."""

    def __init__(self, values: np.ndarray) -> None:
        self.floating = values.dtype.kind == "f"
        self.int_mode, self.sci_mode, self.width = True, False, 1
        if not self.floating:
            strs = [str(v) for v in values.tolist()]
            self.width = max((len(x) for x in strs), default=1)
            return
        finite = values[np.isfinite(values) & (values != 0)].astype(np.float64)
        if finite.size == 0:
            return
        absv = np.abs(finite)
        lo, hi = absv.min(), absv.max()
        self.int_mode = bool(np.all(finite == np.ceil(finite)))
        if self.int_mode:
            if hi / lo > 1000.0 or hi > 1.0e8:
                self.sci_mode = True
                self.width = max(len(f"{v:.{PRECISION}e}") for v in finite)
            else:
                self.width = max(len(f"{v:.0f}") + 1 for v in finite)
        elif hi / lo > 1000.0 or hi > 1.0e8 or lo < 1.0e-4:
            self.sci_mode = True
            self.width = max(len(f"{v:.{PRECISION}e}") for v in finite)
        else:
            self.width = max(len(f"{v:.{PRECISION}f}") for v in finite)

    def format(self, v: Any) -> str:
        if self.floating:
            if self.sci_mode:
                s = f"{v:{self.width}.{PRECISION}e}"
            elif self.int_mode:
                s = f"{v:.0f}"
                if not (math.isinf(v) or math.isnan(v)):
                    s += "."
            else:
                s = f"{v:.{PRECISION}f}"
        else:
            s = str(v)
        return " " * (self.width - len(s)) + s


def _fmt_dim(data: np.ndarray, indent: int, summarize: bool, fmt: _Formatter) -> str:
    if data.ndim == 0:
        return fmt.format(data.item())
    n = data.shape[0]
    cut = summarize and n > 2 * EDGEITEMS
    if data.ndim == 1:
        idx = [*list(range(EDGEITEMS)), -1, *list(range(n - EDGEITEMS, n))] if cut else range(n)
        items = [" ..." if i == -1 else fmt.format(data[i].item()) for i in idx]
        per_line = max(1, math.floor((LINEWIDTH - indent) / (fmt.width + 2)))
        lines = [", ".join(items[i:i + per_line]) for i in range(0, len(items), per_line)]
        return "[" + ("," + "\n" + " " * (indent + 1)).join(lines) + "]"
    rows = [_fmt_dim(data[i], indent + 1, summarize, fmt) for i in range(EDGEITEMS)] + [
        "..."] + [_fmt_dim(data[i], indent + 1, summarize, fmt) for i in range(n - EDGEITEMS, n)
                  ] if cut else [_fmt_dim(data[i], indent + 1, summarize, fmt) for i in range(n)]
    sep = "," + "\n" * (data.ndim - 1) + " " * (indent + 1)
    return "[" + sep.join(rows) + "]"


def format_tensor(t: Any) -> str:
    """``tensor([...], dtype=..., requires_grad=True)`` as PyTorch prints it."""
    data = t._data
    d = t.dtype
    prefix = "tensor("
    if data.size == 0 and data.ndim != 1:
        body = f"[], size={tuple(data.shape)}"
    elif d is _dtype.bool_:
        body = _fmt_dim(data, len(prefix), data.size > THRESHOLD, _BoolFormatter(data))
    else:
        summarize = data.size > THRESHOLD
        fmt = _Formatter(_summary_values(data, summarize))
        body = _fmt_dim(data, len(prefix), summarize, fmt)
    extras = []
    if d not in (_dtype.get_default_dtype(), _dtype.int64, _dtype.bool_) or (
        data.size == 0 and d is not _dtype.get_default_dtype()
    ):
        extras.append(f"dtype={d!r}")
    if t.grad_fn is not None:
        extras.append(f"grad_fn=<{t.grad_fn.name()}>")
    elif t.requires_grad:
        extras.append("requires_grad=True")
    out = prefix + body
    last = len(out) - out.rfind("\n") + 1
    for suffix in extras:  # a suffix that would pass the line width starts a new line
        if len(suffix) + last + 2 > LINEWIDTH:
            out += ",\n" + " " * len(prefix) + suffix
            last = len(prefix) + len(suffix)
        else:
            out += ", " + suffix
            last += len(suffix) + 2
    return out + ")"


class _BoolFormatter(_Formatter):
    def __init__(self, data: np.ndarray) -> None:
        self.floating = False
        self.width = 4 if data.all() else 5

    def format(self, v: Any) -> str:
        s = "True" if v else "False"
        return " " * (self.width - len(s)) + s
