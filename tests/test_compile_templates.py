"""The C templates for library ops (unfold, fold, max_dim/min_dim, scatter, scatter_add,
gather, softmax, nll_loss, layer_norm and their gradients): compiled results are
bit-identical (softmax, layer norm, a reduced nll_loss: within a few ulps) to eager's NumPy
kernels on contiguous and strided (in-graph view) inputs, NaN and ties included; the
template really ran (the graph holds its kernel); inputs the C does not handle (an index
out of range) raise eager's error; and gradients of convolution and max-pooling through
them match eager and PyTorch."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import fluxion
import fluxion.nn.functional as F
from fluxion.compiler import cache, runtime
from fluxion.compiler.graph import GNode, Graph

HAVE_CC = cache.toolchain(fluxion.compiler.config.cc) is not None
pytestmark = pytest.mark.skipif(not HAVE_CC, reason="no working C compiler (CC)")


@pytest.fixture(autouse=True)
def _hermetic_cache(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fluxion.compiler.config, "cache_dir", str(tmp_path / "kernels"))
    # products keep the orientation the graph gives (no timing decides their layout)
    monkeypatch.setattr(fluxion.compiler.config, "autotune", False)


def _templated_ops(cf: fluxion.compiler.CompiledFunction) -> set[str]:
    return {p.graph.nodes[k.root].op for p in cf.last_programs for k in p.kernels
            if k.template}


def _same(got: Any, want: Any) -> None:
    got = got if isinstance(got, tuple) else (got,)
    want = want if isinstance(want, tuple) else (want,)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        g, w = g.numpy(), w.numpy()
        assert g.dtype == w.dtype and g.shape == w.shape
        assert np.array_equal(g, w, equal_nan=True), np.max(np.abs(g - w))
        # bit-identical: signed zeros too
        assert np.array_equal(np.signbit(g), np.signbit(w))


def check(fn: Callable[..., Any], *args: Any, op: str) -> None:
    cf = fluxion.compile(fn)
    with pytest.MonkeyPatch.context() as mp:  # the C ran: no fallback to the NumPy kernel
        mp.setattr(runtime.Program, "_library_value", _no_fallback)
        _same(cf(*args), fn(*args))
    assert op in _templated_ops(cf), f"{op} did not run as a C template"


def _no_fallback(self: Any, i: int, env: dict) -> Any:
    raise AssertionError(f"node %{i} ({self.graph.nodes[i].op}) fell back to NumPy")


DTYPES = [np.float32, np.float64]
LAYOUTS = {  # an in-graph view in front of the op: the template reads it through strides
    "contiguous": lambda x: x,
    "permuted": lambda x: x.permute(0, 1, 3, 2),
    "sliced": lambda x: x[:, :, 1:, ::2],
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("kernel,stride,dilation", [
    (3, 1, 1), ((2, 3), (2, 1), 1), (2, 2, 1), (3, 2, 2), (1, 1, 1)])
def test_unfold_matches_eager(dtype: Any, layout: str, kernel: Any, stride: Any,
                              dilation: Any) -> None:
    rng = np.random.default_rng(0)
    x = fluxion.tensor(rng.standard_normal((2, 3, 9, 11)).astype(dtype))
    view = LAYOUTS[layout]
    check(lambda t: F.unfold(view(t * 1), kernel, dilation=dilation, stride=stride) + 0, x,
          op="unfold")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel,stride,dilation", [
    (3, 1, 1), ((2, 3), (2, 1), 1), (2, 2, 1), (3, 2, 2), (5, 1, 1)])
def test_fold_matches_eager(dtype: Any, kernel: Any, stride: Any, dilation: Any) -> None:
    rng = np.random.default_rng(1)
    size = (12, 10)
    k = (kernel, kernel) if isinstance(kernel, int) else kernel
    s = (stride, stride) if isinstance(stride, int) else stride
    d = (dilation, dilation) if isinstance(dilation, int) else dilation
    blocks = [(size[i] - d[i] * (k[i] - 1) - 1) // s[i] + 1 for i in range(2)]
    cols = rng.standard_normal((2, 4 * k[0] * k[1], blocks[0] * blocks[1])).astype(dtype)
    cols[0, 0, :3] = -0.0  # a tiling fold assigns, so negative zeros survive
    x = fluxion.tensor(cols)
    check(lambda t: F.fold(t * 1, size, kernel, dilation=dilation, stride=stride), x,
          op="fold")
    # a transposed (strided) operand
    xt = fluxion.tensor(np.ascontiguousarray(cols.transpose(0, 2, 1)))
    check(lambda t: F.fold(t.transpose(1, 2) * 1, size, kernel, dilation=dilation,
                           stride=stride), xt, op="fold")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("largest", [True, False])
@pytest.mark.parametrize("dim", [0, 1, 2, -1])
@pytest.mark.parametrize("keepdim", [False, True])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_max_min_dim_match_eager(dtype: Any, largest: bool, dim: int, keepdim: bool,
                                 layout: str) -> None:
    rng = np.random.default_rng(2)
    a = rng.integers(-3, 4, (3, 4, 5, 6)).astype(dtype)  # small integers: many ties
    a[0, 1, 2, 3] = np.nan
    a[1, :, 0, 0] = np.nan  # a whole window of NaN
    a[2, 0, 1, :] = -0.0
    x = fluxion.tensor(a)
    view = LAYOUTS[layout]
    reduce = fluxion.max if largest else fluxion.min
    check(lambda t: tuple(reduce(view(t * 1), dim=dim, keepdim=keepdim)), x,
          op="max_dim" if largest else "min_dim")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dim", [0, 1, 2])
def test_scatter_matches_eager(dtype: Any, dim: int) -> None:
    rng = np.random.default_rng(3)
    base = rng.standard_normal((4, 5, 6)).astype(dtype)
    ishape = [3, 4, 5]
    index = rng.integers(-base.shape[dim], base.shape[dim], ishape)  # negatives wrap
    src = rng.standard_normal(ishape).astype(dtype)
    b, i, s = fluxion.tensor(base), fluxion.tensor(index), fluxion.tensor(src)
    check(lambda b, s: (b * 1).scatter(dim, i, s * 1), b, s, op="scatter")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dim", [0, 1, -1])
def test_scatter_add_matches_eager(dtype: Any, dim: int) -> None:
    """Repeated targets add up in the index's order, as NumPy's ``add.at``: bit-identical;
    the base read through a broadcast view (a gradient's zeros) too."""
    rng = np.random.default_rng(5)
    ishape = [3, 4, 5]
    size = (4, 5, 6)[dim]
    index = rng.integers(-size, size, ishape)  # many repeats, negatives wrap
    src = rng.standard_normal(ishape).astype(dtype)
    i, s = fluxion.tensor(index), fluxion.tensor(src)
    base = fluxion.tensor(rng.standard_normal((4, 5, 6)).astype(dtype))
    check(lambda b, s: (b * 1).scatter_add(dim, i, s * 1), base, s, op="scatter_add")
    zeros = fluxion.zeros((), dtype=base.dtype)
    check(lambda s: zeros.expand(4, 5, 6).scatter_add(dim, i, s * 1), s, op="scatter_add")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dim", [0, 1, -1])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_gather_matches_eager(dtype: Any, dim: int, layout: str) -> None:
    """The loss's pick of each target's log-probability, along any axis and through a
    strided input; its gradient is a scatter_add, both templates."""
    rng = np.random.default_rng(6)
    x = fluxion.tensor(rng.standard_normal((3, 4, 6, 5)).astype(dtype))
    shape = list(LAYOUTS[layout](x).shape)
    size = shape[dim]
    shape[dim] = 2  # fewer picks than the axis holds
    i = fluxion.tensor(rng.integers(-size, size, shape))
    check(lambda t: LAYOUTS[layout](t * 1).gather(dim, i) * 1, x, op="gather")
    w = fluxion.tensor(rng.standard_normal(x.shape).astype(dtype), requires_grad=True)

    def loss(w: Any) -> Any:
        picked = LAYOUTS[layout](w * 1).gather(dim, i)
        (grad,) = fluxion.autograd.grad((picked * picked).sum(), w)
        return grad

    check(loss, w, op="scatter_add")


@pytest.mark.parametrize("op", ["gather", "scatter_add"])
def test_gather_and_scatter_add_bad_index_raise_eagers_error(op: str) -> None:
    x, s = fluxion.zeros(2, 3), fluxion.ones(2, 3)
    i = fluxion.tensor([[0, 1, 2], [0, 3, 1]])  # 3: out of range

    def f(x: Any, s: Any) -> Any:
        return (x * 1).gather(1, i) if op == "gather" else (x * 1).scatter_add(1, i, s * 1)

    with pytest.raises(Exception) as eager:
        f(x, s)
    with pytest.raises(Exception) as compiled:
        fluxion.compile(f)(x, s)
    assert type(compiled.value) is type(eager.value)
    assert str(compiled.value) == str(eager.value)


@pytest.mark.parametrize("src_rows, index, error, words", [
    # a value out of range: the C returns early, the NumPy kernel raises
    (2, [[0, 1, 2], [0, 3, 1]], RuntimeError, "out of bounds"),
    # an index longer than the base off ``dim``: not the template's (the C would write past
    # the output), so the NumPy kernel runs and raises, the op and the shapes named
    (3, [[0, 1, 2]] * 3, IndexError, "scatter: index 2 is out of bounds"),
])
def test_scatter_bad_index_raises_eagers_error(src_rows: int, index: list, error: type,
                                               words: str) -> None:
    b, s = fluxion.zeros(2, 3), fluxion.ones(src_rows, 3)
    i = fluxion.tensor(index)
    with pytest.raises(error) as eager:
        b.scatter(1, i, s)
    cf = fluxion.compile(lambda b, s: (b * 1).scatter(1, i, s * 1))
    with pytest.raises(error) as compiled:
        cf(b, s)
    assert str(compiled.value) == str(eager.value)
    assert words in str(compiled.value)


@pytest.mark.parametrize("dtype", [fluxion.float32, fluxion.float64])
def test_conv_and_max_pool_gradients_through_templates(dtype: Any) -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 2, 14, 14))
    w1 = rng.standard_normal((4, 2, 3, 3)) * 0.3
    w2 = rng.standard_normal((3, 4, 3, 3)) * 0.3

    def step(xt: Any, w1t: Any, w2t: Any, nn: Any = F) -> Any:
        y = nn.max_pool2d(nn.conv2d(xt, w1t, padding=1), 2)
        y = nn.max_pool2d(nn.relu(nn.conv2d(y, w2t)), 3, stride=2)
        loss = (y * y).sum()
        loss.backward()
        return loss

    def grads(fn: Callable[..., Any]) -> list[np.ndarray]:
        ts = [fluxion.tensor(a, dtype=dtype, requires_grad=True) for a in (x, w1, w2)]
        loss = fn(*ts)
        return [loss.detach().numpy()] + [t.grad.numpy() for t in ts]

    cf = fluxion.compile(step)
    got, want = grads(cf), grads(step)
    # the loss's fused sum rounds in its own order, so equal to the dtype's precision
    close = dict(rtol=1e-5, atol=1e-6) if dtype == fluxion.float32 else dict(rtol=1e-12)
    for g, e in zip(got, want):
        np.testing.assert_allclose(g, e, **close)
    assert {"unfold", "fold", "max_dim", "scatter"} <= _templated_ops(cf)
    # and PyTorch, the oracle
    ts = [torch.tensor(a, requires_grad=True) for a in (x, w1, w2)]
    step(*ts, nn=torch.nn.functional)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == fluxion.float32 else dict(rtol=1e-10)
    for g, t in zip(got[1:], ts):
        np.testing.assert_allclose(g, t.grad.numpy(), **tol)


