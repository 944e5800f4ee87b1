"""The op database: an OpInfo-style description of every op in ``fluxion.ops.OPS``.

Each ``OpEntry`` says which primitives of the op table it covers (``ops``), how to call it
through the public API (``fn(m, *args, **kwargs)``, where ``m`` is the ``fluxion`` or the
``torch`` module, so one function serves both libraries: ``entry.op`` and ``entry.ref``
bind it), and how to generate samples for a dtype. Samples hold NumPy arrays (``A``) that
the tests turn into tensors of either library, optionally viewed (transposed, sliced with
steps, expanded) so kernels see non-contiguous inputs.

Primitives reached only inside composites are covered through them: ``slice_backward``
by the gradient of a slice, ``index_put`` by ``__setitem__`` and the gradient of advanced
indexing, ``view_scatter`` by in-place writes through views, ``unfold``/``fold`` by
``F.unfold``/``F.fold``, convolutions and pooling, ``norm2`` by ``fluxion.norm``,
``max_dim`` by ``fluxion.max(x, dim)``, ``cast`` by ``.to()``, ``reshape`` by
view/reshape/squeeze/unsqueeze, and so on.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import fluxion

FLOATS = ("float32", "float64", "float16")
INTS = ("int64", "int32", "int16", "int8", "uint8")
ALL = (*FLOATS, *INTS, "bool")
NUMERIC = FLOATS + INTS  # everything but bool
MIXED = "mixed"  # pseudo-dtype: samples whose operands have different dtypes
FULL = ("float32", "float64")  # dtypes that get every layout; the rest get a few


# --- samples ---------------------------------------------------------------------------
@dataclass
class A:
    """A tensor argument: ``data`` becomes a leaf tensor in each library, then ``view``
    (a function using the API both libraries share, e.g. ``lambda t: t.mT``) is applied."""

    data: np.ndarray
    view: Callable[[Any], Any] | None = None
    grad: bool = True  # the leaf requires grad when it is floating (in gradient tests)

    def __repr__(self) -> str:
        d = self.data
        vals = f" {d.tolist()}" if d.size <= 8 else ""
        view = f", view={getattr(self.view, '__name__', 'fn')}" if self.view else ""
        return f"A({d.dtype.name}{list(d.shape)}{vals}{view})"


class Sample:
    """Positional and keyword arguments of one call; ``A`` items may appear anywhere,
    also inside lists. ``gc`` False keeps the sample out of finite-difference checks
    (kinks, ties, infinities); ``gc_eps`` is the finite-difference step. ``ref_grad``
    False: PyTorch cannot differentiate this call (e.g. scatter with a ``src`` larger than
    the index), so only gradcheck judges Fluxion's gradient."""

    def __init__(self, *args: Any, name: str = "", gc: bool = True, gc_eps: float = 1e-6,
                 ref_grad: bool = True, **kwargs: Any) -> None:
        self.args = args
        self.kwargs = kwargs
        self.name = name
        self.gc = gc
        self.gc_eps = gc_eps
        self.ref_grad = ref_grad

    def __repr__(self) -> str:
        args = ", ".join(map(repr, self.args))
        kw = "".join(f", {k}={v!r}" for k, v in self.kwargs.items())
        return f"Sample({self.name!r}: {args}{kw})"

    def tensors(self) -> list[A]:
        """Every ``A`` of the sample, in order."""
        out: list[A] = []

        def walk(x: Any) -> None:
            if isinstance(x, A):
                out.append(x)
            elif isinstance(x, (list, tuple)):
                for y in x:
                    walk(y)

        walk(self.args)
        walk(tuple(self.kwargs.values()))
        return out

    def numel(self) -> int:
        return sum(a.data.size for a in self.tensors())


S = Sample


class Maker:
    """Random arrays for samples, reproducible per (entry, dtype)."""

    def __init__(self, dtype: str, seed: int) -> None:
        self.dtype = "float32" if dtype == MIXED else dtype
        self.rng = np.random.default_rng(seed)

    def __call__(self, shape: tuple[int, ...], dtype: str | None = None, low: float = -2.0,
                 high: float = 2.0, *, nonzero: bool = False, distinct: bool = False,
                 discrete: bool = False) -> np.ndarray:
        dt = np.dtype(dtype or self.dtype)
        n = math.prod(shape)
        rng = self.rng
        if dt.kind == "b":
            return np.asarray(rng.random(shape) < 0.5)
        if dt.kind in "iu":
            info = np.iinfo(dt)
            lo, hi = max(math.ceil(low), info.min), min(math.floor(high), info.max)
            if distinct:
                start = min(max(lo, int(info.min)), int(info.max) - n)
                vals = start + rng.permutation(n)
            else:
                vals = rng.integers(lo, hi + 1, size=n)
            if nonzero:
                vals[vals == 0] = 1 if hi >= 1 else -1
            return vals.astype(dt).reshape(shape)
        if distinct:  # no ties, well apart: safe for max/sort and finite differences
            mid = (low + high) / 2
            vals = mid + (rng.permutation(n) - (n - 1) / 2) * 0.25 + rng.uniform(0, 0.05, n)
        elif discrete:  # multiples of 0.5: equal elements happen (comparisons, logic)
            vals = rng.integers(round(2 * low), round(2 * high) + 1, size=n) / 2
        else:
            vals = rng.uniform(low, high, size=n)
        if nonzero:  # push small values out to [0.25, 0.5), still random (no exact kinks)
            vals = np.where(np.abs(vals) < 0.25, np.copysign(0.25 + np.abs(vals), vals), vals)
            if discrete:
                vals[vals == 0] = 0.5
        return vals.astype(dt).reshape(shape)


# views that both libraries spell the same way
def T(t: Any) -> Any:
    return t.mT


def STEP(t: Any) -> Any:  # (5, 8) -> (3, 4)
    return t[::2, 1::2]


def EXP(t: Any) -> Any:  # (1, 4) -> (3, 4)
    return t.expand(3, 4)


def layouts(mk: Maker, dt: str, **kw: Any) -> list[tuple[str, A]]:
    """A (3, 4) operand in every layout: contiguous, transposed, strided, expanded."""
    out = [("contig", A(mk((3, 4), **kw))), ("transposed", A(mk((4, 3), **kw), T))]
    if dt in FULL:
        out += [("strided", A(mk((5, 8), **kw), STEP)), ("expanded", A(mk((1, 4), **kw), EXP))]
    return out


def shapes(mk: Maker, dt: str, **kw: Any) -> list[tuple[str, A]]:
    """Operands of the standard edge shapes plus the layouts."""
    out = [*layouts(mk, dt, **kw), ("0d", A(mk((), **kw)))]
    if dt in FULL:
        out += [("0size", A(mk((0, 3), **kw))), ("size1", A(mk((1, 4, 1), **kw))),
                ("3d", A(mk((2, 3, 2), **kw)))]
    return out


# --- entries ---------------------------------------------------------------------------
@dataclass
class OpEntry:
    name: str  # unique id
    ops: tuple[str, ...]  # the primitives of OPS this entry exercises
    fn: Callable[..., Any]  # fn(m, *args, **kwargs), m = fluxion or torch
    samples: Callable[[Maker, str], list[Sample]]
    dtypes: tuple[str, ...] = ALL
    grad: bool = True  # compare gradients (floating inputs) and run gradcheck
    gradgrad: bool = True  # the second derivative is not identically zero
    force_grad: bool = False  # floating leaves require grad in the forward test too
    ref_fn: Callable[..., Any] | None = None  # a different torch spelling, if needed
    _cache: dict = field(default_factory=dict, repr=False)

    def op(self, *args: Any, **kwargs: Any) -> Any:
        """The Fluxion callable."""
        return self.fn(fluxion, *args, **kwargs)

    def ref(self, *args: Any, **kwargs: Any) -> Any:
        """The PyTorch callable (imports torch)."""
        import torch

        return (self.ref_fn or self.fn)(torch, *args, **kwargs)

    def sample_list(self, dtype: str) -> list[Sample]:
        if dtype not in self._cache:
            mk = Maker(dtype, zlib.crc32(f"{self.name}/{dtype}".encode()))
            self._cache[dtype] = self.samples(mk, dtype)
        return self._cache[dtype]


OP_DB: list[OpEntry] = []


def entry(name: str, ops: str | tuple[str, ...], fn: Callable[..., Any],
          samples: Callable[[Maker, str], list[Sample]], **kw: Any) -> OpEntry:
    e = OpEntry(name, (ops,) if isinstance(ops, str) else ops, fn, samples, **kw)
    assert all(x.name != name for x in OP_DB), name
    OP_DB.append(e)
    return e


def grad_of(m: Any, f: Callable[..., Any], x: Any, *rest: Any) -> Any:
    """d f(x, *rest).sum() / dx, differentiable (how backward-only primitives are reached)."""
    return m.autograd.grad(f(x, *rest).sum(), x, create_graph=True)[0]


# --- sample generators -----------------------------------------------------------------
def unary_samples(low: float = -2.0, high: float = 2.0, *, nonzero: bool = False,
                  discrete: bool = False, special: bool = False, **extra: Any
                  ) -> Callable[[Maker, str], list[Sample]]:
    def gen(mk: Maker, dt: str) -> list[Sample]:
        kw = dict(low=low, high=high, nonzero=nonzero, discrete=discrete)
        out = [S(a, name=n, **extra) for n, a in shapes(mk, dt, **kw)]
        if special and dt in FLOATS:
            v = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1.5, -2.5, 1e4], dt)
            out.append(S(A(v), name="special", gc=False, **extra))
        return out

    return gen


PAIRS_ALL = (("int32", "float16"), ("uint8", "int8"), ("bool", "int16"), ("int64", "float32"),
             ("float16", "float64"), ("uint8", "bool"), ("int8", "float64"),
             ("float32", "float64"), ("int16", "int64"))
PAIRS_NUM = tuple(p for p in PAIRS_ALL if "bool" not in p)
PAIRS_INT = (("uint8", "int8"), ("bool", "int16"), ("uint8", "bool"), ("int16", "int64"),
             ("int32", "int8"))
ZERO_DIM_PAIRS = (("float32", "float64"), ("uint8", "int64"), ("int32", "float64"),
                  ("float16", "float32"), ("int8", "bool"), ("bool", "uint8"))


