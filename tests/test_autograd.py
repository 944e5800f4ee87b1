"""Autograd semantics, compared with PyTorch: leaves and grad_fn, backward's arguments,
``autograd.grad``, accumulation, retain_grad, hooks, grad modes, higher-order gradients,
custom Functions, freed graphs, in-place checks on saved tensors, and anomaly mode."""

from __future__ import annotations

import inspect
import os
import warnings

import numpy as np
import pytest

import fluxion

torch = pytest.importorskip("torch")

LIBS = [fluxion, torch]


def arr(f):
    """Values of a fluxion or torch tensor (or None) as a float64 array."""
    if f is None:
        return None
    return np.asarray(f.detach().numpy(), dtype=np.float64)


def close(f, t, rtol=1e-5, atol=1e-6):
    """fluxion tensor ``f`` matches torch tensor ``t`` (None matches None)."""
    if t is None or f is None:
        assert f is None and t is None, (f, t)
        return
    assert tuple(f.shape) == tuple(t.shape), (tuple(f.shape), tuple(t.shape))
    assert f.dtype.name == str(t.dtype).removeprefix("torch."), (f.dtype, t.dtype)
    np.testing.assert_allclose(arr(f), arr(t), rtol=rtol, atol=atol)


def leaf(lib, data, dtype="float32"):
    return lib.tensor(np.asarray(data), dtype=getattr(lib, dtype), requires_grad=True)


X = np.array([[0.5, -1.2, 2.0], [1.5, 0.3, -0.7]])
W = np.array([[0.2, -0.4], [1.1, 0.5], [-0.3, 0.8]])


# --- leaves, grad_fn, requires_grad ---------------------------------------------------------
def test_leaf_facts():
    for lib in LIBS:
        x = leaf(lib, [1.0, 2.0])
        c = lib.tensor([1.0, 2.0])
        assert x.is_leaf and x.requires_grad and x.grad is None and x.grad_fn is None
        assert c.is_leaf and not c.requires_grad
        y = x * c
        assert not y.is_leaf and y.requires_grad and y.grad_fn is not None
        z = c * 2
        assert z.is_leaf and not z.requires_grad and z.grad_fn is None
        i = lib.tensor([1, 2]) * x  # integer operand, float result: tracked
        assert i.requires_grad
        b = x > 1  # comparisons are not differentiable
        assert not b.requires_grad and b.grad_fn is None
        am = x.argmax()
        assert not am.requires_grad
        lo = x.long()  # integer results are never tracked
        assert not lo.requires_grad and lo.grad_fn is None


GRAD_FN_NAMES = [
    (lambda x: x * 2, "MulBackward0"),
    (lambda x: x + 2, "AddBackward0"),
    (lambda x: x - 2, "SubBackward0"),
    (lambda x: x / 2, "DivBackward0"),
    (lambda x: -x, "NegBackward0"),
    (lambda x: x ** 2, "PowBackward0"),
    (lambda x: x.exp(), "ExpBackward0"),
    (lambda x: x.log(), "LogBackward0"),
    (lambda x: x.sin(), "SinBackward0"),
    (lambda x: x.tanh(), "TanhBackward0"),
    (lambda x: x.sigmoid(), "SigmoidBackward0"),
    (lambda x: x.relu(), "ReluBackward0"),
    (lambda x: x.abs(), "AbsBackward0"),
    (lambda x: x.sqrt(), "SqrtBackward0"),
    (lambda x: x.sum(), "SumBackward0"),
    (lambda x: x.sum(0), "SumBackward1"),
    (lambda x: x.mean(), "MeanBackward0"),
    (lambda x: x.clone(), "CloneBackward0"),
    (lambda x: x.view(-1), "ViewBackward0"),
    (lambda x: x.t(), "TBackward0"),
    (lambda x: x.transpose(0, 1), "TransposeBackward0"),
    (lambda x: x.permute(1, 0), "PermuteBackward0"),
    (lambda x: x.unsqueeze(0), "UnsqueezeBackward0"),
    (lambda x: x.expand(3, 2, 3), "ExpandBackward0"),
    (lambda x: x[0], "SelectBackward0"),
    (lambda x: x[:, 1:], "SliceBackward0"),
    (lambda x: x.double(), "ToCopyBackward0"),
    (lambda x: x.max(), "MaxBackward1"),
]


@pytest.mark.parametrize("expr,name", GRAD_FN_NAMES, ids=[n for _, n in GRAD_FN_NAMES])
def test_grad_fn_names_match_torch(expr, name):
    t = expr(leaf(torch, np.abs(X) + 0.1))
    assert t.grad_fn.name() == name  # the table is right about torch
    f = expr(leaf(fluxion, np.abs(X) + 0.1))
    assert f.grad_fn.name() == name


def test_matmul_grad_fn_name():
    for lib in LIBS:
        a, b = leaf(lib, X), leaf(lib, W)
        assert (a @ b).grad_fn.name() == "MmBackward0"


