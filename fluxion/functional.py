"""The public tensor functions (``fluxion.add``, ``fluxion.sum``, ...): argument handling
and checks in PyTorch's terms around the primitives of the op table, plus composites
built from them. ``Tensor`` methods are these same functions (see ``_tensor_methods``)."""

from __future__ import annotations

import builtins
import itertools
import math
from collections import namedtuple
from collections.abc import Sequence
from typing import Any

import numpy as np

from fluxion import _dtype
from fluxion.creation import tensor as _new_tensor
from fluxion.ops import OPS, apply, registry
from fluxion.ops.elementwise import call_binary, call_unary
from fluxion.ops.registry import label
from fluxion.tensor import Tensor

Number = bool | int | float
TensorOrNumber = Tensor | Number


def _t(x: Any, name: str = "input") -> Tensor:
    if isinstance(x, Tensor):
        return x
    raise TypeError(f"{name} must be a Tensor, not {type(x).__name__}")


# --- elementwise ---------------------------------------------------------------------
def add(input: TensorOrNumber, other: TensorOrNumber, *, alpha: Number = 1) -> Tensor:
    """``input + alpha * other`` with broadcasting and type promotion.

    >>> import fluxion
    >>> fluxion.add(fluxion.tensor([1, 2]), 1.5)
    tensor([2.5000, 3.5000])
    """
    if alpha != 1:
        scaled = _scaled_sum("add", input, other, alpha)
        if scaled is not None:
            return scaled
        other = call_binary("mul", other, alpha)
    return call_binary("add", input, other)


def sub(input: TensorOrNumber, other: TensorOrNumber, *, alpha: Number = 1) -> Tensor:
    """``input - alpha * other``.

    >>> import fluxion
    >>> fluxion.sub(fluxion.tensor([3.0]), fluxion.tensor([1.0]), alpha=2)
    tensor([1.])
    """
    _check_bool_sub(input, other)
    if alpha != 1:
        scaled = _scaled_sum("sub", input, other, alpha)
        if scaled is not None:
            return scaled
        other = call_binary("mul", other, alpha)
    return call_binary("sub", input, other)


def _scaled_sum(name: str, input: Any, other: Any, alpha: Any) -> Tensor | None:
    """``input ± alpha * other`` as one ``addcmul`` node while a compiled call records
    (an optimizer's ``param.add_(buf, alpha=-lr)``): one op to capture instead of two,
    rounded the same way (``alpha * other``, then the sum). None where the two ops run
    anyway (eager: two NumPy passes either way) or PyTorch's integer and mixed-dtype rules
    apply."""
    if registry.recording_segment() is None or type(alpha) not in (int, float) \
            or not (isinstance(input, Tensor) and isinstance(other, Tensor)):
        return None
    dt = input.dtype
    if not dt.is_floating_point or other.dtype is not dt \
            or input._data.shape != other._data.shape:
        return None  # (broadcasting: the two ops, which name the shapes they cannot take)
    out = apply(OPS["addcmul"], input, other, alpha, 1 if name == "add" else -1)
    return label(out, "AddBackward0" if name == "add" else "SubBackward0")


def _check_bool_sub(a: Any, b: Any) -> None:
    bools = [isinstance(x, Tensor) and x.dtype is _dtype.bool_ for x in (a, b)]
    if bools[0] and bools[1]:
        raise RuntimeError(
            "Subtraction, the `-` operator, with two bool tensors is not supported. Use the "
            "`^` or `logical_xor()` operator instead."
        )
    if bools[0] or bools[1]:
        raise RuntimeError(
            "Subtraction, the `-` operator, with a bool tensor is not supported. If you are "
            "trying to invert a mask, use the `~` or `logical_not()` operator instead."
        )


def mul(input: TensorOrNumber, other: TensorOrNumber) -> Tensor:
    """Elementwise product.

    >>> import fluxion
    >>> fluxion.mul(fluxion.tensor([1.0, 2.0]), 3)
    tensor([3., 6.])
    """
    return call_binary("mul", input, other)


def div(input: TensorOrNumber, other: TensorOrNumber, *,
        rounding_mode: str | None = None) -> Tensor:
    """True division (always floating), or ``'trunc'`` / ``'floor'`` rounding.

    >>> import fluxion
    >>> x = fluxion.tensor([7, -7])
    >>> fluxion.div(x, 2), fluxion.div(x, 2, rounding_mode="floor")
    (tensor([ 3.5000, -3.5000]), tensor([ 3, -4]))
    """
    if rounding_mode is None:
        return call_binary("div", input, other)
    if rounding_mode == "floor":
        return floor_divide(input, other)
    if rounding_mode == "trunc":
        q = call_binary("div", input, other).trunc()
        rd = _dtype.result_type(input, other)
        return q if rd.is_floating_point else q.to(rd)
    raise ValueError(f"div expected rounding_mode to be one of None, 'trunc', or 'floor' but "
                     f"found '{rounding_mode}'")


true_divide = divide = div
multiply = mul
subtract = sub


def floor_divide(input: TensorOrNumber, other: TensorOrNumber) -> Tensor:
    """Division rounded toward minus infinity.

    >>> import fluxion
    >>> fluxion.floor_divide(fluxion.tensor([7, -7]), 2)
    tensor([ 3, -4])
    """
    return call_binary("floor_divide", input, other)


def remainder(input: TensorOrNumber, other: TensorOrNumber) -> Tensor:
    """Python-style modulus (the sign of the divisor).

    >>> import fluxion
    >>> fluxion.remainder(fluxion.tensor([-3, 3]), 2)
    tensor([1, 1])
    """
    return call_binary("remainder", input, other)


def fmod(input: TensorOrNumber, other: TensorOrNumber) -> Tensor:
    """C-style modulus (the sign of the dividend).

    >>> import fluxion
    >>> fluxion.fmod(fluxion.tensor([-3.0, 3.0]), 2)
    tensor([-1.,  1.])
    """
    return input - other * div(input, other, rounding_mode="trunc")


def pow(input: TensorOrNumber, exponent: TensorOrNumber) -> Tensor:
    """``input ** exponent``.

    >>> import fluxion
    >>> fluxion.pow(fluxion.tensor([2.0, 3.0]), 2)
    tensor([4., 9.])
    """
    return call_binary("pow", input, exponent)


def atan2(input: Tensor, other: Tensor) -> Tensor:
    """Angle of (other, input), elementwise.

    >>> import fluxion
    >>> fluxion.atan2(fluxion.tensor([1.0]), fluxion.tensor([1.0]))
    tensor([0.7854])
    """
    return call_binary("atan2", input, other)


def maximum(input: Tensor, other: Tensor) -> Tensor:
    """Elementwise maximum (NaN propagates).

    >>> import fluxion
    >>> fluxion.maximum(fluxion.tensor([1, 5]), fluxion.tensor([3, 2]))
    tensor([3, 5])
    """
    _t(other, "other")
    return call_binary("maximum", input, other)


def minimum(input: Tensor, other: Tensor) -> Tensor:
    """Elementwise minimum (NaN propagates).

    >>> import fluxion
    >>> fluxion.minimum(fluxion.tensor([1, 5]), fluxion.tensor([3, 2]))
    tensor([1, 2])
    """
    _t(other, "other")
    return call_binary("minimum", input, other)


def _make_unary(name: str, doc: str) -> Any:
    def fn(input: Tensor) -> Tensor:
        return call_unary(name, input)

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = doc
    return fn