def binary_samples(lhs: dict | None = None, rhs: dict | None = None, *,
                   scalars: tuple = (), lscalars: tuple | None = None,
                   pairs: tuple = PAIRS_ALL, zpairs: tuple = ZERO_DIM_PAIRS,
                   extra: dict | None = None, lscalar_grad: bool = True,
                   ) -> Callable[[Maker, str], list[Sample]]:
    """Two operands over the standard shapes and layouts, broadcasting, 0-d operands,
    Python scalars on either side (``scalars``, ``lscalars``), and for the pseudo-dtype
    ``mixed`` the dtype ``pairs`` (and 0-d ``zpairs``) that exercise type promotion."""
    lhs, rhs, extra = lhs or {}, rhs or {}, extra or {}
    lscalars = scalars if lscalars is None else lscalars

    def gen(mk: Maker, dt: str) -> list[Sample]:
        if dt == MIXED:
            out = []
            for da, db in pairs:
                out.append(S(A(mk((3, 4), da, **lhs)), A(mk((3, 4), db, **rhs)),
                             name=f"{da}_{db}", **extra))
                out.append(S(A(mk((2, 1), db, **lhs)), A(mk((1, 3), da, **rhs)),
                             name=f"{db}_{da}_bcast", **extra))
            ok = {d for p in pairs for d in p}
            for da, db in zpairs:
                if da in ok and db in ok:
                    out.append(S(A(mk((3, 4), da, **lhs)), A(mk((), db, **rhs)),
                                 name=f"{da}_0d{db}", **extra))
                    out.append(S(A(mk((), db, **lhs)), A(mk((2, 2), da, **rhs)),
                                 name=f"0d{db}_{da}", **extra))
            return out

        def a(shape: tuple, view: Any = None) -> A:
            return A(mk(shape, **lhs), view)

        def b(shape: tuple, view: Any = None) -> A:
            return A(mk(shape, **rhs), view)

        out = [
            S(a((3, 4)), b((3, 4)), name="same", **extra),
            S(a((3, 1)), b((1, 4)), name="bcast_3x1_1x4", **extra),
            S(a((2, 3, 4)), b((4,)), name="bcast_rank", **extra),
            S(a(()), b((3, 4)), name="0d_lhs", **extra),
            S(a((3, 4)), b(()), name="0d_rhs", **extra),
            S(a((4, 3), T), b((3, 4)), name="transposed", **extra),
        ]
        if dt in FULL:
            out += [
                S(a(()), b(()), name="0d_0d", **extra),
                S(a((0, 3)), b((1, 3)), name="0size", **extra),
                S(a((1, 4, 1)), b((2, 1, 1)), name="size1", **extra),
                S(a((5, 8), STEP), b((4, 3), T), name="strided", **extra),
                S(a((1, 4), EXP), b((3, 4)), name="expanded", **extra),
                S(a((4,)), b((2, 3, 4)), name="bcast_rank_rhs", **extra),
            ]
        for v in scalars:
            out.append(S(a((3, 4)), v, name=f"scalar_{type(v).__name__}_{v}", **extra))
        for v in lscalars:
            out.append(S(v, b((3, 4)), name=f"rscalar_{type(v).__name__}_{v}",
                         ref_grad=lscalar_grad, **extra))
        return out

    return gen


def reduce_samples(*, dims: tuple = (None, 1, -1, (0, 1), 0), keepdim: bool = True,
                   kw: dict | None = None, single_dim: bool = False, nonempty: bool = False,
                   gen_kw: dict | None = None) -> Callable[[Maker, str], list[Sample]]:
    """Reductions over ``dims`` of the standard operands; ``single_dim`` drops tuples,
    ``nonempty`` keeps 0-size operands to reductions over non-empty dims."""
    kw, gen_kw = kw or {}, gen_kw or {}

    def call(d: Any, k: bool) -> dict:
        out = dict(kw)
        if d is not None:
            out["dim"] = d
        if k:
            out["keepdim"] = True
        return out

    def gen(mk: Maker, dt: str) -> list[Sample]:
        out = []
        ds = [d for d in dims if not (single_dim and isinstance(d, tuple))]
        for name, a in layouts(mk, dt, **gen_kw):
            for d in ds if name == "contig" else ds[:2]:
                out.append(S(a, name=f"{name}_dim{d}", **call(d, False)))
            if keepdim and name == "contig":
                out.append(S(a, name=f"{name}_keepdim", **call(ds[1], True)))
        out.append(S(A(mk((), **gen_kw)), name="0d", **call(None, False)))
        if dims[0] is None:
            out.append(S(A(mk((), **gen_kw)), name="0d_dim0", **call(0, False)))
        if dt in FULL:
            out.append(S(A(mk((0, 3), **gen_kw)), name="0size_dim1", **call(1, False)))
            if not nonempty:
                out.append(S(A(mk((0, 3), **gen_kw)), name="0size_dim0", **call(0, False)))
            out.append(S(A(mk((1, 4, 1), **gen_kw)), name="size1", **call(
                2 if single_dim else (0, 2), keepdim)))
            out.append(S(A(mk((2, 3, 2), **gen_kw)), name="3d", **call(1, False)))
        return out

    return gen


# --- elementwise unary -----------------------------------------------------------------
def _unary(name: str, fn: Callable[..., Any], dtypes: tuple = ALL, gradgrad: bool = True,
           **kw: Any) -> None:
    entry(name, name, fn, unary_samples(**kw), dtypes=dtypes, gradgrad=gradgrad)


_unary("neg", lambda m, x: -x, NUMERIC, gradgrad=False)
entry("neg_fn", "neg", lambda m, x: m.neg(x), unary_samples(), dtypes=("float32", "int32"),
      gradgrad=False)
_unary("abs", lambda m, x: m.abs(x), NUMERIC, gradgrad=False, nonzero=True)
_unary("sign", lambda m, x: m.sign(x), ALL, gradgrad=False, nonzero=True)
_unary("exp", lambda m, x: m.exp(x), ALL)
_unary("log", lambda m, x: m.log(x), ALL, low=0.25, high=3.0)
_unary("log1p", lambda m, x: m.log1p(x), ALL, low=-0.75, high=3.0)
_unary("expm1", lambda m, x: m.expm1(x), ALL)
_unary("sqrt", lambda m, x: m.sqrt(x), ALL, low=0.25, high=3.0)
_unary("rsqrt", lambda m, x: m.rsqrt(x), ALL, low=0.25, high=3.0)
_unary("reciprocal", lambda m, x: m.reciprocal(x), ALL, nonzero=True)
_unary("sin", lambda m, x: m.sin(x), ALL)
_unary("cos", lambda m, x: m.cos(x), ALL)
_unary("tan", lambda m, x: m.tan(x), ALL, low=-1.2, high=1.2)
_unary("tanh", lambda m, x: m.tanh(x), ALL)
_unary("sigmoid", lambda m, x: m.sigmoid(x), ALL)
entry("sigmoid_extreme", "sigmoid", lambda m, x: m.sigmoid(x),
      lambda mk, dt: [S(A(np.array([-100.0, -20.0, -1e-3, 0.0, 1e-3, 20.0, 100.0], dt)),
                        name="extreme", gc=False)], dtypes=FLOATS)
_unary("relu", lambda m, x: m.relu(x), NUMERIC, gradgrad=False, nonzero=True)
entry("relu_nn", "relu", lambda m, x: m.nn.functional.relu(x), unary_samples(nonzero=True),
      dtypes=FULL, gradgrad=False)
_unary("erf", lambda m, x: m.erf(x), ALL)
for _n in ("floor", "ceil", "round", "trunc"):
    _unary(_n, lambda m, x, _n=_n: getattr(m, _n)(x), NUMERIC, gradgrad=False, low=-3, high=3)
entry("round_decimals", "round", lambda m, x, d: m.round(x, decimals=d),
      lambda mk, dt: [S(A(mk((3, 4), low=-30, high=30)), d, name=f"decimals{d}")
                      for d in (1, 2, -1)], dtypes=FLOATS, gradgrad=False)
entry("square", "mul", lambda m, x: m.square(x), unary_samples(), dtypes=NUMERIC)
entry("exp2_log2_log10", ("exp", "log", "mul", "div"),
      lambda m, x: (m.exp2(x), m.log2(x), m.log10(x)), unary_samples(0.25, 3.0), dtypes=FULL)


def _clamp_samples(mk: Maker, dt: str) -> list[Sample]:
    fl = dt in FLOATS
    lo, hi = (-0.5, 1.0) if fl else (0, 2) if dt == "uint8" else (-1, 2)
    out = []
    for name, a in shapes(mk, dt):
        out.append(S(a, name=f"{name}_both", min=lo, max=hi))
    out.append(S(A(mk((3, 4))), name="min_only", min=lo))
    out.append(S(A(mk((3, 4))), name="max_only", max=hi))
    if not fl:
        out.append(S(A(mk((3, 4))), name="float_bounds", min=-0.5, max=1.5))
    return out


entry("clamp", "clamp", lambda m, x, **kw: m.clamp(x, **kw), _clamp_samples, dtypes=NUMERIC,
      gradgrad=False)
entry("clamp_tensor_bounds", ("maximum", "minimum"),
      lambda m, x, lo, hi: m.clamp(x, lo, hi),
      lambda mk, dt: [S(A(mk((3, 4))), A(mk((3, 1), low=-1.0, high=-0.2)),
                        A(mk((4,), low=0.2, high=1.0)), name="bcast_bounds")],
      dtypes=(*FULL, "int64"), gradgrad=False)


def _nan_to_num_samples(mk: Maker, dt: str) -> list[Sample]:
    out = [S(a, name=n) for n, a in shapes(mk, dt)]
    if dt in FLOATS:
        v = np.array([[np.nan, np.inf, -np.inf, 1.5], [0.5, -1.0, np.nan, 2.0]], dt)
        out += [S(A(v), name="special"), S(A(v), name="special_values", nan=1.0, posinf=9.0,
                                           neginf=-9.0)]
    return out


entry("nan_to_num", "nan_to_num", lambda m, x, **kw: m.nan_to_num(x, **kw), _nan_to_num_samples,
      gradgrad=False)


def _cast_samples(mk: Maker, dt: str) -> list[Sample]:
    src_kw = dict(low=0.0, high=5.0)  # no negative floats into unsigned types
    out = []
    for dst in ALL:
        # a linear map: a wide step is exact, and needed when the output is float32;
        # float16 rounding swamps any step, and to the same dtype .to() returns self
        eps = 1e-6 if dst == "float64" else 1e-2
        gc = dst != "float16" and not (dt == dst == "float64")
        out.append(S(A(mk((3, 4), **src_kw)), dst, name=f"to_{dst}", gc_eps=eps, gc=gc))
    out.append(S(A(mk((4, 3), **src_kw), T), "float64", name="transposed_to_float64"))
    out.append(S(A(mk((), **src_kw)), "float32", name="0d_to_float32", gc_eps=1e-2))
    return out


entry("cast", "cast", lambda m, x, dst: x.to(getattr(m, dst)), _cast_samples, gradgrad=False)
entry("cast_methods", "cast",
      lambda m, x: (x.float(), x.double(), x.half(), x.long(), x.int(), x.bool()),
      lambda mk, dt: [S(A(mk((3, 4), low=0.0, high=5.0)), name="methods", gc=False)],
      dtypes=("float64", "int32", "uint8", "bool"), gradgrad=False)
for _n in ("logical_not", "isnan", "isinf", "isfinite"):
    entry(_n, _n, lambda m, x, _n=_n: getattr(m, _n)(x),
          unary_samples(discrete=True, special=True), grad=False)

# --- elementwise binary ----------------------------------------------------------------
SCALARS = (1.5, 2, True)
entry("add", "add", lambda m, x, y: x + y, binary_samples(scalars=SCALARS), gradgrad=False,
      dtypes=(*ALL, MIXED))