def test_requires_grad_():
    x = fluxion.ones(2)
    assert x.requires_grad_() is x and x.requires_grad
    x.requires_grad_(False)
    assert not x.requires_grad
    with pytest.raises(RuntimeError, match="floating point"):
        fluxion.ones(2, dtype=fluxion.int64).requires_grad_()
    y = fluxion.ones(2, requires_grad=True) * 2
    with pytest.raises(RuntimeError, match="leaf"):
        y.requires_grad_(False)
    with pytest.raises(RuntimeError):
        torch.ones(2, requires_grad=True).mul(2).requires_grad_(False)


def test_detach_cuts_the_graph():
    for lib in LIBS:
        x = leaf(lib, [1.0, 2.0])
        y = x * 3
        d = y.detach()
        assert not d.requires_grad and d.is_leaf
        z = (y * d).sum()  # d is a constant
        z.backward()
        assert x.grad.tolist() == [9.0, 18.0]
    x = leaf(fluxion, [1.0, 2.0])
    y = (x * 3).detach_()
    assert not y.requires_grad and y.grad_fn is None


# --- backward -----------------------------------------------------------------------------------
def test_backward_scalar_and_gradient_argument():
    res = {}
    for lib in LIBS:
        x = leaf(lib, X)
        y = (x * x).sum()
        y.backward()
        g1 = x.grad.clone()
        x.grad = None
        z = x.sin() * 2
        z.backward(lib.tensor(W.T))
        res[lib] = (g1, x.grad)
    close(res[fluxion][0], res[torch][0])
    close(res[fluxion][1], res[torch][1])


def test_backward_needs_gradient_for_non_scalars():
    x = leaf(fluxion, [1.0, 2.0])
    with pytest.raises(RuntimeError, match="scalar outputs"):
        (x * 2).backward()
    with pytest.raises(RuntimeError, match="shape"):
        (x * 2).backward(fluxion.ones(3))
    # a one-element non-scalar works like torch
    for lib in LIBS:
        x = leaf(lib, [3.0])
        (x * 2).backward()
        assert x.grad.tolist() == [2.0]


def test_backward_without_grad_raises():
    for lib in LIBS:
        with pytest.raises(RuntimeError, match="does not require grad"):
            (lib.ones(2) * 2).sum().backward()


def test_backward_on_a_leaf():
    for lib in LIBS:
        x = leaf(lib, [1.0, 2.0])
        x.backward(lib.tensor([3.0, 4.0]))
        assert x.grad.tolist() == [3.0, 4.0]


def test_gradient_accumulates_across_backward_calls():
    res = {}
    for lib in LIBS:
        x = leaf(lib, X)
        (x ** 2).sum().backward()
        (x * 3).sum().backward()
        g = x.grad.clone()
        x.grad.zero_()
        x.exp().sum().backward()
        g2 = x.grad.clone()
        x.grad = None
        x.exp().sum().backward()
        res[lib] = (g, g2, x.grad)
    for f, t in zip(res[fluxion], res[torch]):
        close(f, t)


def test_grad_is_a_fresh_tensor_not_aliasing_other_grads():
    """``a + b`` sends one gradient to both inputs; their ``.grad`` must not alias."""
    a = leaf(fluxion, [1.0, 2.0])
    b = leaf(fluxion, [3.0, 4.0])
    (a + b).sum().backward()
    a.grad.add_(10)
    assert b.grad.tolist() == [1.0, 1.0]
    c = leaf(fluxion, [[1.0], [2.0]])
    (c.expand(2, 3) * 1).sum().backward()  # gradient comes through a broadcast
    c.grad.mul_(2)
    assert c.grad.tolist() == [[6.0], [6.0]]


def test_retain_graph_allows_second_backward():
    res = {}
    for lib in LIBS:
        x = leaf(lib, X)
        y = (x.exp() * x.sin()).sum()
        y.backward(retain_graph=True)
        y.backward()
        res[lib] = x.grad
    close(res[fluxion], res[torch])


@pytest.mark.parametrize("op", ["exp", "mul", "sin", "pow", "matmul", "sigmoid", "tanh"])
def test_second_backward_through_freed_graph_raises(op):
    for lib in LIBS:
        x = leaf(lib, X)
        y = {
            "exp": lambda: x.exp(), "mul": lambda: x * x, "sin": lambda: x.sin(),
            "pow": lambda: x ** 3, "matmul": lambda: x @ x.t(), "sigmoid": lambda: x.sigmoid(),
            "tanh": lambda: x.tanh(),
        }[op]().sum()
        y.backward()
        with pytest.raises(RuntimeError, match="backward through the graph a second time"):
            y.backward()


def test_freed_graph_error_from_autograd_grad():
    x = leaf(fluxion, [1.0, 2.0])
    y = (x * x).sum()
    fluxion.autograd.grad(y, x)
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        fluxion.autograd.grad(y, x)