def _softmax_rows(rng: np.random.Generator, dtype: Any) -> np.ndarray:
    """Rows as models make them, and the odd ones: a causal mask (-inf), a long row past
    the vector lanes, huge and tiny values, NaN, +inf, all -inf."""
    x = rng.standard_normal((3, 5, 37)) * 4
    x[0] = np.where(np.tril(np.ones((5, 37), bool)), x[0], -np.inf)
    x[1, 0, :3] = [80.0, -80.0, 1e-30]
    x[1, 1, 7] = np.nan
    x[1, 2, 4] = np.inf
    x[1, 3] = -np.inf
    x[2, 4] -= 200.0  # far below the clamp once shifted, but for its own maximum
    return x.astype(dtype)


SOFTMAX_LAYOUTS = {
    "contiguous": lambda t: t * 1,
    "transposed": lambda t: (t * 1).transpose(1, 2),  # rows along a strided axis
    "sliced": lambda t: (t * 1)[:, 1:, ::2],
}


@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", list(SOFTMAX_LAYOUTS))
def test_softmax_matches_eager(op: str, dtype: Any, layout: str) -> None:
    """Compiled softmax and log_softmax along the last axis run the C template (no NumPy
    fallback) and equal eager to a few ulps: NaN where eager has NaN, masked entries
    exactly 0 (softmax) or -inf (log_softmax)."""
    rng = np.random.default_rng(5)
    x = fluxion.tensor(_softmax_rows(rng, dtype))
    view = SOFTMAX_LAYOUTS[layout]

    def fn(t: Any) -> Any:
        return getattr(F, op)(view(t), dim=-1)

    cf = fluxion.compile(fn)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runtime.Program, "_library_value", _no_fallback)
        with np.errstate(invalid="ignore"):
            got, want = cf(x).numpy(), fn(x).numpy()
    assert op in _templated_ops(cf)
    assert got.dtype == want.dtype and got.shape == want.shape
    ulp = np.finfo(dtype).eps
    # log_softmax subtracts the log of the sum (a few units here): near 0 its last bit
    # is the absolute error, hence the absolute tolerance of a few of its ulps
    atol = np.finfo(dtype).tiny if op == "softmax" else 16 * ulp
    np.testing.assert_allclose(got, want, rtol=4 * ulp, atol=atol, equal_nan=True)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    edge = 0 if op == "softmax" else -np.inf
    assert np.all(got[want == edge] == edge)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", list(SOFTMAX_LAYOUTS))
