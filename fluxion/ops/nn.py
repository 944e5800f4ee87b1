"""Network primitives that eager mode needs as single kernels (measured: the composites
took 4-5 passes over memory). Each keeps its composite in ``nn.functional`` as the
reference it is tested against."""

from __future__ import annotations

import math

from fluxion.autograd.grad_mode import state as grad_mode
from fluxion.ops.registry import OPS, apply, defop


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


def _moments(xp, a, nd, eps):
    """Over the last ``nd`` dimensions of ``a``: the deviations from the mean (a fresh
    array the caller may overwrite), 1 / sqrt(biased variance + eps), the dimensions."""
    dims = tuple(range(a.ndim - nd, a.ndim))
    d = a - a.mean(axis=dims, keepdims=True)
    return d, 1 / xp.sqrt((d * d).mean(axis=dims, keepdims=True) + eps), dims


def _upcast(fn):
    """Run a layer-norm kernel on float16 arrays in float32 (as PyTorch does); the
    result in float16."""
    def run(xp, *arrays, **attrs):
        half = arrays[-1].dtype == "float16"
        out = fn(xp, *(x.astype("float32") if half else x for x in arrays), **attrs)
        return out.astype("float16") if half else out

    run.__doc__ = fn.__doc__
    return run


@defop("layer_norm", "nn", save_output=True)
@_upcast
def layer_norm(xp, a, nd, eps):
    """(x - mean) / sqrt(var + eps) over the last ``nd`` dimensions (biased variance); the
    weight and bias are applied after it (``nn.functional.layer_norm``)."""
    d, rs, _ = _moments(xp, a, nd, eps)
    d *= rs
    return d


@layer_norm.defgrad
def _(n, g):
    nd, eps = n.attrs["nd"], n.attrs["eps"]
    if not grad_mode.enabled:  # a first derivative: one op, one pass per row compiled
        return (apply(OPS["layer_norm_backward"], g, n.inputs[0], nd=nd, eps=eps),)
    # the same formula in differentiable ops, for derivatives of higher order
    x, y = n.inputs[0], n.out
    dims = tuple(range(x.ndim - nd, x.ndim))
    d = x - x.mean(dims, keepdim=True)
    rs = ((d * d).mean(dims, keepdim=True) + eps).rsqrt()
    return (rs * (g - g.mean(dims, keepdim=True) - y * (g * y).mean(dims, keepdim=True)),)


@defop("layer_norm_backward", "nn", save_inputs=False, differentiable=False)
@_upcast
def layer_norm_backward(xp, g, a, nd, eps):
    """The gradient of ``layer_norm`` at ``a`` for the output's gradient ``g``:
    rs * (g - mean(g) - y * mean(g * y)), y the normalised ``a``, rs its 1 / std (two
    arrays of temporaries: each is a page-faulting allocation in eager mode)."""
    y, rs, dims = _moments(xp, a, nd, eps)
    y *= rs
    out = g * y
    mgy = out.mean(axis=dims, keepdims=True)
    xp.subtract(g, g.mean(axis=dims, keepdims=True), out=out)
    y *= mgy
    out -= y
    out *= rs
    return out


for _op in (layer_norm, layer_norm_backward):
    _op.shape_rule = lambda specs, **_: (specs[0].shape, specs[0].dtype)


def _class_weights(xp, logp, target, weight, ignore_index):
    """Each target's class weight (1 without ``weight``), 0 where it is ignored, and the
    targets with the ignored ones made a valid index (0)."""
    valid = target != ignore_index
    safe = xp.where(valid, target, 0)
    w = valid.astype(logp.dtype) if weight is None else \
        xp.where(valid, weight[safe], 0).astype(logp.dtype, copy=False)
    return w, safe, valid


@defop("nll_loss", "nn")
def nll_loss(xp, logp, target, weight, ignore_index, reduction):
    """-w[t] * logp[n, t] per target ``t`` along dim 1 of ``logp`` (0 where ``t`` is
    ``ignore_index``), then reduced: mean (divided by the targets' total weight), sum or
    none."""
    w, safe, valid = _class_weights(xp, logp, target, weight, ignore_index)
    if logp.ndim == 2:  # (N, C): plain indexing, a third of take_along_axis's overhead
        picked = logp[xp.arange(logp.shape[0]), safe]
    else:
        picked = xp.take_along_axis(logp, xp.expand_dims(safe, 1), axis=1).squeeze(1)
    # ignored entries are selected away, never multiplied by 0 (a -inf there is no nan)
    loss = xp.where(valid, -picked, 0) * w
    if reduction == "mean":
        return loss.sum() / w.sum()
    return loss.sum() if reduction == "sum" else loss