def test_backward_inputs_argument():
    res = {}
    for lib in LIBS:
        a, b = leaf(lib, X), leaf(lib, X.T)
        y = (a @ b).sum()
        y.backward(inputs=[a], retain_graph=True)
        ga, gb = a.grad.clone(), b.grad
        y.backward(inputs=b)
        res[lib] = (ga, gb, a.grad, b.grad)
    for f, t in zip(res[fluxion], res[torch]):
        close(f, t)


def test_backward_inputs_with_non_leaf():
    res = {}
    for lib in LIBS:
        x = leaf(lib, X)
        h = x * 2
        y = (h * h).sum()
        y.backward(inputs=[h, x])
        res[lib] = (h.grad, x.grad)
    for f, t in zip(res[fluxion], res[torch]):
        close(f, t)


def test_autograd_backward_function_with_several_roots():
    res = {}
    for lib in LIBS:
        x = leaf(lib, X)
        y1 = (x * 2).sum()
        y2 = x.exp()
        lib.autograd.backward([y1, y2], [lib.tensor(1.5), lib.ones(2, 3)])
        res[lib] = x.grad
    close(res[fluxion], res[torch])


# --- autograd.grad ------------------------------------------------------------------------------
def test_grad_with_grad_outputs_multiple_inputs():
    res = {}
    for lib in LIBS:
        a, b = leaf(lib, X), leaf(lib, W)
        y = (a @ b).tanh()
        go = lib.tensor(np.arange(4.0).reshape(2, 2), dtype=lib.float32)
        ga, gb = lib.autograd.grad(y, [a, b], grad_outputs=go)
        assert a.grad is None and b.grad is None  # grad() does not accumulate
        assert not ga.requires_grad
        res[lib] = (ga, gb)
    for f, t in zip(res[fluxion], res[torch]):
        close(f, t)


def test_grad_allow_unused():
    for lib in LIBS:
        a, b = leaf(lib, [1.0]), leaf(lib, [2.0])
        y = (a * 3).sum()
        with pytest.raises(RuntimeError, match="allow_unused"):
            lib.autograd.grad(y, [a, b], retain_graph=True)
        ga, gb = lib.autograd.grad(y, [a, b], allow_unused=True, retain_graph=True)
        assert ga.tolist() == [3.0] and gb is None
        ga, gb = lib.autograd.grad(y, [a, b], allow_unused=True, materialize_grads=True)
        assert gb.tolist() == [0.0]


def test_grad_of_non_leaf_input():
    res = {}
    for lib in LIBS:
        x = leaf(lib, X)
        h = x.sin()
        y = (h * h).sum()
        (gh,) = lib.autograd.grad(y, h)
        res[lib] = gh
    close(res[fluxion], res[torch])


def test_grad_returns_tuple_and_accepts_single_tensors():
    x = leaf(fluxion, [1.0, 2.0])
    out = fluxion.autograd.grad((x * x).sum(), x)
    assert isinstance(out, tuple) and len(out) == 1
    out = fluxion.autograd.grad([(x * x).sum(), x.sum()], [x])
    assert out[0].tolist() == [3.0, 5.0]


def test_grad_input_that_does_not_require_grad():
    for lib in LIBS:
        x = leaf(lib, [1.0])
        c = lib.ones(1)
        with pytest.raises(RuntimeError):
            lib.autograd.grad((x * c).sum(), c)