entry("add_alpha", ("add", "mul"), lambda m, x, y: m.add(x, y, alpha=2),
      binary_samples(), dtypes=("float32", "float64", "int64"), gradgrad=False)
entry("sub", "sub", lambda m, x, y: x - y, binary_samples(scalars=(1.5, 2), pairs=PAIRS_NUM),
      dtypes=(*NUMERIC, MIXED), gradgrad=False)
entry("sub_alpha", ("sub", "mul"), lambda m, x, y: m.sub(x, y, alpha=0.5),
      binary_samples(), dtypes=FULL, gradgrad=False)
entry("mul", "mul", lambda m, x, y: x * y, binary_samples(scalars=SCALARS),
      dtypes=(*ALL, MIXED))
_NZ = dict(nonzero=True)
# a negative 0-d int64 divisor wraps around in uint8 arithmetic: not a meaningful case
_ZP_DIV = tuple(p for p in ZERO_DIM_PAIRS if p != ("uint8", "int64"))
entry("div", "div", lambda m, x, y: x / y,
      binary_samples(rhs=_NZ, scalars=(2.5, 3, True), lscalars=(2.5, 3)),
      dtypes=(*ALL, MIXED))
entry("div_trunc", ("div", "trunc"), lambda m, x, y: m.div(x, y, rounding_mode="trunc"),
      binary_samples(rhs=_NZ, pairs=PAIRS_NUM, zpairs=_ZP_DIV), dtypes=(*NUMERIC, MIXED),
      gradgrad=False)
entry("div_floor", "floor_divide", lambda m, x, y: m.div(x, y, rounding_mode="floor"),
      binary_samples(rhs=_NZ, pairs=PAIRS_NUM, zpairs=_ZP_DIV), dtypes=(*NUMERIC, MIXED),
      grad=False)
entry("floor_divide", "floor_divide", lambda m, x, y: x // y,
      binary_samples(rhs=_NZ, scalars=(1.5, 2), lscalars=(7,), pairs=PAIRS_NUM,
                     zpairs=_ZP_DIV), dtypes=(*NUMERIC, MIXED), grad=False)
# PyTorch has no derivative of remainder(Scalar, Tensor)
entry("remainder", "remainder", lambda m, x, y: x % y,
      binary_samples(rhs=_NZ, scalars=(1.5, 3), lscalars=(7,), pairs=PAIRS_NUM,
                     zpairs=_ZP_DIV, lscalar_grad=False), dtypes=(*NUMERIC, MIXED),
      gradgrad=False)
entry("fmod", ("div", "trunc", "mul", "sub"), lambda m, x, y: m.fmod(x, y),
      binary_samples(rhs=_NZ, scalars=(1.5,), lscalars=()), dtypes=(*FULL, "int64"),
      gradgrad=False)
_POS = dict(low=0.5, high=2.0)
entry("pow", "pow", lambda m, x, y: x ** y,
      binary_samples(lhs=_POS, rhs=dict(low=-2.0, high=2.0), scalars=(2, 0.5, 3.0, -1.5),
                     lscalars=(2, 1.5), pairs=()), dtypes=FLOATS)
entry("pow_int", "pow", lambda m, x, y: x ** y,
      binary_samples(lhs=dict(low=0, high=3), rhs=dict(low=0, high=3), scalars=(2, 0.5),
                     lscalars=(2,), pairs=PAIRS_NUM),
      dtypes=(*INTS, MIXED), grad=False)
entry("pow_zero_base", "pow", lambda m, x, y: x ** y,
      lambda mk, dt: [S(A(np.array([0.0, 0.0, 1.5, 0.5], dt)), A(np.array([1.0, 2.5, 0.0, 1.25],
                                                                          dt)), name="zeros",
                        gc=False),
                      S(A(np.array([0.0, 2.0, 0.5], dt)), 0, name="exp0", gc=False)],
      dtypes=FLOATS)
entry("maximum", "maximum", lambda m, x, y: m.maximum(x, y), binary_samples(),
      dtypes=(*ALL, MIXED), gradgrad=False)
entry("minimum", "minimum", lambda m, x, y: m.minimum(x, y), binary_samples(),
      dtypes=(*ALL, MIXED), gradgrad=False)
entry("maximum_ties", ("maximum", "minimum"), lambda m, x, y: (m.maximum(x, y), m.minimum(x, y)),
      lambda mk, dt: [S(A(np.array([1.0, 2.0, -3.0, 0.5], dt)), A(np.array([1.0, 1.0, -3.0, 4.0],
                                                                          dt)), name="ties",
                        gc=False)], dtypes=FLOATS, gradgrad=False)
entry("atan2", "atan2", lambda m, x, y: m.atan2(x, y), binary_samples(rhs=_NZ, pairs=PAIRS_NUM),
      dtypes=(*NUMERIC, MIXED))
_DISC = dict(discrete=True)
for _n, _f in (("eq", lambda m, x, y: x == y), ("ne", lambda m, x, y: x != y),
               ("lt", lambda m, x, y: x < y), ("le", lambda m, x, y: x <= y),
               ("gt", lambda m, x, y: x > y), ("ge", lambda m, x, y: x >= y)):
    entry(_n, _n, _f, binary_samples(_DISC, _DISC, scalars=(0.5, 1, True)), grad=False,
          dtypes=(*ALL, MIXED))
for _n in ("logical_and", "logical_or", "logical_xor"):
    entry(_n, _n, lambda m, x, y, _n=_n: getattr(m, _n)(x, y), binary_samples(_DISC, _DISC),
          grad=False, dtypes=(*ALL, MIXED))
for _n, _f in (("bitwise_and", lambda m, x, y: x & y), ("bitwise_or", lambda m, x, y: x | y),
               ("bitwise_xor", lambda m, x, y: x ^ y)):
    entry(_n, _n, _f, binary_samples(scalars=(3, True), pairs=PAIRS_INT), grad=False,
          dtypes=(*INTS, "bool", MIXED))
entry("bitwise_not", ("neg", "sub", "logical_not"), lambda m, x: ~x, unary_samples(),
      dtypes=(*INTS, "bool"), grad=False)


def _where_samples(mk: Maker, dt: str) -> list[Sample]:
    def c(shape: tuple) -> A:
        return A(mk(shape, "bool"))

    if dt == MIXED:
        return [S(c((3, 4)), A(mk((3, 4), da)), A(mk((3, 4), db)), name=f"{da}_{db}")
                for da, db in PAIRS_ALL] + [
            S(c((3, 4)), A(mk((3, 4), "int32")), 2.5, name="int_floatscalar"),
            S(c((3, 4)), A(mk((3, 4), "float16")), A(mk((), "float64")), name="f16_0df64")]
    out = [S(c((3, 4)), A(mk((3, 4))), A(mk((3, 4))), name="same"),
           S(c((3, 1)), A(mk((1, 4))), A(mk((3, 4))), name="bcast3"),
           S(c((2, 3, 4)), A(mk((4,))), A(mk(())), name="bcast_rank_0d"),
           S(c((3, 4)), A(mk((4, 3)), T), A(mk((1, 4)), EXP), name="noncontig"),
           S(c((3, 4)), A(mk((3, 4))), 1 if dt in INTS else 0.5 if dt in FLOATS else True,
             name="scalar_other")]
    if dt in FULL:
        out += [S(c(()), A(mk(())), A(mk(())), name="0d"),
                S(c((0, 3)), A(mk((1, 3))), A(mk((0, 1))), name="0size"),
                S(c((3, 4)), 2.0, A(mk((3, 4))), name="scalar_input")]
    return out


entry("where", "where", lambda m, c, x, y: m.where(c, x, y), _where_samples, gradgrad=False,
      dtypes=(*ALL, MIXED))
entry("where_method", "where", lambda m, c, x, y: x.where(c, y),
      lambda mk, dt: [s for s in _where_samples(mk, dt) if isinstance(s.args[1], A)],
      dtypes=("float32", "int64"), gradgrad=False)


def _fma_samples(mk: Maker, dt: str) -> list[Sample]:
    """self, two operands and a Python number: same shapes, broadcasting both ways, a
    0-d operand, a transposed and an expanded view."""
    out = [S(A(mk((3, 4))), A(mk((3, 4))), A(mk((3, 4), low=0.5, high=2.0)), 0.5,
             name="same"),
           S(A(mk((3, 4))), A(mk((1, 4))), A(mk((3, 1), low=0.5, high=2.0)), -2.0,
             name="bcast"),
           S(A(mk((3, 4))), A(mk(())), A(mk((4,), low=0.5, high=2.0)), 3, name="0d_int_value"),
           S(A(mk((4, 3)), T), A(mk((3, 4))), A(mk((1, 4), low=0.5, high=2.0), EXP), 0.25,
             name="views")]
    return out


entry("addcmul", "addcmul", lambda m, x, a, b, v: x.addcmul(a, b, value=v), _fma_samples,
      dtypes=FLOATS)
entry("addcdiv", "addcdiv", lambda m, x, a, b, v: x.addcdiv(a, b, value=v), _fma_samples,
      dtypes=FLOATS)


def _lerp_samples(mk: Maker, dt: str) -> list[Sample]:
    """Scalar weights on both sides of 0.5 (two formulas), a tensor weight mixing them,
    broadcasting and views."""
    w = mk((3, 4), low=-0.2, high=1.2)
    return [S(A(mk((3, 4))), A(mk((3, 4))), 0.25, name="near_self"),
            S(A(mk((3, 4))), A(mk((3, 4))), 0.75, name="near_end"),
            S(A(mk((3, 4))), A(mk((1, 4))), -0.6, name="bcast_negative"),
            S(A(mk((3, 4))), A(mk((3, 4))), A(w), name="tensor_weight"),
            S(A(mk((4, 3)), T), A(mk((1, 4)), EXP), A(mk((3, 1), low=0.0, high=1.0)),
              name="views_bcast_weight")]


entry("lerp", "lerp", lambda m, x, e, w: x.lerp(e, w), _lerp_samples, dtypes=FLOATS)


def _masked_fill_samples(mk: Maker, dt: str) -> list[Sample]:
    v = 1 if dt in INTS else 2.5 if dt in FLOATS else True
    out = [S(a, A(mk((3, 4), "bool")), v, name=n) for n, a in layouts(mk, dt)]
    out.append(S(A(mk((2, 3, 4))), A(mk((3, 1), "bool")), v, name="bcast_mask"))
    if dt in FLOATS:
        out.append(S(A(mk((3, 4))), A(mk((3, 4), "bool")), A(mk((), "float64")),
                     name="0d_value"))
    return out


entry("masked_fill", "where", lambda m, x, mask, v: x.masked_fill(mask, v), _masked_fill_samples,
      gradgrad=False)

# --- reductions ------------------------------------------------------------------------
entry("sum", "sum", lambda m, x, **kw: m.sum(x, **kw), reduce_samples(), gradgrad=False)
entry("sum_method_dtype", ("sum", "cast"), lambda m, x: x.sum(1, dtype=m.float64),
      lambda mk, dt: [S(A(mk((3, 4))), name="dtype")], dtypes=("float32", "int32", "bool"),
      gradgrad=False)
