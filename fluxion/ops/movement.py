"""Movement primitives: views (reshape, permute, expand, basic slicing) and copies that
only rearrange (flip, roll, pad, cat, tril/triu, clone)."""

from __future__ import annotations

import numpy as np

from fluxion.ops.registry import OPS, apply, defop


@defop("reshape", "movement", view=True, save_inputs=False, takes_out=True)
def reshape(xp, a, shape, out=None):
    """A view of ``a`` in the new shape where its strides allow one, else a C-order copy
    (into ``out`` when given)."""
    if out is None:
        return xp.reshape(a, shape)
    try:
        return xp.reshape(a, shape, copy=False)
    except ValueError:  # no view: the copy that reshape makes, into out
        xp.copyto(out.reshape(a.shape), a)
        return out


@reshape.defgrad
def _(n, g):
    return (g.reshape(n.shapes[0]),)


@defop("permute", "movement", view=True, save_inputs=False)
def permute(xp, a, dims):
    return xp.transpose(a, dims)


@permute.defgrad
def _(n, g):
    return (g.permute(tuple(np.argsort(n.attrs["dims"]).tolist())),)


@defop("expand", "movement", view=True, save_inputs=False)
def expand(xp, a, shape):
    return xp.broadcast_to(a, shape)


@expand.defgrad
def _(n, g):
    from fluxion.ops.elementwise import sum_to

    return (sum_to(g, n.shapes[0]),)


@defop("slice", "movement", view=True, save_inputs=False)
def slice_(xp, a, key):
    """Basic indexing: a tuple of ints, slices, None and Ellipsis. (A trailing Ellipsis
    keeps a full integer index a 0-d view rather than a NumPy scalar copy.)"""
    return a[(*key, Ellipsis)] if Ellipsis not in key else a[key]


def _slice_scatter(n, g, acc):
    acc[n.attrs["key"]] += g


slice_.scatter_grad = _slice_scatter


@slice_.defgrad
def _(n, g):
    return (apply(OPS["slice_backward"], g, shape=n.shapes[0], key=n.attrs["key"]),)


@defop("slice_backward", "movement", save_inputs=False)
def slice_backward(xp, g, shape, key):
    """Zeros of ``shape`` with ``g`` written at ``key``: the gradient of a slice."""
    out = xp.zeros(shape, dtype=g.dtype)
    out[key] = g
    return out


@slice_backward.defgrad
def _(n, g):
    return (apply(OPS["slice"], g, key=n.attrs["key"]),)


@defop("flip", "movement", save_inputs=False)
def flip(xp, a, dims):
    return xp.flip(a, dims).copy()  # PyTorch's flip copies; a NumPy view would alias


@flip.defgrad
def _(n, g):
    return (g.flip(n.attrs["dims"]),)


@defop("roll", "movement", save_inputs=False)
def roll(xp, a, shifts, dims):
    return xp.roll(a, shifts, dims)


@roll.defgrad
def _(n, g):
    shifts = n.attrs["shifts"]
    neg = tuple(-s for s in shifts) if isinstance(shifts, tuple) else -shifts
    return (g.roll(neg, n.attrs["dims"]),)


@defop("pad", "movement", save_inputs=False)
def pad(xp, a, widths, value=0.0):
    """Constant padding; ``widths`` is NumPy's ((before, after), ...) per dimension.
    Negative widths crop, as in PyTorch."""
    crop = tuple(slice(max(-b, 0), s - max(-e, 0)) for (b, e), s in zip(widths, a.shape))
    a = a[crop]
    pos = tuple((max(b, 0), max(e, 0)) for b, e in widths)
    return xp.pad(a, pos, constant_values=value)


@pad.defgrad
def _(n, g):
    key = []
    for (b, e), s in zip(n.attrs["widths"], g.shape):
        key.append(slice(max(b, 0), s - max(e, 0)))
    out = g[tuple(key)]
    if any(b < 0 or e < 0 for b, e in n.attrs["widths"]):  # cropped parts get zeros
        widths = tuple((max(-b, 0), max(-e, 0)) for b, e in n.attrs["widths"])
        out = apply(OPS["pad"], out, widths=widths)
    return (out,)