# --- retain_grad and hooks ------------------------------------------------------------------------
def test_retain_grad_on_non_leaf():
    res = {}
    for lib in LIBS:
        x = leaf(lib, X)
        h = x * 2
        h.retain_grad()
        k = h.exp()
        assert h.retains_grad and not k.retains_grad
        y = (k * 3).sum()
        y.backward(retain_graph=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns on .grad of a non-leaf
            assert k.grad is None
        g1 = h.grad.clone()
        y.backward()
        res[lib] = (g1, h.grad, x.grad)
    for f, t in zip(res[fluxion], res[torch]):
        close(f, t)


def test_retain_grad_then_inplace_retains_the_new_version():
    """retain_grad follows the tensor through in-place ops: .grad is the gradient of its
    latest value (torch moves the retains-grad hook to the new grad_fn)."""
    res = {}
    for lib in LIBS:
        x = leaf(lib, [1.0, 2.0])
        h = x * 2
        h.retain_grad()
        h.mul_(3)
        (h * h).sum().backward()
        res[lib] = (h.grad, x.grad)
    for f, t in zip(res[fluxion], res[torch]):
        close(f, t)


def test_hook_registered_before_inplace_sees_old_version():
    res = {}
    for lib in LIBS:
        x = leaf(lib, [1.0, 2.0])
        h = x * 2
        seen = []
        h.register_hook(lambda g: seen.append(g.clone()))
        h.mul_(3)
        (h * h).sum().backward()
        res[lib] = (seen[0], x.grad, len(seen))
    f, t = res[fluxion], res[torch]
    close(f[0], t[0])
    close(f[1], t[1])
    assert f[2] == t[2]


def test_retain_grad_on_leaf_is_a_no_op():
    x = leaf(fluxion, [1.0])
    x.retain_grad()
    (x * 2).sum().backward()
    assert x.grad.tolist() == [2.0]


def test_hook_on_leaf_modifies_grad():
    res = {}
    for lib in LIBS:
        x = leaf(lib, X)
        seen = []
        h = x.register_hook(lambda g: seen.append(g.clone()))
        h2 = x.register_hook(lambda g: g * 10)
        (x * 3).sum().backward()
        g1 = x.grad.clone()
        h2.remove()
        x.grad = None
        (x * 3).sum().backward()
        g2 = x.grad.clone()
        h.remove()
        (x * 3).sum().backward()
        res[lib] = (g1, g2, x.grad, len(seen), seen[0])
    f, t = res[fluxion], res[torch]
    close(f[0], t[0])
    close(f[1], t[1])
    close(f[2], t[2])
    assert f[3] == t[3] == 2
    close(f[4], t[4])


def test_leaf_hook_runs_once_on_the_total_gradient():
    """A leaf used twice gets one hook call with the summed gradient (not one per use)."""
    res = {}
    for lib in LIBS:
        x = leaf(lib, [1.0, 2.0])
        calls = []
        x.register_hook(lambda g: (calls.append(g.clone()), g * g)[1])
        (x * x + x.exp()).sum().backward()
        res[lib] = (x.grad, len(calls), calls[0])
    f, t = res[fluxion], res[torch]
    assert f[1] == t[1] == 1
    close(f[2], t[2])
    close(f[0], t[0])


def test_hook_on_non_leaf_changes_upstream_gradient():
    res = {}
    for lib in LIBS:
        x = leaf(lib, X)
        h = x.sin()
        calls = []
        handle = h.register_hook(lambda g: (calls.append(1), g * 2 + 1)[1])
        y = (h * h).sum()
        y.backward(retain_graph=True)
        g1 = x.grad.clone()
        handle.remove()
        x.grad = None
        y.backward()
        res[lib] = (g1, x.grad, len(calls))
    f, t = res[fluxion], res[torch]
    close(f[0], t[0])
    close(f[1], t[1])
    assert f[2] == t[2] == 1


def test_hook_order_and_retain_grad_sees_hooked_value():
    res = {}
    for lib in LIBS:
        x = leaf(lib, [1.0, 2.0])
        h = x * 3
        h.register_hook(lambda g: g + 1)
        h.retain_grad()
        h.register_hook(lambda g: g * 10)
        (h * h).sum().backward()
        res[lib] = (h.grad, x.grad)
    for f, t in zip(res[fluxion], res[torch]):
        close(f, t)


def test_leaf_hook_runs_for_autograd_grad():
    res = {}
    for lib in LIBS:
        x = leaf(lib, [1.0, 2.0])
        seen = []
        x.register_hook(lambda g: (seen.append(g.clone()), g * 3)[1])
        (g,) = lib.autograd.grad((x * x).sum(), x)
        res[lib] = (g, len(seen))
    close(res[fluxion][0], res[torch][0])
    assert res[fluxion][1] == res[torch][1] == 1


def test_hook_requires_grad():
    for lib in LIBS:
        with pytest.raises(RuntimeError):
            lib.ones(2).register_hook(lambda g: g)


def test_hook_gets_grad_with_autograd_grad():
    res = {}
    for lib in LIBS:
        x = leaf(lib, [1.0, 2.0])
        h = x * x
        h.register_hook(lambda g: g * 5)
        (g,) = lib.autograd.grad(h.sum(), x)
        res[lib] = g
    close(res[fluxion], res[torch])


# --- grad modes -----------------------------------------------------------------------------------
def test_no_grad_and_enable_grad_contexts():
    x = leaf(fluxion, [1.0])
    with fluxion.no_grad():
        assert not fluxion.is_grad_enabled()
        y = x * 2
        assert not y.requires_grad and y.grad_fn is None
        with fluxion.enable_grad():
            assert fluxion.is_grad_enabled()
            assert (x * 2).requires_grad
        assert not fluxion.is_grad_enabled()
    assert fluxion.is_grad_enabled()
    assert (x * 2).requires_grad


def test_grad_mode_restored_after_exception():
    with pytest.raises(ValueError), fluxion.no_grad():
        raise ValueError("boom")
    assert fluxion.is_grad_enabled()
    with pytest.raises(ValueError), fluxion.inference_mode():
        raise ValueError("boom")
    assert fluxion.is_grad_enabled()


def test_grad_mode_decorators():
    x = leaf(fluxion, [1.0])

    @fluxion.no_grad()
    def f():
        return x * 2, fluxion.is_grad_enabled()

    @fluxion.enable_grad()
    def g():
        return x * 2

    @fluxion.inference_mode()
    def h():
        return x * 2

    @fluxion.set_grad_enabled(False)
    def k():
        return x * 2

    assert fluxion.is_grad_enabled()  # building the decorator did not flip the mode
    y, mode = f()
    assert not y.requires_grad and mode is False
    with fluxion.no_grad():
        assert g().requires_grad
    assert not h().requires_grad
    assert not k().requires_grad
    assert fluxion.is_grad_enabled()
    assert f.__name__ == "f"


def test_no_grad_decorator_without_parentheses():
    x = leaf(fluxion, [1.0])

    @fluxion.no_grad
    def f():
        return x * 2

    assert not f().requires_grad
    assert fluxion.is_grad_enabled()


def test_set_grad_enabled_forms():
    x = leaf(fluxion, [1.0])
    fluxion.set_grad_enabled(False)
    try:
        assert not fluxion.is_grad_enabled()
        assert not (x * 2).requires_grad
    finally:
        fluxion.set_grad_enabled(True)
    assert fluxion.is_grad_enabled()
    with fluxion.set_grad_enabled(False):
        assert not (x * 2).requires_grad
    assert fluxion.is_grad_enabled()
    with fluxion.no_grad(), fluxion.set_grad_enabled(True):
        assert (x * 2).requires_grad


def test_inference_mode():
    x = leaf(fluxion, [1.0])
    with fluxion.inference_mode():
        assert not fluxion.is_grad_enabled()
        assert not (x * 2).requires_grad
    with fluxion.inference_mode(False):
        assert (x * 2).requires_grad
    assert fluxion.autograd.grad_mode.inference_mode is fluxion.inference_mode
    assert fluxion.autograd.no_grad is fluxion.no_grad


def test_in_place_parameter_update_under_no_grad():
    res = {}
    for lib in LIBS:
        w = leaf(lib, W)
        (w * w).sum().backward()
        with lib.no_grad():
            w -= 0.1 * w.grad
            w.grad.zero_()
        assert w.is_leaf and w.requires_grad and w.grad_fn is None
        (w ** 3).sum().backward()
        res[lib] = (w, w.grad)
    for f, t in zip(res[fluxion], res[torch]):
        close(f, t)


# --- higher order ---------------------------------------------------------------------------------
def test_third_derivative_of_x4():
    res = {}
    for lib in LIBS:
        x = leaf(lib, [1.0, 2.0, -0.5], "float64")
        y = (x ** 4).sum()
        (g1,) = lib.autograd.grad(y, x, create_graph=True)
        (g2,) = lib.autograd.grad(g1.sum(), x, create_graph=True)
        (g3,) = lib.autograd.grad(g2.sum(), x)
        assert g1.requires_grad and g2.requires_grad
        res[lib] = (g1, g2, g3)
    for f, t in zip(res[fluxion], res[torch]):
        close(f, t)
    assert res[fluxion][2].tolist() == [24.0, 48.0, -12.0]


@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True")
def test_backward_create_graph_then_grad_of_grad():
    res = {}
    for lib in LIBS:
        x = leaf(lib, [0.3, -1.1], "float64")
        y = (x.sin() * x ** 2).sum()
        y.backward(create_graph=True)
        g = x.grad
        assert g.requires_grad and g.grad_fn is not None
        x.grad = None
        g.sum().backward()
        res[lib] = (g, x.grad)
    for f, t in zip(res[fluxion], res[torch]):
        close(f, t)


def test_hessian_vector_product():
    A = np.array([[2.0, 0.5, 0.1], [0.5, 1.0, -0.3], [0.1, -0.3, 3.0]])
    res = {}
    for lib in LIBS:
        x = leaf(lib, [0.2, -0.4, 0.9], "float64")
        a = lib.tensor(A)
        v = lib.tensor([1.0, -2.0, 0.5], dtype=lib.float64)
        f = 0.5 * (x @ (a @ x)) + (x ** 3).sum() + (x.sin() * x.exp()).sum()
        (g,) = lib.autograd.grad(f, x, create_graph=True)
        (hv,) = lib.autograd.grad(g, x, grad_outputs=v)
        res[lib] = (g, hv)
    for f, t in zip(res[fluxion], res[torch]):
        close(f, t)


SECOND_ORDER = {
    "tanh": lambda lib, x, w: x.tanh(),
    "sigmoid": lambda lib, x, w: x.sigmoid(),
    "exp": lambda lib, x, w: x.exp(),
    "log": lambda lib, x, w: (x * x + 1).log(),
    "softmax": lambda lib, x, w: lib.nn.functional.softmax(x, dim=1),
    "log_softmax": lambda lib, x, w: lib.nn.functional.log_softmax(x, dim=-1),
    "nn_softmax": lambda lib, x, w: lib.nn.functional.softmax(x * 2, dim=0),
    "matmul": lambda lib, x, w: (x @ w) * (x @ w),
    "matmul_tanh": lambda lib, x, w: (x @ w).tanh() @ w.t(),
    "div": lambda lib, x, w: x / (x * x + 1),
    "pow": lambda lib, x, w: (x * x + 0.5) ** 1.5,
    "sqrt": lambda lib, x, w: (x * x + 1).sqrt(),
    "relu_sq": lambda lib, x, w: x.relu() ** 2,
    "mean_var": lambda lib, x, w: (x - x.mean(1, keepdim=True)) ** 2,
    "max": lambda lib, x, w: x.amax(1) ** 2,
    "logsumexp": lambda lib, x, w: x.logsumexp(1),
    "broadcast": lambda lib, x, w: x * x[0],
}


@pytest.mark.parametrize("name", list(SECOND_ORDER))
def test_grad_of_grad_matches_torch(name):
    fn = SECOND_ORDER[name]
    res = {}
    for lib in LIBS:
        x = leaf(lib, X, "float64")
        w = leaf(lib, W, "float64")
        out = fn(lib, x, w)
        go = lib.tensor(np.linspace(-1, 1, out.numel()).reshape(tuple(out.shape)),
                        dtype=lib.float64)
        gx, gw = lib.autograd.grad(out, [x, w], grad_outputs=go, create_graph=True,
                                   allow_unused=True)
        target = (gx * gx).sum() + (gx.sin().sum() if gw is None else (gw * gw).sum())
        ggx, ggw = lib.autograd.grad(target, [x, w], allow_unused=True)
        res[lib] = (gx, gw, ggx, ggw)
    for f, t in zip(res[fluxion], res[torch]):
        close(f, t, rtol=1e-7, atol=1e-9)


def test_gradcheck_and_gradgradcheck():
    x = fluxion.tensor(X, dtype=fluxion.float64, requires_grad=True)
    w = fluxion.tensor(W, dtype=fluxion.float64, requires_grad=True)
    assert fluxion.autograd.gradcheck(lambda a, b: (a @ b).tanh(), (x, w))
    assert fluxion.autograd.gradgradcheck(lambda a, b: (a @ b).sigmoid(), (x, w))


def test_second_order_through_inplace_writes():
    res = {}
    for lib in LIBS:
        x = leaf(lib, [0.5, 2.0, -1.0], "float64")
        y = x * 1
        y[0] = x[1] ** 2
        y[1:].mul_(x[:2])
        (g,) = lib.autograd.grad((y ** 3).sum(), x, create_graph=True)
        (gg,) = lib.autograd.grad((g * g).sum(), x)
        res[lib] = (g, gg)
    for f, t in zip(res[fluxion], res[torch]):
        close(f, t)


# --- custom Function ----------------------------------------------------------------------------
def _exp_function(lib):
    class MyExp(lib.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            y = x.exp()
            ctx.save_for_backward(y)
            return y

        @staticmethod
        def backward(ctx, g):
            (y,) = ctx.saved_tensors
            return g * y

    return MyExp


def test_function_save_for_backward():
    res = {}
    for lib in LIBS:
        f = _exp_function(lib)
        x = leaf(lib, X)
        y = f.apply(x)
        assert y.requires_grad and not y.is_leaf
        (y * 2).sum().backward()
        res[lib] = (y, x.grad)
    for f, t in zip(res[fluxion], res[torch]):
        close(f, t)


def test_function_needs_input_grad_and_non_tensor_args():
    res = {}
    for lib in LIBS:
        seen = {}

        class Scale(lib.autograd.Function):
            @staticmethod
            def forward(ctx, x, k, w, mode="mul"):
                ctx.k, ctx.mode = k, mode
                ctx.save_for_backward(x, w)
                seen["needs"] = tuple(ctx.needs_input_grad)
                return x * w * k

            @staticmethod
            def backward(ctx, g):
                x, w = ctx.saved_tensors
                gx = g * w * ctx.k if ctx.needs_input_grad[0] else None
                gw = g * x * ctx.k if ctx.needs_input_grad[2] else None
                return gx, None, gw, None

        x = leaf(lib, X)
        w = lib.tensor(X * 2 + 1)
        Scale.apply(x, 3.0, w, "mul").sum().backward()
        res[lib] = (x.grad, seen["needs"])
    close(res[fluxion][0], res[torch][0])
    assert res[fluxion][1] == res[torch][1] == (True, False, False, False)


def test_function_multiple_outputs():
    res = {}
    for lib in LIBS:
        class SinCos(lib.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                ctx.save_for_backward(x)
                return x.sin(), x.cos()

            @staticmethod
            def backward(ctx, gs, gc):
                (x,) = ctx.saved_tensors
                return gs * x.cos() - gc * x.sin()

        x = leaf(lib, X)
        s, c = SinCos.apply(x)
        (s * 2 + c * c).sum().backward()
        g_both = x.grad.clone()
        x.grad = None
        s, c = SinCos.apply(x)
        s.sum().backward()  # the unused output's gradient arrives as zeros
        res[lib] = (g_both, x.grad)
    for f, t in zip(res[fluxion], res[torch]):
        close(f, t)


def test_function_mark_non_differentiable():
    res = {}
    for lib in LIBS:
        class SortVals(lib.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                vals, idx = x.sort()
                ctx.mark_non_differentiable(idx)
                ctx.save_for_backward(idx)
                return vals, idx

            @staticmethod
            def backward(ctx, g, g_idx):
                (idx,) = ctx.saved_tensors
                out = lib.zeros_like(g)
                return out.scatter(-1, idx, g)

        x = leaf(lib, [[3.0, 1.0, 2.0]])
        v, i = SortVals.apply(x)
        assert v.requires_grad and not i.requires_grad
        (v * lib.tensor([1.0, 10.0, 100.0])).sum().backward()
        res[lib] = x.grad
    close(res[fluxion], res[torch])


def test_function_without_grad_inputs_or_under_no_grad():
    f = _exp_function(fluxion)
    out = f.apply(fluxion.ones(2))
    assert not out.requires_grad and out.grad_fn is None
    x = leaf(fluxion, [1.0])
    with fluxion.no_grad():
        assert not f.apply(x).requires_grad


def test_function_grad_fn_name_and_second_backward_freed():
    f = _exp_function(fluxion)
    x = leaf(fluxion, [1.0, 2.0])
    y = f.apply(x)
    assert y.grad_fn.name() == "MyExpBackward"
    assert repr(y).endswith("grad_fn=<MyExpBackward>)")
    y.sum().backward()
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        y.sum().backward()


def test_function_saved_tensor_modified_in_place():
    for lib in LIBS:
        f = _exp_function(lib)
        x = leaf(lib, [1.0, 2.0])
        y = f.apply(x)
        y.add_(1)
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            y.sum().backward()


def test_function_wrong_number_of_gradients():
    class Bad(fluxion.autograd.Function):
        @staticmethod
        def forward(ctx, x, w):
            return x * w

        @staticmethod
        def backward(ctx, g):
            return g

    x, w = leaf(fluxion, [1.0]), leaf(fluxion, [2.0])
    with pytest.raises(RuntimeError, match="incorrect number of gradients"):
        Bad.apply(x, w).sum().backward()


def test_function_double_backward():
    res = {}
    for lib in LIBS:
        class Cube(lib.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                ctx.save_for_backward(x)
                return x ** 3

            @staticmethod
            def backward(ctx, g):
                (x,) = ctx.saved_tensors
                return g * 3 * x ** 2

        x = leaf(lib, [1.0, -2.0], "float64")
        (g,) = lib.autograd.grad(Cube.apply(x).sum(), x, create_graph=True)
        (gg,) = lib.autograd.grad(g.sum(), x)
        res[lib] = (g, gg)
    for f, t in zip(res[fluxion], res[torch]):
        close(f, t)


# --- in-place modification of saved tensors -------------------------------------------------------
@pytest.mark.parametrize("case,node", [
    ("exp_output", "ExpBackward0"),
    ("sin_input", "SinBackward0"),
    ("mul_input", "MulBackward0"),
    ("pow_input", "PowBackward0"),
    ("sigmoid_output", "SigmoidBackward0"),
    ("tanh_output", "TanhBackward0"),
    ("mm_input", None),  # fluxion's own name for the matmul node
    ("detached_alias", "MulBackward0"),
])
def test_modified_saved_tensor_raises_naming_the_op(case, node):
    """torch names the op that produced the modified tensor; fluxion names the op that
    saved it (the one whose backward can no longer run). Both refuse."""
    for lib in LIBS:
        x = leaf(lib, X)
        h = x * 1
        if case == "exp_output":
            y = h.exp()
            saver = y.grad_fn.name()
            y.mul_(2)
        elif case == "sin_input":
            y = h.sin()
            saver = y.grad_fn.name()
            h.add_(1)
        elif case == "mul_input":
            y = h * h
            saver = y.grad_fn.name()
            h[0, 0] = 3.0
        elif case == "pow_input":
            y = h ** 2
            saver = y.grad_fn.name()
            h.view(-1)[1] = 0.0  # through a view
        elif case == "sigmoid_output":
            y = h.sigmoid()
            saver = y.grad_fn.name()
            y[0].zero_()
        elif case == "tanh_output":
            y = h.tanh()
            saver = y.grad_fn.name()
            y.clamp_(-0.5, 0.5)
        elif case == "mm_input":
            w = leaf(lib, W)
            y = h @ w
            saver = y.grad_fn.name()
            w.data.mul_(1)  # .data writes are invisible to autograd: no error from this one
            h.mul_(2)
        else:
            y = x * x
            saver = y.grad_fn.name()
            x.detach().mul_(2)  # shares the leaf's version counter
        with pytest.raises(RuntimeError) as info:
            y.sum().backward()
        msg = str(info.value)
        assert "modified by an inplace operation" in msg
        if lib is fluxion:
            assert saver in msg, msg
            if node is not None:
                assert node in msg, msg


def test_inplace_after_backward_is_fine():
    x = leaf(fluxion, [1.0, 2.0])
    h = x * 1
    y = h.exp()
    y.sum().backward()
    y.add_(1)  # the graph is freed: nothing left to check
    assert y.tolist() == pytest.approx([np.e + 1, np.e ** 2 + 1])


# --- anomaly mode ---------------------------------------------------------------------------------
def _sqrt_nan_case(lib):
    x = lib.tensor([0.0, 1.0], requires_grad=True)
    lineno = inspect.currentframe().f_lineno + 1
    y = x.sqrt() * 0
    return x, y.sum(), lineno


def test_detect_anomaly_names_op_and_user_line():
    with fluxion.autograd.detect_anomaly():
        _, loss, lineno = _sqrt_nan_case(fluxion)
        with pytest.raises(RuntimeError) as info:
            loss.backward()
    msg = str(info.value)
    assert "SqrtBackward0" in msg and "nan" in msg
    assert f"{os.path.basename(__file__)}:{lineno}" in msg, msg
    assert not fluxion.autograd.is_anomaly_enabled()
    # torch agrees that this is a NaN in SqrtBackward0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns that anomaly mode is slow
        with torch.autograd.detect_anomaly():
            _, tloss, _ = _sqrt_nan_case(torch)
            with pytest.raises(RuntimeError, match="SqrtBackward0"):
                tloss.backward()


def test_set_detect_anomaly_global():
    fluxion.autograd.set_detect_anomaly(True)
    try:
        assert fluxion.autograd.is_anomaly_enabled()
        x = fluxion.tensor([0.0, 2.0], requires_grad=True)
        lineno = inspect.currentframe().f_lineno + 1
        y = x.log()
        with pytest.raises(RuntimeError) as info:
            (y * 0).sum().backward()
        msg = str(info.value)
        assert "LogBackward0" in msg
        assert f"{os.path.basename(__file__)}:{lineno}" in msg, msg
    finally:
        fluxion.autograd.set_detect_anomaly(False)
    assert not fluxion.autograd.is_anomaly_enabled()


def test_without_anomaly_mode_nan_just_propagates():
    x, loss, _ = _sqrt_nan_case(fluxion)
    loss.backward()
    g = x.grad.tolist()
    assert np.isnan(g[0]) and g[1] == 0.0
    tx, tloss, _ = _sqrt_nan_case(torch)
    tloss.backward()
    assert np.isnan(tx.grad[0].item())


def test_anomaly_mode_decorator_and_clean_backward():
    @fluxion.autograd.detect_anomaly()
    def run():
        assert fluxion.autograd.is_anomaly_enabled()
        x = leaf(fluxion, [1.0, 4.0])
        x.sqrt().sum().backward()
        return x.grad

    assert run().tolist() == [0.5, 0.25]
    assert not fluxion.autograd.is_anomaly_enabled()


# --- dtypes and shapes of gradients ---------------------------------------------------------------
def test_grad_dtype_follows_leaf():
    res = {}
    for lib in LIBS:
        x = leaf(lib, [1.0, 2.0], "float32")
        d = leaf(lib, [1.0, 2.0], "float64")
        h = leaf(lib, [1.0, 2.0], "float16")
        (x.double() * d + h.float().double()).sum().backward()
        res[lib] = (x.grad, d.grad, h.grad)
    for f, t in zip(res[fluxion], res[torch]):
        close(f, t)


def test_broadcast_gradients_reduce_to_input_shapes():
    res = {}
    for lib in LIBS:
        a = leaf(lib, np.arange(3.0).reshape(3, 1))
        b = leaf(lib, np.arange(4.0).reshape(1, 4))
        c = leaf(lib, [2.0])
        s = leaf(lib, 1.5)
        ((a * b + c) * s).pow(2).sum().backward()
        res[lib] = (a.grad, b.grad, c.grad, s.grad)
    for f, t in zip(res[fluxion], res[torch]):
        close(f, t)


def test_gradient_through_integer_and_bool_operands():
    res = {}
    for lib in LIBS:
        x = leaf(lib, X)
        m = x > 0
        i = lib.tensor([[1, 2, 3], [4, 5, 6]])
        (x * i + x * m + lib.where(m, x, 2 * x)).sum().backward()
        res[lib] = x.grad
    close(res[fluxion], res[torch])


def test_same_tensor_used_many_times():
    res = {}
    for lib in LIBS:
        x = leaf(lib, X)
        y = x
        for _ in range(5):
            y = y * x + x.sin()
        y.sum().backward()
        res[lib] = x.grad
    close(res[fluxion], res[torch], rtol=1e-4)


def test_deep_chain_does_not_recurse():
    x = leaf(fluxion, [1.0])
    y = x
    for _ in range(5000):
        y = y * 1.0
    y.sum().backward()
    assert x.grad.tolist() == [1.0]


def test_next_functions_and_accumulate_grad():
    x = leaf(fluxion, [1.0])
    c = fluxion.ones(1)
    y = x * c
    fns = y.grad_fn.next_functions
    tfns = (leaf(torch, [1.0]) * torch.ones(1)).grad_fn.next_functions
    assert len(fns) == len(tfns) == 2
    assert fns[0][0].name() == "AccumulateGrad"
    assert tfns[0][0].name().endswith("AccumulateGrad")
    assert fns[0][0].variable is x
    assert fns[1][0] is None and tfns[1][0] is None
    z = (x * 2).exp()
    assert z.grad_fn.next_functions[0][0].name() == "MulBackward0"