_UNARY_DOCS = {
    "neg": ("Negation.", "fluxion.neg(fluxion.tensor([1, -2]))", "tensor([-1,  2])"),
    "abs": ("Absolute value.", "fluxion.abs(fluxion.tensor([-1.5]))", "tensor([1.5000])"),
    "sign": ("-1, 0 or 1 by sign.", "fluxion.sign(fluxion.tensor([-2.0, 0.0]))",
             "tensor([-1.,  0.])"),
    "exp": ("e to the power of each element.", "fluxion.exp(fluxion.tensor([0.0]))",
            "tensor([1.])"),
    "log": ("Natural logarithm.", "fluxion.log(fluxion.tensor([1.0]))", "tensor([0.])"),
    "log1p": ("log(1 + x), accurate near 0.", "fluxion.log1p(fluxion.tensor([0.0]))",
              "tensor([0.])"),
    "expm1": ("exp(x) - 1, accurate near 0.", "fluxion.expm1(fluxion.tensor([0.0]))",
              "tensor([0.])"),
    "sqrt": ("Square root.", "fluxion.sqrt(fluxion.tensor([4.0]))", "tensor([2.])"),
    "rsqrt": ("1 / sqrt(x).", "fluxion.rsqrt(fluxion.tensor([4.0]))", "tensor([0.5000])"),
    "reciprocal": ("1 / x.", "fluxion.reciprocal(fluxion.tensor([4.0]))",
                   "tensor([0.2500])"),
    "sin": ("Sine.", "fluxion.sin(fluxion.tensor([0.0]))", "tensor([0.])"),
    "cos": ("Cosine.", "fluxion.cos(fluxion.tensor([0.0]))", "tensor([1.])"),
    "tan": ("Tangent.", "fluxion.tan(fluxion.tensor([0.0]))", "tensor([0.])"),
    "tanh": ("Hyperbolic tangent.", "fluxion.tanh(fluxion.tensor([0.0]))", "tensor([0.])"),
    "sigmoid": ("The logistic function 1 / (1 + exp(-x)).",
                "fluxion.sigmoid(fluxion.tensor([0.0]))", "tensor([0.5000])"),
    "relu": ("max(x, 0).", "fluxion.relu(fluxion.tensor([-1.0, 2.0]))", "tensor([0., 2.])"),
    "erf": ("The error function.", "fluxion.erf(fluxion.tensor([0.0]))", "tensor([0.])"),
    "floor": ("Round down.", "fluxion.floor(fluxion.tensor([1.5]))", "tensor([1.])"),
    "ceil": ("Round up.", "fluxion.ceil(fluxion.tensor([1.5]))", "tensor([2.])"),
    "trunc": ("Round toward zero.", "fluxion.trunc(fluxion.tensor([-1.5]))", "tensor([-1.])"),
    "logical_not": ("Elementwise NOT (bool result).",
                    "fluxion.logical_not(fluxion.tensor([0, 1]))", "tensor([ True, False])"),
    "isnan": ("True where NaN.", "fluxion.isnan(fluxion.tensor([float('nan'), 1.0]))",
              "tensor([ True, False])"),
    "isinf": ("True where infinite.", "fluxion.isinf(fluxion.tensor([float('inf'), 1.0]))",
              "tensor([ True, False])"),
    "isfinite": ("True where finite.",
                 "fluxion.isfinite(fluxion.tensor([float('inf'), 1.0]))",
                 "tensor([False,  True])"),
}
for _name, (_summary, _ex, _out) in _UNARY_DOCS.items():
    globals()[_name] = _make_unary(
        _name, f"{_summary}\n\n    >>> import fluxion\n    >>> {_ex}\n    {_out}\n    "
    )
negative = globals()["neg"]
absolute = globals()["abs"]
fix = globals()["trunc"]


def round(input: Tensor, *, decimals: int = 0) -> Tensor:
    """Round half to even, optionally to ``decimals`` places.

    >>> import fluxion
    >>> fluxion.round(fluxion.tensor([0.5, 1.5, 1.26]), decimals=0)
    tensor([0., 2., 1.])
    """
    return call_unary("round", input, decimals=decimals) if decimals else call_unary(
        "round", input
    )


def square(input: Tensor) -> Tensor:
    """``input * input``.

    >>> import fluxion
    >>> fluxion.square(fluxion.tensor([3.0]))
    tensor([9.])
    """
    return call_binary("mul", input, input)


def exp2(input: Tensor) -> Tensor:
    """2 to the power of each element.

    >>> import fluxion
    >>> fluxion.exp2(fluxion.tensor([3.0]))
    tensor([8.])
    """
    return call_unary("exp", call_binary("mul", input, math.log(2)))


def log2(input: Tensor) -> Tensor:
    """Base-2 logarithm.

    >>> import fluxion
    >>> fluxion.log2(fluxion.tensor([8.0]))
    tensor([3.])
    """
    return call_binary("div", call_unary("log", input), math.log(2))


def log10(input: Tensor) -> Tensor:
    """Base-10 logarithm.

    >>> import fluxion
    >>> fluxion.log10(fluxion.tensor([100.0]))
    tensor([2.])
    """
    return call_binary("div", call_unary("log", input), math.log(10))


def clamp(input: Tensor, min: TensorOrNumber | None = None,
          max: TensorOrNumber | None = None) -> Tensor:
    """Limit values to [min, max]; bounds may be numbers or tensors.

    >>> import fluxion
    >>> fluxion.clamp(fluxion.tensor([-2.0, 0.5, 3.0]), min=0, max=1)
    tensor([0.0000, 0.5000, 1.0000])
    """
    _t(input)
    if min is None and max is None:
        raise RuntimeError("clamp: At least one of 'min' or 'max' must not be None")
    if isinstance(min, Tensor) or isinstance(max, Tensor):
        out = input
        if min is not None:
            out = maximum(out, min if isinstance(min, Tensor) else _new_tensor(min))
        if max is not None:
            out = minimum(out, max if isinstance(max, Tensor) else _new_tensor(max))
        return out
    if (isinstance(min, float) or isinstance(max, float)) and input.dtype.category < 2:
        input = input.to(_dtype.get_default_dtype())
    return call_unary("clamp", input, min=min, max=max)


clip = clamp


def nan_to_num(input: Tensor, nan: float = 0.0, posinf: float | None = None,
               neginf: float | None = None) -> Tensor:
    """Replace NaN, +inf and -inf by finite numbers (the dtype's extremes by default).

    >>> import fluxion
    >>> fluxion.nan_to_num(fluxion.tensor([float('nan'), 1.0]))
    tensor([0., 1.])
    """
    return call_unary("nan_to_num", input, nan=nan, posinf=posinf, neginf=neginf)


def _binary_fn(name: str, summary: str, example: str) -> Any:
    def fn(input: TensorOrNumber, other: TensorOrNumber) -> Tensor:
        return call_binary(name, input, other)

    fn.__name__ = fn.__qualname__ = name
    call = f"fluxion.{name}(fluxion.tensor([1, 2, 3]), 2)"
    fn.__doc__ = f"{summary}\n\n    >>> import fluxion\n    >>> {call}\n    {example}\n    "
    return fn


eq = _binary_fn("eq", "Elementwise ``==``.", "tensor([False,  True, False])")
ne = _binary_fn("ne", "Elementwise ``!=``.", "tensor([ True, False,  True])")
lt = _binary_fn("lt", "Elementwise ``<``.", "tensor([ True, False, False])")
le = _binary_fn("le", "Elementwise ``<=``.", "tensor([ True,  True, False])")
gt = _binary_fn("gt", "Elementwise ``>``.", "tensor([False, False,  True])")
ge = _binary_fn("ge", "Elementwise ``>=``.", "tensor([False,  True,  True])")
logical_and = _binary_fn("logical_and", "Elementwise AND of truth values.",
                         "tensor([True, True, True])")
logical_or = _binary_fn("logical_or", "Elementwise OR of truth values.",
                        "tensor([True, True, True])")
logical_xor = _binary_fn("logical_xor", "Elementwise XOR of truth values.",
                         "tensor([False, False, False])")
bitwise_and = _binary_fn("bitwise_and", "Bitwise AND (logical for bool).", "tensor([0, 2, 2])")
bitwise_or = _binary_fn("bitwise_or", "Bitwise OR (logical for bool).", "tensor([3, 2, 3])")
bitwise_xor = _binary_fn("bitwise_xor", "Bitwise XOR (logical for bool).", "tensor([3, 0, 1])")
greater, greater_equal, less, less_equal, not_equal = gt, ge, lt, le, ne


def bitwise_not(input: Tensor) -> Tensor:
    """NOT for bool tensors, two's complement for integers.

    >>> import fluxion
    >>> fluxion.bitwise_not(fluxion.tensor([True, False]))
    tensor([False,  True])
    """
    if input.dtype is _dtype.bool_:
        return call_unary("logical_not", input)
    if input.dtype.is_floating_point:
        raise TypeError(f"bitwise_not: not supported for floating dtype {input.dtype}")
    return -input - 1


def equal(input: Tensor, other: Tensor) -> bool:
    """True when both have the same shape and values.

    >>> import fluxion
    >>> fluxion.equal(fluxion.ones(2), fluxion.ones(2))
    True
    """
    return input.shape == other.shape and bool(eq(input, other).all())


def allclose(input: Tensor, other: Tensor, rtol: float = 1e-05, atol: float = 1e-08,
             equal_nan: bool = False) -> bool:
    """Whether all values are close: ``|a - b| <= atol + rtol * |b|``.

    >>> import fluxion
    >>> fluxion.allclose(fluxion.tensor([1.0]), fluxion.tensor([1.0 + 1e-9]))
    True
    """
    return bool(np.allclose(input._data, other._data, rtol=rtol, atol=atol, equal_nan=equal_nan))


def isclose(input: Tensor, other: Tensor, rtol: float = 1e-05, atol: float = 1e-08,
            equal_nan: bool = False) -> Tensor:
    """Elementwise closeness as a bool tensor.

    >>> import fluxion
    >>> fluxion.isclose(fluxion.tensor([1.0, 2.0]), fluxion.tensor([1.0, 2.1]))
    tensor([ True, False])
    """
    return Tensor._make(np.isclose(input._data, other._data, rtol=rtol, atol=atol,
                                   equal_nan=equal_nan))


