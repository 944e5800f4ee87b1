"""Indexing primitives: advanced indexing and its inverse (index_put), gather/scatter.

Index arrays travel as attributes (NumPy int64 or bool arrays) of the node."""

from __future__ import annotations

import numpy as np

from fluxion.ops.registry import OPS, apply, defop


def _along(index: np.ndarray, dim: int) -> tuple:
    """Full index tuple that addresses ``index``'s entries along ``dim``."""
    grids = list(np.indices(index.shape, sparse=True))
    grids[dim] = index
    return tuple(grids)


@defop("index", "index", save_inputs=False)
def index(xp, a, key):
    """Advanced indexing (integer arrays, boolean masks, mixed with slices)."""
    return a[key]


def add_at(xp, out, key, values) -> None:
    """``out[key] += values`` with repeated indices adding up (``xp.add.at``). Rows picked
    by one integer array (an embedding's gradient) are summed group by group after a
    stable sort instead: ``np.add.at`` takes one slow step per index (6x slower for a
    2048-token batch).

    >>> out = np.zeros((3, 2))
    >>> add_at(np, out, np.array([0, 2, 0, -1] * 16), np.ones(2))
    >>> out.tolist()
    [[32.0, 32.0], [0.0, 0.0], [32.0, 32.0]]
    """
    if type(key) is tuple and len(key) == 1:
        key = key[0]  # (rows,) indexes as rows does
    if xp is not np or type(key) is not np.ndarray or key.dtype.kind not in "iu" \
            or out.ndim < 2 or out.dtype.kind != "f" or key.size < 64 \
            or not out.size or not out.flags.c_contiguous:  # (sums go into a view)
        xp.add.at(out, key, values)
        return
    rows = key.reshape(-1)
    rows = np.where(rows < 0, rows + out.shape[0], rows)  # -1 and n-1 are one group
    vals = np.broadcast_to(values, key.shape + out.shape[1:]).reshape(rows.size, -1)
    order = np.argsort(rows, kind="stable")  # stable: each row adds in index order
    rows = rows[order]
    starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
    out.reshape(out.shape[0], -1)[rows[starts]] += np.add.reduceat(vals[order], starts, 0)


def _index_scatter(n, g, acc):
    add_at(np, acc, n.attrs["key"], g)


index.scatter_grad = _index_scatter


@index.defgrad
def _(n, g):
    from fluxion.creation import zeros

    base = zeros((), dtype=g.dtype).expand(n.shapes[0])  # a broadcast zero: the op copies
    return (apply(OPS["index_put"], base, g, key=n.attrs["key"], accumulate=True),)


@defop("index_put", "index", save_inputs=False)
def index_put(xp, a, values, key, accumulate=False):
    out = a.copy()
    if accumulate:
        add_at(xp, out, key, values)
    else:
        out[key] = values
    return out


@index_put.defgrad
def _(n, g):
    from fluxion.ops.elementwise import sum_to

    key, acc = n.attrs["key"], n.attrs.get("accumulate", False)
    ga = gv = None
    if n.needs_input_grad[0]:
        ga = g if acc else apply(OPS["index_put"], g, 0.0, key=key)
    if n.needs_input_grad[1]:
        gv = sum_to(apply(OPS["index"], g, key=key), n.shapes[1])
    return ga, gv


@defop("gather", "index", save_inputs=False)
def gather(xp, a, dim, index):
    return xp.take_along_axis(a, index, axis=dim)


@gather.defgrad
def _(n, g):
    from fluxion.creation import zeros

    base = zeros((), dtype=g.dtype).expand(n.shapes[0])  # a broadcast zero: the op copies
    return (apply(OPS["scatter_add"], base, g, dim=n.attrs["dim"], index=n.attrs["index"]),)


def _src_grad(n, g):
    """Gradient for ``src`` of scatter/scatter_add: gathered, zero past the index's extent."""
    dim, index = n.attrs["dim"], n.attrs["index"]
    got = apply(OPS["gather"], g, dim=dim, index=index)
    if got.shape != n.shapes[1]:
        key = tuple(slice(0, s) for s in index.shape)
        got = apply(OPS["slice_backward"], got, shape=n.shapes[1], key=key)
    return got


@defop("scatter", "index", save_inputs=False)
def scatter(xp, a, src, dim, index):
    out = a.copy()
    if isinstance(src, np.ndarray) and src.ndim:
        src = src[tuple(slice(0, s) for s in index.shape)]
    out[_along(index, dim)] = src
    return out


@scatter.defgrad
def _(n, g):
    dim, index = n.attrs["dim"], n.attrs["index"]
    ga = apply(OPS["scatter"], g, 0.0, dim=dim, index=index) if n.needs_input_grad[0] else None
    gs = _src_grad(n, g) if n.needs_input_grad[1] else None
    return ga, gs


@defop("scatter_add", "index", save_inputs=False)
def scatter_add(xp, a, src, dim, index):
    out = a.copy()
    src = src[tuple(slice(0, s) for s in index.shape)]
    xp.add.at(out, _along(index, dim), src)
    return out


@scatter_add.defgrad
def _(n, g):
    return (g if n.needs_input_grad[0] else None,
            _src_grad(n, g) if n.needs_input_grad[1] else None)


# --- shape rules (used by the compiler's capture instead of running the kernel) ------------
@gather.defshape
def _(specs, dim, index):
    return tuple(np.shape(index)), specs[0].dtype


for _op in (scatter, scatter_add, index_put):
    _op.shape_rule = lambda specs, **_: (specs[0].shape, specs[0].dtype)
