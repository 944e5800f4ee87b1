"""Tensor facts and conversions: numpy()/item()/tolist(), shape and size, dtype and
device conversions, clone/detach/contiguous, Python protocols, and ``repr`` (which must
equal PyTorch's with 'torch' replaced by 'fluxion')."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import fluxion

torch = pytest.importorskip("torch")


def same(f, t, *, rtol=1e-6, atol=1e-6):
    assert isinstance(f, fluxion.Tensor), type(f)
    assert f.dtype.name == str(t.dtype).removeprefix("torch."), (f.dtype, t.dtype)
    assert tuple(f.shape) == tuple(t.shape), (tuple(f.shape), tuple(t.shape))
    fv, tv = f.detach().numpy(), t.detach().numpy()
    if fv.dtype.kind == "f":
        np.testing.assert_allclose(fv, tv, rtol=rtol, atol=atol)
    else:
        np.testing.assert_array_equal(fv, tv)


# --- numpy / item / tolist ----------------------------------------------------------------
def test_numpy_shares_memory():
    x = fluxion.zeros(2, 3)
    a = x.numpy()
    assert isinstance(a, np.ndarray) and a.dtype == np.float32 and a.shape == (2, 3)
    a[0, 1] = 5
    assert x[0, 1].item() == 5
    x[1, 2] = 7
    assert a[1, 2] == 7
    x.add_(1)
    assert a[0, 0] == 1
    # a view's numpy() shares memory with the base too
    v = x[:, 1].numpy()
    v[0] = -3
    assert x[0, 1].item() == -3


def test_numpy_refuses_when_requires_grad():
    x = fluxion.ones(2, requires_grad=True)
    with pytest.raises(RuntimeError, match="detach"):
        x.numpy()
    with pytest.raises(RuntimeError, match="detach"):
        (x * 2).numpy()
    d = x.detach().numpy()
    d[0] = 3
    assert x.tolist() == [3.0, 1.0]  # detach shares memory
    with fluxion.no_grad():
        assert (x * 2).numpy().tolist() == [6.0, 2.0]


@pytest.mark.parametrize("data,dtype", [
    (3.5, "float32"), (2, "int64"), (True, "bool"), ([[7]], "int32"), ([0.25], "float64"),
    (1.5, "float16"), (200, "uint8"), (-5, "int8"),
])
def test_item_returns_python_scalars(data, dtype):
    f = fluxion.tensor(data, dtype=getattr(fluxion, dtype)).item()
    t = torch.tensor(data, dtype=getattr(torch, dtype)).item()
    assert type(f) is type(t) and f == t


def test_item_needs_one_element():
    with pytest.raises(RuntimeError, match="2 elements"):
        fluxion.ones(2).item()
    with pytest.raises(RuntimeError):
        fluxion.ones(0).item()
    assert fluxion.ones(1, 1, 1).item() == 1.0


@pytest.mark.parametrize("make", [
    lambda lib: lib.tensor(3.5),
    lambda lib: lib.tensor(7),
    lambda lib: lib.tensor(True),
    lambda lib: lib.tensor([[1, 2], [3, 4]]),
    lambda lib: lib.tensor([[1.5], [2.25]], dtype=lib.float64),
    lambda lib: lib.tensor([True, False]),
    lambda lib: lib.zeros(0, 2),
    lambda lib: lib.arange(6, dtype=lib.int8).reshape(2, 3).t(),
    lambda lib: lib.tensor([0.1, 0.2], dtype=lib.float16),
], ids=["f0d", "i0d", "b0d", "i2d", "f64", "bool", "empty", "int8_t", "half"])
def test_tolist_matches_torch(make):
    f, t = make(fluxion).tolist(), make(torch).tolist()
    assert f == t
    assert repr(f) == repr(t)  # same Python types all the way down


# --- facts ------------------------------------------------------------------------------------
def test_shape_size_dim_numel():
    x = fluxion.zeros(2, 3, 4)
    t = torch.zeros(2, 3, 4)
    assert x.shape == t.shape == (2, 3, 4)
    assert isinstance(x.shape, tuple) and isinstance(x.shape, fluxion.Size)
    assert repr(x.shape) == repr(t.shape).replace("torch", "fluxion")
    assert x.size() == (2, 3, 4) and x.size(1) == 3 and x.size(-1) == 4
    assert x.dim() == x.ndim == x.ndimension() == 3
    assert x.numel() == x.nelement() == fluxion.numel(x) == 24
    assert x.shape.numel() == 24
    assert fluxion.tensor(5.0).shape == () and fluxion.tensor(5.0).dim() == 0
    assert fluxion.tensor(5.0).numel() == 1
    assert fluxion.zeros(0, 3).numel() == 0
    with pytest.raises(IndexError):
        x.size(3)
    a, b, c = x.shape
    assert (a, b, c) == (2, 3, 4)
    assert x.shape[1:] == (3, 4)


def test_dtype_device_and_flags():
    x = fluxion.ones(2)
    assert x.dtype is fluxion.float32
    assert str(x.device) == "cpu" and x.device.type == "cpu"
    assert x.device == fluxion.device("cpu")
    assert not x.is_cuda and x.get_device() == -1
    assert x.is_floating_point() and not fluxion.ones(2, dtype=fluxion.int64).is_floating_point()
    assert fluxion.is_tensor(x) and not fluxion.is_tensor(np.ones(2))
    assert fluxion.is_floating_point(x)
    assert x.element_size() == 4 and fluxion.ones(1, dtype=fluxion.float64).element_size() == 8


def test_strides_and_contiguity_match_torch():
    for make in [
        lambda lib: lib.arange(24.0).reshape(2, 3, 4),
        lambda lib: lib.arange(24.0).reshape(2, 3, 4).transpose(0, 2),
        lambda lib: lib.arange(24.0).reshape(2, 3, 4)[:, 1],
        lambda lib: lib.arange(24.0).reshape(2, 3, 4)[..., ::2],
        lambda lib: lib.arange(24.0).reshape(2, 3, 4).permute(1, 0, 2),
        lambda lib: lib.arange(12.0).reshape(3, 4).t(),
    ]:
        f, t = make(fluxion), make(torch)
        assert f.stride() == t.stride()
        assert f.is_contiguous() == t.is_contiguous()
        c = f.contiguous()
        assert c.is_contiguous() and c.stride() == t.contiguous().stride()
        same(c, t.contiguous())


def test_contiguous_returns_self_when_already_contiguous():
    x = fluxion.ones(2, 3)
    assert x.contiguous() is x
    y = x.t()
    c = y.contiguous()
    assert c is not y
    c[0, 0] = 5
    assert x[0, 0].item() == 1  # a copy


# --- conversions ------------------------------------------------------------------------------
CASTS = ["float", "double", "half", "long", "int", "short", "char", "byte", "bool"]


@pytest.mark.parametrize("cast", CASTS)
def test_cast_methods(cast):
    data = [-2.7, -0.5, 0.0, 0.4, 1.5, 3.9, 100.25]
    if cast == "byte":
        data = [0.0, 0.4, 1.5, 3.9, 100.25]
    for src in ("float32", "float64", "int64", "bool"):
        f = fluxion.tensor(data).to(getattr(fluxion, src))
        t = torch.tensor(data).to(getattr(torch, src))
        same(getattr(f, cast)(), getattr(t, cast)(), rtol=1e-3)


def test_to_forms():
    x = fluxion.tensor([1.5, 2.5])
    assert x.to(fluxion.float32) is x
    assert x.to("cpu") is x
    assert x.to(fluxion.device("cpu")) is x
    assert x.to(dtype=fluxion.float32) is x
    y = x.to(fluxion.float64)
    assert y.dtype is fluxion.float64 and y is not x
    assert x.to("cpu", fluxion.int64).tolist() == [1, 2]
    assert x.to(device="cpu", dtype=fluxion.float16).dtype is fluxion.float16
    assert x.to(fluxion.ones(1, dtype=fluxion.int32)).dtype is fluxion.int32
    z = x.to(fluxion.float32, copy=True)
    assert z is not x and z.tolist() == x.tolist()
    z[0] = 0
    assert x[0].item() == 1.5
    assert x.cpu() is x
    assert x.type() == "torch.FloatTensor"
    assert x.type(fluxion.float64).dtype is fluxion.float64
    assert x.type_as(fluxion.ones(1, dtype=fluxion.int64)).dtype is fluxion.int64


def test_to_is_differentiable():
    x = fluxion.tensor([1.5, 2.5], requires_grad=True)
    y = x.to(fluxion.float64)
    assert y.requires_grad and y.grad_fn is not None
    (y * y).sum().backward()
    assert x.grad.dtype is fluxion.float32 and x.grad.tolist() == [3.0, 5.0]
    assert x.long().requires_grad is False


def test_clone():
    x = fluxion.tensor([1.0, 2.0])
    c = x.clone()
    assert c.tolist() == x.tolist() and c.dtype is x.dtype
    c[0] = 10
    assert x[0].item() == 1.0
    assert c.is_contiguous()
    w = fluxion.tensor([1.0, 2.0], requires_grad=True)
    wc = w.clone()
    assert wc.requires_grad and not wc.is_leaf and wc.grad_fn.name() == "CloneBackward0"
    (wc * 3).sum().backward()
    assert w.grad.tolist() == [3.0, 3.0]
    t = fluxion.arange(6).reshape(2, 3).t().clone()
    assert t.tolist() == [[0, 3], [1, 4], [2, 5]]


def test_detach():
    x = fluxion.tensor([1.0, 2.0], requires_grad=True)
    y = x * 2
    d = y.detach()
    assert not d.requires_grad and d.grad_fn is None and d.is_leaf
    d[0] = 100
    assert y[0].item() == 100  # same memory
    dx = x.detach()
    assert dx._version == x._version
    dx.zero_()
    assert x.tolist() == [0.0, 0.0] and x._version == dx._version


def test_values_of_tensors_that_require_grad():
    x = fluxion.tensor([1.0, 2.0], requires_grad=True)
    assert x.sum().item() == 3.0
    assert (x * 2).tolist() == [2.0, 4.0]
    assert float(x[0]) == 1.0
    c = fluxion.tensor(x)  # a copy, cut from the graph (torch warns, same result)
    assert not c.requires_grad and c.is_leaf and c.tolist() == [1.0, 2.0]
    c[0] = 9
    assert x[0].item() == 1.0


def test_data_attribute():
    x = fluxion.tensor([1.0, 2.0], requires_grad=True)
    d = x.data
    assert not d.requires_grad
    d.mul_(3)
    assert x.tolist() == [3.0, 6.0] and x.requires_grad
    x.data = fluxion.tensor([5.0, 6.0])
    assert x.tolist() == [5.0, 6.0] and x.requires_grad and x.is_leaf


# --- Python protocols --------------------------------------------------------------------------
def test_python_number_protocols():
    assert float(fluxion.tensor([2.5])) == 2.5
    assert int(fluxion.tensor(3.9)) == 3
    assert int(fluxion.tensor(-3.9)) == -3
    assert bool(fluxion.tensor([0.0])) is False and bool(fluxion.tensor(2)) is True
    lst = [10, 20, 30]
    assert lst[fluxion.tensor(1)] == 20
    assert list(range(10))[fluxion.tensor(2):fluxion.tensor(4)] == [2, 3]
    with pytest.raises(TypeError):
        lst[fluxion.tensor(1.0)]
    with pytest.raises(RuntimeError, match="ambiguous"):
        bool(fluxion.ones(2))
    with pytest.raises(RuntimeError, match="ambiguous"):
        if fluxion.ones(3) > 0:
            pass
    assert f"{fluxion.tensor(3.14159):.2f}" == "3.14"
    assert f"{fluxion.tensor(3):d}" == "3"


def test_len_and_iteration():
    x = fluxion.arange(6).reshape(3, 2)
    assert len(x) == 3
    rows = list(x)
    assert len(rows) == 3 and all(isinstance(r, fluxion.Tensor) for r in rows)
    assert [r.tolist() for r in rows] == [[0, 1], [2, 3], [4, 5]]
    rows[1][0] = 42  # rows are views
    assert x[1, 0].item() == 42
    with pytest.raises(TypeError):
        len(fluxion.tensor(1.0))
    with pytest.raises(TypeError):
        iter(fluxion.tensor(1.0))
    a, b = fluxion.tensor([1.0, 2.0])
    assert a.item() == 1.0 and b.item() == 2.0


def test_comparison_and_containment():
    x = fluxion.tensor([1, 2, 3])
    eq = x == 2
    assert isinstance(eq, fluxion.Tensor) and eq.dtype is fluxion.bool
    assert eq.tolist() == [False, True, False]
    assert (x == fluxion.tensor([1, 0, 3])).tolist() == [True, False, True]
    assert (x != 2).tolist() == [True, False, True]
    assert fluxion.equal(x, fluxion.tensor([1, 2, 3]))
    assert not fluxion.equal(x, fluxion.tensor([1, 2]))
    assert hash(x) == hash(x)  # usable as dict keys, by identity
    assert len({x: 1, fluxion.tensor([1, 2, 3]): 2}) == 2


def test_transpose_properties():
    f = fluxion.arange(24.0).reshape(2, 3, 4)
    t = torch.arange(24.0).reshape(2, 3, 4)
    same(f.mT, t.mT)
    m = fluxion.arange(6.0).reshape(2, 3)
    same(m.T, torch.arange(6.0).reshape(2, 3).T)
    same(m.t(), torch.arange(6.0).reshape(2, 3).t())


def test_pickle_round_trip():
    x = fluxion.tensor([[1.0, 2.0]], dtype=fluxion.float64, requires_grad=True)
    y = pickle.loads(pickle.dumps(x))
    assert y.tolist() == x.tolist() and y.dtype is fluxion.float64
    assert y.requires_grad and y.is_leaf
    assert pickle.loads(pickle.dumps(fluxion.float16)) is fluxion.float16
    z = pickle.loads(pickle.dumps(fluxion.arange(6).reshape(2, 3).t()))
    assert z.tolist() == [[0, 3], [1, 4], [2, 5]]


def test_tensor_class_constructor():
    assert fluxion.Tensor([1, 2]).dtype is fluxion.float32
    assert fluxion.Tensor(2, 3).shape == (2, 3)
    assert torch.Tensor([1, 2]).dtype == torch.float32
    assert isinstance(fluxion.ones(1), fluxion.Tensor)


def test_unknown_attribute_is_attribute_error():
    x = fluxion.ones(1)
    with pytest.raises(AttributeError, match="no_such_method"):
        x.no_such_method()
    assert not hasattr(x, "definitely_not_there")


# --- repr -----------------------------------------------------------------------------------------
def _rng_values(shape, scale=1.0, seed=0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


REPRS = {
    "ints": lambda lib: lib.tensor([1, 2, 3]),
    "ints_2d": lambda lib: lib.tensor([[1, -2], [30, 4]]),
    "ints_3d": lambda lib: lib.arange(24).reshape(2, 3, 4),
    "int32": lambda lib: lib.tensor([1, 2], dtype=lib.int32),
    "uint8": lambda lib: lib.tensor([0, 255], dtype=lib.uint8),
    "int8_neg": lambda lib: lib.tensor([-128, 5], dtype=lib.int8),
    "floats": lambda lib: lib.tensor([1.0, 2.5, -3.25]),
    "whole_floats": lambda lib: lib.tensor([1.0, 2.0, 3.0]),
    "zeros_2d": lambda lib: lib.zeros(2, 3),
    "neg_whole": lambda lib: lib.tensor([-1.0, 0.0, 10.0]),
    "tiny": lambda lib: lib.tensor([1e-5, 1.0]),
    "huge": lambda lib: lib.tensor([1e10, 1.0]),
    "mixed_mag": lambda lib: lib.tensor([123456.789, 0.001]),
    "only_small": lambda lib: lib.tensor([1e-10, 3e-12]),
    "big_whole": lambda lib: lib.tensor([100000.0, 2.0]),
    "e8": lambda lib: lib.tensor([1e8, 1.0]),
    "ratio_999": lambda lib: lib.tensor([0.01, 9.99]),
    "thousands": lambda lib: lib.tensor([1234.5, 0.5]),
    "scalar_f": lambda lib: lib.tensor(3.5),
    "scalar_i": lambda lib: lib.tensor(3),
    "scalar_b": lambda lib: lib.tensor(True),
    "scalar_small": lambda lib: lib.tensor(1e-7),
    "scalar_f64": lambda lib: lib.tensor(2.0, dtype=lib.float64),
    "bools": lambda lib: lib.tensor([True, False]),
    "bools_2d": lambda lib: lib.tensor([[True, False], [False, True]]),
    "f64": lambda lib: lib.tensor([1.5, 2.0], dtype=lib.float64),
    "f16": lambda lib: lib.tensor([0.1, 2.0], dtype=lib.float16),
    "nan_inf": lambda lib: lib.tensor([float("nan"), float("inf"), 1.0]),
    "neg_inf_whole": lambda lib: lib.tensor([-float("inf"), 2.0]),
    "all_nan": lambda lib: lib.tensor([float("nan"), float("nan")]),
    "randn_4x5": lambda lib: lib.tensor(_rng_values((4, 5))),
    "randn_big": lambda lib: lib.tensor(_rng_values((3, 3), 1e4)),
    "randn_small": lambda lib: lib.tensor(_rng_values((2, 3), 1e-3)),
    "arange_2000": lambda lib: lib.arange(2000.0),
    "arange_int_2000": lambda lib: lib.arange(2000),
    "wide_row": lambda lib: lib.arange(30.0) / 7,
    "long_2d": lambda lib: lib.arange(2000).reshape(40, 50),
    "requires_grad": lambda lib: lib.tensor([1.0, 2.0], requires_grad=True),
    "requires_grad_0d": lambda lib: lib.tensor(1.5, requires_grad=True),
    "requires_grad_f64": lambda lib: lib.tensor([1.0], dtype=lib.float64, requires_grad=True),
    "grad_fn_mul": lambda lib: lib.tensor([1.0, 2.0], requires_grad=True) * 2,
    "grad_fn_add": lambda lib: lib.tensor([1.0, 2.0], requires_grad=True) + 1,
    "grad_fn_sum": lambda lib: lib.tensor([1.0, 2.0], requires_grad=True).sum(),
    "grad_fn_mean": lambda lib: lib.tensor([1.0, 2.0], requires_grad=True).mean(),
    "grad_fn_exp": lambda lib: lib.tensor([1.0, 2.0], requires_grad=True).exp(),
    "grad_fn_f64": lambda lib: lib.tensor([1.0], dtype=lib.float64, requires_grad=True) * 3,
    "empty": lambda lib: lib.tensor([]),
    "empty_2d": lambda lib: lib.zeros(0, 3),
    "empty_int": lambda lib: lib.zeros(0, dtype=lib.int64),
    "empty_f64": lambda lib: lib.zeros(0, dtype=lib.float64),
    "empty_bool": lambda lib: lib.zeros(2, 0, dtype=lib.bool),
    "empty_rg": lambda lib: lib.zeros(0, requires_grad=True),
    "neg_zero": lambda lib: lib.tensor([-0.0, 1.5]),
    "half_up": lambda lib: lib.tensor([0.00005, 0.5]),
}


@pytest.mark.parametrize("name", list(REPRS))
def test_repr_matches_torch(name):
    want = repr(REPRS[name](torch)).replace("torch.", "fluxion.")
    got = repr(REPRS[name](fluxion))
    assert got == want
    assert str(REPRS[name](fluxion)) == got


def test_repr_under_float64_default():
    fluxion.set_default_dtype(fluxion.float64)
    torch.set_default_dtype(torch.float64)
    try:
        for make in (lambda lib: lib.tensor([1.5, 2.0]),
                     lambda lib: lib.tensor([1.5], dtype=lib.float32),
                     lambda lib: lib.zeros(0)):
            assert repr(make(fluxion)) == repr(make(torch)).replace("torch.", "fluxion.")
    finally:
        fluxion.set_default_dtype(fluxion.float32)
        torch.set_default_dtype(torch.float32)


def test_repr_of_views_and_non_contiguous():
    f = fluxion.arange(12.0).reshape(3, 4).t()[1:]
    t = torch.arange(12.0).reshape(3, 4).t()[1:]
    assert repr(f) == repr(t)


# --- the torch namespace --------------------------------------------------------------------------
NAMESPACE_CALLS = {
    "softmax": lambda lib, x: lib.softmax(x, dim=1),
    "log_softmax": lambda lib, x: lib.log_softmax(x, dim=-1),
    "relu": lambda lib, x: lib.relu(x),
    "sigmoid": lambda lib, x: lib.sigmoid(x),
    "tanh": lambda lib, x: lib.tanh(x),
    "exp": lambda lib, x: lib.exp(x),
    "sum_dim": lambda lib, x: lib.sum(x, dim=0, keepdim=True),
    "mean": lambda lib, x: lib.mean(x),
    "logsumexp": lambda lib, x: lib.logsumexp(x, dim=1),
    "cumsum": lambda lib, x: lib.cumsum(x, dim=1),
    "flatten": lambda lib, x: lib.flatten(x),
    "transpose": lambda lib, x: lib.transpose(x, 0, 1),
    "clamp": lambda lib, x: lib.clamp(x, min=-0.5, max=0.5),
    "where": lambda lib, x: lib.where(x > 0, x, lib.zeros_like(x)),
    "maximum": lambda lib, x: lib.maximum(x, lib.zeros_like(x)),
    "argmax": lambda lib, x: lib.argmax(x, dim=1),
    "max_dim_values": lambda lib, x: lib.max(x, dim=1).values,
    "max_dim_indices": lambda lib, x: lib.max(x, dim=1)[1],
    "topk_values": lambda lib, x: lib.topk(x, 2, dim=1).values,
    "sort_indices": lambda lib, x: lib.sort(x, dim=1, descending=True).indices,
    "einsum": lambda lib, x: lib.einsum("ij,kj->ik", x, x),
    "outer": lambda lib, x: lib.outer(x[0], x[1]),
}


@pytest.mark.parametrize("name", list(NAMESPACE_CALLS))
def test_torch_namespace_function(name):
    data = np.array([[0.5, -1.0, 2.0], [1.5, 0.25, -0.75]], dtype=np.float32)
    f = NAMESPACE_CALLS[name](fluxion, fluxion.tensor(data))
    t = NAMESPACE_CALLS[name](torch, torch.tensor(data))
    same(f, t, rtol=1e-5)