@nll_loss.defgrad
def _(n, g):
    logp, target, weight = n.inputs
    attrs = n.attrs
    if not grad_mode.enabled:  # a first derivative: one op
        return (apply(OPS["nll_loss_backward"], g, logp, target, weight, **attrs), None, None)
    # the same formula in differentiable ops (linear in g), for higher derivatives
    from fluxion import functional as F
    from fluxion.creation import zeros_like

    valid = target != attrs["ignore_index"]
    safe = F.where(valid, target, 0)
    w = valid.to(logp.dtype) if weight is None else F.where(valid, weight[safe], 0)
    scale = g / w.sum() if attrs["reduction"] == "mean" else g
    vals = F.where(valid, -(w * scale), 0)
    base = zeros_like(logp)
    return (base.scatter_add(1, safe.unsqueeze(1), vals.unsqueeze(1)), None, None)


@defop("nll_loss_backward", "nn", save_inputs=False, differentiable=False)
def nll_loss_backward(xp, g, logp, target, weight, ignore_index, reduction):
    """The gradient of ``nll_loss`` for its result's gradient ``g``: zero but at each
    target's place, -w[t] * g (divided by the total weight for a mean)."""
    w, safe, valid = _class_weights(xp, logp, target, weight, ignore_index)
    if reduction == "mean":
        g = g / w.sum()
    vals = xp.where(valid, -(w * g), 0).astype(logp.dtype, copy=False)
    if logp.ndim == 2:
        out = xp.zeros(logp.shape, logp.dtype)
        out[xp.arange(logp.shape[0]), safe] = vals
        return out
    vals = xp.expand_dims(vals, 1)
    if not hasattr(xp, "put_along_axis"):  # an array library without it: by comparison
        classes = xp.arange(logp.shape[1]).reshape((-1,) + (1,) * (logp.ndim - 2))
        return xp.where(xp.expand_dims(safe, 1) == classes, vals, 0).astype(logp.dtype)
    out = xp.zeros(logp.shape, logp.dtype)
    xp.put_along_axis(out, xp.expand_dims(safe, 1), vals, axis=1)
    return out


@nll_loss.defshape
def _(specs, ignore_index, reduction):
    return (specs[1].shape if reduction == "none" else ()), specs[0].dtype


nll_loss_backward.shape_rule = lambda specs, **_: (specs[1].shape, specs[1].dtype)


_K = math.sqrt(2 / math.pi)


def _stable_sigmoid(xp, v):
    e = xp.exp(-xp.abs(v))
    return xp.where(v >= 0, 1 / (1 + e), e / (1 + e))


def _gelu_c(approximate: str = "none") -> str:
    """GELU in C; constants take the operand's type, so float32 stays float32."""
    def k(v: float) -> str:
        return f"((__typeof__(a)){v!r})"

    if approximate == "tanh":  # x * sigmoid(2u): no cancellation for negative x
        return f"(a / (1 + exp({k(-2 * _K)} * (a + {k(0.044715)} * a * a * a))))"
    return f"({k(0.5)} * a * (1 + erf(a * {k(1 / math.sqrt(2))})))"


@defop("gelu", "nn", c_expr=_gelu_c)
def gelu(xp, a, approximate="none"):
    """x * Phi(x) (``'none'``) or x * sigmoid(2 sqrt(2/pi) (x + 0.044715 x^3)) (``'tanh'``,
    the tanh form written without its cancellation for negative x)."""
    if approximate == "tanh":
        u = _K * (a + 0.044715 * a * a * a)
        return (a * _stable_sigmoid(xp, 2 * u)).astype(a.dtype, copy=False)
    from fluxion.ops.elementwise import erf

    return (0.5 * a * (1 + erf.forward(xp, a * (1 / math.sqrt(2))))).astype(a.dtype, copy=False)


@gelu.defgrad
def _(n, g):
    x = n.inputs[0]
    if n.attrs.get("approximate", "none") == "tanh":
        s = ((x + x * x * x * 0.044715) * (2 * _K)).sigmoid()
        du = (1 + x * x * (3 * 0.044715)) * (2 * _K)
        return (g * (s + x * s * (1 - s) * du),)
    cdf = ((x * (1 / math.sqrt(2))).erf() + 1) * 0.5
    pdf = (x * x * -0.5).exp() * (1 / math.sqrt(2 * math.pi))
    return (g * (cdf + x * pdf),)


gelu.shape_rule = lambda specs, **_: (specs[0].shape, specs[0].dtype)