def test_layer_norm_and_its_gradient_match_eager(dtype: Any, layout: str) -> None:
    """layer_norm over the last axis and its first derivative run as C templates (no
    NumPy fallback) and equal eager to a few ulps (both sum in double, in other orders),
    a constant row included (all zeros out); over two axes it stays the library call."""
    rng = np.random.default_rng(7)
    a = rng.standard_normal((3, 5, 37)) * 3 + 10
    a[1, 2] = 4.0
    x = fluxion.tensor(a.astype(dtype))
    view = SOFTMAX_LAYOUTS[layout]

    def fn(t: Any, nd: int = 1) -> Any:
        t = t.detach().requires_grad_()
        v = view(t)
        y = F.layer_norm(v, v.shape[v.ndim - nd:])
        return y, fluxion.autograd.grad((y ** 3).sum(), t)[0]

    cf = fluxion.compile(fn)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runtime.Program, "_library_value", _no_fallback)
        got, want = cf(x), fn(x)
    assert {"layer_norm", "layer_norm_backward"} <= _templated_ops(cf)
    ulp = np.finfo(dtype).eps
    for g, w in zip(got, want):  # the sums' rounding is absolute, on the row's scale
        g, w = g.detach().numpy(), w.detach().numpy()
        assert g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=16 * ulp, atol=16 * ulp * np.abs(w).max())
    if layout != "transposed":  # there the constant row is a column
        constant = view(fluxion.tensor((a == 4.0) * 1.0)).numpy() > 0
        assert constant.any() and not np.any(got[0].detach().numpy()[constant])
    cf2 = fluxion.compile(lambda t: fn(t, 2))
    for g, w in zip(cf2(x), fn(x, 2)):
        g, w = g.detach().numpy(), w.detach().numpy()
        np.testing.assert_allclose(g, w, rtol=16 * ulp, atol=16 * ulp * np.abs(w).max())
    assert not {"layer_norm", "layer_norm_backward"} & _templated_ops(cf2)


