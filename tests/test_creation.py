"""Creating tensors: from data, filled, ranges, structured, joined and split, random
(shapes, dtypes, ranges and reproducibility). Values are compared with PyTorch."""

from __future__ import annotations

import numpy as np
import pytest

import fluxion

torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def _seeded():
    """Statistical checks below draw from a known stream (they hold for any seed)."""
    fluxion.manual_seed(1234)


def same(f, t, *, rtol=1e-6, atol=1e-6):
    """``f`` (fluxion) equals ``t`` (torch): dtype name, shape and values."""
    assert isinstance(f, fluxion.Tensor), type(f)
    assert f.dtype.name == str(t.dtype).removeprefix("torch."), (f.dtype, t.dtype)
    assert tuple(f.shape) == tuple(t.shape), (tuple(f.shape), tuple(t.shape))
    fv, tv = f.numpy(), t.numpy()
    if fv.dtype.kind == "f":
        np.testing.assert_allclose(fv, tv, rtol=rtol, atol=atol)
    else:
        np.testing.assert_array_equal(fv, tv)


def both(fn):
    """Run ``fn(lib)`` with each library and compare."""
    same(fn(fluxion), fn(torch))


# --- fluxion.tensor ---------------------------------------------------------------------
@pytest.mark.parametrize("data", [
    [1, 2, 3], [[1, 2], [3, 4]], [1.0, 2.5], [[1, 2.5], [3, 4]], [True, False],
    [True, 2], 3, 3.5, True, [], [[]], [[1.0], [2.0]], -7, [0.1, 1e-8, 1e8],
], ids=repr)
def test_tensor_from_python_data(data):
    both(lambda lib: lib.tensor(data))


@pytest.mark.parametrize("npdtype", ["float16", "float32", "float64", "int8", "int16",
                                     "int32", "int64", "uint8", "bool"])
def test_tensor_from_numpy_keeps_dtype(npdtype):
    arr = np.arange(6).reshape(2, 3).astype(npdtype)
    both(lambda lib: lib.tensor(arr))
    both(lambda lib: lib.as_tensor(arr))
    both(lambda lib: lib.from_numpy(arr))


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", "int8", "int16",
                                   "int32", "int64", "uint8", "bool"])
def test_tensor_with_dtype_argument(dtype):
    data = [[0.0, 1.7], [-2.2, 3.0]] if dtype not in ("uint8",) else [[0.0, 1.7], [2.2, 3.0]]
    both(lambda lib: lib.tensor(data, dtype=getattr(lib, dtype)))
    both(lambda lib: lib.tensor(3, dtype=getattr(lib, dtype)))


def test_tensor_from_list_of_numpy_scalars_and_0d_tensors():
    both(lambda lib: lib.tensor([np.float64(1.5), np.float64(2.0)]))
    both(lambda lib: lib.tensor(np.float32(1.5)))
    both(lambda lib: lib.tensor([lib.tensor(1.5), lib.tensor(2.0)]))


def test_tensor_copies_its_data():
    arr = np.zeros(3, dtype=np.float32)
    t = fluxion.tensor(arr)
    arr[0] = 5
    assert t.tolist() == [0.0, 0.0, 0.0]
    src = fluxion.ones(2)
    t2 = fluxion.tensor(src.numpy())
    src.add_(1)
    assert t2.tolist() == [1.0, 1.0]


def test_tensor_requires_grad_flag():
    t = fluxion.tensor([1.0, 2.0], requires_grad=True)
    assert t.requires_grad and t.is_leaf and t.grad is None and t.grad_fn is None
    with pytest.raises(RuntimeError, match="floating point"):
        fluxion.tensor([1, 2], requires_grad=True)


