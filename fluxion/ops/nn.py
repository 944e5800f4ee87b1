"""Network primitives that eager mode needs as single kernels (measured: the composites
took 4-5 passes over memory). Each keeps its composite in ``nn.functional`` as the
reference it is tested against."""

from __future__ import annotations

from fluxion.ops.registry import defop


def _shift(xp, a, dim):
    m = a.max(axis=dim, keepdims=True)
    return a - xp.where(xp.isfinite(m), m, 0)  # all -inf rows: no shift (no nan)


@defop("softmax", "nn", save_inputs=False, save_output=True)
def softmax(xp, a, dim):
    """exp(x - max) / sum(exp(x - max)) along ``dim``."""
    e = xp.exp(_shift(xp, a, dim))
    e /= e.sum(axis=dim, keepdims=True)
    return e


@softmax.defgrad
def _(n, g):
    s, d = n.out, n.attrs["dim"]
    gs = g * s
    return (gs - s * gs.sum(d, keepdim=True),)


@defop("log_softmax", "nn", save_inputs=False, save_output=True)
def log_softmax(xp, a, dim):
    """(x - max) - log(sum(exp(x - max))) along ``dim``."""
    shifted = _shift(xp, a, dim)
    shifted -= xp.log(xp.exp(shifted).sum(axis=dim, keepdims=True))
    return shifted


@log_softmax.defgrad
def _(n, g):
    out, d = n.out, n.attrs["dim"]
    return (g - out.exp() * g.sum(d, keepdim=True),)


for _op in (softmax, log_softmax):
    _op.shape_rule = lambda specs, **_: (specs[0].shape, specs[0].dtype)