def test_layer_norm_gradient_takes_in_the_weight_product() -> None:
    """With a weight, the layer norm's gradient reads ``g * w``: the template computes it
    per row (one C function, no kernel of its own, no NumPy fallback), and the input's
    and weight's gradients equal eager's."""
    rng = np.random.default_rng(8)
    x = fluxion.tensor(rng.standard_normal((4, 6, 24)).astype(np.float32))
    w = fluxion.tensor(rng.standard_normal(24).astype(np.float32), requires_grad=True)

    def fn(t: Any) -> Any:
        t = t.detach().requires_grad_()
        y = F.layer_norm(t * 1, (24,), w)
        return fluxion.autograd.grad((y ** 3).sum(), (t, w))

    cf = fluxion.compile(fn)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runtime.Program, "_library_value", _no_fallback)
        got, want = cf(x), fn(x)
    program = cf.last_programs[0]
    (k,) = [k for k in program.kernels if program.graph.nodes[k.root].op
            == "layer_norm_backward"]
    assert k.template and [program.graph.nodes[m].op for m in k.nodes] == \
        ["mul", "layer_norm_backward"]
    for g, e in zip(got, want):
        g, e = g.numpy(), e.numpy()
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5 * np.abs(e).max())


def test_softmax_gradient_and_other_dims() -> None:
    """The backward through the templates matches eager and PyTorch; softmax along
    another axis stays the library call."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(6)
    a = rng.standard_normal((4, 6, 9))
    w = rng.standard_normal((4, 6, 9))

    def loss(t: Any, nn: Any = F) -> Any:
        out = (nn.softmax(t, dim=-1) * w_of(t)).sum() + (nn.softmax(t, dim=1) ** 2).sum() \
            + (nn.log_softmax(t, dim=-1) * w_of(t)).sum()
        out.backward()
        return out

    def w_of(t: Any) -> Any:
        return torch.tensor(w) if isinstance(t, torch.Tensor) else fluxion.tensor(w)

    cf = fluxion.compile(loss)
    t1, t2 = (fluxion.tensor(a, requires_grad=True) for _ in range(2))
    cf(t1)
    loss(t2)
    assert {"softmax", "log_softmax"} <= _templated_ops(cf)
    np.testing.assert_allclose(t1.grad.numpy(), t2.grad.numpy(), rtol=1e-12, atol=1e-15)
    tt = torch.tensor(a, requires_grad=True)
    loss(tt, nn=torch.nn.functional)
    np.testing.assert_allclose(t1.grad.numpy(), tt.grad.numpy(), rtol=1e-10, atol=1e-12)


def _kernel_ops(cf: fluxion.compiler.CompiledFunction) -> list[list[str]]:
    return [[p.graph.nodes[m].op for m in k.nodes] for p in cf.last_programs
            for k in p.kernels]


@pytest.mark.parametrize("dynamic", [False, True])
def test_softmax_takes_in_its_producer(dynamic: bool) -> None:
    """Attention's scores: the scale and the causal mask (a broadcast bool operand, -inf
    where masked) are computed inside the softmax template, one kernel with no
    intermediate in memory; equal to eager within ulps, masked entries exactly 0, across
    a change of batch size. log_softmax takes in a bias added along its rows."""
    rng = np.random.default_rng(8)
    mask = fluxion.tensor(np.tril(np.ones((6, 6), bool)))
    bias = fluxion.tensor(rng.standard_normal(6).astype(np.float32))

    def fn(q: Any) -> Any:
        scores = (q @ q.transpose(-2, -1)) * 0.5
        att = F.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
        return att, F.log_softmax(q @ q.transpose(-2, -1) + bias, dim=-1)

    cf = fluxion.compile(fn, dynamic=dynamic)
    for batch in (2, 3):
        q = fluxion.tensor(rng.standard_normal((batch, 4, 6, 6)).astype(np.float32))
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(runtime.Program, "_library_value", _no_fallback)
            got = [t.numpy() for t in cf(q)]
        want = [t.numpy() for t in fn(q)]
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=4e-7, atol=1e-6)
        assert np.all(got[0][want[0] == 0] == 0)
        ops = _kernel_ops(cf)
        assert ["mul", "where", "softmax"] in ops, ops
        assert ["add", "log_softmax"] in ops, ops
        assert ["mul", "where"] not in ops  # not also a kernel of its own


def test_softmax_leaves_a_producer_others_read() -> None:
    """A producer whose value is also returned (or read by another op) stays a kernel
    of its own: the softmax template then reads it from memory."""
    x = fluxion.tensor(np.random.default_rng(9).standard_normal((3, 5)).astype(np.float32))

    def fn(t: Any) -> Any:
        y = t * 2.0
        return F.softmax(y, dim=-1), y

    cf = fluxion.compile(fn)
    got, want = cf(x), fn(x)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=4e-7, atol=1e-7)
    assert ["softmax"] in _kernel_ops(cf) and ["mul"] in _kernel_ops(cf)


def test_template_source_is_explained() -> None:
    x = fluxion.randn(2, 3, 8, 8)
    report = fluxion.explain(lambda t: F.max_pool2d(t * 2, 2), x)
    src = "\n".join(report.sources)
    assert "int64_t* restrict out1" in src  # max_dim's indices
    assert any(k.endswith("max_dim (C template)") for ks in report.kernels for k in ks)


def test_templates_across_threads_at_mnist_sizes() -> None:
    """Above the parallel threshold the templates split their outer loop across OpenMP
    threads (disjoint outputs): still bit-identical to eager at MNIST's sizes."""
    rng = np.random.default_rng(7)
    x = fluxion.tensor(rng.standard_normal((64, 10, 24, 24)).astype(np.float32))
    check(lambda t: tuple(fluxion.max(F.unfold(t * 1, 2, stride=2).reshape(64, 10, 4, 144),
                                      dim=2)), x, op="max_dim")
    check(lambda t: F.unfold(t[:, :, :12, :12] * 1, 5), x, op="unfold")
    cols = fluxion.tensor(rng.standard_normal((64, 250, 64)).astype(np.float32))
    check(lambda t: F.fold(t * 1, (12, 12), 5), cols, op="fold")