entry("float16_long_reductions", ("sum", "prod", "cumsum"),
      lambda m, x: (x.sum(0), x.mean(0), x.cumsum(0)[-1], (x / 2 + 0.5).prod(0)),
      lambda mk, dt: [S(A(mk((500, 3), low=0.999, high=1.001)), name="long_column")],
      dtypes=("float16",), gradgrad=False)
entry("mean", "sum", lambda m, x, **kw: m.mean(x, **kw), reduce_samples(), dtypes=FLOATS,
      gradgrad=False)
entry("prod", "prod", lambda m, x, **kw: m.prod(x, **kw),
      reduce_samples(dims=(None, 1, 0), gen_kw=dict(low=-1.5, high=1.5), single_dim=True))
entry("prod_zeros", "prod", lambda m, x, **kw: m.prod(x, **kw),
      lambda mk, dt: [S(A(np.array([[0.0, 2.0, 3.0], [0.0, 0.0, 1.5], [1.0, 0.5, 2.0]], dt)),
                        name=f"dim{d}", **({} if d is None else {"dim": d}))
                      for d in (None, 0, 1)], dtypes=FLOATS)
entry("amax", "amax", lambda m, x, **kw: m.amax(x, **kw),
      reduce_samples(nonempty=True, gen_kw=dict(distinct=True)), gradgrad=False)
entry("amin", "amin", lambda m, x, **kw: m.amin(x, **kw),
      reduce_samples(nonempty=True, gen_kw=dict(distinct=True)), gradgrad=False)
entry("amax_ties", ("amax", "amin"), lambda m, x, **kw: (m.amax(x, **kw), m.amin(x, **kw)),
      lambda mk, dt: [S(A(np.array([[1.0, 3.0, 3.0], [2.0, 2.0, -1.0]], dt)), name=f"dim{d}",
                        gc=False, **({} if d is None else {"dim": d})) for d in (None, 1)],
      dtypes=FLOATS, gradgrad=False)
entry("max_all", ("amax", "amin"), lambda m, x: (m.max(x), x.min()),
      lambda mk, dt: [S(a, name=n) for n, a in layouts(mk, dt, distinct=True)]
      + [S(A(mk((), distinct=True)), name="0d")], gradgrad=False)


def _max_dim_samples(mk: Maker, dt: str) -> list[Sample]:
    out = []
    for n, a in layouts(mk, dt, distinct=True):
        if n == "expanded":
            continue  # ties along dim 0
        out += [S(a, 1, name=f"{n}_dim1"), S(a, 0, True, name=f"{n}_dim0_keepdim")]
    out += [S(A(mk((), distinct=True)), 0, name="0d"),
            S(A(mk((2, 3, 2), distinct=True)), -1, name="3d")]
    if dt in FULL:
        out.append(S(A(mk((0, 3), distinct=True)), 1, name="0size"))
    return out


entry("max_dim", "max_dim", lambda m, x, d, k=False: m.max(x, d, keepdim=k), _max_dim_samples,
      gradgrad=False)
entry("min_dim", "min_dim", lambda m, x, d, k=False: x.min(d, k), _max_dim_samples,
      gradgrad=False)
entry("max_dim_ties", ("max_dim", "min_dim"), lambda m, x: (x.max(1), x.min(1)),
      lambda mk, dt: [S(A(np.array([[1, 3, 3, 0], [2, 2, -1, -1]], dt)), name="ties",
                        gc=False)], dtypes=("float32", "int64"), gradgrad=False)
entry("argmax", "argmax", lambda m, x, **kw: m.argmax(x, **kw),
      reduce_samples(dims=(None, 1, 0), single_dim=True, nonempty=True,
                     gen_kw=dict(distinct=True)), dtypes=NUMERIC, grad=False)
entry("argmin", "argmin", lambda m, x, **kw: x.argmin(**kw),
      reduce_samples(dims=(None, 1, 0), single_dim=True, nonempty=True,
                     gen_kw=dict(distinct=True)), dtypes=NUMERIC, grad=False)
entry("argmax_ties", ("argmax", "argmin"), lambda m, x, **kw: (x.argmax(**kw), x.argmin(**kw)),
      lambda mk, dt: [S(A(np.array([[1, 3, 3, 0], [2, 2, -1, -1]], dt)), name=f"dim{d}",
                        **({} if d is None else {"dim": d})) for d in (None, 0, 1)],
      dtypes=("float32", "int64"), grad=False)
entry("all", "all", lambda m, x, **kw: m.all(x, **kw),
      reduce_samples(dims=(None, 1, 0), single_dim=True, gen_kw=dict(low=0, high=1.5,
                                                                    discrete=True)),
      grad=False)
entry("any", "any", lambda m, x, **kw: x.any(**kw),
      reduce_samples(dims=(None, 1, 0), single_dim=True, gen_kw=dict(low=-0.5, high=0.5,
                                                                    discrete=True)),
      grad=False)
entry("cumsum", "cumsum", lambda m, x, d: m.cumsum(x, d),
      lambda mk, dt: [S(a, d, name=f"{n}_dim{d}") for n, a in shapes(mk, dt) for d in (0, -1)],
      gradgrad=False)
entry("norm", "norm2", lambda m, x, **kw: m.norm(x, **kw),
      reduce_samples(gen_kw=dict(nonzero=True)), dtypes=FLOATS)
entry("norm_method", "norm2", lambda m, x: (x.norm(), x.norm(2, 1), x.norm(dim=0, keepdim=True)),
      lambda mk, dt: [S(a, name=n) for n, a in layouts(mk, dt)], dtypes=FLOATS)
entry("norm_zero", "norm2", lambda m, x: (x.norm(), x.norm(dim=1)),
      lambda mk, dt: [S(A(np.array([[0.0, 0.0], [3.0, -4.0]], dt)), name="zero_row", gc=False)],
      dtypes=FLOATS)
entry("norm_p", ("amax", "amin", "sum", "pow", "abs"),
      lambda m, x, p, **kw: m.norm(x, p, **kw),
      lambda mk, dt: [S(A(mk((3, 4), distinct=True, low=0.5, high=2.5)), p, name=f"p{p}_{d}",
                        **({} if d is None else {"dim": d}))
                      for p in (1, 3, math.inf, -math.inf) for d in (None, 1)],
      dtypes=FULL)


def _sort_samples(mk: Maker, dt: str) -> list[Sample]:
    out = []
    for n, a in layouts(mk, dt, distinct=True):
        if n == "expanded":
            continue
        out += [S(a, name=f"{n}_last"), S(a, 0, True, name=f"{n}_dim0_desc")]
    out += [S(A(mk((2, 3, 2), distinct=True)), 1, name="3d"), S(A(mk((), distinct=True)),
                                                               name="0d")]
    if dt in FULL:
        out.append(S(A(mk((0, 3), distinct=True)), 1, name="0size"))
    return out


entry("sort", "sort", lambda m, x, d=-1, desc=False: m.sort(x, d, desc), _sort_samples,
      dtypes=NUMERIC, gradgrad=False)
entry("argsort", "sort", lambda m, x, d=-1, desc=False: x.argsort(d, desc), _sort_samples,
      dtypes=NUMERIC, grad=False)
entry("topk", "topk",
      lambda m, x, k, d=-1, largest=True: m.topk(x, k, d, largest),
      lambda mk, dt: [S(A(mk((3, 5), distinct=True)), 2, name="k2"),
                      S(A(mk((3, 5), distinct=True)), 3, 0, name="k3_dim0"),
                      S(A(mk((3, 5), distinct=True)), 2, 1, False, name="smallest"),
                      S(A(mk((5, 3), distinct=True), T), 1, name="transposed"),
                      S(A(mk((4,), distinct=True)), 0, name="k0"),
                      S(A(mk((4,), distinct=True)), 4, name="all")],
      dtypes=NUMERIC, gradgrad=False)


def _var_samples(mk: Maker, dt: str) -> list[Sample]:
    out = [S(a, name=n) for n, a in layouts(mk, dt)]
    out += [S(A(mk((3, 4))), name="dim1", dim=1), S(A(mk((3, 4))), name="dim0_keep", dim=0,
                                                     keepdim=True),
            S(A(mk((3, 4))), name="dims01_c0", dim=(0, 1), correction=0),
            S(A(mk((2, 3, 4))), name="unbiased_false", dim=-1, unbiased=False),
            S(A(mk((1, 5))), name="size1_dim0_c0", dim=1, correction=0)]
    return out


entry("var", ("sum", "sub", "mul", "div"), lambda m, x, **kw: m.var(x, **kw), _var_samples,
      dtypes=FLOATS)
entry("std", ("sum", "sqrt"), lambda m, x, **kw: x.std(**kw), _var_samples, dtypes=FLOATS)
entry("logsumexp", ("amax", "exp", "sum", "log"), lambda m, x, d, k=False: m.logsumexp(x, d, k),
      lambda mk, dt: [S(a, 1, name=n) for n, a in layouts(mk, dt)]
      + [S(A(mk((2, 3, 4))), (0, 2), True, name="dims_keep"),
         S(A(np.array([[-np.inf, -np.inf], [0.5, -np.inf]], dt)), 1, name="all_neg_inf",
           gc=False)]
      # float16 cannot hold a logsumexp near 60 precisely enough for a gradient
      + ([S(A(mk((3, 4), low=50.0, high=60.0)), 1, name="large")] if dt in FULL else []),
      dtypes=FLOATS)


def _softmax_samples(mk: Maker, dt: str) -> list[Sample]:
    out = [S(a, 1, name=n) for n, a in layouts(mk, dt)]
    out += [S(A(mk((3, 4))), 0, name="dim0"), S(A(mk((2, 3, 4))), -1, name="3d_last"),
            S(A(mk((2, 3, 4))), 1, name="3d_mid"), S(A(mk((4,))), 0, name="1d"),
            S(A(mk((3, 4), low=80.0, high=100.0)), 1, name="large")]
    if dt in FULL:
        out.append(S(A(mk((0, 3))), 1, name="0size"))
        v = mk((2, 3))
        v[0, 1] = -np.inf
        out.append(S(A(v), 1, name="neg_inf", gc=False))
    return out


entry("softmax", "softmax",
      lambda m, x, d: m.nn.functional.softmax(x, d), _softmax_samples, dtypes=FLOATS)
entry("log_softmax", "log_softmax",
      lambda m, x, d: m.nn.functional.log_softmax(x, dim=d), _softmax_samples, dtypes=FLOATS)
def _layer_norm_samples(mk: Maker, dt: str) -> list[Sample]:
    """Normalised over the last ``nd`` dimensions (the second argument)."""
    out = [S(a, 1, name=n) for n, a in layouts(mk, dt)]
    out += [S(A(mk((2, 3, 4))), 2, name="3d_two_dims"), S(A(mk((2, 3, 4))), 3, name="3d_all"),
            S(A(mk((5,))), 1, name="1d")]
    if dt in FULL:  # rows of nothing
        out.append(S(A(mk((0, 3))), 1, name="0size"))
    return out


