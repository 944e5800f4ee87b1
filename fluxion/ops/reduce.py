"""Reductions and scans. ``dims`` is a tuple of non-negative axes or None (all)."""

from __future__ import annotations

from typing import Any

import numpy as np

from fluxion.ops.registry import OPS, apply, defop
from fluxion.tensor import Tensor


def _kept(n: Any, g: Tensor) -> Tensor:
    """Reshape a reduced gradient so it broadcasts against the input again."""
    dims, keepdim = n.attrs.get("dims"), n.attrs.get("keepdim", False)
    shape = n.shapes[0]
    if keepdim or not shape:
        return g
    if dims is None:
        return g.reshape((1,) * len(shape))
    kshape = [1 if i in dims else s for i, s in enumerate(shape)]
    return g.reshape(tuple(kshape))


def _kept_out(n: Any) -> Tensor:
    return _kept(n, n.out)


def _reduce_kept(name: str, x: Tensor, dims: tuple[int, ...] | None) -> Tensor:
    return apply(OPS[name], x, dims=dims, keepdim=True)


def _acc(f, a, **kw):
    """``f(a, **kw)``, float16 accumulated in float32 as PyTorch does (NumPy would
    accumulate in float16 and lose digits over long reductions)."""
    if a.dtype != np.float16:
        return f(a, **kw)
    return f(a, dtype=np.float32, **kw).astype(np.float16)


@defop("sum", "reduce", save_inputs=False)
def sum_(xp, a, dims=None, keepdim=False):
    return _acc(xp.sum, a, axis=dims, keepdims=keepdim)


@sum_.defgrad
def _(n, g):
    return (_kept(n, g).expand(n.shapes[0]),)


@defop("prod", "reduce", save_output=True)
def prod(xp, a, dims=None, keepdim=False):
    return _acc(xp.prod, a, axis=dims, keepdims=keepdim)


@prod.defgrad
def _(n, g):
    # grad = product of the others; out / x fails at zeros, so handle them apart
    x, dims = n.inputs[0], n.attrs.get("dims")
    is_zero = x == 0
    safe = x.where(~is_zero, 1)
    zeros = _reduce_kept("sum", is_zero, dims)
    others = _reduce_kept("prod", safe, dims)
    # at a zero the others' product also holds the other zeros: none (factor 1), one (its
    # value, written as a sum of the zeros minus this one so that the second derivative
    # is right), or more (0)
    other_zero = _reduce_kept("sum", x.where(is_zero, 0), dims) - x
    factor = other_zero.where(zeros == 2, 0).where(zeros != 1, 1)
    grad = (_kept_out(n) / safe).where(~is_zero, others * factor)
    return (_kept(n, g) * grad,)


def _amax_grad(n, g):
    x = n.inputs[0]
    mask = x == _kept_out(n)
    count = _reduce_kept("sum", mask, n.attrs.get("dims"))
    return (_kept(n, g) * mask / count,)


@defop("amax", "reduce", save_output=True)
def amax(xp, a, dims=None, keepdim=False):
    return xp.max(a, axis=dims, keepdims=keepdim)


@defop("amin", "reduce", save_output=True)
def amin(xp, a, dims=None, keepdim=False):
    return xp.min(a, axis=dims, keepdims=keepdim)


amax.backward = amin.backward = _amax_grad


def _first_arg(xp, a, dim, largest):
    """Index of the first max (min); NumPy, like PyTorch, lets NaN win."""
    k = a.shape[dim] if a.ndim else 1
    if 1 < k <= 16 and dim % a.ndim != a.ndim - 1 and a.size >= 4096 \
            and a.dtype.kind in "fiu":
        return _first_arg_short(xp, a, dim % a.ndim, largest)
    return xp.argmax(a, axis=dim) if largest else xp.argmin(a, axis=dim)


def _first_arg_short(xp, a, dim, largest):
    """``_first_arg`` along a short axis that is not the last (max-pooling's window):
    NumPy's argmax would copy the axis to the end and loop per window; k-1 elementwise
    extremes and k compares over whole slices are 2x faster. Same answer, NaN included:
    scanning from the back, the first slice equal to the extreme (or NaN) wins."""
    k = a.shape[dim]
    parts = [a[(slice(None),) * dim + (j,)] for j in range(k)]
    best = parts[0].copy()
    pick = xp.maximum if largest else xp.minimum
    for p in parts[1:]:
        pick(best, p, out=best)
    idx = xp.full(best.shape, k - 1, np.int64)
    for j in range(k - 2, -1, -1):
        hit = parts[j] == best
        if a.dtype.kind == "f":
            hit |= xp.isnan(parts[j])
        xp.copyto(idx, j, where=hit)
    return idx


@defop("max_dim", "reduce", n_aux=1, save_inputs=False)
def max_dim(xp, a, dim, keepdim=False):
    if a.ndim == 0:  # dim 0 (or -1) of a 0-d tensor is the tensor itself
        return a.copy(), np.zeros((), np.int64)
    idx = xp.expand_dims(_first_arg(xp, a, dim, True), dim)
    vals = xp.take_along_axis(a, idx, axis=dim)
    if not keepdim:
        vals, idx = vals.squeeze(dim), idx.squeeze(dim)
    return vals, idx.astype(np.int64)