def test_template_refuses_what_it_would_read_or_write_out_of_bounds() -> None:
    """Hand-built nodes the wrappers would have refused: the template declines them (the
    NumPy kernel then raises), so the C never indexes past an array."""
    from fluxion.compiler.codegen.templates import template_for
    from fluxion.compiler.graph import GNode, Graph

    f32, i64 = np.dtype(np.float32), np.dtype(np.int64)

    def one(inputs: list, node: GNode) -> Any:
        return template_for(Graph(inputs, [node], [("n", 0)]), 0)

    ok = GNode("scatter", (("in", 0), ("in", 1)), {"dim": 1, "index": ("in", 2)}, (2, 3), f32)
    base = [((2, 3), f32), ((2, 3), f32), ((2, 3), i64)]
    assert one(base, ok) is not None
    assert one(base, GNode("scatter", ok.args, {"dim": 2, "index": ("in", 2)},
                           (2, 3), f32)) is None  # no such dim
    assert one([((2, 3), f32), ((3, 3), f32), ((3, 3), i64)], ok) is None  # index too long
    fold = {"size": (6, 6), "kernel": (2, 2), "stride": (1, 1), "dilation": (1, 1)}
    assert one([((2, 36, 25), f32)], GNode("fold", (("in", 0),), fold, (2, 9, 6, 6), f32))
    assert one([((2, 36, 10), f32)],
               GNode("fold", (("in", 0),), fold, (2, 9, 6, 6), f32)) is None  # wrong blocks


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("transposed", [False, True])
def test_nll_loss_and_its_gradient_match_eager(dtype: Any, reduction: str,
                                               transposed: bool) -> None:
    """nll_loss and its gradient run as C templates (no NumPy fallback), an ignored
    target and a strided (transposed view) input included: the unreduced losses and
    their gradient bit-identical to eager; a reduced loss (the C sums in double, NumPy
    pairwise in the values' type) within the rounding of a sum of its terms, and its
    gradient (which scales with the loss here) to match."""
    rng = np.random.default_rng(9)
    a = rng.standard_normal((11, 300) if transposed else (300, 11)).astype(dtype)
    target = fluxion.from_numpy(rng.integers(0, 11, 300))
    target[7] = 4  # the ignored class
    x = fluxion.tensor(a)

    def fn(t: Any) -> Any:
        t = t.detach().requires_grad_()
        logp = t.mT if transposed else t
        loss = F.nll_loss(logp, target, ignore_index=4, reduction=reduction)
        return loss, fluxion.autograd.grad((loss * loss).sum(), t)[0]

    cf = fluxion.compile(fn)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runtime.Program, "_library_value", _no_fallback)
        (loss, grad), (want_loss, want_grad) = cf(x), fn(x)
    assert {"nll_loss", "nll_loss_backward"} <= _templated_ops(cf)
    if reduction == "none":
        _same(loss.detach(), want_loss.detach())
        _same(grad, want_grad)
    else:
        terms = F.nll_loss(x.mT if transposed else x, target, ignore_index=4,
                           reduction="none").abs()
        scale = terms.sum().item() / (299 if reduction == "mean" else 1)
        ulp = np.finfo(dtype).eps
        err = abs(loss.item() - want_loss.item())
        assert err <= 8 * ulp * scale, (err, scale)
        rel = err / abs(want_loss.item()) + ulp  # the loss's, passed on to its gradient
        want = want_grad.numpy()
        np.testing.assert_allclose(grad.numpy(), want, rtol=0, atol=2 * rel * np.abs(want).max())