def test_as_tensor_shares_memory_with_numpy():
    arr = np.zeros(3)
    t = fluxion.as_tensor(arr)
    assert t.dtype is fluxion.float64
    arr[1] = 4.0
    assert t.tolist() == [0.0, 4.0, 0.0]
    # a dtype change must copy
    t32 = fluxion.as_tensor(arr, dtype=fluxion.float32)
    arr[2] = 9.0
    assert t32.tolist() == [0.0, 4.0, 0.0]
    # a tensor passes through as itself
    x = fluxion.ones(2)
    assert fluxion.as_tensor(x) is x
    # Python data is copied into a new tensor with the usual inference
    both(lambda lib: lib.as_tensor([1, 2, 3]))
    both(lambda lib: lib.as_tensor([1.0, 2.0], dtype=lib.float64))


def test_from_numpy_shares_memory_both_ways():
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    t = fluxion.from_numpy(arr)
    arr[0, 0] = 100
    assert t[0, 0].item() == 100
    t[1, 2] = -1
    assert arr[1, 2] == -1
    t.add_(1)
    assert arr[0, 0] == 101
    assert t.numpy() is arr or np.shares_memory(t.numpy(), arr)
    # non-contiguous arrays keep sharing
    view = arr[:, ::2]
    tv = fluxion.from_numpy(view)
    assert tuple(tv.shape) == (2, 2)
    arr[1, 2] = 55
    assert tv[1, 1].item() == 55


def test_from_numpy_rejects_unsupported():
    with pytest.raises(TypeError):
        torch.from_numpy(np.array(["a", "b"]))
    with pytest.raises(TypeError):
        fluxion.from_numpy(np.array(["a", "b"]))
    with pytest.raises(TypeError):
        fluxion.from_numpy([1, 2, 3])
    with pytest.raises(TypeError):
        torch.from_numpy([1, 2, 3])


def test_tensor_rejects_ragged_and_strings():
    for bad in ([[1, 2], [3]], ["a", "b"], [object()]):
        with pytest.raises((TypeError, ValueError, RuntimeError)):
            torch.tensor(bad)
        with pytest.raises((TypeError, ValueError, RuntimeError)):
            fluxion.tensor(bad)


# --- filled ---------------------------------------------------------------------------------
@pytest.mark.parametrize("fn", ["zeros", "ones", "empty"])
@pytest.mark.parametrize("args", [(2, 3), ((2, 3),), ([2, 3],), (0,), ((),), (4,), (1, 0, 2)],
                         ids=repr)
def test_filled_shapes(fn, args):
    f = getattr(fluxion, fn)(*args)
    t = getattr(torch, fn)(*args)
    assert tuple(f.shape) == tuple(t.shape)
    assert f.dtype is fluxion.float32
    if fn != "empty":
        same(f, t)


@pytest.mark.parametrize("dtype", ["float16", "float64", "int32", "int64", "uint8", "bool"])
def test_filled_dtype_argument(dtype):
    for fn in ("zeros", "ones"):
        both(lambda lib, fn=fn: getattr(lib, fn)(2, 2, dtype=getattr(lib, dtype)))
    assert fluxion.empty(3, dtype=getattr(fluxion, dtype)).dtype is getattr(fluxion, dtype)


def test_filled_from_a_size_object():
    x = fluxion.ones(2, 5)
    assert fluxion.zeros(x.shape).shape == (2, 5)
    assert fluxion.zeros(*x.shape).shape == (2, 5)
    assert fluxion.ones(x.size()).shape == (2, 5)


@pytest.mark.parametrize("value", [7, 7.5, True, -2, 0.0])
def test_full_dtype_follows_value(value):
    both(lambda lib: lib.full((2, 3), value))
    both(lambda lib: lib.full((2,), value, dtype=lib.float64))
    both(lambda lib: lib.full([3], value, dtype=lib.int32) if not isinstance(value, float)
         else lib.full([3], value))


