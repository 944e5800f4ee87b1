"""Every op of the op table against PyTorch, driven by ``op_db``: forward values and dtypes,
gradients of a random upstream gradient, float64 gradcheck and gradgradcheck, and a
coverage check that fails when an op has no entry or no backward rule."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import pytest
from op_db import (
    FLOATS,
    FWD_TOL,
    GRAD_TOL,
    OP_DB,
    OpEntry,
    Sample,
    assert_same_outputs,
    assert_same_tensor,
    build,
    covered_ops,
    flat,
    is_float,
    to_tensor,
)

import fluxion
from fluxion.autograd import gradcheck, gradgradcheck
from fluxion.ops import OPS

torch = pytest.importorskip("torch", reason="PyTorch is the oracle for these tests")
# PyTorch's own advice about its conv2d(padding="same") implementation
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")

GC_MAX_NUMEL = 60  # finite differences cost one call per element


# --- parametrisation -------------------------------------------------------------------
def _cases(want: Any) -> list:
    out = []
    for e in OP_DB:
        for dt in e.dtypes:
            for s in e.sample_list(dt):
                if want(e, dt, s):
                    out.append(pytest.param(e, s, id=f"{e.name}-{dt}-{s.name}"))
    return out


def _has_float_input(s: Sample) -> bool:
    return any(is_float(a) and a.grad for a in s.tensors())


FORWARD = _cases(lambda e, dt, s: True)
GRAD = _cases(lambda e, dt, s: e.grad and s.ref_grad and _has_float_input(s))
GRADCHECK = _cases(lambda e, dt, s: e.grad and dt == "float64" and s.gc
                   and _has_float_input(s) and s.numel() <= GC_MAX_NUMEL)
GRADGRADCHECK = [p for p in GRADCHECK if p.values[0].gradgrad]


# --- the tests -------------------------------------------------------------------------
@pytest.mark.parametrize("e, s", FORWARD)
def test_forward(e: OpEntry, s: Sample) -> None:
    """Values, dtypes (type promotion) and shapes equal PyTorch's."""
    th_args, th_kw, _ = build(torch, s, e.force_grad)
    expected = e.ref(*th_args, **th_kw)
    fx_args, fx_kw, _ = build(fluxion, s, e.force_grad)
    actual = e.op(*fx_args, **fx_kw)
    assert_same_outputs(actual, expected, FWD_TOL)


@pytest.mark.parametrize("e, s", GRAD)
def test_grad(e: OpEntry, s: Sample) -> None:
    """Gradients of a random upstream gradient equal PyTorch's."""
    th_args, th_kw, th_leaves = build(torch, s, True)
    th_out = flat(e.ref(*th_args, **th_kw))
    fx_args, fx_kw, fx_leaves = build(fluxion, s, True)
    fx_out = flat(e.op(*fx_args, **fx_kw))
    assert len(fx_out) == len(th_out)
    sel = []
    for i, (f, t) in enumerate(zip(fx_out, th_out)):
        if isinstance(t, torch.Tensor) and t.is_floating_point():
            assert f.requires_grad == t.requires_grad, (
                f"output {i}: requires_grad={f.requires_grad} but torch has {t.requires_grad}")
            if t.requires_grad:
                sel.append((f, t))
    if not sel:  # e.g. a cast to an integer type: nothing to differentiate, as in torch
        return
    rng = np.random.default_rng(0)
    ups = [rng.standard_normal(tuple(t.shape)).astype(t.detach().numpy().dtype) for _, t in sel]
    torch.autograd.backward([t for _, t in sel], [torch.from_numpy(u.copy()) for u in ups])
    fluxion.autograd.backward([f for f, _ in sel], [fluxion.from_numpy(u.copy()) for u in ups])
    # with mixed precisions PyTorch itself differentiates partly in the narrower dtype:
    # judge every gradient at the precision of the least precise floating input
    loosest = min((fl.dtype.name for fl in fx_leaves if fl.is_floating_point()),
                  key=lambda d: np.dtype(d).itemsize)
    tol = {d: GRAD_TOL[loosest] if np.dtype(d).itemsize > np.dtype(loosest).itemsize
           else GRAD_TOL[d] for d in FLOATS}
    for i, (fl, tl) in enumerate(zip(fx_leaves, th_leaves)):
        if not tl.requires_grad:
            continue
        what = f"grad of input {i}"
        if tl.grad is None:
            assert fl.grad is None or not fl.grad.numpy().any(), f"{what}: torch gives None"
            continue
        assert fl.grad is not None, f"{what}: None but torch gives a gradient"
        assert_same_tensor(fl.grad, tl.grad, tol, what)