def test_nll_loss_out_of_range_target_and_class_weights() -> None:
    """A target out of range raises eager's error from the compiled call; class weights
    keep the op table's NumPy kernel and equal eager."""
    x = fluxion.tensor(np.random.default_rng(10).standard_normal((4, 3)).astype(np.float32))
    bad = fluxion.tensor([0, 1, 5, 2])
    cf = fluxion.compile(lambda t: F.nll_loss(F.log_softmax(t, 1), bad))
    with pytest.raises(IndexError, match="Target 5 is out of bounds"):
        cf(x)
    w = fluxion.tensor([0.5, 2.0, 1.0])
    target = fluxion.tensor([0, 1, 2, 1])

    def weighted(t: Any) -> Any:  # (log-probabilities as given: no template before it)
        return F.nll_loss(t, target, weight=w)

    cw = fluxion.compile(weighted)
    _same(cw(x), weighted(x))
    assert "nll_loss" not in _templated_ops(cw)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("count", [40, 2048])
def test_embedding_gradient_index_put_matches_eager(dtype: Any, count: int) -> None:
    """An embedding's gradient (``index_put`` accumulating rows) runs as a C template (no
    NumPy fallback), negative indices and values read through a transposed view included:
    below 64 indices bit-identical to eager (``np.add.at``, one value at a time); from 64
    on, within the rounding of each row's sum (NumPy's grouped sums go pairwise, the C in
    index order)."""
    rng = np.random.default_rng(11)
    rows = 7 if count < 64 else 95
    w = fluxion.tensor(rng.standard_normal((rows, 5)).astype(dtype))
    idx = fluxion.from_numpy(rng.integers(-rows, rows, count))
    g = fluxion.tensor(rng.standard_normal((5, count)).astype(dtype))  # read as g.mT

    def fn(t: Any) -> Any:
        t = t.detach().requires_grad_()
        return fluxion.autograd.grad((t[idx] * g.mT).sum(), t)[0]

    cf = fluxion.compile(fn)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runtime.Program, "_library_value", _no_fallback)
        got = cf(w)
    want = fn(w)
    assert "index_put" in _templated_ops(cf)
    if count < 64:
        _same(got, want)
    else:  # each row's sum rounds within a few ulps of the sum of its terms' sizes
        scale = np.zeros((rows, 5), dtype)
        np.add.at(scale, idx.numpy() % rows, np.abs(g.numpy().T))
        err = np.abs(got.numpy() - want.numpy())
        assert np.all(err <= 8 * np.finfo(dtype).eps * scale), err.max()


