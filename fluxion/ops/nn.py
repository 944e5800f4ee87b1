"""Network primitives that eager mode needs as single kernels (measured: the composites
took 4-5 passes over memory). Each keeps its composite in ``nn.functional`` as the
reference it is tested against."""

from __future__ import annotations

import math

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