def where(condition: Tensor, input: TensorOrNumber | None = None,
          other: TensorOrNumber | None = None) -> Any:
    """``input`` where ``condition`` holds, else ``other`` (broadcast, promoted); with only
    a condition, the indices of its true elements.

    >>> import fluxion
    >>> fluxion.where(fluxion.tensor([True, False]), 1.0, fluxion.tensor([5.0, 6.0]))
    tensor([1., 6.])
    """
    if input is None and other is None:
        return nonzero(condition, as_tuple=True)
    if not isinstance(condition, Tensor):
        raise TypeError("where(): condition must be a Tensor")
    if condition.dtype is not _dtype.bool_:
        raise RuntimeError(f"where expected condition to be a boolean tensor, but got a tensor "
                           f"with dtype {condition.dtype.name}")
    rd = _dtype.result_type(input, other)
    a = input.to(rd) if isinstance(input, Tensor) else input
    b = other.to(rd) if isinstance(other, Tensor) else other
    shapes = [x._data.shape for x in (condition, a, b) if isinstance(x, Tensor)]
    try:
        np.broadcast_shapes(*shapes)
    except ValueError:
        raise RuntimeError(f"where(): shapes {[list(s) for s in shapes]} do not "
                           "broadcast") from None
    if not isinstance(a, Tensor):
        a = Tensor._make(np.asarray(a, dtype=rd.np))
    if not isinstance(b, Tensor):
        b = Tensor._make(np.asarray(b, dtype=rd.np))
    return apply(OPS["where"], condition, a, b)


# --- reductions ------------------------------------------------------------------------
def _dims(x: Tensor, dim: Any) -> tuple[int, ...] | None:
    """Normalise ``dim`` (None, int, or a sequence) to sorted non-negative axes."""
    if dim is None:
        return None
    if isinstance(dim, (int, np.integer)):
        dims = (int(dim),)
    else:
        dims = tuple(int(d) for d in dim)
        if not dims:
            return None
    if x.ndim == 0:
        for d in dims:
            if d not in (0, -1):
                x._dim(d)
        return None
    out = tuple(sorted(x._dim(d) for d in dims))
    if len(set(out)) != len(out):
        raise RuntimeError(f"dim {list(dims)} appears multiple times in the list of dims")
    return out


def _reduce(name: str, x: Tensor, dim: Any, keepdim: bool) -> Tensor:
    dims = _dims(x, dim)
    if dims is not None and x._data.size == 0 and name in ("amax", "amin", "prod"):
        pass
    return apply(OPS[name], x, dims=dims, keepdim=keepdim)


def sum(input: Tensor, dim: Any = None, keepdim: bool = False, *,
        dtype: _dtype.dtype | None = None) -> Tensor:
    """Sum over ``dim`` (all by default); integers and bools sum to int64.

    >>> import fluxion
    >>> fluxion.sum(fluxion.tensor([[1, 2], [3, 4]]), dim=0)
    tensor([4, 6])
    """
    _t(input)
    if dtype is not None:
        input = input.to(dtype)
    elif input.dtype.category < 2:
        input = input.to(_dtype.int64)
    out = _reduce("sum", input, dim, keepdim)
    return label(out, "SumBackward0" if dim is None else "SumBackward1")


def mean(input: Tensor, dim: Any = None, keepdim: bool = False, *,
         dtype: _dtype.dtype | None = None) -> Tensor:
    """Arithmetic mean over ``dim`` (floating inputs only, as in PyTorch).

    >>> import fluxion
    >>> fluxion.mean(fluxion.tensor([1.0, 2.0, 6.0]))
    tensor(3.)
    """
    _t(input)
    if dtype is not None:
        input = input.to(dtype)
    if not input.dtype.is_floating_point:
        raise RuntimeError(
            "mean(): could not infer output dtype. Input dtype must be either a floating point "
            f"or complex dtype. Got: {input.dtype.name}"
        )
    dims = _dims(input, dim)
    n = _count(input, dims)
    total = _reduce("sum", input, dim, keepdim)
    out = total / n if n else total * float("nan")
    return label(out, "MeanBackward0" if dim is None else "MeanBackward1")


def _count(x: Tensor, dims: tuple[int, ...] | None) -> int:
    if dims is None:
        return x._data.size
    return math.prod(x._data.shape[d] for d in dims)


def prod(input: Tensor, dim: int | None = None, keepdim: bool = False, *,
         dtype: _dtype.dtype | None = None) -> Tensor:
    """Product over ``dim`` (all by default).

    >>> import fluxion
    >>> fluxion.prod(fluxion.tensor([1.0, 2.0, 3.0]))
    tensor(6.)
    """
    _t(input)
    if dtype is not None:
        input = input.to(dtype)
    elif input.dtype.category < 2:
        input = input.to(_dtype.int64)
    return _reduce("prod", input, dim, keepdim)


def _var(input: Tensor, dim: Any, correction: float, keepdim: bool) -> Tensor:
    dims = _dims(input, dim)
    n = _count(input, dims)
    mu = _reduce("sum", input, dims, True) / builtins.max(n, 1)
    d = input - mu
    return _reduce("sum", d * d, dims, keepdim) / builtins.max(n - correction, 0)


def _correction(unbiased: bool | None, correction: float | None) -> float:
    if correction is not None:
        return correction
    return 1.0 if unbiased is None or unbiased else 0.0


def var(input: Tensor, dim: Any = None, unbiased: bool | None = None,
        keepdim: bool = False, *, correction: float | None = None) -> Tensor:
    """Variance with Bessel's ``correction`` (1 by default).

    >>> import fluxion
    >>> fluxion.var(fluxion.tensor([1.0, 2.0, 3.0]))
    tensor(1.)
    """
    if isinstance(dim, bool):  # var(x, False): the old unbiased positional
        unbiased, dim = dim, None
    _float_only("var", input)
    return _var(input, dim, _correction(unbiased, correction), keepdim)


def std(input: Tensor, dim: Any = None, unbiased: bool | None = None,
        keepdim: bool = False, *, correction: float | None = None) -> Tensor:
    """Standard deviation with Bessel's ``correction`` (1 by default).

    >>> import fluxion
    >>> fluxion.std(fluxion.tensor([1.0, 3.0]))
    tensor(1.4142)
    """
    return var(input, dim, unbiased, keepdim, correction=correction).sqrt()


def var_mean(input: Tensor, dim: Any = None, unbiased: bool | None = None,
             keepdim: bool = False, *, correction: float | None = None) -> tuple[Tensor, Tensor]:
    """``(var, mean)`` in one call.

    >>> import fluxion
    >>> fluxion.var_mean(fluxion.tensor([1.0, 3.0]))
    (tensor(2.), tensor(2.))
    """
    return var(input, dim, unbiased, keepdim, correction=correction), mean(input, dim, keepdim)


def std_mean(input: Tensor, dim: Any = None, unbiased: bool | None = None,
             keepdim: bool = False, *, correction: float | None = None) -> tuple[Tensor, Tensor]:
    """``(std, mean)`` in one call.

    >>> import fluxion
    >>> fluxion.std_mean(fluxion.tensor([1.0, 3.0]))
    (tensor(1.4142), tensor(2.))
    """
    return std(input, dim, unbiased, keepdim, correction=correction), mean(input, dim, keepdim)


def _float_only(name: str, x: Tensor) -> None:
    _t(x)
    if not x.dtype.is_floating_point:
        raise RuntimeError(f"{name}(): expected a floating point input, got {x.dtype}")


MaxResult = namedtuple("max", ["values", "indices"])
MinResult = namedtuple("min", ["values", "indices"])
SortResult = namedtuple("sort", ["values", "indices"])
TopkResult = namedtuple("topk", ["values", "indices"])


def _nonempty(name: str, x: Tensor, dims: tuple[int, ...] | None) -> None:
    if x._data.size == 0 and (dims is None or builtins.any(x._data.shape[d] == 0 for d in dims)):
        raise IndexError(
            f"{name}(): Expected reduction dim to be specified for input.numel() == 0. "
            f"Specify the reduction dim with the 'dim' argument (input shape {list(x.shape)})."
        )


def max(input: Tensor, dim: Any = None, keepdim: bool = False) -> Any:
    """The maximum of all elements; with ``dim``, ``(values, indices)``; with a tensor,
    the elementwise maximum.

    >>> import fluxion
    >>> fluxion.max(fluxion.tensor([[1, 5], [7, 2]]), dim=1)
    max(values=tensor([5, 7]), indices=tensor([1, 0]))
    """
    _t(input)
    if isinstance(dim, Tensor):
        return maximum(input, dim)
    if dim is None:
        _nonempty("max", input, None)
        return label(_reduce("amax", input, None, False), "MaxBackward1")
    d = input._dim(dim)
    _nonempty("max", input, (d,))
    vals, idx = apply(OPS["max_dim"], input, dim=d, keepdim=keepdim)
    return MaxResult(label(vals, "MaxBackward0"), idx)