def test_index_put_template_out_of_range_and_sizes_that_change() -> None:
    """An index out of range (which only a graph built by hand can hand it: a model's
    forward indexing fails first) makes the C return to NumPy, which raises its error;
    with dynamic sizes one C function serves 40 and 100 indices, each summed as eager
    groups it."""
    f32, i64 = np.dtype(np.float32), np.dtype(np.int64)
    g = Graph([((5, 3), f32), ((4, 3), f32), ((4,), i64)],
              [GNode("index_put", (("in", 0), ("in", 1)),
                     {"key": (("in", 2),), "accumulate": True}, (5, 3), f32)], [("n", 0)])
    prog = runtime.build_program(g, "c")
    assert [k.template for k in prog.kernels] == [True]
    a, v = np.zeros((5, 3), np.float32), np.ones((4, 3), np.float32)
    assert prog.run([a, v, np.array([0, 1, -1, 2])])[0].sum(1).tolist() == [3, 3, 3, 0, 3]
    with pytest.raises(IndexError, match="index 9 is out of bounds"):
        prog.run([a, v, np.array([0, 9, 1, 2])])
    w = fluxion.tensor(np.ones((5, 3), np.float32))

    def fn(t: Any, idx: Any) -> Any:
        t = t.detach().requires_grad_()
        return fluxion.autograd.grad((t[idx] * 0.5).sum(), t)[0]

    cd = fluxion.compile(fn, dynamic=True)
    rng = np.random.default_rng(12)
    for count in (40, 100):
        idx = fluxion.from_numpy(rng.integers(0, 5, count))
        _same(cd(w, idx), fn(w, idx))  # (equal halves: any order sums them exactly)
    assert "index_put" in _templated_ops(cd)