def _layer_norm(m: Any, x: Any, nd: int) -> Any:
    return m.nn.functional.layer_norm(x, x.shape[x.ndim - nd:])


def _layer_norm_grad(m: Any, x: Any, nd: int) -> Any:
    """A first derivative of layer_norm (one primitive; higher ones are composed of
    differentiable ops), taken at a detached copy of ``x``."""
    t = x.detach().requires_grad_()
    return m.autograd.grad((_layer_norm(m, t, nd) ** 3).sum(), t)[0]


entry("layer_norm", "layer_norm", _layer_norm, _layer_norm_samples, dtypes=FLOATS)
entry("layer_norm_backward", "layer_norm_backward", _layer_norm_grad, _layer_norm_samples,
      dtypes=FLOATS, grad=False)
def _nll_samples(mk: Maker, dt: str) -> list[Sample]:
    """Log-probabilities, class targets, class weights, ``ignore_index``, reduction."""
    def t(*shape: int) -> A:
        return A(mk.rng.integers(0, 4, shape).astype(np.int64), grad=False)

    w = A(mk((4,), low=0.5, high=2.0), grad=False)
    out = [S(A(mk((5, 4))), t(5), None, -100, red, name=red) for red in ("mean", "sum", "none")]
    out += [S(A(mk((5, 4))), t(5), w, -100, "mean", name="weighted"),
            S(A(mk((5, 4))), t(5), w, 1, "sum", name="weighted_ignore"),
            S(A(mk((2, 4, 3))), t(2, 3), None, 2, "mean", name="spatial_ignore"),
            S(A(mk((2, 4, 3))), t(2, 3), w, -100, "none", name="spatial_weighted"),
            S(A(mk((4,))), A(np.array(2), grad=False), None, -100, "none", name="unbatched"),
            S(A(mk((4, 5)), view=lambda x: x.T), t(5), None, -100, "mean", name="transposed"),
            S(A(mk((2, 4))), A(np.array([1, 1]), grad=False), None, 1, "mean",
              name="all_ignored", gc=False)]  # 0 / 0: nan, as in PyTorch
    return out


def _nll(m: Any, x: Any, t: Any, w: Any, ignore: int, reduction: str) -> Any:
    return m.nn.functional.nll_loss(x, t, w, ignore_index=ignore, reduction=reduction)


def _nll_grad(m: Any, x: Any, t: Any, w: Any, ignore: int, reduction: str) -> Any:
    """A first derivative of nll_loss (one primitive; higher ones are composed)."""
    p = x.detach().requires_grad_()
    return m.autograd.grad((_nll(m, p, t, w, ignore, reduction) * 3).sum(), p)[0]


entry("nll_loss", "nll_loss", _nll, _nll_samples, dtypes=FULL, gradgrad=False)  # linear
entry("nll_loss_backward", "nll_loss_backward", _nll_grad, _nll_samples, dtypes=FULL,
      grad=False)
entry("gelu", "gelu", lambda m, x, a: m.nn.functional.gelu(x, approximate=a),
      lambda mk, dt: [S(a, approx, name=f"{n}_{approx}") for n, a in layouts(mk, dt)
                      for approx in ("none", "tanh")]
      + [S(A(mk((3, 4), low=-9.0, high=9.0)), "tanh", name="wide_tanh")],
      dtypes=FLOATS)

# --- movement --------------------------------------------------------------------------
MOVE = (*FLOATS, "int64", "int32", "uint8", "bool")
entry("reshape", "reshape", lambda m, x, *s: x.reshape(*s),
      lambda mk, dt: [S(a, *s, name=f"{n}_{'x'.join(map(str, s))}") for n, a in layouts(mk, dt)
                      for s in ((4, 3), (-1,), (2, 1, 6))]
      + [S(A(mk(())), 1, 1, name="0d"), S(A(mk((0, 3))), 3, 0, name="0size"),
         S(A(mk((1,))), (), name="to_0d")],
      dtypes=MOVE, gradgrad=False)
entry("reshape_fn", "reshape", lambda m, x: m.reshape(x, (2, -1)),
      lambda mk, dt: [S(a, name=n) for n, a in layouts(mk, dt)], dtypes=MOVE, gradgrad=False)
entry("view", "reshape", lambda m, x, *s: x.view(*s),
      lambda mk, dt: [S(A(mk((3, 4))), 12, name="flat"), S(A(mk((3, 4))), 2, -1, 3, name="3d"),
                      S(A(mk((1, 4)), EXP), 3, 1, 4, name="expanded_split"),
                      S(A(mk(())), 1, name="0d")], dtypes=MOVE, gradgrad=False)
entry("squeeze", "reshape", lambda m, x, *d: x.squeeze(*d),
      lambda mk, dt: [S(A(mk((1, 3, 1, 2))), *d, name=f"dim{d}") for d in ((), (0,), (-2,),
                                                                           (1,), ((0, 2),))]
      + [S(A(mk(())), name="0d"), S(A(mk((1, 0))), name="0size")], dtypes=MOVE, gradgrad=False)
entry("unsqueeze", "reshape", lambda m, x, d: m.unsqueeze(x, d),
      lambda mk, dt: [S(a, d, name=f"{n}_dim{d}") for n, a in layouts(mk, dt)
                      for d in (0, -1, 1)] + [S(A(mk(())), 0, name="0d")], dtypes=MOVE,
      gradgrad=False)
entry("flatten", "reshape", lambda m, x, *a: x.flatten(*a),
      lambda mk, dt: [S(A(mk((2, 3, 4))), name="all"), S(A(mk((2, 3, 4))), 1, name="from1"),
                      S(A(mk((2, 3, 4))), 0, 1, name="0to1"), S(A(mk(())), name="0d"),
                      S(A(mk((4, 3)), T), name="transposed")], dtypes=MOVE, gradgrad=False)
entry("unflatten", "reshape", lambda m, x, d, s: x.unflatten(d, s),
      lambda mk, dt: [S(A(mk((2, 12))), 1, (3, 4), name="d1"),
                      S(A(mk((2, 12))), -1, (2, -1, 3), name="infer")], dtypes=MOVE,
      gradgrad=False)
entry("permute", "permute", lambda m, x, *d: x.permute(*d),
      lambda mk, dt: [S(A(mk((2, 3, 4))), 2, 0, 1, name="201"),
                      S(A(mk((2, 3, 4))), (1, -1, 0), name="neg"),
                      S(A(mk((4, 3)), T), 1, 0, name="transposed"),
                      S(A(mk(())), (), name="0d"), S(A(mk((0, 2, 1))), 1, 2, 0, name="0size")],
      dtypes=MOVE, gradgrad=False)
entry("transpose", "permute", lambda m, x, a, b: m.transpose(x, a, b),
      lambda mk, dt: [S(A(mk((2, 3, 4))), 0, 2, name="02"), S(A(mk((2, 3, 4))), -1, 1,
                                                             name="neg"),
                      S(A(mk((5, 8)), STEP), 0, 1, name="strided")], dtypes=MOVE,
      gradgrad=False)
entry("T_mT_t", "permute", lambda m, x: (x.T, x.mT, x.t()),
      lambda mk, dt: [S(a, name=n) for n, a in layouts(mk, dt)], dtypes=MOVE, gradgrad=False)
entry("movedim", "permute", lambda m, x, s, d: m.movedim(x, s, d),
      lambda mk, dt: [S(A(mk((2, 3, 4))), 0, -1, name="0_last"),
                      S(A(mk((2, 3, 4))), (0, 1), (2, 0), name="two")], dtypes=MOVE,
      gradgrad=False)
entry("expand", "expand", lambda m, x, *s: x.expand(*s),
      lambda mk, dt: [S(A(mk((3, 1))), 3, 4, name="col"), S(A(mk((3, 1))), 2, -1, 4, name="lead"),
                      S(A(mk(())), 2, 3, name="0d"), S(A(mk((1, 3))), 0, 3, name="to_0size"),
                      S(A(mk((4, 1)), T), 2, 1, 4, name="transposed")], dtypes=MOVE,
      gradgrad=False)
entry("broadcast_to_expand_as", "expand",
      lambda m, x, y: (m.broadcast_to(x, (2, 3, 4)), x.expand_as(y)),
      lambda mk, dt: [S(A(mk((3, 1))), A(mk((2, 3, 4))), name="x")], dtypes=MOVE,
      gradgrad=False)
entry("broadcast_tensors", "expand", lambda m, x, y: m.broadcast_tensors(x, y),
      lambda mk, dt: [S(A(mk((3, 1))), A(mk((2, 1, 4))), name="x")], dtypes=MOVE,
      gradgrad=False)
entry("repeat", ("reshape", "expand"), lambda m, x, *r: x.repeat(*r),
      lambda mk, dt: [S(A(mk((2, 3))), 2, 2, name="22"), S(A(mk((2, 3))), 3, 1, 2, name="lead"),
                      S(A(mk((3,))), 2, name="1d"), S(A(mk((4, 3)), T), 1, 0, name="zero_rep"),
                      S(A(mk(())), 3, name="0d")], dtypes=MOVE, gradgrad=False)
entry("tile", ("reshape", "expand"), lambda m, x, r: x.tile(r),
      lambda mk, dt: [S(A(mk((2, 3))), (2,), name="short"), S(A(mk((2, 3))), (2, 1, 2),
                                                               name="long")],
      dtypes=MOVE, gradgrad=False)

_BASIC_KEYS = (
    ("int", 1), ("neg_int", -1), ("slice", slice(1, 3)), ("step", (slice(None, None, 2),
                                                                  slice(1, None))),
    ("none_ellipsis", (None, Ellipsis, 0)), ("ellipsis_step", (Ellipsis, slice(1, None, 2))),
    ("int_slice", (2, slice(None, 3))), ("empty", slice(2, 2)), ("past_end", slice(1, 10)),
    ("all_int", (0, 1)),
)


def _getitem_samples(mk: Maker, dt: str) -> list[Sample]:
    out = []
    for n, a in layouts(mk, dt):
        keys = _BASIC_KEYS if n == "contig" else _BASIC_KEYS[:4]
        out += [S(a, k, name=f"{n}_{kn}") for kn, k in keys]
    out += [S(A(mk(())), (), name="0d_empty_tuple"), S(A(mk(())), None, name="0d_none"),
            S(A(mk(())), Ellipsis, name="0d_ellipsis")]
    return out


entry("getitem_basic", "slice", lambda m, x, k: x[k], _getitem_samples, dtypes=MOVE,
      gradgrad=False)
# gradients of t[k] ** 2 are linear in x: their own gradient (the second derivative of the
# original) is what the gradient tests check; a third derivative would be identically zero
entry("slice_backward", ("slice", "slice_backward"),
      lambda m, x, k: grad_of(m, lambda t: t[k] ** 2, x),
      lambda mk, dt: [S(A(mk((4, 5))), k, name=kn) for kn, k in _BASIC_KEYS[:8]]
      + [S(A(mk((4, 5))), (slice(1, None, 2), None, Ellipsis), name="mixed")],
      dtypes=FLOATS, force_grad=True, gradgrad=False)