def test_like_functions():
    for data, dt in [([[1, 2], [3, 4]], "int32"), ([1.5, 2.5, 3.5], "float64"),
                     ([True, False], "bool"), ([[0.5]], "float16")]:
        for fn in ("zeros_like", "ones_like"):
            both(lambda lib, fn=fn: getattr(lib, fn)(lib.tensor(data, dtype=getattr(lib, dt))))
            both(lambda lib, fn=fn: getattr(lib, fn)(lib.tensor(data, dtype=getattr(lib, dt)),
                                                     dtype=lib.float32))
        both(lambda lib: lib.full_like(lib.tensor(data, dtype=getattr(lib, dt)), 1))
        both(lambda lib: lib.full_like(lib.tensor(data, dtype=getattr(lib, dt)), 1,
                                       dtype=lib.float64))
        e = fluxion.empty_like(fluxion.tensor(data, dtype=getattr(fluxion, dt)))
        assert e.dtype is getattr(fluxion, dt) and e.shape == np.array(data).shape
    z = fluxion.zeros_like(fluxion.ones(3, requires_grad=True))
    assert not z.requires_grad
    z = fluxion.zeros_like(fluxion.ones(3), requires_grad=True)
    assert z.requires_grad and z.is_leaf


def test_like_of_a_view_is_fresh_memory():
    x = fluxion.arange(12.0).reshape(3, 4).t()
    z = fluxion.zeros_like(x)
    assert tuple(z.shape) == (4, 3)
    z.fill_(1)
    assert x.sum().item() == 66.0


def test_new_methods_inherit_dtype():
    for lib in (fluxion, torch):
        x = lib.tensor([1, 2], dtype=lib.int32)
        assert str(x.new_zeros(2, 3).dtype).endswith("int32")
        assert str(x.new_ones((2,)).dtype).endswith("int32")
        assert str(x.new_full((2,), 5).dtype).endswith("int32")
        assert str(x.new_tensor([1.7, 2.0]).dtype).endswith("int32")
        assert str(x.new_zeros(2, dtype=lib.float64).dtype).endswith("float64")
        assert tuple(x.new_empty(4, 1).shape) == (4, 1)
    both(lambda lib: lib.tensor([1.0]).new_full((2, 2), 3))
    both(lambda lib: lib.tensor([1.0], dtype=lib.float64).new_tensor([[1, 2]]))


# --- ranges ---------------------------------------------------------------------------------
@pytest.mark.parametrize("args", [
    (5,), (0,), (1, 10, 3), (10, 0, -2), (-3, 3), (0, 1, 0.1), (1.0, -1.0, -0.25),
    (0.5,), (2.5, 7), (0, 10, 2.5), (-1, 1, 0.3), (5, 5), (0, 1, 1 / 3),
], ids=repr)
def test_arange(args):
    both(lambda lib: lib.arange(*args))


def test_arange_dtype_and_keywords():
    both(lambda lib: lib.arange(0, 5, dtype=lib.float64))
    both(lambda lib: lib.arange(0, 5, dtype=lib.int32))
    both(lambda lib: lib.arange(0.0, 3.0, dtype=lib.int64))
    both(lambda lib: lib.arange(start=1, end=4))
    both(lambda lib: lib.arange(end=4))
    both(lambda lib: lib.arange(0, 5, step=2))
    x = fluxion.arange(3.0, requires_grad=True)
    assert x.requires_grad and x.is_leaf


@pytest.mark.parametrize("args", [(0, 1, 5), (-1, 1, 1), (0, 10, 0), (1, 1, 3), (10, 0, 6),
                                  (0, 1, 2), (-5.5, 3.25, 7), (0, 1, 100)], ids=repr)
def test_linspace(args):
    both(lambda lib: lib.linspace(*args))
    both(lambda lib: lib.linspace(*args, dtype=lib.float64))


def test_linspace_integer_dtype():
    both(lambda lib: lib.linspace(0, 10, 5, dtype=lib.int64))
    both(lambda lib: lib.linspace(0, 9, 4, dtype=lib.int32))


def test_logspace():
    both(lambda lib: lib.logspace(0, 3, 4))
    both(lambda lib: lib.logspace(0, 3, 4, base=2))


@pytest.mark.parametrize("args", [(3,), (2, 4), (4, 2), (0,), (1,)], ids=repr)
def test_eye(args):
    both(lambda lib: lib.eye(*args))
    both(lambda lib: lib.eye(*args, dtype=lib.int64))
    both(lambda lib: lib.eye(*args, dtype=lib.bool))