def _checked_fn(e: OpEntry, s: Sample) -> tuple[Any, list]:
    leaves = []
    for a in s.tensors():
        t = to_tensor(fluxion, a.data)
        if a.grad and is_float(a):
            t.requires_grad_(True)
        leaves.append(t)

    def fn(*ts: Any) -> Any:
        args, kwargs, _ = build(fluxion, s, False, leaves=list(ts))
        return e.op(*args, **kwargs)

    return fn, leaves


@pytest.mark.parametrize("e, s", GRADCHECK)
def test_gradcheck(e: OpEntry, s: Sample) -> None:
    """First derivatives against float64 central differences."""
    fn, leaves = _checked_fn(e, s)
    assert gradcheck(fn, leaves, eps=s.gc_eps)


@pytest.mark.parametrize("e, s", GRADGRADCHECK)
def test_gradgradcheck(e: OpEntry, s: Sample) -> None:
    """Second derivatives against central differences of the first."""
    fn, leaves = _checked_fn(e, s)
    assert gradgradcheck(fn, leaves, eps=s.gc_eps)


# --- coverage --------------------------------------------------------------------------
def test_every_op_has_an_entry() -> None:
    missing = sorted(set(OPS) - set(covered_ops()))
    assert not missing, f"ops without an op_db entry: {missing}"


def test_entries_name_real_ops() -> None:
    unknown = sorted(set(covered_ops()) - set(OPS))
    assert not unknown, f"op_db entries name ops that are not in OPS: {unknown}"


def test_differentiable_ops_have_backward() -> None:
    missing = sorted(n for n, op in OPS.items() if op.differentiable and op.backward is None)
    assert not missing, f"differentiable ops without a backward rule: {missing}"


def test_differentiable_ops_are_gradchecked() -> None:
    """Every differentiable op has an entry whose float64 samples get a gradcheck."""
    checked = {o for p in GRADCHECK for o in p.values[0].ops}
    missing = sorted(n for n, op in OPS.items() if op.differentiable and n not in checked)
    assert not missing, f"differentiable ops no gradcheck reaches: {missing}"


@pytest.mark.parametrize("e", OP_DB, ids=[e.name for e in OP_DB])
def test_entry_reaches_its_ops(e: OpEntry, monkeypatch: pytest.MonkeyPatch) -> None:
    """The primitives an entry claims to cover really run when its samples do."""
    hit: set[str] = set()
    for name in e.ops:
        op = OPS[name]

        def spy(*a: Any, _f: Any = op.forward, _n: str = name, **k: Any) -> Any:
            hit.add(_n)
            return _f(*a, **k)

        monkeypatch.setattr(op, "forward", spy)
    for dt in e.dtypes:
        for s in e.sample_list(dt):
            args, kwargs, _ = build(fluxion, s, e.force_grad)
            with contextlib.suppress(Exception):  # test_forward reports failures
                e.op(*args, **kwargs)
    assert hit == set(e.ops), f"never ran: {sorted(set(e.ops) - hit)}"


def test_floats_tolerances_cover_dtypes() -> None:
    assert set(FLOATS) == set(FWD_TOL) == set(GRAD_TOL)


@pytest.mark.parametrize("dtype", ["float32", "float64", "int64"])
def test_max_min_along_a_short_axis_match_numpy_and_torch(dtype: str) -> None:
    """max/min/argmax(dim) over a short axis that is not the last (a max-pool window, large
    enough for the slice-wise kernel): NumPy's first-extreme indices, NaN winning, and
    PyTorch's values; gradients reach the element the index names."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    a = rng.integers(-2, 3, (64, 10, 4, 36)).astype(dtype)  # many ties
    if a.dtype.kind == "f":
        a[rng.random(a.shape) < 0.02] = np.nan
    x, t = fluxion.from_numpy(a), torch.from_numpy(a)
    for f_name, np_arg in (("max", np.argmax), ("min", np.argmin)):
        vals, idx = getattr(x, f_name)(dim=2)
        np.testing.assert_array_equal(idx.numpy(), np_arg(a, axis=2))
        np.testing.assert_array_equal(vals.numpy(), getattr(t, f_name)(dim=2).values.numpy())
    np.testing.assert_array_equal(x.argmax(dim=1).numpy(), np.argmax(a, axis=1))
    if a.dtype.kind == "f":
        xg = fluxion.tensor(np.nan_to_num(a), requires_grad=True)
        vals, idx = xg.max(dim=2)
        vals.sum().backward()
        want = np.zeros_like(a)
        np.put_along_axis(want, np.expand_dims(idx.numpy(), 2), 1, axis=2)
        np.testing.assert_array_equal(xg.grad.numpy(), want)