entry("narrow_select", "slice",
      lambda m, x: (x.narrow(1, 1, 2), m.narrow(x, 0, -2, 1), x.select(1, -1), m.select(x, 0, 1)),
      lambda mk, dt: [S(a, name=n) for n, a in layouts(mk, dt)], dtypes=MOVE, gradgrad=False)
entry("split", "slice", lambda m, x, s, d=0: m.split(x, s, d),
      lambda mk, dt: [S(A(mk((5, 4))), 2, name="size2"), S(A(mk((5, 4))), [1, 3, 0, 1],
                                                            name="sections"),
                      S(A(mk((3, 4))), 3, 1, name="dim1"), S(A(mk((4, 3)), T), 2, -1, name="T"),
                      S(A(mk((0, 2))), 1, name="0size")], dtypes=MOVE, gradgrad=False)
entry("chunk", "slice", lambda m, x, c, d=0: x.chunk(c, d),
      lambda mk, dt: [S(A(mk((5, 4))), 2, name="c2"), S(A(mk((5, 4))), 3, 1, name="c3_dim1"),
                      S(A(mk((6, 2))), 4, name="c4_of6"), S(A(mk((4, 3)), T), 2, -1, name="T")],
      dtypes=MOVE, gradgrad=False)
entry("unbind_tensor_split", "slice",
      lambda m, x: (*x.unbind(1), *m.tensor_split(x, 3), *x.tensor_split([1, 5], 1)),
      lambda mk, dt: [S(A(mk((4, 3))), name="x")], dtypes=MOVE, gradgrad=False)
entry("flip", "flip", lambda m, x, d: m.flip(x, d),
      lambda mk, dt: [S(a, d, name=f"{n}_{d}") for n, a in layouts(mk, dt)
                      for d in ((0,), (0, 1), (-1,))] + [S(A(mk(())), (0,), name="0d"),
                                                         S(A(mk((0, 2))), (1,), name="0size")],
      dtypes=MOVE, gradgrad=False)
entry("fliplr_flipud", "flip", lambda m, x: (x.fliplr(), m.flipud(x)),
      lambda mk, dt: [S(A(mk((3, 4))), name="x")], dtypes=FULL, gradgrad=False)
entry("roll", "roll", lambda m, x, s, d=None: m.roll(x, s, d),
      lambda mk, dt: [S(a, 1, 0, name=f"{n}_1_0") for n, a in layouts(mk, dt)]
      + [S(A(mk((3, 4))), -2, 1, name="neg"), S(A(mk((3, 4))), (1, 5), (0, 1), name="two"),
         S(A(mk((3, 4))), 5, name="flat"), S(A(mk((4, 3)), T), 2, name="flat_T")],
      dtypes=MOVE, gradgrad=False)


def _pad_samples(mk: Maker, dt: str) -> list[Sample]:
    out = [S(a, (1, 2), name=f"{n}_last") for n, a in layouts(mk, dt)]
    out += [S(A(mk((2, 3, 4))), (1, 1, 2, 0), name="two_dims"),
            S(A(mk((2, 3, 4))), (0, 0, 0, 0, 1, 1), name="three_dims"),
            S(A(mk((3, 4))), (-1, 2), name="crop_left"),
            S(A(mk((3, 4))), (1, -2, -1, 1), name="crop_mixed"),
            S(A(mk((3, 4))), (0, 0), name="zero"),
            S(A(mk((0, 2))), (1, 1, 1, 0), name="0size")]
    if dt in FLOATS:
        out.append(S(A(mk((3, 4))), (1, 1), name="value", value=2.5))
    return out


entry("pad", "pad", lambda m, x, p, **kw: m.nn.functional.pad(x, p, **kw), _pad_samples,
      dtypes=MOVE, gradgrad=False)


def _cat_samples(mk: Maker, dt: str) -> list[Sample]:
    if dt == MIXED:
        return [S([A(mk((2, 3), da)), A(mk((1, 3), db))], 0, name=f"{da}_{db}")
                for da, db in PAIRS_ALL]
    return [S([A(mk((2, 3))), A(mk((1, 3))), A(mk((4, 3)))], 0, name="dim0"),
            S([A(mk((2, 3))), A(mk((2, 1)))], 1, name="dim1"),
            S([A(mk((2, 3))), A(mk((3, 2)), T)], -1, name="noncontig"),
            S([A(mk((1, 3)), lambda t: t.expand(2, 3)), A(mk((0, 3)))], 0, name="0size"),
            S([A(mk((2, 3))), A(mk((0,)))], 0, name="legacy_1d_empty"),
            S([A(mk((3,)))], 0, name="single")]


entry("cat", "cat", lambda m, ts, d: m.cat(ts, d), _cat_samples, dtypes=(*MOVE, MIXED),
      gradgrad=False)
entry("stack", ("reshape", "cat"), lambda m, ts, d: m.stack(ts, d),
      lambda mk, dt: [S([A(mk((2, 3))), A(mk((2, 3))), A(mk((3, 2)), T)], d, name=f"dim{d}")
                      for d in (0, 1, 2, -1)] + [S([A(mk(())), A(mk(()))], 0, name="0d")],
      dtypes=MOVE, gradgrad=False)
entry("hstack_vstack", "cat", lambda m, a, b: (m.hstack([a, b]), m.vstack([a, b])),
      lambda mk, dt: [S(A(mk((2, 3))), A(mk((2, 3))), name="2d"),
                      S(A(mk((3,))), A(mk((3,))), name="1d")], dtypes=FULL, gradgrad=False)
for _n in ("tril", "triu"):
    entry(_n, _n, lambda m, x, d=0, _n=_n: getattr(m, _n)(x, d),
          lambda mk, dt: [S(a, d, name=f"{n}_{d}") for n, a in layouts(mk, dt) for d in (0, 1, -1)]
          + [S(A(mk((2, 3, 4))), 0, name="batched"), S(A(mk((0, 3))), name="0size")],
          dtypes=MOVE, gradgrad=False)
entry("clone_contiguous", "clone", lambda m, x: (x.clone(), x.contiguous(), m.clone(x) * 2),
      lambda mk, dt: [S(a, name=n) for n, a in shapes(mk, dt)],
      dtypes=("float32", "float64", "float16", "int32", "bool"), gradgrad=False)


def _inplace_view(m: Any, x: Any, v: Any) -> Any:
    y = x * 1  # a non-leaf, so in-place writes are allowed
    y[1:].mul_(v)  # y[1:] is a view: the write reaches y through view_scatter
    z = y.mT
    z[0] = v[0] * 2  # setitem on a view
    return y


entry("view_scatter", ("view_scatter", "index_put", "slice"), _inplace_view,
      lambda mk, dt: [S(A(mk((3, 3))), A(mk((3,))), name="3x3"),
                      S(A(mk((3, 3)), T), A(mk((1, 3)), lambda t: t.expand(2, 3)),
                        name="noncontig")],
      dtypes=FLOATS, force_grad=True)


def _setitem(m: Any, x: Any, key: Any, v: Any) -> Any:
    y = x * 1
    y[key] = v
    return y


def _setitem_samples(mk: Maker, dt: str) -> list[Sample]:
    i = A(np.array([2, 0]))
    mask = A(mk((3, 4), "bool"))
    return [S(A(mk((3, 4))), (slice(1, None), 1), A(mk((2,))), name="basic"),
            S(A(mk((3, 4))), (Ellipsis, slice(None, None, 2)), A(mk((1, 2))), name="bcast"),
            S(A(mk((3, 4))), 0, 1.5, name="scalar"),
            S(A(mk((3, 4))), i, A(mk((2, 4))), name="int_array"),
            S(A(mk((3, 4))), (i, slice(1, 3)), A(mk((2,))), name="int_array_bcast"),
            S(A(mk((3, 4))), mask, 2.0, name="mask_scalar"),
            S(A(mk((4, 3)), T), (slice(None), i), A(mk((3, 2))), name="noncontig")]


entry("setitem", "index_put", _setitem, _setitem_samples, dtypes=FLOATS, force_grad=True,
      gradgrad=False)
# without autograd the write goes straight into the array: no primitive runs
entry("setitem_nograd", (), _setitem, _setitem_samples, dtypes=("int64", "float32"), grad=False)

# --- indexing --------------------------------------------------------------------------
IDX = (*FLOATS, "int64", "int32", "uint8", "bool")


def _index_samples(mk: Maker, dt: str) -> list[Sample]:
    i = A(np.array([2, 0, 2, -1]))
    j = A(np.array([[1, 0], [2, 2]]))
    out = [S(a, i, name=f"{n}_rows") for n, a in layouts(mk, dt)]
    out += [
        S(A(mk((3, 4))), j, name="2d_index"),
        S(A(mk((3, 4))), (slice(None), A(np.array([3, 1]))), name="cols"),
        S(A(mk((3, 4))), (i, A(np.array([0, 1, 3, 3]))), name="pairs"),
        S(A(mk((3, 4))), (A(np.array([[0], [2]])), A(np.array([1, 3, 0]))), name="bcast_pairs"),
        S(A(mk((3, 4))), A(mk((3, 4), "bool")), name="mask"),
        S(A(mk((3, 4))), A(np.array([True, False, True])), name="row_mask"),
        S(A(mk((3, 4))), (Ellipsis, A(np.array([1, 2]))), name="ellipsis"),
        S(A(mk((3, 4))), (None, A(np.array([1, 2]))), name="none"),
        S(A(mk((2, 3, 4))), (slice(None), A(np.array([2, 0])), slice(1, 3)), name="middle"),
        S(A(mk((2, 3, 4))), (A(np.array([1, 0])), slice(None), A(np.array([3, 1]))),
          name="separated"),
        # PyTorch applies ints first (a select), so the index tensor's dimension stays in
        # place; NumPy would count the int as an advanced index and move it to the front
        S(A(mk((2, 3, 4))), (1, slice(None), A(np.array([3, 1]))), name="int_slice_array"),
        # an Ellipsis that stands for no dimension does not separate index tensors
        S(A(mk((3, 4))), (None, A(np.array([1, 0])), Ellipsis, A(np.array([3, 3]))),
          name="empty_ellipsis"),
        S(A(mk((3, 4))), A(np.array([], dtype=np.int64)), name="empty_index"),
        S(A(mk((3, 4))), [0, 2], name="list"),
        # repeated and negative rows, enough for index_put's sorted accumulation
        S(A(mk((3, 4))), A(np.arange(80).reshape(8, 10) % 6 - 3), name="many_rows"),
    ]
    return out


entry("getitem_advanced", "index", lambda m, x, k: x[k], _index_samples, dtypes=IDX,
      gradgrad=False)
entry("index_grad", ("index", "index_put"), lambda m, x, k: grad_of(m, lambda t: t[k] ** 2, x),
      lambda mk, dt: [s for s in _index_samples(mk, dt) if s.args[0].view is None],
      dtypes=FLOATS, force_grad=True, gradgrad=False)