@pytest.mark.parametrize("fn", ["tril", "triu"])
@pytest.mark.parametrize("diagonal", [-2, -1, 0, 1, 3])
def test_tril_triu(fn, diagonal):
    data = np.arange(1, 25, dtype=np.float32)
    for shape in [(3, 4), (4, 3), (2, 3, 4)]:
        arr = data[: int(np.prod(shape))].reshape(shape)
        both(lambda lib, arr=arr: getattr(lib, fn)(lib.tensor(arr), diagonal))
        both(lambda lib, arr=arr: getattr(lib.tensor(arr), fn)(diagonal=diagonal))
    both(lambda lib: getattr(lib, fn)(lib.ones(3, 3, dtype=lib.int64), diagonal))


# --- joining and splitting -----------------------------------------------------------------
def _mats(lib):
    a = lib.tensor(np.arange(6, dtype=np.float32).reshape(2, 3))
    b = lib.tensor(np.arange(6, 12, dtype=np.float32).reshape(2, 3))
    return a, b


@pytest.mark.parametrize("dim", [0, 1, -1, -2])
def test_cat_and_stack(dim):
    both(lambda lib: lib.cat(_mats(lib), dim=dim))
    both(lambda lib: lib.cat(list(_mats(lib)), dim))
    both(lambda lib: lib.stack(_mats(lib), dim=dim))
    both(lambda lib: lib.stack(_mats(lib), dim=2 if dim == 1 else dim))


def test_cat_uneven_sizes_and_promotion():
    both(lambda lib: lib.cat([lib.ones(2, 3), lib.zeros(4, 3)]))
    both(lambda lib: lib.cat([lib.ones(2, 1), lib.zeros(2, 4)], dim=1))
    both(lambda lib: lib.cat([lib.ones(2, dtype=lib.int32), lib.zeros(2)]))
    both(lambda lib: lib.cat([lib.ones(2, dtype=lib.int32), lib.ones(2, dtype=lib.int64)]))
    both(lambda lib: lib.cat([lib.ones(2, dtype=lib.bool), lib.ones(2, dtype=lib.uint8)]))
    both(lambda lib: lib.cat([lib.ones(3)]))
    both(lambda lib: lib.cat([lib.zeros(0, 3), lib.ones(2, 3)]))
    both(lambda lib: lib.stack([lib.tensor(1.0), lib.tensor(2.0)]))
    both(lambda lib: lib.hstack([lib.ones(2), lib.zeros(3)]))
    both(lambda lib: lib.vstack([lib.ones(3), lib.zeros(3)]))


@pytest.mark.parametrize("n,size_or_sections,dim", [
    (7, 3, 0), (6, 2, 0), (7, [2, 5], 0), (6, [1, 2, 3], 0), (5, 10, 0), (4, 1, 1),
    (6, [0, 6], 0), (6, 4, 1),
], ids=repr)
def test_split(n, size_or_sections, dim):
    def run(lib):
        x = lib.tensor(np.arange(n * 4, dtype=np.float32).reshape(n, 4))
        if dim == 1:
            x = x.t()
        return x.split(size_or_sections, dim=dim), lib.split(x, size_or_sections, dim)

    (fa, fb), (ta, tb) = run(fluxion), run(torch)
    assert isinstance(fa, tuple) and len(fa) == len(ta) and len(fb) == len(tb)
    for f, t in zip(fa + fb, ta + tb):
        same(f, t)


@pytest.mark.parametrize("n,chunks", [(5, 3), (6, 4), (6, 3), (1, 2), (7, 7), (7, 1), (4, 6)])
def test_chunk(n, chunks):
    fx, tx = fluxion.arange(n), torch.arange(n)
    fo, to = fx.chunk(chunks), torch.chunk(tx, chunks)
    assert [tuple(c.shape) for c in fo] == [tuple(c.shape) for c in to]
    for f, t in zip(fo, to):
        same(f, t)
    fo = fluxion.chunk(fluxion.ones(3, n), chunks, dim=1)
    to = torch.chunk(torch.ones(3, n), chunks, dim=1)
    assert [tuple(c.shape) for c in fo] == [tuple(c.shape) for c in to]