def min(input: Tensor, dim: Any = None, keepdim: bool = False) -> Any:
    """The minimum of all elements; with ``dim``, ``(values, indices)``; with a tensor,
    the elementwise minimum.

    >>> import fluxion
    >>> fluxion.min(fluxion.tensor([3.0, 1.0]))
    tensor(1.)
    """
    _t(input)
    if isinstance(dim, Tensor):
        return minimum(input, dim)
    if dim is None:
        _nonempty("min", input, None)
        return label(_reduce("amin", input, None, False), "MinBackward1")
    d = input._dim(dim)
    _nonempty("min", input, (d,))
    vals, idx = apply(OPS["min_dim"], input, dim=d, keepdim=keepdim)
    return MinResult(label(vals, "MinBackward0"), idx)


def amax(input: Tensor, dim: Any = (), keepdim: bool = False) -> Tensor:
    """Maximum over ``dim`` (all by default); ties share the gradient evenly.

    >>> import fluxion
    >>> fluxion.amax(fluxion.tensor([[1, 5], [7, 2]]), dim=0)
    tensor([7, 5])
    """
    dims = _dims(_t(input), dim)
    _nonempty("amax", input, dims)
    return _reduce("amax", input, dims, keepdim)


def amin(input: Tensor, dim: Any = (), keepdim: bool = False) -> Tensor:
    """Minimum over ``dim`` (all by default); ties share the gradient evenly.

    >>> import fluxion
    >>> fluxion.amin(fluxion.tensor([[1, 5], [7, 2]]), dim=1)
    tensor([1, 2])
    """
    dims = _dims(_t(input), dim)
    _nonempty("amin", input, dims)
    return _reduce("amin", input, dims, keepdim)


def argmax(input: Tensor, dim: int | None = None, keepdim: bool = False) -> Tensor:
    """Index of the (first) maximum, over the flattened tensor or along ``dim``.

    >>> import fluxion
    >>> fluxion.argmax(fluxion.tensor([1, 9, 9]))
    tensor(1)
    """
    d = None if dim is None else _t(input)._dim(dim) if input.ndim else None
    if input.dtype is _dtype.bool_:
        raise RuntimeError('"argmax_cpu" not implemented for \'Bool\'')
    _nonempty("argmax", input, None if d is None else (d,))
    return apply(OPS["argmax"], input, dim=d, keepdim=keepdim)


def argmin(input: Tensor, dim: int | None = None, keepdim: bool = False) -> Tensor:
    """Index of the (first) minimum, over the flattened tensor or along ``dim``.

    >>> import fluxion
    >>> fluxion.argmin(fluxion.tensor([3, 1, 1]))
    tensor(1)
    """
    d = None if dim is None else _t(input)._dim(dim) if input.ndim else None
    if input.dtype is _dtype.bool_:
        raise RuntimeError('"argmin_cpu" not implemented for \'Bool\'')
    _nonempty("argmin", input, None if d is None else (d,))
    return apply(OPS["argmin"], input, dim=d, keepdim=keepdim)


def all(input: Tensor, dim: Any = None, keepdim: bool = False) -> Tensor:
    """Whether all elements (along ``dim``) are true.

    >>> import fluxion
    >>> fluxion.all(fluxion.tensor([True, False]))
    tensor(False)
    """
    return _reduce("all", _t(input), dim, keepdim)


def any(input: Tensor, dim: Any = None, keepdim: bool = False) -> Tensor:
    """Whether any element (along ``dim``) is true.

    >>> import fluxion
    >>> fluxion.any(fluxion.tensor([True, False]))
    tensor(True)
    """
    return _reduce("any", _t(input), dim, keepdim)


def logsumexp(input: Tensor, dim: Any, keepdim: bool = False) -> Tensor:
    """``log(sum(exp(input)))`` over ``dim``, computed stably.

    >>> import fluxion
    >>> fluxion.logsumexp(fluxion.tensor([0.0, 0.0]), dim=0)
    tensor(0.6931)
    """
    _t(input)
    if not input.dtype.is_floating_point:
        input = input.to(_dtype.get_default_dtype())
    dims = _dims(input, dim)
    m = _reduce("amax", input.detach(), dims, True)
    m = m.where(m.isfinite(), 0)  # all -inf (or inf) rows: no shift
    out = (input - m).exp().sum(dims, keepdim=True).log() + m
    return out if keepdim else (out.squeeze(dims) if dims is not None else out.reshape(()))


def cumsum(input: Tensor, dim: int, *, dtype: _dtype.dtype | None = None) -> Tensor:
    """Cumulative sum along ``dim``.

    >>> import fluxion
    >>> fluxion.cumsum(fluxion.tensor([1, 2, 3]), dim=0)
    tensor([1, 3, 6])
    """
    _t(input)
    if dtype is not None:
        input = input.to(dtype)
    elif input.dtype.category < 2:
        input = input.to(_dtype.int64)
    return apply(OPS["cumsum"], input, dim=input._dim(dim))


def norm(input: Tensor, p: Any = "fro", dim: Any = None, keepdim: bool = False,
         dtype: _dtype.dtype | None = None) -> Tensor:
    """Vector p-norm over ``dim`` (all by default): 2 (``'fro'``), 1, inf, -inf, 0 or any p.

    >>> import fluxion
    >>> fluxion.norm(fluxion.tensor([3.0, 4.0]))
    tensor(5.)
    """
    _float_only("norm", input if dtype is None else input.to(dtype))
    if dtype is not None:
        input = input.to(dtype)
    dims = _dims(input, dim)
    if p in ("fro", 2, 2.0):
        return apply(OPS["norm2"], input, dims=dims, keepdim=keepdim)
    if p == "nuc":
        raise RuntimeError("norm(): the nuclear norm is not supported")
    a = input.abs()
    if p == math.inf:
        return _reduce("amax", a, dims, keepdim)
    if p == -math.inf:
        return _reduce("amin", a, dims, keepdim)
    if p == 0:
        return _reduce("sum", (a != 0).to(input.dtype), dims, keepdim)
    if p == 1:
        return _reduce("sum", a, dims, keepdim)
    return _reduce("sum", a ** p, dims, keepdim) ** (1.0 / p)


def sort(input: Tensor, dim: int = -1, descending: bool = False, stable: bool = False) -> Any:
    """Sorted values and their indices along ``dim`` (stable).

    >>> import fluxion
    >>> fluxion.sort(fluxion.tensor([3, 1, 2]))
    sort(values=tensor([1, 2, 3]), indices=tensor([1, 2, 0]))
    """
    d = _t(input)._dim(dim) if input.ndim else 0
    if input.ndim == 0:
        return SortResult(input.clone(), Tensor._make(np.zeros((), np.int64)))
    return SortResult(*apply(OPS["sort"], input, dim=d, descending=descending))


def argsort(input: Tensor, dim: int = -1, descending: bool = False, stable: bool = False) -> Tensor:
    """Indices that sort ``input`` along ``dim``.

    >>> import fluxion
    >>> fluxion.argsort(fluxion.tensor([3, 1, 2]))
    tensor([1, 2, 0])
    """
    return sort(input, dim, descending, stable).indices


def topk(input: Tensor, k: int, dim: int = -1, largest: bool = True,
         sorted: bool = True) -> Any:
    """The ``k`` largest (or smallest) values along ``dim`` and their indices.

    >>> import fluxion
    >>> fluxion.topk(fluxion.tensor([1.0, 5.0, 3.0]), 2)
    topk(values=tensor([5., 3.]), indices=tensor([1, 2]))
    """
    d = _t(input)._dim(dim)
    size = input.shape[d] if input.ndim else 1
    if not 0 <= k <= size:
        raise RuntimeError(f"topk(): selected index k={k} out of range for dimension {d} of "
                           f"size {size}")
    return TopkResult(*apply(OPS["topk"], input, k=k, dim=d, largest=largest))


# --- movement --------------------------------------------------------------------------
def _shape_arg(shape: Sequence[Any]) -> tuple[int, ...]:
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = shape[0]
    for s in shape:
        int_like = isinstance(s, (int, np.integer)) and not isinstance(s, bool)
        tensor_int = isinstance(s, Tensor) and s.numel() == 1 and not s.is_floating_point()
        if not (int_like or tensor_int):
            raise TypeError(f"shape must be a sequence of ints, but got {type(s).__name__} "
                            f"({s!r}) in {list(shape)}")
    return tuple(int(s) for s in shape)