entry("index_select", "index", lambda m, x, d, i: m.index_select(x, d, i),
      lambda mk, dt: [S(a, 0, A(np.array([2, 0, 2])), name=f"{n}_d0") for n, a in
                      layouts(mk, dt)]
      + [S(A(mk((3, 4))), 1, A(np.array([3, 1], np.int32)), name="d1_int32"),
         S(A(mk((3, 4))), -1, A(np.array([], np.int64)), name="empty"),
         S(A(mk(())), 0, A(np.array([0])), name="0d")],
      dtypes=IDX, gradgrad=False)
entry("masked_select", "index", lambda m, x, mask: m.masked_select(x, mask),
      lambda mk, dt: [S(a, A(mk((3, 4), "bool")), name=n) for n, a in layouts(mk, dt)]
      + [S(A(mk((3, 4))), A(mk((4,), "bool")), name="bcast_mask"),
         S(A(mk((1, 4))), A(mk((3, 4), "bool")), name="bcast_input")],
      dtypes=IDX, gradgrad=False)
entry("embedding", "index",
      lambda m, i, w, **kw: m.nn.functional.embedding(i, w, **kw),
      lambda mk, dt: [S(A(np.array([[0, 2], [4, 2]])), A(mk((5, 3))), name="2d"),
                      # the padding row gets no gradient by definition: no gradcheck
                      S(A(np.array([1, 1, 3])), A(mk((5, 3))), name="pad", padding_idx=1,
                        gc=False),
                      S(A(np.array([1, 0], np.int32)), A(mk((3, 5)), T), name="noncontig"),
                      # enough tokens for the sorted accumulation of the gradient
                      S(A(np.arange(96).reshape(8, 12) * 7 % 5), A(mk((5, 3))), name="many")],
      dtypes=FLOATS, gradgrad=False)


def _gather_samples(mk: Maker, dt: str) -> list[Sample]:
    return [S(A(mk((3, 4))), 1, A(np.array([[0, 3, 3], [1, 1, 0], [2, 0, 1]])), name="dim1"),
            S(A(mk((3, 4))), 0, A(np.array([[2, 0], [1, 1]])), name="dim0_smaller"),
            S(A(mk((4, 3)), T), -1, A(np.array([[3], [0], [1]])), name="noncontig"),
            S(A(mk((3, 4))), 1, A(np.zeros((3, 0), np.int64)), name="empty")]


entry("gather", "gather", lambda m, x, d, i: m.gather(x, d, i), _gather_samples, dtypes=IDX,
      gradgrad=False)
entry("gather_grad", ("gather", "scatter_add"),
      lambda m, x, d, i: grad_of(m, lambda t: t.gather(d, i) ** 2, x),
      lambda mk, dt: [s for s in _gather_samples(mk, dt) if s.args[0].view is None],
      dtypes=FLOATS, force_grad=True, gradgrad=False)


def _scatter_samples(mk: Maker, dt: str) -> list[Sample]:
    # indices unique along the scatter dim (duplicates are nondeterministic in PyTorch)
    i1 = A(np.array([[3, 0], [1, 2], [0, 3]]))
    i0 = A(np.array([[2, 0, 1, 1], [0, 1, 2, 0]]))
    return [S(A(mk((3, 4))), 1, i1, A(mk((3, 2))), name="dim1"),
            S(A(mk((3, 4))), 0, i0, A(mk((2, 4))), name="dim0"),
            S(A(mk((3, 4))), 1, i1, A(mk((4, 5))), name="src_larger", ref_grad=False),
            S(A(mk((4, 3)), T), -1, i1, A(mk((2, 3)), T), name="noncontig")]


entry("scatter", "scatter", lambda m, x, d, i, s: x.scatter(d, i, s), _scatter_samples,
      dtypes=IDX, gradgrad=False)
entry("scatter_value", "scatter", lambda m, x, d, i, v: m.scatter(x, d, i, value=v),
      lambda mk, dt: [S(A(mk((3, 4))), 1, A(np.array([[3, 0], [1, 2], [0, 3]])),
                        1 if dt not in FLOATS else 2.5, name="value")],
      dtypes=IDX, gradgrad=False)


def _scatter_add_samples(mk: Maker, dt: str) -> list[Sample]:
    i = A(np.array([[3, 3, 0], [1, 1, 1], [0, 2, 0]]))
    return [S(A(mk((3, 4))), 1, i, A(mk((3, 3))), name="dups"),
            S(A(mk((3, 4))), 0, A(np.array([[0, 0, 2, 2]])), A(mk((2, 4))), name="dim0",
              ref_grad=False),
            S(A(mk((4, 3)), T), 1, i, A(mk((3, 5))), name="noncontig_src_larger",
              ref_grad=False),
            S(A(mk((3, 4))), 0, A(np.array([[0, 0, 2, 2], [1, 2, 2, 1]])), A(mk((2, 4))),
              name="dim0_same_size")]


entry("scatter_add", "scatter_add", lambda m, x, d, i, s: m.scatter_add(x, d, i, s),
      _scatter_add_samples, dtypes=(*FLOATS, "int64", "int32"), gradgrad=False)

# --- linear algebra --------------------------------------------------------------------
_MM_SHAPES = (
    ("vec_vec", (3,), (3,)), ("vec_mat", (3,), (3, 2)), ("mat_vec", (2, 3), (3,)),
    ("mat_mat", (2, 3), (3, 4)), ("batched", (2, 2, 3), (2, 3, 4)),
    ("bcast_batch", (2, 1, 2, 3), (3, 3, 2)), ("batched_vec", (2, 2, 3), (3,)),
    ("vec_batched", (3,), (2, 3, 2)), ("zero_k", (2, 0), (0, 3)), ("zero_m", (0, 3), (3, 2)),
    # a matrix times a batch (a convolution's weight and columns), a 2-level batch too
    ("mat_batched", (2, 3), (4, 3, 5)), ("mat_batched_4d", (2, 3), (2, 3, 3, 4)),
)


def _matmul_samples(mk: Maker, dt: str) -> list[Sample]:
    out = [S(A(mk(a)), A(mk(b)), name=n) for n, a, b in _MM_SHAPES]
    out += [S(A(mk((3, 2)), T), A(mk((4, 3)), T), name="transposed"),
            S(A(mk((5, 6)), lambda t: t[::2, ::2]), A(mk((1, 3)), lambda t: t.expand(3, 3)),
              name="strided_expanded")]
    return out


MM_DT = ("float32", "float64", "float16", "int64", "int32")
entry("matmul", "matmul", lambda m, a, b: a @ b, _matmul_samples, dtypes=MM_DT)
entry("matmul_fn", "matmul", lambda m, a, b: m.matmul(a, b),
      lambda mk, dt: _matmul_samples(mk, dt)[3:6], dtypes=FULL)
entry("mm", "matmul", lambda m, a, b: m.mm(a, b),
      lambda mk, dt: [S(A(mk((2, 3))), A(mk((3, 4))), name="mm"),
                      S(A(mk((3, 2)), T), A(mk((3, 4))), name="T")], dtypes=MM_DT)
entry("bmm", "matmul", lambda m, a, b: m.bmm(a, b),
      lambda mk, dt: [S(A(mk((2, 2, 3))), A(mk((2, 3, 4))), name="bmm"),
                      S(A(mk((2, 3, 2)), T), A(mk((1, 3, 4)), lambda t: t.expand(2, 3, 4)),
                        name="noncontig")], dtypes=MM_DT)
entry("mv_dot_outer", ("matmul", "mul", "reshape"),
      lambda m, a, v, w: (m.mv(a, v), m.dot(v, w), m.outer(v, w)),
      lambda mk, dt: [S(A(mk((2, 3))), A(mk((3,))), A(mk((3,))), name="x")], dtypes=MM_DT)

def _linear_samples(mk: Maker, dt: str) -> list[Sample]:
    return [S(A(mk((4, 3))), A(mk((5, 3))), A(mk((5,))), name="bias"),
            S(A(mk((4, 3))), A(mk((5, 3))), name="no_bias"),
            S(A(mk((2, 4, 3))), A(mk((5, 3))), A(mk((5,))), name="batched"),
            S(A(mk((3, 4)), T), A(mk((3, 5)), T), A(mk((5,))), name="transposed"),
            S(A(mk((3,))), A(mk((5, 3))), A(mk((5,))), name="vector_composite"),
            S(A(mk((0, 3))), A(mk((5, 3))), A(mk((5,))), name="zero_rows")]


entry("linear", ("linear", "matmul", "add", "permute"),
      lambda m, x, w, b=None: m.nn.functional.linear(x, w, b), _linear_samples,
      dtypes=FLOATS)

_EINSUM = (
    ("ij,jk->ik", ((2, 3), (3, 4))), ("bij,bjk->bik", ((2, 2, 3), (2, 3, 2))),
    ("i,i->", ((4,), (4,))), ("ij->ji", ((2, 3),)), ("ij->", ((2, 3),)), ("ij->j", ((2, 3),)),
    ("i,j->ij", ((3,), (2,))), ("...ij,...jk->...ik", ((2, 1, 2, 3), (3, 3, 2))),
    ("ij,jk", ((2, 3), (3, 2))), ("ij,jk,kl->il", ((2, 3), (3, 2), (2, 2))),
    ("bi,bi->b", ((3, 4), (3, 4))), ("ii->i", ((3, 3),)), ("ii", ((3, 3),)),
    ("bii->bi", ((2, 3, 3),)), ("iij,j->i", ((3, 3, 2), (2,))), ("ij,ij->", ((1, 3), (2, 3))),
    ("ij,jk,kl->il", ((2, 3), (3, 1), (4, 2))),
)


def _einsum_samples(mk: Maker, dt: str) -> list[Sample]:
    out = [S(eq, *[A(mk(s)) for s in shp], name=eq.replace("->", "_to_").replace(",", "_")
             .replace("...", "ell")) for eq, shp in _EINSUM]
    out.append(S("ij,jk->ik", A(mk((3, 2)), T), A(mk((1, 2)), lambda t: t.expand(3, 2)),
                 name="noncontig"))
    return out


entry("einsum", "einsum", lambda m, eq, *ts: m.einsum(eq, *ts), _einsum_samples,
      dtypes=("float32", "float64", "int64"))


def _unfold_samples(mk: Maker, dt: str) -> list[Sample]:
    return [S(A(mk((1, 2, 4, 4))), 2, name="k2"),
            S(A(mk((2, 1, 4, 5))), (2, 3), name="k23_stride", stride=(1, 2)),
            S(A(mk((1, 1, 5, 5))), 2, name="dilation_padding", dilation=2, padding=1),
            S(A(mk((1, 2, 3, 4)), lambda t: t.mT), 2, name="noncontig", stride=2)]


entry("unfold", "unfold", lambda m, x, k, **kw: m.nn.functional.unfold(x, k, **kw),
      _unfold_samples, dtypes=FLOATS, gradgrad=False)