@defop("min_dim", "reduce", n_aux=1, save_inputs=False)
def min_dim(xp, a, dim, keepdim=False):
    if a.ndim == 0:
        return a.copy(), np.zeros((), np.int64)
    idx = xp.expand_dims(_first_arg(xp, a, dim, False), dim)
    vals = xp.take_along_axis(a, idx, axis=dim)
    if not keepdim:
        vals, idx = vals.squeeze(dim), idx.squeeze(dim)
    return vals, idx.astype(np.int64)


def _select_grad(n, g):
    shape, dim = n.shapes[0], n.attrs["dim"]
    if not shape:
        return (g,)
    idx = Tensor._make(n.aux[0])  # the forward's own indices: no second argmax
    if not n.attrs.get("keepdim"):
        idx, g = idx.unsqueeze(dim), g.unsqueeze(dim)
    # scattered into a broadcast zero: nothing the size of the input to allocate and fill
    return (g.new_zeros(()).expand(shape).scatter(dim, idx, g),)


max_dim.backward = min_dim.backward = _select_grad


@defop("argmax", "reduce", differentiable=False)
def argmax(xp, a, dim=None, keepdim=False):
    r = _first_arg(xp, a if dim is not None else a.reshape(-1), dim if dim is not None else 0,
                   True)
    if keepdim:
        r = xp.expand_dims(r, dim) if dim is not None else r.reshape((1,) * a.ndim)
    return xp.asarray(r, dtype=np.int64)


@defop("argmin", "reduce", differentiable=False)
def argmin(xp, a, dim=None, keepdim=False):
    r = _first_arg(xp, a if dim is not None else a.reshape(-1), dim if dim is not None else 0,
                   False)
    if keepdim:
        r = xp.expand_dims(r, dim) if dim is not None else r.reshape((1,) * a.ndim)
    return xp.asarray(r, dtype=np.int64)


# PyTorch keeps uint8 for uint8 inputs (a legacy rule), bool for everything else
@defop("all", "reduce", differentiable=False)
def all_(xp, a, dims=None, keepdim=False):
    return xp.all(a, axis=dims, keepdims=keepdim).astype(np.uint8 if a.dtype == np.uint8 else bool)


@defop("any", "reduce", differentiable=False)
def any_(xp, a, dims=None, keepdim=False):
    return xp.any(a, axis=dims, keepdims=keepdim).astype(np.uint8 if a.dtype == np.uint8 else bool)


@defop("cumsum", "reduce", save_inputs=False)
def cumsum(xp, a, dim):
    if not a.ndim:
        return a.copy()  # NumPy would make it 1-d
    return _acc(xp.cumsum, a, axis=dim)


@cumsum.defgrad
def _(n, g):
    d = n.attrs["dim"]
    return (g.flip(d).cumsum(d).flip(d),)


@defop("norm2", "reduce", save_output=True)
def norm2(xp, a, dims=None, keepdim=False):
    """The Euclidean norm; its gradient is 0 at 0, as PyTorch defines it."""
    return xp.sqrt(xp.sum(a * a, axis=dims, keepdims=keepdim))


@norm2.defgrad
def _(n, g):
    x, out = n.inputs[0], _kept_out(n)
    zero = out == 0
    scale = (_kept(n, g) / out.where(~zero, 1)).where(~zero, 0)
    return (x * scale,)


def _sort_idx(xp, a, dim, descending, stable=True):
    key = -a if descending and a.dtype.kind in "fi" else a
    idx = xp.argsort(key, axis=dim, kind="stable")
    if descending and a.dtype.kind not in "fi":
        idx = xp.flip(xp.argsort(a, axis=dim, kind="stable"), axis=dim)
    return idx


@defop("sort", "reduce", n_aux=1, save_inputs=False)
def sort(xp, a, dim=-1, descending=False, stable=False):
    idx = _sort_idx(xp, a, dim, descending)
    return xp.take_along_axis(a, idx, axis=dim), idx.astype(np.int64)


@defop("topk", "reduce", n_aux=1, save_inputs=False)
def topk(xp, a, k, dim=-1, largest=True, sorted=True):
    idx = xp.take(_sort_idx(xp, a, dim, largest), xp.arange(k), axis=dim)
    return xp.take_along_axis(a, idx, axis=dim), idx.astype(np.int64)


def _sorted_grad(n, g):
    idx = Tensor._make(n.aux[0])  # where the forward put each element
    return (g.new_zeros(()).expand(n.shapes[0]).scatter(n.attrs.get("dim", -1), idx, g),)


sort.backward = topk.backward = _sorted_grad


# --- shape rules (capture uses them instead of running the kernel on a dummy) -------------
def _along(specs, dim, keepdim=False, size=None):
    """The shape after reducing (or, with ``size``, resizing) dimension ``dim``."""
    shape = specs[0].shape
    if not shape:
        return (), specs[0].dtype
    d = dim % len(shape)
    if size is not None:
        return (*shape[:d], size, *shape[d + 1:]), specs[0].dtype
    kept = (1,) if keepdim else ()
    return (*shape[:d], *kept, *shape[d + 1:]), specs[0].dtype


max_dim.shape_rule = min_dim.shape_rule = lambda specs, dim, keepdim=False: _along(
    specs, dim, keepdim)
sort.shape_rule = lambda specs, **_: (specs[0].shape, specs[0].dtype)
topk.shape_rule = lambda specs, k, dim=-1, **_: _along(specs, dim, size=k)