def test_unbind_and_tensor_split():
    f = fluxion.arange(12).reshape(3, 4)
    t = torch.arange(12).reshape(3, 4)
    for a, b in zip(f.unbind(1), t.unbind(1)):
        same(a, b)
    for a, b in zip(fluxion.tensor_split(f, 3, dim=1), torch.tensor_split(t, 3, dim=1)):
        same(a, b)
    for a, b in zip(fluxion.tensor_split(f, [1, 2]), torch.tensor_split(t, [1, 2])):
        same(a, b)


def test_split_pieces_are_views():
    x = fluxion.zeros(6)
    _, b = x.split(3)
    b.fill_(1)
    assert x.tolist() == [0, 0, 0, 1, 1, 1]
    c = x.chunk(2)[0]
    c[0] = 7
    assert x[0].item() == 7


# --- where -------------------------------------------------------------------------------------
def test_where_three_argument_forms():
    cond = np.array([[True, False, True], [False, False, True]])
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.array([10.0, 20.0, 30.0], dtype=np.float32)
    both(lambda lib: lib.where(lib.tensor(cond), lib.tensor(a), lib.tensor(b)))
    both(lambda lib: lib.where(lib.tensor(cond), lib.tensor(a), 0.0))
    both(lambda lib: lib.where(lib.tensor(cond), 1.0, lib.tensor(b)))
    both(lambda lib: lib.where(lib.tensor(cond), lib.tensor(a, dtype=lib.float64),
                               lib.tensor(b)))
    both(lambda lib: lib.where(lib.tensor(cond), lib.tensor([1, 2, 3]), 0))
    both(lambda lib: lib.where(lib.tensor(cond), lib.tensor([1, 2, 3]), 0.5))
    both(lambda lib: lib.where(lib.tensor(a) > 2, lib.tensor(a), -lib.tensor(a)))
    both(lambda lib: lib.tensor(a).where(lib.tensor(cond), lib.tensor(b)))


def test_where_single_argument_is_nonzero_as_tuple():
    cond = np.array([[True, False, True], [False, False, True]])
    fo = fluxion.where(fluxion.tensor(cond))
    to = torch.where(torch.tensor(cond))
    assert isinstance(fo, tuple) and len(fo) == len(to)
    for f, t in zip(fo, to):
        same(f, t)
    same(fluxion.nonzero(fluxion.tensor(cond)), torch.nonzero(torch.tensor(cond)))


# --- random ------------------------------------------------------------------------------------
def test_rand_randn_shapes_dtypes_ranges():
    fluxion.manual_seed(0)
    x = fluxion.rand(1000)
    assert x.dtype is fluxion.float32 and tuple(x.shape) == (1000,)
    assert x.min().item() >= 0.0 and x.max().item() < 1.0
    assert 0.4 < x.mean().item() < 0.6
    assert fluxion.rand(2, 3).shape == (2, 3)
    assert fluxion.rand((2, 3)).shape == (2, 3)
    assert fluxion.rand(2, dtype=fluxion.float64).dtype is fluxion.float64
    assert fluxion.rand(()).shape == ()
    y = fluxion.randn(4000, dtype=fluxion.float64)
    assert y.dtype is fluxion.float64
    assert abs(y.mean().item()) < 0.1 and 0.9 < y.std().item() < 1.1
    assert fluxion.randn(3, 4).dtype is fluxion.float32
    assert fluxion.randn([3, 4]).shape == (3, 4)
    r = fluxion.randn(2, requires_grad=True)
    assert r.requires_grad and r.is_leaf