@defop("cat", "movement", save_inputs=False, takes_out=True)
def cat(xp, *arrays, dim=0, out=None):
    """Join along ``dim``; 1-D empty inputs are skipped (PyTorch's legacy rule)."""
    kept = [a for a in arrays if not _legacy_empty(a.shape)] or arrays[:1]
    return xp.concatenate(kept, axis=dim, out=out)


def _legacy_empty(shape):
    return len(shape) == 1 and shape[0] == 0


@cat.defgrad
def _(n, g):
    dim, out, start = n.attrs["dim"], [], 0
    for shape, need in zip(n.shapes, n.needs_input_grad):
        if _legacy_empty(shape) and g.ndim != 1:
            out.append(g.new_zeros(shape) if need else None)
            continue
        size = shape[dim]
        out.append(g.narrow(dim, start, size) if need else None)
        start += size
    return tuple(out)


@defop("tril", "movement", save_inputs=False)
def tril(xp, a, diagonal=0):
    return xp.tril(a, diagonal)


@defop("triu", "movement", save_inputs=False)
def triu(xp, a, diagonal=0):
    return xp.triu(a, diagonal)


tril.backward = lambda n, g: (g.tril(n.attrs.get("diagonal", 0)),)
triu.backward = lambda n, g: (g.triu(n.attrs.get("diagonal", 0)),)


@defop("clone", "movement", save_inputs=False, takes_out=True)
def clone(xp, a, out=None):
    """A C-contiguous copy; ``out``: an array of ``a``'s shape and dtype to copy into (the
    compiler's pooled memory)."""
    if out is None:
        return xp.array(a, copy=True, order="C")
    if out.shape != a.shape:  # copyto would broadcast
        raise ValueError(f"clone: out has shape {out.shape}, the input {a.shape}")
    xp.copyto(out, a)
    return out


clone.backward = lambda n, g: (g,)


@defop("view_scatter", "movement", save_inputs=False)
def view_scatter(xp, base, src, chain):
    """A copy of ``base`` whose view ``chain`` (a list of (view op, attrs)) holds ``src``:
    how an in-place write through a view reaches the base's gradient."""
    out = xp.array(base, copy=True)
    v = out
    for op, attrs in chain:
        v = op.forward(xp, v, **attrs)
    v[...] = src
    return out


@view_scatter.defgrad
def _(n, g):
    chain = n.attrs["chain"]
    gb = gs = None
    if n.needs_input_grad[0]:
        zeros = g.new_zeros(n.shapes[1]) if n.shapes[1] is not None else 0.0
        gb = apply(OPS["view_scatter"], g, zeros, chain=chain)
    if n.needs_input_grad[1]:
        gs = g
        for op, attrs in chain:
            gs = apply(op, gs, **attrs)
    return gb, gs


# --- shape rules (what the compiler's capture uses instead of running the kernel) ---------
@reshape.defshape
def _(specs, shape):
    return tuple(shape), specs[0].dtype


@permute.defshape
def _(specs, dims):
    return tuple(specs[0].shape[d] for d in dims), specs[0].dtype


@expand.defshape
def _(specs, shape):
    return tuple(shape), specs[0].dtype


@slice_.defshape
def _(specs, key):
    s = specs[0]
    probe = np.lib.stride_tricks.as_strided(np.zeros(1, np.int8), s.shape, (0,) * len(s.shape))
    return probe[key].shape, s.dtype


@slice_backward.defshape
def _(specs, shape, key):
    return tuple(shape), specs[0].dtype


@cat.defshape
def _(specs, dim=0):
    kept = [s for s in specs if not _legacy_empty(s.shape)] or specs[:1]
    shape = list(kept[0].shape)
    shape[dim] = sum(s.shape[dim] for s in kept)
    return tuple(shape), kept[0].dtype


for _op in (flip, roll, tril, triu, clone):
    _op.shape_rule = lambda specs, **_: (specs[0].shape, specs[0].dtype)


@pad.defshape
def _(specs, widths, value=0.0):
    return tuple(s + b + e for s, (b, e) in zip(specs[0].shape, widths)), specs[0].dtype


@view_scatter.defshape
def _(specs, chain):
    return specs[0].shape, specs[0].dtype