def _infer_shape(name: str, x: Tensor, shape: tuple[int, ...]) -> tuple[int, ...]:
    n = x._data.size
    if shape.count(-1) > 1:
        raise RuntimeError(f"{name}: only one dimension can be inferred, got shape {list(shape)}")
    known = math.prod(s for s in shape if s != -1)
    if -1 in shape:
        if known == 0 or n % known:
            raise RuntimeError(f"shape '{list(shape)}' is invalid for input of size {n}")
        shape = tuple(n // known if s == -1 else s for s in shape)
    elif known != n:
        raise RuntimeError(f"shape '{list(shape)}' is invalid for input of size {n}")
    return shape


def reshape(input: Tensor, *shape: Any) -> Tensor:
    """The same elements in a new shape (a view when the layout allows, else a copy).

    >>> import fluxion
    >>> fluxion.reshape(fluxion.arange(6), (2, -1))
    tensor([[0, 1, 2],
            [3, 4, 5]])
    """
    s = _infer_shape("reshape", input, _shape_arg(shape))
    out = apply(OPS["reshape"], input, shape=s)
    # PyTorch's reshape is a view when it can be, else a copy
    shared = out._base is not None
    return label(out, "ViewBackward0" if shared else "UnsafeViewBackward0")


def _alias(x: Tensor) -> Tensor:
    """A new tensor object viewing the same memory (what reshape to the same shape gives)."""
    return apply(OPS["reshape"], x, shape=x._data.shape)


def view(input: Tensor, *shape: Any) -> Tensor:
    """A view with a new shape; errors (as PyTorch) when the strides do not allow one.

    >>> import fluxion
    >>> fluxion.arange(6).view(3, 2).shape
    fluxion.Size([3, 2])
    """
    if len(shape) == 1 and isinstance(shape[0], _dtype.dtype):
        raise RuntimeError("view(dtype) is not supported; use .to(dtype)")
    s = _infer_shape("view", input, _shape_arg(shape))
    d = input._data
    probe = d if has_data(d) else d.probe()  # a captured value: ask its layout
    try:
        probe.view().shape = s  # NumPy refuses exactly when no view exists
    except AttributeError:
        raise RuntimeError(
            f"view size is not compatible with input tensor's size and stride (shape "
            f"{list(input.shape)}, strides {list(input.stride())} to {list(s)}); at least one "
            "dimension spans across two contiguous subspaces. Use .reshape(...) instead."
        ) from None
    return label(apply(OPS["reshape"], input, shape=s), "ViewBackward0")


def permute(input: Tensor, *dims: Any) -> Tensor:
    """A view with the dimensions reordered.

    >>> import fluxion
    >>> fluxion.permute(fluxion.zeros(2, 3, 4), (2, 0, 1)).shape
    fluxion.Size([4, 2, 3])
    """
    d = _shape_arg(dims)
    if len(d) != input.ndim:
        raise RuntimeError(f"permute(sparse_coo): number of dimensions in the tensor input does "
                           f"not match the length of the desired ordering of dimensions i.e. "
                           f"input.dim() = {input.ndim} is not equal to len(dims) = {len(d)}")
    nd = tuple(input._dim(i) for i in d)
    if len(set(nd)) != len(nd):
        raise RuntimeError(f"permute(): duplicate dims are not allowed ({list(d)})")
    return apply(OPS["permute"], input, dims=nd)


def transpose(input: Tensor, dim0: int, dim1: int) -> Tensor:
    """A view with two dimensions swapped.

    >>> import fluxion
    >>> fluxion.transpose(fluxion.zeros(2, 3), 0, 1).shape
    fluxion.Size([3, 2])
    """
    if input.ndim < 2 and dim0 in (0, -1) and dim1 in (0, -1):
        return _alias(input)
    perm = list(range(input.ndim))
    a, b = input._dim(dim0), input._dim(dim1)
    perm[a], perm[b] = perm[b], perm[a]
    return label(apply(OPS["permute"], input, dims=tuple(perm)), "TransposeBackward0")


swapaxes = swapdims = transpose


def t(input: Tensor) -> Tensor:
    """Transpose of a matrix (vectors unchanged).

    >>> import fluxion
    >>> fluxion.t(fluxion.zeros(2, 3)).shape
    fluxion.Size([3, 2])
    """
    if input.ndim > 2:
        raise RuntimeError(f"t() expects a tensor with <= 2 dimensions, but self is {input.ndim}D")
    return label(transpose(input, 0, 1), "TBackward0") if input.ndim == 2 else _alias(input)


def movedim(input: Tensor, source: Any, destination: Any) -> Tensor:
    """Move dimensions to new positions.

    >>> import fluxion
    >>> fluxion.movedim(fluxion.zeros(2, 3, 4), 0, -1).shape
    fluxion.Size([3, 4, 2])
    """
    src = [source] if isinstance(source, int) else list(source)
    dst = [destination] if isinstance(destination, int) else list(destination)
    src = [input._dim(s) for s in src]
    dst = [input._dim(d) for d in dst]
    order = [i for i in range(input.ndim) if i not in src]
    for d, s in sorted(zip(dst, src)):
        order.insert(d, s)
    return apply(OPS["permute"], input, dims=tuple(order))


def expand(input: Tensor, *sizes: Any) -> Tensor:
    """A broadcast view; -1 keeps a size, new leading dimensions may be added.

    >>> import fluxion
    >>> fluxion.tensor([[1], [2]]).expand(2, 3)
    tensor([[1, 1, 1],
            [2, 2, 2]])
    """
    s = _shape_arg(sizes)
    cur = input._data.shape
    if len(s) < len(cur):
        raise RuntimeError(
            f"expand: the number of sizes provided ({len(s)}) must be greater or equal to the "
            f"number of dimensions in the tensor ({len(cur)})"
        )
    lead = len(s) - len(cur)
    out = []
    for i, size in enumerate(s):
        if i < lead:
            if size < 0:
                raise RuntimeError(f"expand: -1 is not allowed in a leading, non-existing "
                                   f"dimension {i}")
            out.append(size)
            continue
        c = cur[i - lead]
        if size == -1:
            size = c
        if c != size and c != 1:
            raise RuntimeError(
                f"The expanded size of the tensor ({size}) must match the existing size ({c}) at "
                f"non-singleton dimension {i}.  Target sizes: {list(s)}.  Tensor sizes: "
                f"{list(cur)}"
            )
        out.append(size)
    if tuple(out) == cur:
        return _alias(input)
    return apply(OPS["expand"], input, shape=tuple(out))


def expand_as(input: Tensor, other: Tensor) -> Tensor:
    """``expand`` to ``other``'s shape."""
    return expand(input, other.shape)


def broadcast_to(input: Tensor, size: Sequence[int]) -> Tensor:
    """Broadcast to ``size`` (a view).

    >>> import fluxion
    >>> fluxion.broadcast_to(fluxion.tensor([1, 2]), (2, 2)).shape
    fluxion.Size([2, 2])
    """
    return expand(input, tuple(size))


def broadcast_shapes(*shapes: Sequence[int]) -> Any:
    """The shape these shapes broadcast to.

    >>> import fluxion
    >>> fluxion.broadcast_shapes((2, 1), (3,))
    fluxion.Size([2, 3])
    """
    from fluxion.tensor import Size

    try:
        return Size(np.broadcast_shapes(*[tuple(s) for s in shapes]))
    except ValueError:
        raise RuntimeError(f"Shape mismatch: objects cannot be broadcast to a single shape: "
                           f"{[list(s) for s in shapes]}") from None


def broadcast_tensors(*tensors: Tensor) -> tuple[Tensor, ...]:
    """Expand all tensors to their common shape.

    >>> import fluxion
    >>> a, b = fluxion.broadcast_tensors(fluxion.zeros(2, 1), fluxion.zeros(3))
    >>> a.shape, b.shape
    (fluxion.Size([2, 3]), fluxion.Size([2, 3]))
    """
    shape = broadcast_shapes(*[t.shape for t in tensors])
    return tuple(expand(t, shape) for t in tensors)


def squeeze(input: Tensor, dim: Any = None) -> Tensor:
    """Remove size-1 dimensions (all, or those in ``dim``).

    >>> import fluxion
    >>> fluxion.squeeze(fluxion.zeros(1, 2, 1)).shape
    fluxion.Size([2])
    """
    shape = input._data.shape
    if dim is None:
        new = tuple(s for s in shape if s != 1)
    else:
        dims = _dims(input, dim) or ()
        new = tuple(s for i, s in enumerate(shape) if not (i in dims and s == 1))
    name = "SqueezeBackward0" if dim is None else (
        "SqueezeBackward1" if isinstance(dim, int) else "SqueezeBackward2")
    return label(apply(OPS["reshape"], input, shape=new), name)


def unsqueeze(input: Tensor, dim: int) -> Tensor:
    """Insert a size-1 dimension at ``dim``.

    >>> import fluxion
    >>> fluxion.unsqueeze(fluxion.zeros(2), 0).shape
    fluxion.Size([1, 2])
    """
    n = input.ndim + 1
    if not -n <= dim < n:
        raise IndexError(f"Dimension out of range (expected to be in range of [{-n}, {n - 1}], "
                         f"but got {dim})")
    d = dim + n if dim < 0 else dim
    shape = list(input._data.shape)
    shape.insert(d, 1)
    return label(apply(OPS["reshape"], input, shape=tuple(shape)), "UnsqueezeBackward0")


def flatten(input: Tensor, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    """Merge dimensions ``start_dim..end_dim`` into one.

    >>> import fluxion
    >>> fluxion.flatten(fluxion.zeros(2, 3, 4), 1).shape
    fluxion.Size([2, 12])
    """
    if input.ndim == 0:
        return reshape(input, (1,))
    s, e = input._dim(start_dim), input._dim(end_dim)
    if s > e:
        raise RuntimeError("flatten() has invalid args: start_dim cannot come after end_dim")
    shape = input._data.shape
    new = (*shape[:s], math.prod(shape[s:e + 1]), *shape[e + 1:])
    return reshape(input, new)


def unflatten(input: Tensor, dim: int, sizes: Sequence[int]) -> Tensor:
    """Split dimension ``dim`` into ``sizes`` (one may be -1).

    >>> import fluxion
    >>> fluxion.unflatten(fluxion.zeros(2, 12), 1, (3, 4)).shape
    fluxion.Size([2, 3, 4])
    """
    d = input._dim(dim)
    shape = input._data.shape
    sizes = tuple(sizes)
    if -1 in sizes:
        known = math.prod(s for s in sizes if s != -1)
        sizes = tuple(shape[d] // known if s == -1 else s for s in sizes)
    if math.prod(sizes) != shape[d]:
        raise RuntimeError(f"unflatten: Provided sizes {list(sizes)} don't multiply up to the "
                           f"size of dim {dim} ({shape[d]}) in the input tensor")
    return reshape(input, shape[:d] + sizes + shape[d + 1:])


def narrow(input: Tensor, dim: int, start: int, length: int) -> Tensor:
    """A view of ``length`` elements from ``start`` along ``dim``.

    >>> import fluxion
    >>> fluxion.narrow(fluxion.arange(5), 0, 1, 2)
    tensor([1, 2])
    """
    d = input._dim(dim)
    size = input._data.shape[d]
    if start < 0:
        start += size
    if not (0 <= start <= size and length >= 0 and start + length <= size):
        raise RuntimeError(f"start ({start}) + length ({length}) exceeds dimension size ({size}).")
    key = (slice(None),) * d + (slice(start, start + length),)
    return label(apply(OPS["slice"], input, key=key), "SliceBackward0")


def select(input: Tensor, dim: int, index: int) -> Tensor:
    """The slice at ``index`` along ``dim``, that dimension removed.

    >>> import fluxion
    >>> fluxion.select(fluxion.arange(6).view(2, 3), 1, 0)
    tensor([0, 3])
    """
    d = input._dim(dim)
    size = input._data.shape[d]
    if not -size <= index < size:
        raise IndexError(f"select(): index {index} out of range for tensor of size "
                         f"{list(input.shape)} at dimension {d}")
    return label(apply(OPS["slice"], input, key=(slice(None),) * d + (index,)), "SelectBackward0")


def flip(input: Tensor, dims: Any) -> Tensor:
    """Reverse the order along ``dims`` (a copy, as in PyTorch).

    >>> import fluxion
    >>> fluxion.flip(fluxion.arange(3), (0,))
    tensor([2, 1, 0])
    """
    d = _dims(input, dims if not isinstance(dims, int) else (dims,))
    return apply(OPS["flip"], input, dims=d if d is not None else ())


def fliplr(input: Tensor) -> Tensor:
    """Flip the columns."""
    return flip(input, (1,))


def flipud(input: Tensor) -> Tensor:
    """Flip the rows."""
    return flip(input, (0,))


def roll(input: Tensor, shifts: Any, dims: Any = None) -> Tensor:
    """Rotate elements along ``dims`` (the flattened tensor when None).

    >>> import fluxion
    >>> fluxion.roll(fluxion.arange(4), 1)
    tensor([3, 0, 1, 2])
    """
    if dims is None:
        return roll(input.flatten(), shifts, 0).view(input.shape)
    sh = (shifts,) if isinstance(shifts, int) else tuple(shifts)
    dm = (dims,) if isinstance(dims, int) else tuple(dims)
    if len(sh) != len(dm):
        raise RuntimeError(f"roll: shifts and dimensions must align. shifts: {len(sh)}, "
                           f"dims:{len(dm)}")
    return apply(OPS["roll"], input, shifts=sh, dims=tuple(input._dim(d) for d in dm))


def repeat(input: Tensor, *sizes: Any) -> Tensor:
    """Tile the tensor ``sizes`` times along each dimension (a copy).

    >>> import fluxion
    >>> fluxion.tensor([1, 2]).repeat(2)
    tensor([1, 2, 1, 2])
    """
    reps = _shape_arg(sizes)
    if len(reps) < input.ndim:
        raise RuntimeError("Number of dimensions of repeat dims can not be smaller than number "
                           "of dimensions of tensor")
    x = input.reshape((1,) * (len(reps) - input.ndim) + input._data.shape)
    shape = x._data.shape
    # (r0, s0, r1, s1, ...) by expanding a size-1 axis before each dimension
    inter = tuple(v for r, s in zip(reps, shape) for v in (1, s))
    target = tuple(v for r, s in zip(reps, shape) for v in (r, s))
    out = x.reshape(inter).expand(target)
    return out.reshape(tuple(r * s for r, s in zip(reps, shape)))


def tile(input: Tensor, dims: Sequence[int]) -> Tensor:
    """Like ``repeat``, padding ``dims`` with leading ones.

    >>> import fluxion
    >>> fluxion.tile(fluxion.tensor([1, 2]), (2,))
    tensor([1, 2, 1, 2])
    """
    dims = tuple(dims)
    if len(dims) < input.ndim:
        dims = (1,) * (input.ndim - len(dims)) + dims
    return repeat(input, dims)


def cat(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    """Join tensors along an existing dimension (promoting dtypes).

    >>> import fluxion
    >>> fluxion.cat([fluxion.zeros(1, 2), fluxion.ones(2, 2)]).shape
    fluxion.Size([3, 2])
    """
    if isinstance(tensors, Tensor):
        raise TypeError("cat(): argument 'tensors' must be tuple of Tensors, not Tensor")
    if not len(tensors):
        raise ValueError("cat(): expected a non-empty list of Tensors")
    ts = [_t(x, "tensors") for x in tensors]
    # legacy rule: 1-D empty tensors are skipped (the kernel skips them too)
    real = [x for x in ts if not (x.ndim == 1 and x._data.size == 0)] or ts[:1]
    ref = real[0]
    d = ref._dim(dim)
    for i, x in enumerate(real):
        if x.ndim != ref.ndim:
            raise RuntimeError(f"Tensors must have same number of dimensions: got {ref.ndim} "
                               f"and {x.ndim}")
        for k in range(ref.ndim):
            if k != d and x._data.shape[k] != ref._data.shape[k]:
                raise RuntimeError(
                    f"Sizes of tensors must match except in dimension {d}. Expected size "
                    f"{ref._data.shape[k]} but got size {x._data.shape[k]} for tensor number {i} "
                    "in the list."
                )
    rd = _dtype.result_type(*real) if len({x._data.dtype for x in real}) > 1 else ref.dtype
    ts = [x if x.dtype is rd else x.to(rd) for x in ts]
    return apply(OPS["cat"], *ts, dim=d)


concat = concatenate = cat


def stack(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    """Join tensors along a new dimension.

    >>> import fluxion
    >>> fluxion.stack([fluxion.zeros(2), fluxion.ones(2)]).shape
    fluxion.Size([2, 2])
    """
    if not len(tensors):
        raise RuntimeError("stack expects a non-empty TensorList")
    shapes = {x.shape for x in tensors}
    if len(shapes) > 1:
        raise RuntimeError(f"stack expects each tensor to be equal size, but got "
                           f"{[list(s) for s in [x.shape for x in tensors]]}")
    return cat([unsqueeze(x, dim) for x in tensors], dim)


def hstack(tensors: Sequence[Tensor]) -> Tensor:
    """Concatenate along dim 1 (dim 0 for 1-D)."""
    return cat(tensors, 0 if tensors[0].ndim == 1 else 1)


def vstack(tensors: Sequence[Tensor]) -> Tensor:
    """Concatenate rows (1-D tensors become rows)."""
    return cat([x.reshape(1, -1) if x.ndim == 1 else x for x in tensors], 0)


def split(tensor: Tensor, split_size_or_sections: Any, dim: int = 0) -> tuple[Tensor, ...]:
    """Split into chunks of a size, or of the listed sizes, along ``dim`` (views).

    >>> import fluxion
    >>> [p.tolist() for p in fluxion.split(fluxion.arange(5), 2)]
    [[0, 1], [2, 3], [4]]
    """
    d = tensor._dim(dim)
    size = tensor._data.shape[d]
    if isinstance(split_size_or_sections, int):
        step = split_size_or_sections
        if step <= 0 and size:
            raise RuntimeError(f"split expects split_size be non-negative, but got "
                               f"split_size={step}")
        sizes = [builtins.min(step, size - i) for i in range(0, size, step)] if size else [0]
    else:
        sizes = list(split_size_or_sections)
        if builtins.sum(sizes) != size:
            raise RuntimeError(f"split_with_sizes expects split_sizes to sum exactly to {size} "
                               f"(input tensor's size at dimension {d}), but got "
                               f"split_sizes={sizes}")
    out, start = [], 0
    for s in sizes:
        out.append(narrow(tensor, d, start, s))
        start += s
    return tuple(out)


def tensor_split(input: Tensor, indices_or_sections: Any, dim: int = 0) -> tuple[Tensor, ...]:
    """Split into n nearly equal parts, or at the given indices."""
    d = input._dim(dim)
    size = input._data.shape[d]
    if isinstance(indices_or_sections, int):
        n = indices_or_sections
        sizes = [size // n + (1 if i < size % n else 0) for i in range(n)]
    else:
        idx = [0, *list(indices_or_sections), size]
        sizes = [builtins.max(0, builtins.min(b, size) - builtins.min(a, size))
                 for a, b in itertools.pairwise(idx)]
    return split(input, sizes, d)


def chunk(input: Tensor, chunks: int, dim: int = 0) -> tuple[Tensor, ...]:
    """Split into ``chunks`` pieces of equal size (the last may be smaller).

    >>> import fluxion
    >>> len(fluxion.chunk(fluxion.arange(5), 2))
    2
    """
    if chunks <= 0:
        raise RuntimeError(f"chunk expects `chunks` to be greater than 0, got: {chunks}")
    size = input._data.shape[input._dim(dim)]
    step = -(-size // chunks) if size else 1
    return split(input, step, dim)


def unbind(input: Tensor, dim: int = 0) -> tuple[Tensor, ...]:
    """The slices along ``dim``, that dimension removed.

    >>> import fluxion
    >>> fluxion.unbind(fluxion.tensor([[1, 2], [3, 4]]))
    (tensor([1, 2]), tensor([3, 4]))
    """
    d = input._dim(dim)
    return tuple(select(input, d, i) for i in range(input._data.shape[d]))


def tril(input: Tensor, diagonal: int = 0) -> Tensor:
    """Lower triangle of the last two dimensions, the rest zeroed.

    >>> import fluxion
    >>> fluxion.tril(fluxion.ones(2, 2))
    tensor([[1., 0.],
            [1., 1.]])
    """
    if input.ndim < 2:
        raise RuntimeError("tril: input tensor must have at least 2 dimensions")
    return apply(OPS["tril"], input, diagonal=diagonal)


def triu(input: Tensor, diagonal: int = 0) -> Tensor:
    """Upper triangle of the last two dimensions, the rest zeroed.

    >>> import fluxion
    >>> fluxion.triu(fluxion.ones(2, 2))
    tensor([[1., 1.],
            [0., 1.]])
    """
    if input.ndim < 2:
        raise RuntimeError("triu: input tensor must have at least 2 dimensions")
    return apply(OPS["triu"], input, diagonal=diagonal)


def clone(input: Tensor, *, memory_format: Any = None) -> Tensor:
    """A copy that stays in the graph.

    >>> import fluxion
    >>> fluxion.clone(fluxion.ones(2))
    tensor([1., 1.])
    """
    return apply(OPS["clone"], _t(input))


# --- indexing --------------------------------------------------------------------------
def _index_array(name: str, index: Any) -> np.ndarray:
    arr = index._data if isinstance(index, Tensor) else np.asarray(index)
    if arr.dtype.kind not in "iu":
        raise RuntimeError(f"{name}(): Expected dtype int64 for index, got {arr.dtype}")
    if type(arr) is not np.ndarray:  # captured by fluxion.compile: stays in the graph
        return arr
    return arr.astype(np.int64, copy=False)


def has_data(arr: Any) -> bool:
    """Whether an array's values are at hand (inside ``fluxion.compile`` a value may not
    be computed yet; checks on values then happen when the kernel runs)."""
    return type(arr) is np.ndarray


def _check_index_shape(name: str, x: Tensor, dim: int, index: np.ndarray) -> None:
    if index.ndim != x.ndim and not (x.ndim == 0 and index.ndim <= 1):
        raise RuntimeError(f"{name}(): Index tensor must have the same number of dimensions as "
                           f"input tensor ({list(index.shape)} vs {list(x.shape)})")
    size = x._data.shape[dim] if x.ndim else 1
    if has_data(index) and index.size and (index.min() < -size or index.max() >= size):
        bad = int(index.max() if index.max() >= size else index.min())
        raise RuntimeError(f"{name}(): index {bad} is out of bounds for dimension {dim} with "
                           f"size {size}")


def gather(input: Tensor, dim: int, index: Tensor) -> Tensor:
    """``out[i][j] = input[index[i][j]][j]`` for dim 0, and so on.

    >>> import fluxion
    >>> fluxion.gather(fluxion.tensor([[1, 2], [3, 4]]), 1, fluxion.tensor([[1], [0]]))
    tensor([[2],
            [3]])
    """
    d = input._dim(dim)
    idx = _index_array("gather", index)
    _check_index_shape("gather", input, d, idx)
    for k in range(input.ndim):
        if k != d and idx.shape[k] > input._data.shape[k]:
            raise RuntimeError(f"gather(): Size does not match at dimension {k} expected index "
                               f"{list(idx.shape)} to be smaller than self {list(input.shape)} "
                               f"apart from dimension {d}")
    key = tuple(slice(0, s) if k != d else slice(None) for k, s in enumerate(idx.shape))
    src = input if idx.shape == input._data.shape else apply(OPS["slice"], input, key=key)
    return apply(OPS["gather"], src, dim=d, index=idx)


def scatter(input: Tensor, dim: int, index: Tensor, src: Any = None, *,
            value: Any = None, reduce: str | None = None) -> Tensor:
    """Write ``src`` (or ``value``) into a copy of ``input`` at ``index`` along ``dim``.

    >>> import fluxion
    >>> fluxion.zeros(3).scatter(0, fluxion.tensor([2]), fluxion.tensor([5.0]))
    tensor([0., 0., 5.])
    """
    if reduce is not None:
        if reduce == "add":
            return scatter_add(input, dim, index, src if src is not None else
                               full_like_index(input, index, value))
        raise RuntimeError(f"scatter(): reduce={reduce!r} is not supported")
    d = input._dim(dim)
    idx = _index_array("scatter", index)
    _check_index_shape("scatter", input, d, idx)
    if src is None:
        src = value
    if isinstance(src, Tensor):
        if src.dtype is not input.dtype:
            raise RuntimeError(f"scatter(): Expected self.dtype to be equal to src.dtype "
                               f"({input.dtype} vs {src.dtype})")
        return apply(OPS["scatter"], input, src, dim=d, index=idx)
    return apply(OPS["scatter"], input, src, dim=d, index=idx)


def full_like_index(input: Tensor, index: Tensor, value: Any) -> Tensor:
    """A tensor of ``value`` with ``index``'s shape and ``input``'s dtype (scatter helper)."""
    return Tensor._make(np.full(np.shape(_index_array("scatter", index)), value,
                                input._data.dtype))


def scatter_add(input: Tensor, dim: int, index: Tensor, src: Tensor) -> Tensor:
    """Add ``src`` into a copy of ``input`` at ``index`` along ``dim`` (repeats add up).

    >>> import fluxion
    >>> fluxion.zeros(2).scatter_add(0, fluxion.tensor([1, 1]), fluxion.ones(2))
    tensor([0., 2.])
    """
    d = input._dim(dim)
    idx = _index_array("scatter_add", index)
    _check_index_shape("scatter_add", input, d, idx)
    if src.dtype is not input.dtype:
        raise RuntimeError(f"scatter_add(): Expected self.dtype to be equal to src.dtype "
                           f"({input.dtype} vs {src.dtype})")
    return apply(OPS["scatter_add"], input, src, dim=d, index=idx)


def index_select(input: Tensor, dim: int, index: Tensor) -> Tensor:
    """The entries at ``index`` along ``dim``.

    >>> import fluxion
    >>> fluxion.index_select(fluxion.tensor([[1, 2], [3, 4]]), 0, fluxion.tensor([1]))
    tensor([[3, 4]])
    """
    d = input._dim(dim)
    idx = _index_array("index_select", index)
    if idx.ndim > 1:
        raise IndexError("index_select(): Index is supposed to be a vector")
    if input.ndim == 0:  # a 0-d input acts as a one-element vector
        if idx.size and (idx.min() < -1 or idx.max() > 0):
            raise IndexError("index_select(): index out of range in self")
        return apply(OPS["index"], input.reshape(1), key=(idx.reshape(-1),)).reshape(())
    size = input._data.shape[d] if input.ndim else 1
    if idx.size and (idx.min() < -size or idx.max() >= size):
        raise IndexError(f"index_select(): index out of range in self (index values "
                         f"{idx.min()}..{idx.max()} for dimension {d} of size {size})")
    return apply(OPS["index"], input, key=(slice(None),) * d + (idx.reshape(-1),))


def masked_fill(input: Tensor, mask: Tensor, value: Any) -> Tensor:
    """``value`` where ``mask`` is true (broadcast), else ``input``.

    >>> import fluxion
    >>> fluxion.masked_fill(fluxion.zeros(3), fluxion.tensor([True, False, True]), 1.0)
    tensor([1., 0., 1.])
    """
    if mask.dtype is not _dtype.bool_:
        raise RuntimeError(f"masked_fill_ only supports boolean masks, but got mask with dtype "
                           f"{mask.dtype.name}")
    if isinstance(value, Tensor):
        if value.ndim:
            raise RuntimeError(f"masked_fill_ only supports a 0-dimensional value tensor, but "
                               f"got tensor with {value.ndim} dimension(s).")
        v = value.to(input.dtype)
    else:
        v = Tensor._make(np.asarray(value, dtype=input._data.dtype))
    out = where(mask, v, input)
    if out.shape != input.shape:
        raise RuntimeError(f"masked_fill: mask of shape {list(mask.shape)} does not broadcast "
                           f"to the input's shape {list(input.shape)}")
    return out


def masked_select(input: Tensor, mask: Tensor) -> Tensor:
    """The elements where ``mask`` (broadcast) is true, as a 1-D tensor.

    >>> import fluxion
    >>> fluxion.masked_select(fluxion.tensor([1, 2, 3]), fluxion.tensor([True, False, True]))
    tensor([1, 3])
    """
    if mask.dtype is not _dtype.bool_:
        raise RuntimeError(f"masked_select: expected BoolTensor for mask, got {mask.dtype}")
    x, m = broadcast_tensors(input, mask)
    # the result's size depends on the mask's values: inside fluxion.compile, a graph break
    return apply(OPS["index"], x, key=(m._arr("masked_select: the output size depends on the "
                                              "mask"),))


def nonzero(input: Tensor, *, as_tuple: bool = False) -> Any:
    """Indices of the non-zero elements: (n, ndim), or a tuple of 1-D index tensors.

    >>> import fluxion
    >>> fluxion.nonzero(fluxion.tensor([0, 3, 4]))
    tensor([[1],
            [2]])
    """
    nz = np.nonzero(np.atleast_1d(input._data))
    if as_tuple:
        return tuple(Tensor._make(i.astype(np.int64)) for i in nz)
    return Tensor._make(np.stack(nz, axis=1).astype(np.int64))


def count_nonzero(input: Tensor, dim: Any = None) -> Tensor:
    """Number of non-zero elements (along ``dim``).

    >>> import fluxion
    >>> fluxion.count_nonzero(fluxion.tensor([0, 3, 4]))
    tensor(2)
    """
    return sum(input != 0, dim)


# --- linear algebra ------------------------------------------------------------------
def matmul(input: Tensor, other: Tensor) -> Tensor:
    """Matrix product with PyTorch's rules for 1-D operands and batch broadcasting.

    >>> import fluxion
    >>> (fluxion.ones(2, 3) @ fluxion.ones(3)).tolist()
    [3.0, 3.0]
    """
    a, b = _t(input), _t(other, "other")
    if a.ndim == 0 or b.ndim == 0:
        raise RuntimeError(f"both arguments to matmul need to be at least 1D, but they are "
                           f"{a.ndim}D and {b.ndim}D")
    if a._data.dtype != b._data.dtype:
        raise RuntimeError(f"expected m1 and m2 to have the same dtype, but got: "
                           f"{a.dtype.name} != {b.dtype.name}")
    ka = a._data.shape[-1]
    kb = b._data.shape[-2] if b.ndim > 1 else b._data.shape[0]
    if ka != kb:
        sa = "x".join(map(str, a.shape if a.ndim > 1 else (1, ka)))
        sb = "x".join(map(str, b.shape if b.ndim > 1 else (kb, 1)))
        raise RuntimeError(f"mat1 and mat2 shapes cannot be multiplied ({sa} and {sb})")
    try:
        if a.ndim > 2 and b.ndim > 2:  # (a matrix's batch dimensions, none, always do)
            np.broadcast_shapes(a._data.shape[:-2], b._data.shape[:-2])
    except ValueError:
        raise RuntimeError(f"matmul: batch dimensions of {list(a.shape)} and {list(b.shape)} do "
                           "not broadcast") from None
    if a.ndim == 1 and b.ndim == 1:
        return (a * b).sum() if a.requires_grad or b.requires_grad else Tensor._make(
            np.asarray(np.dot(a._data, b._data)))
    a2 = a.unsqueeze(0) if a.ndim == 1 else a
    b2 = b.unsqueeze(-1) if b.ndim == 1 else b
    out = apply(OPS["matmul"], a2, b2)
    if a.ndim == 2 and b.ndim == 2:
        label(out, "MmBackward0")
    elif a.ndim == 3 and b.ndim == 3:
        label(out, "BmmBackward0")
    if a.ndim == 1:
        out = out.squeeze(-2)
    if b.ndim == 1:
        out = label(out.squeeze(-1), "MvBackward0" if a.ndim == 2 else "UnsafeViewBackward0")
    return out


def mm(input: Tensor, mat2: Tensor) -> Tensor:
    """Product of two matrices (2-D only).

    >>> import fluxion
    >>> fluxion.mm(fluxion.eye(2), fluxion.ones(2, 3)).shape
    fluxion.Size([2, 3])
    """
    if input.ndim != 2 or mat2.ndim != 2:
        raise RuntimeError(f"mm: expected 2-D tensors, got {input.ndim}D and {mat2.ndim}D "
                           f"(shapes {list(input.shape)} and {list(mat2.shape)})")
    return matmul(input, mat2)


def bmm(input: Tensor, mat2: Tensor) -> Tensor:
    """Batched product of (b, n, m) and (b, m, p) tensors.

    >>> import fluxion
    >>> fluxion.bmm(fluxion.ones(4, 2, 3), fluxion.ones(4, 3, 5)).shape
    fluxion.Size([4, 2, 5])
    """
    if input.ndim != 3 or mat2.ndim != 3:
        raise RuntimeError(f"bmm: expected 3-D tensors, got {input.ndim}D and {mat2.ndim}D")
    if input.shape[0] != mat2.shape[0]:
        raise RuntimeError(f"bmm: batch1 and batch2 must have the same batch size, got "
                           f"{input.shape[0]} and {mat2.shape[0]}")
    return matmul(input, mat2)


def mv(input: Tensor, vec: Tensor) -> Tensor:
    """Matrix-vector product."""
    return matmul(input, vec)


def dot(input: Tensor, other: Tensor) -> Tensor:
    """Inner product of two 1-D tensors.

    >>> import fluxion
    >>> fluxion.dot(fluxion.tensor([1.0, 2.0]), fluxion.tensor([3.0, 4.0]))
    tensor(11.)
    """
    if input.ndim != 1 or other.ndim != 1:
        raise RuntimeError(f"1D tensors expected, but got {input.ndim}D and {other.ndim}D tensors")
    return matmul(input, other)


def outer(input: Tensor, vec2: Tensor) -> Tensor:
    """Outer product of two vectors.

    >>> import fluxion
    >>> fluxion.outer(fluxion.tensor([1, 2]), fluxion.tensor([3, 4]))
    tensor([[3, 4],
            [6, 8]])
    """
    return input.reshape(-1, 1) * vec2.reshape(1, -1)


def einsum(equation: str, *operands: Any) -> Tensor:
    """Einstein summation, e.g. ``'bij,bjk->bik'`` (``...`` supported).

    >>> import fluxion
    >>> fluxion.einsum("ij,jk->ik", fluxion.ones(2, 3), fluxion.ones(3, 4)).shape
    fluxion.Size([2, 4])
    """
    from fluxion.ops.linalg import parse_einsum

    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    ts = [_t(x, "operands") for x in operands]
    try:
        terms, out = parse_einsum(equation, [x.ndim for x in ts])
    except ValueError as e:
        raise RuntimeError(str(e)) from None
    sizes: dict[str, int] = {}
    for term, x in zip(terms, ts):
        for c, s in zip(term, x._data.shape):
            if c in sizes and sizes[c] != s and 1 not in (s, sizes[c]):
                raise RuntimeError(f"einsum(): operands do not broadcast with remapped shapes: "
                                   f"subscript {c!r} has sizes {sizes[c]} and {s}")
            sizes[c] = builtins.max(sizes.get(c, 1), s)
    rd = _dtype.result_type(*ts)
    ts = [x if x.dtype is rd else x.to(rd) for x in ts]
    return apply(OPS["einsum"], *ts, terms=terms, out=out)


__all__ = sorted(
    name for name, obj in list(globals().items())
    if not name.startswith("_") and callable(obj) and getattr(obj, "__module__", "") == __name__
)