def test_randint():
    x = fluxion.randint(0, 10, (500,))
    assert x.dtype is fluxion.int64 and x.shape == (500,)
    assert x.min().item() >= 0 and x.max().item() <= 9
    assert set(x.tolist()) == set(range(10))
    y = fluxion.randint(5, (3, 2))
    assert y.shape == (3, 2) and y.max().item() < 5 and y.min().item() >= 0
    z = fluxion.randint(-3, -1, (50,), dtype=fluxion.int32)
    assert z.dtype is fluxion.int32 and set(z.tolist()) <= {-3, -2}
    w = fluxion.randint(0, 2, size=(4,), dtype=fluxion.float32)
    assert w.dtype is fluxion.float32
    assert fluxion.randint_like(fluxion.zeros(3, 2), 4).shape == (3, 2)


def test_randperm():
    for n in (0, 1, 10, 100):
        p = fluxion.randperm(n)
        assert p.dtype is fluxion.int64 and sorted(p.tolist()) == list(range(n))
    assert fluxion.randperm(5, dtype=fluxion.int32).dtype is fluxion.int32


def test_normal_forms():
    m = fluxion.normal(fluxion.zeros(2, 3), fluxion.ones(2, 3))
    assert m.shape == (2, 3) and m.dtype is fluxion.float32
    m = fluxion.normal(fluxion.arange(4.0), 0.0)
    assert m.tolist() == [0.0, 1.0, 2.0, 3.0]
    m = fluxion.normal(5.0, fluxion.zeros(3, dtype=fluxion.float64))
    assert m.dtype is fluxion.float64 and m.tolist() == [5.0, 5.0, 5.0]
    m = fluxion.normal(2.0, 3.0, size=(5000,))
    assert m.shape == (5000,) and m.dtype is fluxion.float32
    assert abs(m.mean().item() - 2.0) < 0.2 and abs(m.std().item() - 3.0) < 0.2
    m = fluxion.normal(fluxion.zeros(1, 3), fluxion.ones(4, 1))
    assert m.shape == (4, 3)


def test_bernoulli():
    p = fluxion.tensor([0.0, 1.0, 0.0, 1.0])
    b = fluxion.bernoulli(p)
    assert b.dtype is fluxion.float32 and b.tolist() == [0.0, 1.0, 0.0, 1.0]
    b = fluxion.bernoulli(fluxion.full((2000,), 0.3, dtype=fluxion.float64))
    assert b.dtype is fluxion.float64 and 0.25 < b.mean().item() < 0.35
    assert set(b.tolist()) <= {0.0, 1.0}
    b = fluxion.bernoulli(fluxion.zeros(10), 1.0)
    assert b.tolist() == [1.0] * 10


def test_multinomial():
    w = fluxion.tensor([0.0, 1.0, 3.0, 0.0])
    s = fluxion.multinomial(w, 2)
    assert s.dtype is fluxion.int64 and sorted(s.tolist()) == [1, 2]
    s = fluxion.multinomial(w, 500, replacement=True)
    assert s.shape == (500,) and set(s.tolist()) <= {1, 2}
    frac = (s == 2).float().mean().item()
    assert 0.65 < frac < 0.85
    w2 = fluxion.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 5.0]])
    s2 = fluxion.multinomial(w2, 3, replacement=True)
    assert s2.shape == (2, 3) and s2.tolist() == [[0, 0, 0], [2, 2, 2]]
    perm = fluxion.multinomial(fluxion.ones(6), 6)
    assert sorted(perm.tolist()) == list(range(6))
    with pytest.raises(RuntimeError):
        fluxion.multinomial(fluxion.ones(3), 4)


def test_multinomial_refusals_match_torch():
    with pytest.raises(RuntimeError):
        torch.multinomial(torch.ones(3), 4)
    with pytest.raises(RuntimeError):
        torch.multinomial(torch.tensor([-1.0, 2.0]), 1)
    with pytest.raises(RuntimeError):
        fluxion.multinomial(fluxion.tensor([-1.0, 2.0]), 1)


def test_rand_like_and_randn_like():
    x = fluxion.zeros(2, 3, dtype=fluxion.float64)
    assert fluxion.rand_like(x).dtype is fluxion.float64
    assert fluxion.randn_like(x).shape == (2, 3)
    assert fluxion.rand_like(x, dtype=fluxion.float32).dtype is fluxion.float32


