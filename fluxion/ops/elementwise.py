"""Elementwise primitives: unary, binary and ``where``, with their dtype rules, backward
rules and C expressions (``a``, ``b``, ``c`` are the operands; tgmath names)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fluxion import _dtype
from fluxion.ops.registry import OPS, Op, apply, defop
from fluxion.tensor import Tensor

Scalar = bool | int | float


def sum_to(g: Tensor, shape: tuple[int, ...]) -> Tensor:
    """Sum a broadcast gradient back down to ``shape`` (the inverse of broadcasting)."""
    if g._data.shape == shape:
        return g
    lead = g.ndim - len(shape)
    dims = tuple(range(lead)) + tuple(
        i + lead for i, s in enumerate(shape) if s == 1 and g._data.shape[i + lead] != 1
    )
    out = g.sum(dims, keepdim=True) if dims else g
    return out.reshape(shape) if lead else out


def _unbroadcast(node: Any, i: int, g: Tensor) -> Tensor | None:
    return sum_to(g, node.shapes[i]) if node.needs_input_grad[i] else None


# --- unary -------------------------------------------------------------------------------
def unary(name: str, c: str, rule: str = "float", **kw: Any) -> Any:
    """Register a one-input elementwise primitive."""
    return lambda fwd: defop(name, "unary", c_expr=c, dtype_rule=rule, **kw)(fwd)


@unary("neg", "-a", "same", save_inputs=False)
def neg(xp, a):
    return xp.negative(a)


@neg.defgrad
def _(n, g):
    return (-g,)


@unary("abs", "fabs(a)", "same")
def abs_(xp, a):
    return xp.abs(a)


@abs_.defgrad
def _(n, g):
    return (g * n.inputs[0].sign(),)


@unary("sign", "(a > 0 ? 1 : (a < 0 ? -1 : a))", "same", save_inputs=False)
def sign(xp, a):
    return a.copy() if a.dtype.kind == "b" else xp.sign(a)  # NumPy has no bool loop


def _zero_grad(n, g):
    return (g * 0,)


sign.backward = _zero_grad


@unary("exp", "exp(a)", save_inputs=False, save_output=True)
def exp(xp, a):
    return xp.exp(a)


@exp.defgrad
def _(n, g):
    return (g * n.out,)


@unary("log", "log(a)")
def log(xp, a):
    return xp.log(a)


@log.defgrad
def _(n, g):
    return (g / n.inputs[0],)


@unary("log1p", "log1p(a)")
def log1p(xp, a):
    return xp.log1p(a)


@log1p.defgrad
def _(n, g):
    return (g / (n.inputs[0] + 1),)


@unary("expm1", "expm1(a)", save_inputs=False, save_output=True)
def expm1(xp, a):
    return xp.expm1(a)


@expm1.defgrad
def _(n, g):
    return (g * (n.out + 1),)


@unary("sqrt", "sqrt(a)", save_inputs=False, save_output=True)
def sqrt(xp, a):
    return xp.sqrt(a)


@sqrt.defgrad
def _(n, g):
    return (g / (2 * n.out),)


@unary("rsqrt", "(1 / sqrt(a))", save_inputs=False, save_output=True)
def rsqrt(xp, a):
    return 1 / xp.sqrt(a)


@rsqrt.defgrad
def _(n, g):
    return (g * -0.5 * n.out ** 3,)


@unary("reciprocal", "(1 / a)", save_inputs=False, save_output=True)
def reciprocal(xp, a):
    return 1 / a


@reciprocal.defgrad
def _(n, g):
    return (-g * n.out * n.out,)


@unary("sin", "sin(a)")
def sin(xp, a):
    return xp.sin(a)


@sin.defgrad
def _(n, g):
    return (g * n.inputs[0].cos(),)


@unary("cos", "cos(a)")
def cos(xp, a):
    return xp.cos(a)


@cos.defgrad
def _(n, g):
    return (-g * n.inputs[0].sin(),)


@unary("tan", "tan(a)", save_inputs=False, save_output=True)
def tan(xp, a):
    return xp.tan(a)


@tan.defgrad
def _(n, g):
    return (g * (1 + n.out * n.out),)


@unary("tanh", "tanh(a)", save_inputs=False, save_output=True)
def tanh(xp, a):
    return xp.tanh(a)


@tanh.defgrad
def _(n, g):
    return (g * (1 - n.out * n.out),)


@unary("sigmoid", "(1 / (1 + exp(-a)))", save_inputs=False, save_output=True)
def sigmoid(xp, a):
    # split by sign so exp never overflows
    e = xp.exp(-xp.abs(a))
    return xp.where(a >= 0, 1 / (1 + e), e / (1 + e)).astype(a.dtype, copy=False)


@sigmoid.defgrad
def _(n, g):
    s = n.out
    return (g * s * (1 - s),)


@unary("relu", "((a > 0 || a != a) ? a : 0)", "same", save_inputs=False, save_output=True)
def relu(xp, a):
    return xp.maximum(a, 0)


@relu.defgrad
def _(n, g):
    return (g * (n.out > 0),)


@unary("erf", "erf(a)")
def erf(xp, a):
    # NumPy has no erf. float64: math.erf per element (exact, slow). Narrower floats: the
    # Chebyshev fit of erfc from Numerical Recipes (relative error < 1.2e-7, float32's own
    # resolution), vectorised
    if a.dtype == xp.float64:
        return xp.asarray(xp.frompyfunc(math.erf, 1, 1)(a)).astype(a.dtype)  # 0-d: a float
    z = xp.abs(a).astype(xp.float64)
    t = 1.0 / (1.0 + 0.5 * z)
    poly = -z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (
        0.09678418 + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (
            1.48851587 + t * (-0.82215223 + t * 0.17087277))))))))
    far = 1.0 - t * xp.exp(poly)
    # near 0 that difference cancels: the Maclaurin series (|z| < 0.5: error < 1e-12)
    z2 = z * z
    near = z * (1.1283791670955126 + z2 * (-0.37612638903183754 + z2 * (
        0.11283791670955126 + z2 * (-0.026866170645131252 + z2 * (
            0.005223977625442188 + z2 * (-0.0008548327023450852 + z2 * 0.00012055332981789664))))))
    return (xp.sign(a) * xp.where(z < 0.5, near, far)).astype(a.dtype)


@erf.defgrad
def _(n, g):
    x = n.inputs[0]
    return (g * (2 / math.sqrt(math.pi)) * (-(x * x)).exp(),)


for _name, _c in (("floor", "floor(a)"), ("ceil", "ceil(a)"), ("round", "rint(a)"),
                  ("trunc", "trunc(a)")):
    _fn = {"floor": np.floor, "ceil": np.ceil, "round": np.round, "trunc": np.trunc}[_name]
    _op = defop(_name, "unary", c_expr=_c, dtype_rule="same", save_inputs=False)(
        # scaling by 10**decimals in float16 would round first: do it in float32
        lambda xp, a, decimals=0, _f=_fn: _f(a) if not decimals else _f(
            a.astype(np.float32) if a.dtype == np.float16 else a, decimals).astype(a.dtype)
    )
    _op.backward = _zero_grad


@unary("clamp", "(a != a ? a : (a < lo ? lo : (a > hi ? hi : a)))", "same")
def clamp(xp, a, min=None, max=None):
    return xp.clip(a, min, max)


@clamp.defgrad
def _(n, g):
    x, lo, hi = n.inputs[0], n.attrs.get("min"), n.attrs.get("max")
    mask = None
    if lo is not None:
        mask = x >= lo
    if hi is not None:
        mask = (x <= hi) if mask is None else mask & (x <= hi)
    return (g * mask if mask is not None else g,)


@unary("nan_to_num", "a", "same")
def nan_to_num(xp, a, nan=0.0, posinf=None, neginf=None):
    return xp.nan_to_num(a, nan=nan, posinf=posinf, neginf=neginf)


@nan_to_num.defgrad
def _(n, g):
    return (g * n.inputs[0].isfinite(),)


@unary("cast", "a", "same", save_inputs=False)
def cast(xp, a, dtype):
    return a.astype(dtype.np)


@cast.defshape
def _(specs, dtype):
    return specs[0].shape, dtype.np


@cast.defgrad
def _(n, g):
    return (g,)  # the engine casts the gradient back to the input's dtype


for _name, _c, _f in (
    ("logical_not", "!a", np.logical_not),
    ("isnan", "isnan(a)", np.isnan),
    ("isinf", "isinf(a)", np.isinf),
    ("isfinite", "isfinite(a)", np.isfinite),
):
    defop(_name, "unary", c_expr=_c, dtype_rule="bool", differentiable=False)(
        lambda xp, a, _f=_f: _f(a)
    )


# --- binary ------------------------------------------------------------------------------
def binary(name: str, c: str, rule: str = "promote", **kw: Any) -> Any:
    """Register a two-input elementwise primitive."""
    return lambda fwd: defop(name, "binary", c_expr=c, dtype_rule=rule, **kw)(fwd)


@binary("add", "a + b", save_inputs=False)
def add(xp, a, b):
    return a + b


@add.defgrad
def _(n, g):
    return _unbroadcast(n, 0, g), _unbroadcast(n, 1, g)


@binary("sub", "a - b", save_inputs=False)
def sub(xp, a, b):
    return a - b


@sub.defgrad
def _(n, g):
    return _unbroadcast(n, 0, g), _unbroadcast(n, 1, -g) if n.needs_input_grad[1] else None


@binary("mul", "a * b")
def mul(xp, a, b):
    return a * b


mul.saves = lambda needs: (needs[1], needs[0])  # d/da needs b, d/db needs a


@mul.defgrad
def _(n, g):
    a, b = n.inputs
    return (
        _unbroadcast(n, 0, g * b) if n.needs_input_grad[0] else None,
        _unbroadcast(n, 1, g * a) if n.needs_input_grad[1] else None,
    )


@binary("div", "a / b", "float")
def div(xp, a, b):
    return a / b


div.saves = lambda needs: (needs[1], needs[0] or needs[1])


@div.defgrad
def _(n, g):
    a, b = n.inputs
    return (
        _unbroadcast(n, 0, g / b) if n.needs_input_grad[0] else None,
        _unbroadcast(n, 1, -g * a / (b * b)) if n.needs_input_grad[1] else None,
    )


@binary("pow", "pow(a, b)")
def pow_(xp, a, b):
    if (isinstance(a, np.ndarray) and a.dtype.kind in "iu" and not isinstance(b, np.ndarray)
            and b < 0):
        raise ValueError("Integers to negative integer powers are not allowed.")
    return a ** b


@pow_.defgrad
def _(n, g):
    a, b = n.inputs
    ga = gb = None
    if n.needs_input_grad[0]:
        if isinstance(b, Tensor):
            ga = g * b * a ** (b - 1)
        else:
            ga = g * b * a ** (b - 1) if b != 0 else g * 0
        ga = sum_to(ga, n.shapes[0])
    if n.needs_input_grad[1]:
        # d/db a**b = a**b * log(a); PyTorch defines it as 0 where a == 0 and b >= 0
        base = a if isinstance(a, Tensor) else Tensor._make(np.asarray(a, b._data.dtype))
        safe = base.where(base != 0, 1)
        gb = sum_to(g * (base ** b) * safe.log(), n.shapes[1])
    return ga, gb


@binary("maximum", "((a != a || a > b) ? a : b)")
def maximum(xp, a, b):
    return xp.maximum(a, b)


@binary("minimum", "((a != a || a < b) ? a : b)")
def minimum(xp, a, b):
    return xp.minimum(a, b)


def _minmax_grad(n, g):
    # PyTorch splits the gradient evenly where the two inputs tie
    a, b = n.inputs
    win_a = (a > b) if n.op.name == "maximum" else (a < b)
    tie = a == b
    wa = win_a + tie * 0.5
    return (
        _unbroadcast(n, 0, g * wa) if n.needs_input_grad[0] else None,
        _unbroadcast(n, 1, g * (1 - wa)) if n.needs_input_grad[1] else None,
    )


maximum.backward = minimum.backward = _minmax_grad


@binary("remainder", "(a - floor(a / b) * b)")
def remainder(xp, a, b):
    return xp.remainder(a, b)


@remainder.defgrad
def _(n, g):
    a, b = n.inputs
    return (
        _unbroadcast(n, 0, g) if n.needs_input_grad[0] else None,
        _unbroadcast(n, 1, -g * (a / b).floor()) if n.needs_input_grad[1] else None,
    )


@binary("floor_divide", "floor(a / b)", differentiable=False)
def floor_divide(xp, a, b):
    return xp.floor_divide(a, b)


@binary("atan2", "atan2(a, b)", "float")
def atan2(xp, a, b):
    return xp.arctan2(a, b)


@atan2.defgrad
def _(n, g):
    a, b = n.inputs
    d = a * a + b * b
    return (
        _unbroadcast(n, 0, g * b / d) if n.needs_input_grad[0] else None,
        _unbroadcast(n, 1, -g * a / d) if n.needs_input_grad[1] else None,
    )


for _name, _c, _f in (
    ("eq", "a == b", np.equal), ("ne", "a != b", np.not_equal),
    ("lt", "a < b", np.less), ("le", "a <= b", np.less_equal),
    ("gt", "a > b", np.greater), ("ge", "a >= b", np.greater_equal),
    ("logical_and", "a && b", np.logical_and), ("logical_or", "a || b", np.logical_or),
    ("logical_xor", "!a != !b", np.logical_xor),
    ("bitwise_and", "a & b", np.bitwise_and), ("bitwise_or", "a | b", np.bitwise_or),
    ("bitwise_xor", "a ^ b", np.bitwise_xor),
):
    defop(_name, "binary", c_expr=_c, differentiable=False,
          dtype_rule="promote" if _name.startswith("bitwise") else "bool")(
        lambda xp, a, b, _f=_f: _f(a, b)
    )


@defop("where", "ternary", c_expr="(a ? b : c)", dtype_rule="promote")
def where(xp, cond, a, b):
    return xp.where(cond, a, b)


@where.defgrad
def _(n, g):
    cond = n.inputs[0]
    zero = g.new_zeros(())  # an exact zero: g * 0 would turn inf/nan into nan
    return (
        None,
        sum_to(g.where(cond, zero), n.shapes[1]) if n.needs_input_grad[1] else None,
        sum_to(zero.where(cond, g), n.shapes[2]) if n.needs_input_grad[2] else None,
    )


# --- fused multiply-adds of the optimizers (PyTorch's lerp, addcmul, addcdiv) --------------
def _typed(v: float) -> str:
    return f"((__typeof__(a)){v!r})"  # the operands' type: float32 stays float32


@defop("lerp", "ternary", dtype_rule="promote",
       c_expr=f"(fabs(c) < {_typed(0.5)} ? a + c * (b - a) : b - (b - a) * ({_typed(1.0)} - c))")
def lerp(xp, a, b, w):
    """a + w * (b - a), from the nearer end (b - (b - a) * (1 - w) for |w| >= 0.5), as
    PyTorch computes it."""
    d = b - a
    if isinstance(w, (int, float)):
        return a + w * d if abs(w) < 0.5 else b - d * (1 - w)
    return xp.where(xp.abs(w) < 0.5, a + w * d, b - d * (1 - w))


@lerp.defgrad
def _(n, g):
    a, b, w = n.inputs
    need = n.needs_input_grad
    return (_unbroadcast(n, 0, g * (1 - w)) if need[0] else None,
            _unbroadcast(n, 1, g * w) if need[1] else None,
            _unbroadcast(n, 2, g * (b - a)) if need[2] else None)


@defop("addcmul", "ternary", dtype_rule="promote",
       c_expr="a + d * b * c")
def addcmul(xp, a, b, c, v):
    """a + v * b * c (in that order, as PyTorch: (v * b) * c, then the sum)."""
    return a + v * b * c


@addcmul.defgrad
def _(n, g):
    _, b, c, v = n.inputs
    need = n.needs_input_grad
    return (_unbroadcast(n, 0, g) if need[0] else None,
            _unbroadcast(n, 1, g * v * c) if need[1] else None,
            _unbroadcast(n, 2, g * v * b) if need[2] else None, None)


@defop("addcdiv", "ternary", dtype_rule="promote",
       c_expr="a + d * b / c")
def addcdiv(xp, a, b, c, v):
    """a + v * b / c (in that order, as PyTorch: (v * b) / c, then the sum)."""
    return a + v * b / c


@addcdiv.defgrad
def _(n, g):
    _, b, c, v = n.inputs
    need = n.needs_input_grad
    return (_unbroadcast(n, 0, g) if need[0] else None,
            _unbroadcast(n, 1, g * v / c) if need[1] else None,
            _unbroadcast(n, 2, -g * v * b / (c * c)) if need[2] else None, None)


# --- argument handling shared by the public functions ---------------------------------
def _check_scalar(name: str, x: Any) -> None:
    if not isinstance(x, (bool, int, float)):
        raise TypeError(
            f"{name}(): expected Tensor or a Python number as argument, got {type(x).__name__}"
        )


def _out_dtype(op: Op, rd: _dtype.dtype) -> _dtype.dtype:
    if op.dtype_rule == "float" and not rd.is_floating_point:
        return _dtype.get_default_dtype()
    return rd


def _broadcast_check(name: str, a: Tensor, b: Tensor) -> None:
    sa, sb = a._data.shape, b._data.shape
    for x, y in zip(reversed(sa), reversed(sb)):
        if x != y and x != 1 and y != 1:
            raise RuntimeError(
                f"{name}: the size of tensor a ({x}) must match the size of tensor b ({y}) "
                f"at non-singleton dimension; shapes {list(sa)} and {list(sb)} do not "
                "broadcast"
            )


def wrap_int(s: int, dtype: np.dtype) -> Any:
    """A Python int out of ``dtype``'s range wraps around, as PyTorch's integer math does."""
    info = np.iinfo(dtype)
    return s if info.min <= s <= info.max else np.array(s).astype(dtype)


def call_binary(name: str | Op, a: Any, b: Any) -> Tensor:
    """Apply a binary primitive with PyTorch's promotion; either side may be a scalar."""
    op = OPS[name] if type(name) is str else name
    if isinstance(a, Tensor):
        if isinstance(b, Tensor):
            da, db = a._data.dtype, b._data.dtype
            if da != db or (op.dtype_rule == "float" and da.kind != "f"):
                rd = _out_dtype(op, _dtype.result_type(a, b))
                if da != rd.np:
                    a = a.to(rd)
                if db != rd.np:
                    b = b.to(rd)
            if a._data.shape != b._data.shape:
                _broadcast_check(op.name, a, b)
            return apply(op, a, b)
        t, s, first = a, b, True
    elif isinstance(b, Tensor):
        t, s, first = b, a, False
    else:
        from fluxion.creation import tensor

        return call_binary(op, tensor(a), b)
    if isinstance(s, np.generic):
        s = s.item()
    elif not isinstance(s, (bool, int, float)):
        _check_scalar(op.name, s)
    kind = t._data.dtype.kind
    if kind in "iu" and type(s) is int:
        s = wrap_int(s, t._data.dtype)
    # a Python scalar only changes the dtype when it brings a higher category
    if (op.dtype_rule == "float" and kind != "f") or (
        type(s) is float and kind != "f") or (type(s) is int and kind == "b"
    ):
        t = t.to(_out_dtype(op, _dtype.result_type(t, s)))
    return apply(op, t, s) if first else apply(op, s, t)


def call_unary(name: str, x: Any, **attrs: Any) -> Tensor:
    """Apply a unary primitive; float-only ops turn integer inputs into the default float."""
    op = OPS[name]
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}(): argument 'input' must be Tensor, not {type(x).__name__}")
    if op.dtype_rule == "float" and x._data.dtype.kind != "f":
        x = x.to(_dtype.get_default_dtype())
    return apply(op, x, **attrs)
