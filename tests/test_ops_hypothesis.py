"""Property tests against PyTorch with hypothesis-drawn shapes and keys: broadcasting binary
ops (values and gradients) and indexing (``x[key]`` and the gradient through it)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import mutually_broadcastable_shapes
from op_db import FWD_TOL, GRAD_TOL, A, Sample, assert_same_tensor, build

import fluxion

torch = pytest.importorskip("torch", reason="PyTorch is the oracle for these tests")

SETTINGS = settings(max_examples=40, deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])

# name -> (fn(a, b) in the API both libraries share, (low, high) of operand b)
BINARY = {
    "add": (lambda a, b: a + b, (-2.0, 2.0)),
    "sub": (lambda a, b: a - b, (-2.0, 2.0)),
    "mul": (lambda a, b: a * b, (-2.0, 2.0)),
    "div": (lambda a, b: a / b, (0.5, 2.0)),
    "pow": (lambda a, b: a.abs() ** b, (-1.5, 1.5)),
    "maximum": (lambda a, b: a.maximum(b), (-2.0, 2.0)),
    "atan2": (lambda a, b: a.atan2(b), (0.5, 2.0)),
    "where": (lambda a, b: a.where(a > 0, b), (-2.0, 2.0)),
}
FLOAT_PAIRS = [("float64", "float64"), ("float32", "float32"), ("float32", "float64")]


def _operand(rng: np.random.Generator, shape: tuple, dtype: str, low: float, high: float,
             transpose: bool) -> A:
    """An operand of ``shape``; ``transpose`` stores it transposed and views it back."""
    vals = rng.uniform(low, high, shape)
    vals = np.where(np.abs(vals) < 0.25, np.copysign(0.25 + np.abs(vals), vals), vals)
    if transpose and len(shape) >= 2:
        return A(np.ascontiguousarray(np.swapaxes(vals, -1, -2)).astype(dtype),
                 lambda t: t.mT)
    return A(vals.astype(dtype))


@st.composite
def binary_cases(draw: Any) -> tuple[str, Sample]:
    name = draw(st.sampled_from(sorted(BINARY)))
    shapes = draw(mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4,
                                                min_side=0, max_side=3))
    da, db = draw(st.sampled_from(FLOAT_PAIRS))
    if draw(st.booleans()):
        da, db = db, da
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    low, high = BINARY[name][1]
    a = _operand(rng, shapes.input_shapes[0], da, -2.0, 2.0, draw(st.booleans()))
    b = _operand(rng, shapes.input_shapes[1], db, low, high, draw(st.booleans()))
    return name, Sample(a, b)


def _loosest(s: Sample) -> str:
    return min((a.data.dtype.name for a in s.tensors()), key=lambda d: np.dtype(d).itemsize)


@SETTINGS
@given(binary_cases())
def test_binary_broadcasting(case: tuple[str, Sample]) -> None:
    """Values, dtype and shape, then the gradients of a random upstream gradient."""
    name, s = case
    fn = BINARY[name][0]
    (ta, tb), _, th_leaves = build(torch, s, True)
    (fa, fb), _, fx_leaves = build(fluxion, s, True)
    th_out, fx_out = fn(ta, tb), fn(fa, fb)
    assert_same_tensor(fx_out, th_out, FWD_TOL, f"{name} output")
    g = np.random.default_rng(1).standard_normal(tuple(th_out.shape))
    g = g.astype(th_out.detach().numpy().dtype)
    th_out.backward(torch.from_numpy(g.copy()))
    fx_out.backward(fluxion.from_numpy(g.copy()))
    tol = dict.fromkeys(GRAD_TOL, GRAD_TOL[_loosest(s)])
    for i, (fl, tl) in enumerate(zip(fx_leaves, th_leaves)):
        assert (fl.grad is None) == (tl.grad is None), f"grad of input {i}: None-ness differs"
        if tl.grad is not None:
            assert_same_tensor(fl.grad, tl.grad, tol, f"{name}: grad of input {i}")


# --- indexing --------------------------------------------------------------------------
@st.composite
def index_cases(draw: Any, advanced: bool) -> Sample:
    """A tensor and a key: ints, slices with positive steps, None and Ellipsis, and with
    ``advanced`` either integer index tensors (one common broadcast shape) or one boolean
    mask over one or two consecutive dimensions."""
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=1 if advanced else 0,
                                max_size=4)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    ndim = len(shape)
    n_used = draw(st.integers(1 if advanced else 0, ndim))  # dims the key addresses
    ell_at = draw(st.one_of(st.none(), st.integers(0, n_used)))  # Ellipsis position
    # the addressed dims: the first ell_at from the front, the rest from the back
    dims = list(range(n_used)) if ell_at is None else (
        list(range(ell_at)) + list(range(ndim - (n_used - ell_at), ndim)))
    mode = draw(st.sampled_from(["arrays", "mask"])) if advanced else "basic"
    ishape = draw(st.sampled_from([(1,), (2,), (3,), (2, 2)]))
    # the one mask, or the one index tensor that is there for sure (more may come)
    adv_at = draw(st.integers(0, len(dims) - 1)) if advanced else None
    mask_at = adv_at if mode == "mask" else None
    mask_span = (2 if mask_at is not None and mask_at + 1 < len(dims)
                 and dims[mask_at + 1] == dims[mask_at] + 1 and mask_at + 1 != ell_at
                 and draw(st.booleans()) else 1)
    items: list[Any] = []
    starts: list[int] = []  # the position in dims each item starts at
    k = 0
    while k < len(dims):
        starts.append(k)
        size = shape[dims[k]]
        if k == mask_at:
            mshape = tuple(shape[d] for d in dims[k:k + mask_span])
            items.append(A(rng.random(mshape) < 0.5))
            k += mask_span
            continue
        kinds = ["int", "slice", "full"] + (["array"] * 2 if mode == "arrays" else [])
        kind = "array" if k == adv_at else draw(st.sampled_from(kinds))
        if kind == "int":
            items.append(draw(st.integers(-size, size - 1)))
        elif kind == "full":
            items.append(slice(None))
        elif kind == "slice":
            start = draw(st.one_of(st.none(), st.integers(-size - 1, size + 1)))
            stop = draw(st.one_of(st.none(), st.integers(-size - 1, size + 1)))
            step = draw(st.one_of(st.none(), st.integers(1, 3)))
            items.append(slice(start, stop, step))
        else:
            items.append(A(rng.integers(-size, size, ishape)))
        k += 1
    if ell_at is not None:
        items.insert(sum(1 for st_ in starts if st_ < ell_at), Ellipsis)
    for _ in range(draw(st.integers(0, 2))):
        items.insert(draw(st.integers(0, len(items))), None)
    key: Any = tuple(items)
    if len(items) == 1 and draw(st.booleans()):
        key = items[0]  # a bare item rather than a 1-tuple
    transpose = ndim >= 2 and draw(st.booleans())
    data = rng.standard_normal(shape)
    if transpose:
        x = A(np.ascontiguousarray(np.swapaxes(data, -1, -2)), lambda t: t.mT)
    else:
        x = A(data)
    return Sample(x, key)


def _check_index(s: Sample) -> None:
    (tx, tkey), _, (tleaf, *_) = build(torch, s, True)
    (fx, fkey), _, (fleaf, *_) = build(fluxion, s, True)
    th_out = tx[tkey]
    fx_out = fx[fkey]
    assert_same_tensor(fx_out, th_out, FWD_TOL, f"x[{tkey!r}]")
    w = np.random.default_rng(2).standard_normal(tuple(th_out.shape))
    (th_out * torch.from_numpy(w)).sum().backward()
    (fx_out * fluxion.from_numpy(w)).sum().backward()
    assert_same_tensor(fleaf.grad, tleaf.grad, GRAD_TOL, f"grad through x[{tkey!r}]")


@SETTINGS
@given(index_cases(advanced=False))
def test_basic_indexing(s: Sample) -> None:
    """Ints, slices with steps, None and Ellipsis: values and gradient."""
    _check_index(s)


# PyTorch's placement rules for the dimensions of index tensors, where NumPy's differ: an
# int is applied first (a select), and an Ellipsis standing for no dimension separates nothing
@example(Sample(A(np.arange(24.0).reshape(2, 3, 4)), (1, slice(None), A(np.array([3, 1])))))
@example(Sample(A(np.arange(6.0).reshape(2, 3)), (None, A(np.array([1, 0])), Ellipsis,
                                                   A(np.array([2, 2])))))
@SETTINGS
@given(index_cases(advanced=True))
def test_advanced_indexing(s: Sample) -> None:
    """Integer index tensors or boolean masks mixed with basic items: values and gradient."""
    _check_index(s)