DRAWS = {
    "rand": lambda g=None: fluxion.rand(5, generator=g),
    "randn": lambda g=None: fluxion.randn(2, 3, generator=g),
    "randint": lambda g=None: fluxion.randint(0, 100, (6,), generator=g),
    "randperm": lambda g=None: fluxion.randperm(20, generator=g),
    "normal": lambda g=None: fluxion.normal(0.0, 1.0, size=(4,), generator=g),
    "bernoulli": lambda g=None: fluxion.bernoulli(fluxion.full((20,), 0.5), generator=g),
    "multinomial": lambda g=None: fluxion.multinomial(fluxion.ones(10), 5, generator=g),
    "normal_": lambda g=None: fluxion.empty(5).normal_(generator=g),
    "uniform_": lambda g=None: fluxion.empty(5).uniform_(-1, 1, generator=g),
}


@pytest.mark.parametrize("name", list(DRAWS))
def test_manual_seed_reproduces(name):
    draw = DRAWS[name]
    fluxion.manual_seed(123)
    a = draw()
    b = draw()
    fluxion.manual_seed(123)
    assert draw().tolist() == a.tolist()
    assert draw().tolist() == b.tolist()
    fluxion.manual_seed(124)
    c, d = draw(), draw()
    assert (c.tolist(), d.tolist()) != (a.tolist(), b.tolist())


@pytest.mark.parametrize("name", list(DRAWS))
def test_generator_is_independent_of_default(name):
    draw = DRAWS[name]
    g1 = fluxion.Generator().manual_seed(7)
    g2 = fluxion.Generator().manual_seed(7)
    assert draw(g1).tolist() == draw(g2).tolist()
    # drawing from a generator leaves the default stream alone
    fluxion.manual_seed(0)
    ref = fluxion.rand(4).tolist()
    fluxion.manual_seed(0)
    draw(fluxion.Generator().manual_seed(1))
    assert fluxion.rand(4).tolist() == ref


def test_manual_seed_api():
    g = fluxion.manual_seed(42)
    assert isinstance(g, fluxion.Generator)
    assert fluxion.initial_seed() == 42
    g2 = fluxion.Generator()
    assert g2.manual_seed(3) is g2 and g2.initial_seed() == 3


def test_rng_state_round_trip():
    fluxion.manual_seed(5)
    fluxion.rand(3)
    state = fluxion.get_rng_state()
    assert isinstance(state, fluxion.Tensor) and state.dtype is fluxion.uint8
    a = fluxion.randn(4).tolist()
    b = fluxion.randint(0, 1000, (4,)).tolist()
    fluxion.rand(10)  # move on
    fluxion.set_rng_state(state)
    assert fluxion.randn(4).tolist() == a
    assert fluxion.randint(0, 1000, (4,)).tolist() == b
    g = fluxion.Generator().manual_seed(9)
    s = g.get_state()
    x = fluxion.rand(3, generator=g).tolist()
    g.set_state(s)
    assert fluxion.rand(3, generator=g).tolist() == x
    # the state is a copy: drawing afterwards does not change it
    s2 = g.get_state()
    fluxion.rand(3, generator=g)
    g.set_state(s2)
    assert fluxion.rand(3, generator=g).tolist() != x


def test_inplace_random_fills_keep_dtype_and_bump_version():
    x = fluxion.zeros(1000, dtype=fluxion.float64)
    v = x._version
    x.uniform_(2.0, 3.0)
    assert x.dtype is fluxion.float64 and x._version == v + 1
    assert x.min().item() >= 2.0 and x.max().item() < 3.0
    x.normal_(10.0, 0.1)
    assert abs(x.mean().item() - 10.0) < 0.05
    y = fluxion.zeros(3, 2)
    view = y[:, 0]
    view.uniform_()
    assert (y[:, 1] == 0).all().item() and (y[:, 0] != 0).all().item()