def _fold_samples(mk: Maker, dt: str) -> list[Sample]:
    return [S(A(mk((1, 8, 9))), (4, 4), 2, name="k2"),
            S(A(mk((2, 6, 6))), (4, 5), (2, 3), name="k23_stride", stride=(1, 2)),
            S(A(mk((1, 4, 9))), (5, 5), 2, name="dilation_padding", dilation=2, padding=1,
              stride=2),
            S(A(mk((1, 9, 4)), lambda t: t.mT.mT), (4, 4), 3, name="overlap"),
            # windows that tile the plane (pooling's backward), with and without a border
            S(A(mk((2, 8, 4))), (4, 4), 2, name="tiles", stride=2),
            S(A(mk((1, 4, 4)), lambda t: t.mT.mT), (5, 5), 2, name="tiles_border", stride=2)]


entry("fold", "fold", lambda m, x, o, k, **kw: m.nn.functional.fold(x, o, k, **kw),
      _fold_samples, dtypes=FLOATS, gradgrad=False)


def _conv2d_samples(mk: Maker, dt: str) -> list[Sample]:
    def w(*s: int) -> A:
        return A(mk(s, low=-1.0, high=1.0))

    return [
        S(A(mk((1, 2, 4, 4))), w(3, 2, 2, 2), name="basic"),
        S(A(mk((2, 2, 4, 5))), w(2, 2, 3, 2), A(mk((2,))), name="bias_stride", stride=(2, 1)),
        S(A(mk((1, 2, 4, 4))), w(2, 2, 3, 3), name="padding", padding=1),
        S(A(mk((1, 1, 5, 5))), w(1, 1, 2, 2), name="dilation", dilation=2, padding=(1, 0)),
        S(A(mk((1, 4, 3, 3))), w(4, 2, 2, 2), A(mk((4,))), name="groups", groups=2),
        S(A(mk((1, 2, 4, 4))), w(2, 2, 3, 2), name="same", padding="same"),
        S(A(mk((2, 3, 3))), w(2, 2, 2, 2), name="unbatched"),
        S(A(mk((1, 2, 4, 4)), lambda t: t.mT), w(2, 2, 2, 2), name="noncontig"),
    ]


entry("conv2d", ("unfold", "pad", "matmul", "reshape", "add"),
      lambda m, x, w, b=None, **kw: m.nn.functional.conv2d(x, w, b, **kw), _conv2d_samples,
      dtypes=FLOATS)


def _conv1d_samples(mk: Maker, dt: str) -> list[Sample]:
    return [S(A(mk((2, 2, 6))), A(mk((3, 2, 3))), name="basic"),
            S(A(mk((1, 2, 7))), A(mk((2, 2, 2))), A(mk((2,))), name="bias_stride_pad", stride=2,
              padding=1),
            S(A(mk((1, 4, 6))), A(mk((2, 2, 3))), name="groups_dilation", groups=2, dilation=2),
            S(A(mk((2, 5))), A(mk((2, 2, 2))), name="unbatched")]


entry("conv1d", ("unfold", "matmul"), lambda m, x, w, b=None, **kw:
      m.nn.functional.conv1d(x, w, b, **kw), _conv1d_samples, dtypes=FLOATS)


def _pool2d_samples(mk: Maker, dt: str) -> list[Sample]:
    def x(*s: int) -> A:
        return A(mk(s, distinct=True))

    return [S(x(1, 2, 4, 4), 2, name="k2"),
            S(x(2, 1, 5, 5), 3, 2, name="k3_s2"),
            S(x(1, 1, 5, 5), 2, 2, 1, name="pad"),
            S(x(1, 1, 5, 6), (2, 3), (1, 2), name="rect"),
            S(x(1, 1, 5, 5), 2, 2, name="ceil", ceil_mode=True),
            S(x(2, 4, 4), 2, name="unbatched"),
            S(A(mk((1, 2, 4, 4), distinct=True), lambda t: t.mT), 2, 1, name="noncontig")]


entry("max_pool2d", ("unfold", "max_dim", "pad"),
      lambda m, x, *a, **kw: m.nn.functional.max_pool2d(x, *a, **kw),
      lambda mk, dt: [
          *_pool2d_samples(mk, dt),
          S(A(mk((1, 1, 6, 6), distinct=True)), 2, 1, 0, 2, name="dilation"),
          S(A(mk((1, 2, 4, 4), distinct=True)), 2, 1, 1, name="indices", return_indices=True)],
      dtypes=FLOATS, gradgrad=False)
entry("avg_pool2d", ("unfold", "sum", "div", "pad"),
      lambda m, x, *a, **kw: m.nn.functional.avg_pool2d(x, *a, **kw),
      lambda mk, dt: [
          *_pool2d_samples(mk, dt),
          S(A(mk((1, 1, 5, 5))), 3, 2, 1, name="exclude_pad", count_include_pad=False),
          S(A(mk((1, 1, 5, 5))), 2, 2, 1, name="ceil_exclude", ceil_mode=True,
            count_include_pad=False),
          S(A(mk((1, 1, 4, 4))), 2, name="divisor", divisor_override=3)],
      dtypes=FLOATS, gradgrad=False)


def _pool1d_samples(mk: Maker, dt: str) -> list[Sample]:
    def x(*s: int) -> A:
        return A(mk(s, distinct=True))

    return [S(x(1, 2, 6), 2, name="k2"), S(x(2, 1, 7), 3, 2, 1, name="k3_s2_p1"),
            S(x(1, 1, 7), 2, 2, name="ceil", ceil_mode=True), S(x(2, 5), 2, name="unbatched")]


entry("max_pool1d", ("unfold", "max_dim"),
      lambda m, x, *a, **kw: m.nn.functional.max_pool1d(x, *a, **kw),
      lambda mk, dt: [
          *_pool1d_samples(mk, dt),
          S(A(mk((1, 2, 6), distinct=True)), 2, name="indices", return_indices=True)],
      dtypes=FLOATS, gradgrad=False)
entry("avg_pool1d", ("unfold", "sum", "div"),
      lambda m, x, *a, **kw: m.nn.functional.avg_pool1d(x, *a, **kw),
      lambda mk, dt: [
          *_pool1d_samples(mk, dt),
          S(A(mk((1, 1, 6))), 3, 2, 1, name="exclude_pad", count_include_pad=False)],
      dtypes=FLOATS, gradgrad=False)


OP_BY_NAME = {e.name: e for e in OP_DB}


def covered_ops() -> dict[str, list[str]]:
    """Primitive name -> the entries that cover it."""
    out: dict[str, list[str]] = {}
    for e in OP_DB:
        for o in e.ops:
            out.setdefault(o, []).append(e.name)
    return out


# --- running samples and comparing with the reference ------------------------------------
# (rtol, atol); atol is scaled by max(1, max |expected|). A float16 gradient passes through
# several rounded ops (2**-11 each) and sums whose terms cancel, in Fluxion and PyTorch
# alike (both are ~1e-3 off the exact value in such cases): it gets 1e-2.
FWD_TOL = {"float16": (1e-3, 1e-3), "float32": (1e-5, 1e-6), "float64": (1e-7, 1e-9)}
GRAD_TOL = {"float16": (1e-2, 1e-2), "float32": (1e-5, 1e-6), "float64": (1e-7, 1e-9)}


def to_tensor(m: Any, arr: np.ndarray) -> Any:
    """A fresh leaf of library ``m`` (``fluxion`` or ``torch``) holding a copy of ``arr``."""
    return m.from_numpy(arr.copy())


def is_float(a: A) -> bool:
    return a.data.dtype.kind == "f"


def build(m: Any, s: Sample, requires_grad: bool, leaves: list | None = None
          ) -> tuple[tuple, dict, list]:
    """The sample's arguments as tensors of library ``m`` (views applied), and the leaves.
    With ``leaves`` given, those tensors are used instead of fresh ones (gradcheck)."""
    made: list = []
    given = iter(leaves) if leaves is not None else None

    def conv(x: Any) -> Any:
        if isinstance(x, A):
            if given is not None:
                t = next(given)
            else:
                t = to_tensor(m, x.data)
                if requires_grad and x.grad and is_float(x):
                    t.requires_grad_(True)
            made.append(t)
            return x.view(t) if x.view is not None else t
        if isinstance(x, tuple):
            return tuple(conv(y) for y in x)
        if isinstance(x, list):
            return [conv(y) for y in x]
        return x

    args = conv(s.args)
    kwargs = {k: conv(v) for k, v in s.kwargs.items()}
    return args, kwargs, made


def flat(out: Any) -> list:
    """Outputs as a flat list (tuples, named tuples and lists of tensors unpacked)."""
    if isinstance(out, (tuple, list)):
        return [y for x in out for y in flat(x)]
    return [out]


def dtype_name(t: Any) -> str:
    return str(t.dtype).removeprefix("torch.").removeprefix("fluxion.")


def assert_close(actual: np.ndarray, expected: np.ndarray, rtol: float, atol: float,
                 what: str) -> None:
    """``|a - b| <= atol * max(1, max|b|) + rtol * |b|``; equal infinities and NaNs pass."""
    a = actual.astype(np.float64)
    b = expected.astype(np.float64)
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    scale = max(1.0, float(np.abs(b[np.isfinite(b)]).max(initial=0.0)))
    with np.errstate(invalid="ignore"):
        ok = same | (np.abs(a - b) <= atol * scale + rtol * np.abs(b))
    if not ok.all():
        bad = np.argwhere(~ok)[:5].tolist()
        raise AssertionError(
            f"{what}: {int((~ok).sum())} of {ok.size} elements differ beyond rtol={rtol}, "
            f"atol={atol}*{scale:g} (first at {bad})\nfluxion:\n{actual}\ntorch:\n{expected}"
        )


def assert_same_tensor(fx: Any, th: Any, tol: dict, what: str) -> None:
    """Same dtype, shape and values (``tol`` by dtype name for floating ones)."""
    assert isinstance(fx, fluxion.Tensor), f"{what}: expected a Tensor, got {type(fx)}"
    assert dtype_name(fx) == dtype_name(th), (
        f"{what}: dtype {dtype_name(fx)} but torch gives {dtype_name(th)}")
    assert tuple(fx.shape) == tuple(th.shape), (
        f"{what}: shape {tuple(fx.shape)} but torch gives {tuple(th.shape)}")
    a, b = fx.detach().numpy(), th.detach().numpy()
    if a.dtype.kind == "f":
        assert_close(a, b, *tol[a.dtype.name], what)
    else:
        assert np.array_equal(a, b), f"{what}: values differ\nfluxion:\n{a}\ntorch:\n{b}"


def assert_same_outputs(fx_out: Any, th_out: Any, tol: dict) -> None:
    fxs, ths = flat(fx_out), flat(th_out)
    assert len(fxs) == len(ths), f"{len(fxs)} outputs but torch gives {len(ths)}"
    for i, (f, t) in enumerate(zip(fxs, ths)):
        if hasattr(t, "dtype") and hasattr(t, "shape") and not isinstance(t, np.generic):
            assert_same_tensor(f, t, tol, f"output {i}")
        else:
            assert f == t, f"output {i}: {f!r} but torch gives {t!r}"
