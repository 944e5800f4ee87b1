"""In-place ops and views: values, shared memory, version counters, the leaf check, and
gradients through in-place writes on non-leaf tensors and their views — all compared
with PyTorch."""

from __future__ import annotations

import numpy as np
import pytest

import fluxion

torch = pytest.importorskip("torch")

LIBS = [fluxion, torch]
X = np.array([[0.5, -1.2, 2.0, 0.1], [1.5, 0.3, -0.7, -2.2], [0.9, -0.4, 1.1, 0.6]])


def arr(f):
    return None if f is None else np.asarray(f.detach().numpy(), dtype=np.float64)


def close(f, t, rtol=1e-5, atol=1e-6):
    if t is None or f is None:
        assert f is None and t is None, (f, t)
        return
    assert tuple(f.shape) == tuple(t.shape), (tuple(f.shape), tuple(t.shape))
    assert f.dtype.name == str(t.dtype).removeprefix("torch."), (f.dtype, t.dtype)
    np.testing.assert_allclose(arr(f), arr(t), rtol=rtol, atol=atol, equal_nan=True)


def compare(scenario):
    """Run ``scenario(lib)`` (returning a tuple of tensors/None) with both libraries."""
    f, t = scenario(fluxion), scenario(torch)
    assert len(f) == len(t)
    for i, (a, b) in enumerate(zip(f, t)):
        try:
            close(a, b)
        except AssertionError as e:
            raise AssertionError(f"result {i} differs: {e}") from None


# --- in-place values ----------------------------------------------------------------------------
INPLACE = {
    "add_": lambda lib, x: x.add_(lib.tensor([1.0, 2.0, 3.0, 4.0])),
    "add_alpha": lambda lib, x: x.add_(lib.ones(4), alpha=-2),
    "add_scalar": lambda lib, x: x.add_(1.5),
    "sub_": lambda lib, x: x.sub_(lib.tensor([[1.0], [2.0], [3.0]])),
    "sub_alpha": lambda lib, x: x.sub_(lib.ones(3, 4), alpha=0.5),
    "mul_": lambda lib, x: x.mul_(lib.tensor(3.0)),
    "div_": lambda lib, x: x.div_(lib.tensor([2.0, -4.0, 8.0, 0.5])),
    "pow_": lambda lib, x: x.pow_(2),
    "zero_": lambda lib, x: x.zero_(),
    "fill_": lambda lib, x: x.fill_(-0.25),
    "fill_tensor": lambda lib, x: x.fill_(lib.tensor(7.0)),
    "copy_": lambda lib, x: x.copy_(lib.tensor(X[::-1].copy())),
    "copy_broadcast": lambda lib, x: x.copy_(lib.tensor([1.0, 2.0, 3.0, 4.0])),
    "copy_cast": lambda lib, x: x.copy_(lib.tensor([[1], [2], [3]], dtype=lib.int64)),
    "clamp_": lambda lib, x: x.clamp_(-0.5, 1.0),
    "clamp_min": lambda lib, x: x.clamp_(min=0.0),
    "clamp_max_": lambda lib, x: x.clamp_(max=0.2),
    "masked_fill_": lambda lib, x: x.masked_fill_(x > 0.4, -9.0),
    "masked_fill_bcast": lambda lib, x: x.masked_fill_(lib.tensor([True, False, True, False]),
                                                       1.0),
    "exp_": lambda lib, x: x.exp_(),
    "neg_": lambda lib, x: x.neg_(),
    "abs_": lambda lib, x: x.abs_(),
    "sqrt_abs": lambda lib, x: x.abs_().sqrt_(),
    "sigmoid_": lambda lib, x: x.sigmoid_(),
    "tanh_": lambda lib, x: x.tanh_(),
    "relu_": lambda lib, x: x.relu_(),
    "floor_": lambda lib, x: x.floor_(),
    "round_": lambda lib, x: x.round_(),
    "reciprocal_": lambda lib, x: x.reciprocal_(),
    "sin_": lambda lib, x: x.sin_(),
    "square_": lambda lib, x: x.square_(),
    "tril_": lambda lib, x: x.tril_(),
    "triu_": lambda lib, x: x.triu_(1),
    "iadd": lambda lib, x: x.__iadd__(2),
    "isub": lambda lib, x: x.__isub__(lib.ones(4)),
    "imul": lambda lib, x: x.__imul__(x),
    "itruediv": lambda lib, x: x.__itruediv__(4),
    "ipow": lambda lib, x: x.__ipow__(3),
    "scatter_": lambda lib, x: x.scatter_(1, lib.tensor([[0], [3], [1]]), -5.0),
    "scatter_add_": lambda lib, x: x.scatter_add_(
        0, lib.tensor([[0, 1, 2, 0]]), lib.ones(1, 4)),
    "nan_to_num_": lambda lib, x: x.div_(0).nan_to_num_(posinf=1.0, neginf=-1.0),
}


@pytest.mark.parametrize("name", list(INPLACE))
def test_inplace_values_and_identity(name):
    res = {}
    for lib in LIBS:
        x = lib.tensor(X, dtype=lib.float32)
        out = INPLACE[name](lib, x)
        assert out is x
        res[lib] = x
    close(res[fluxion], res[torch])


@pytest.mark.parametrize("name", list(INPLACE))
def test_inplace_through_a_non_contiguous_view(name):
    """The same ops applied to a transposed column slice write into the base."""
    res = {}
    for lib in LIBS:
        base = lib.tensor(np.concatenate([X, X * 2]).T.copy(), dtype=lib.float32)  # (4, 6)
        v = base.t()[::2]  # (3, 4) non-contiguous view
        try:
            INPLACE[name](lib, v)
        except RuntimeError:
            res[lib] = None
            continue
        res[lib] = base
    close(res[fluxion], res[torch])


VIEW_INPLACE = {
    "t_": lambda x: x.t_(),
    "transpose_": lambda x: x.transpose_(0, 1),
    "unsqueeze_": lambda x: x.unsqueeze_(0),
    "squeeze_": lambda x: x.unsqueeze_(0).squeeze_(0),
}


@pytest.mark.parametrize("name", list(VIEW_INPLACE))
def test_inplace_view_methods(name):
    res = {}
    for lib in LIBS:
        x = lib.tensor(X, dtype=lib.float32, requires_grad=True)
        y = x * 1
        out = VIEW_INPLACE[name](y)
        assert out is y
        (y * lib.arange(float(y.numel())).reshape(y.shape)).sum().backward()
        res[lib] = (y, x.grad)
    for a, b in zip(res[fluxion], res[torch]):
        close(a, b)


def test_int_tensor_refuses_float_results():
    for lib in LIBS:
        i = lib.tensor([1, 2, 3])
        with pytest.raises(RuntimeError):
            i += 1.5
        with pytest.raises(RuntimeError):
            i /= 2
        with pytest.raises(RuntimeError):
            i.mul_(lib.tensor([0.5, 0.5, 0.5]))
        i += 2
        i *= lib.tensor(3)
        assert i.tolist() == [9, 12, 15]
        b = lib.tensor([True, False])
        with pytest.raises(RuntimeError):
            b.add_(1)


def test_inplace_shape_must_not_grow():
    for lib in LIBS:
        x = lib.ones(3)
        with pytest.raises(RuntimeError):
            x.add_(lib.ones(2, 3))
        y = lib.ones(2, 3)
        y.add_(lib.ones(3))  # broadcasting into self is fine
        assert y.tolist() == [[2.0] * 3] * 2


def test_inplace_on_expanded_tensor_refused():
    for lib in LIBS:
        e = lib.ones(3, 1).expand(3, 4)
        with pytest.raises(RuntimeError):
            e.add_(1)


# --- views share memory ---------------------------------------------------------------------------
VIEWS = {
    "view": lambda x: x.view(12),
    "view_-1": lambda x: x.view(-1, 2),
    "reshape": lambda x: x.reshape(2, 6),
    "transpose": lambda x: x.transpose(0, 1),
    "t": lambda x: x.t(),
    "T": lambda x: x.T,
    "permute": lambda x: x.permute(1, 0),
    "slice": lambda x: x[1:, ::2],
    "neg_index_slice": lambda x: x[-2:, -3:-1],
    "select": lambda x: x[1],
    "select_col": lambda x: x[:, 2],
    "narrow": lambda x: x.narrow(1, 1, 2),
    "select_fn": lambda x: x.select(1, 3),
    "squeeze": lambda x: x.unsqueeze(0).squeeze(0),
    "unsqueeze": lambda x: x.unsqueeze(1),
    "detach": lambda x: x.detach(),
    "flatten": lambda x: x.flatten(),
    "unflatten": lambda x: x.unflatten(1, (2, 2)),
    "ellipsis_none": lambda x: x[..., None, 1:3],
    "split": lambda x: x.split(2, dim=1)[1],
    "chunk": lambda x: x.chunk(3)[2],
    "unbind": lambda x: x.unbind(1)[0],
    "movedim": lambda x: x.movedim(0, 1),
    "view_as": lambda x: x.view_as(x),
    "chain": lambda x: x.t()[1:].unsqueeze(0)[0, :, 1],
}


@pytest.mark.parametrize("name", list(VIEWS))
def test_views_share_memory_both_ways(name):
    res = {}
    for lib in LIBS:
        base = lib.tensor(X, dtype=lib.float32)
        v = VIEWS[name](base)
        before = v.clone()
        # writing through the view shows in the base
        v.mul_(10)
        after_view_write = base.clone()
        # writing into the base shows in the view
        base.add_(1)
        res[lib] = (before, after_view_write, v.clone(), base)
    for a, b in zip(res[fluxion], res[torch]):
        close(a, b)


@pytest.mark.parametrize("name", list(VIEWS))
def test_view_base_attribute(name):
    got = {}
    for lib in LIBS:
        base = lib.tensor(X, dtype=lib.float32)
        v = VIEWS[name](base)
        got[lib] = v._base is base
    assert got[fluxion] == got[torch]


def test_expand_is_a_read_only_view():
    for lib in LIBS:
        base = lib.tensor([[1.0], [2.0]])
        e = base.expand(2, 3)
        base[1, 0] = 5
        assert e.tolist() == [[1.0] * 3, [5.0] * 3]


def test_advanced_indexing_and_non_viewable_reshape_copy():
    for lib in LIBS:
        base = lib.tensor(X, dtype=lib.float32)
        a = base[[0, 2]]
        a.zero_()
        m = base[base > 0]
        m.zero_()
        r = base.t().reshape(-1)  # cannot be a view: a copy
        r.zero_()
        c = base.clone()
        c.zero_()
        assert np.allclose(base.numpy(), X)


def test_numpy_view_and_views_agree():
    x = fluxion.zeros(3, 4)
    v = x[1:, 2]
    v.fill_(3)
    assert x.numpy()[1:, 2].tolist() == [3.0, 3.0]
    assert np.shares_memory(v.numpy(), x.numpy())


# --- version counters ---------------------------------------------------------------------------
def _versions(lib):
    x = lib.zeros(3, 4)
    out = [x._version]
    x.add_(1)
    out.append(x._version)
    x[0] = 5
    out.append(x._version)
    x[[0, 1]] = 1.0
    out.append(x._version)
    x[x > 0] = 2.0
    out.append(x._version)
    v = x[1:]
    v.mul_(2)
    out += [x._version, v._version]
    x.zero_()
    out.append(x._version)
    x.copy_(lib.ones(3, 4))
    out.append(x._version)
    x += 1
    out.append(x._version)
    x[0] += 1
    out.append(x._version)
    x[1:, :2] = lib.tensor([[1.0, 2.0], [3.0, 4.0]])
    out.append(x._version)
    x.clamp_(0, 1)
    out.append(x._version)
    t = x.t()
    t.exp_()
    out += [x._version, t._version, v._version]
    y = x * 2  # out-of-place: no bump
    out += [x._version, y._version]
    d = x.detach()
    d.fill_(0)
    out += [x._version, d._version]
    x.masked_fill_(x == 0, 1.0)
    x.fill_(2)
    x.uniform_()
    out.append(x._version)
    return out


def test_version_counters_match_torch():
    assert _versions(fluxion) == _versions(torch)


def test_version_not_bumped_by_reads_and_out_of_place():
    x = fluxion.ones(3)
    _ = x + 1, x.sum(), x[0], x.view(3), x.clone(), x.numpy(), x.tolist(), x.exp()
    assert x._version == 0


# --- the leaf rule --------------------------------------------------------------------------------
def test_inplace_on_leaf_requiring_grad_raises():
    for lib in LIBS:
        w = lib.ones(3, requires_grad=True)
        for op in (lambda: w.add_(1), lambda: w.mul_(2), lambda: w.zero_(),
                   lambda: w.__setitem__(0, 5.0), lambda: w.copy_(lib.zeros(3)),
                   lambda: w.exp_(), lambda: w.clamp_(0, 1), lambda: w.fill_(2)):
            with pytest.raises(RuntimeError, match="leaf"):
                op()
        with pytest.raises(RuntimeError, match="leaf"):
            w[1:].mul_(2)  # a view of the leaf
        with pytest.raises(RuntimeError, match="leaf"):
            w.view(3).zero_()
        assert w.tolist() == [1.0, 1.0, 1.0]


def test_inplace_on_leaf_allowed_under_no_grad():
    for lib in LIBS:
        w = lib.ones(3, requires_grad=True)
        v0 = w._version
        with lib.no_grad():
            w.mul_(2)
            w[0] = 5.0
            w[1:].add_(1)
        assert w.tolist() == [5.0, 3.0, 3.0]
        assert w.requires_grad and w.is_leaf and w.grad_fn is None
        assert w._version == v0 + 3
        (w * w).sum().backward()
        assert w.grad.tolist() == [10.0, 6.0, 6.0]


def test_inplace_on_leaf_without_requires_grad_is_fine():
    x = fluxion.ones(2)
    x.mul_(3)
    x[0] = 0
    assert x.tolist() == [0.0, 3.0]


# --- gradients through in-place ops on non-leaves -------------------------------------------------
def _leaf(lib, data=X):
    return lib.tensor(data, dtype=lib.float32, requires_grad=True)


def sc_mul_(lib):
    x = _leaf(lib)
    y = x * 2
    y.mul_(3)
    (y * y).sum().backward()
    return y, x.grad


def sc_setitem_zero(lib):
    x = _leaf(lib)
    y = x * 2
    y[0] = 0
    (y * y).sum().backward()
    return y, x.grad


def sc_view_exp_(lib):
    x = _leaf(lib)
    y = x * 2
    y[1:].exp_()
    (y * y).sum().backward()
    return y, x.grad


def sc_brief_combined(lib):
    x = _leaf(lib)
    y = x * 2
    y.mul_(3)
    y[0] = 0
    y[1:].exp_()
    (y * x).sum().backward()
    return y, x.grad


def sc_view_of_nonleaf(lib):
    x = _leaf(lib)
    w = lib.tensor(X[::-1].copy(), dtype=lib.float32)
    y = x * 1
    y[0][1] = 5
    v = y[:, 0]
    v.mul_(2)
    (y * w).sum().backward()
    return y, v, x.grad


def sc_inplace_with_grad_operand(lib):
    x = _leaf(lib)
    z = _leaf(lib, X[:, :1] * 3)
    y = x * 1
    y.add_(z * z)
    y.mul_(z)
    y.sum().backward()
    return y, x.grad, z.grad


def sc_masked_fill(lib):
    x = _leaf(lib)
    y = x.sin()
    y.masked_fill_(x > 0.4, 0.0)
    (y * 3).sum().backward()
    return y, x.grad


def sc_clamp(lib):
    x = _leaf(lib)
    y = x * 1
    y.clamp_(-0.5, 0.5)
    (y ** 2).sum().backward()
    return y, x.grad


def sc_copy_(lib):
    x = _leaf(lib)
    z = _leaf(lib, X * 2)
    y = x * 1
    y[1:].copy_(z[:2] * 3)
    (y * y).sum().backward()
    return y, x.grad, z.grad


def sc_setitem_int_array_with_grad_value(lib):
    x = _leaf(lib)
    z = _leaf(lib, np.array([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]))
    y = x * 1
    y[[2, 0]] = z * z
    (y * lib.tensor(X, dtype=lib.float32)).sum().backward()
    return y, x.grad, z.grad


def sc_setitem_bool_mask(lib):
    x = _leaf(lib)
    y = x.exp()
    y = y * 1
    y[x < 0] = 0.0
    y.sum().backward()
    return y, x.grad


def sc_setitem_bool_mask_tensor_value(lib):
    x = _leaf(lib)
    z = _leaf(lib, np.arange(12, dtype=np.float64).reshape(3, 4))
    y = x * 1
    mask = x > 0
    y[mask] = z[mask] * 2
    (y * y).sum().backward()
    return y, x.grad, z.grad


def sc_setitem_broadcast_value(lib):
    x = _leaf(lib)
    r = _leaf(lib, np.array([1.0, -1.0]))
    y = x * 1
    y[:, 1:3] = r  # a row broadcast over three rows
    y[0, :] = r.sum()
    (y * y).sum().backward()
    return y, x.grad, r.grad


def sc_augmented_index(lib):
    x = _leaf(lib)
    y = x * 1
    v = y.unsqueeze(0)
    v[0, 1] *= 3
    y[:, 0] += x[:, 1]
    (y * y).sum().backward()
    return y, x.grad


def sc_chain_of_views(lib):
    x = _leaf(lib)
    y = x * 1
    a = y[1:]
    b = a[:, :2]
    b.zero_()
    c = y.t()[3]
    c.mul_(c.clone())
    (y * y).sum().backward()
    return y, a, x.grad


def sc_view_refreshes_after_base_write(lib):
    x = _leaf(lib)
    y = x * 1
    v = y[0]
    y.mul_(2)
    (v * v).sum().backward()
    return v, x.grad


def sc_base_sees_view_write_history(lib):
    x = _leaf(lib)
    y = x.clone()
    y.transpose(0, 1)[1].mul_(x[:, 1])
    y.sum().backward()
    return y, x.grad


def sc_zeros_filled_with_grad_values(lib):
    x = _leaf(lib, X[0])
    y = lib.zeros(3, 4)
    y[1:3] = x * 2  # a tensor that did not require grad starts to
    assert y.requires_grad and not y.is_leaf
    y[0, 1] = x[0]
    (y * y).sum().backward()
    return y, x.grad


def sc_inplace_twice_same_op(lib):
    x = _leaf(lib)
    y = x.exp()
    y = y + 0
    y.add_(1)
    y.mul_(2)
    y.exp_()
    y.sum().backward()
    return y, x.grad


def sc_scalar_operands_save_nothing(lib):
    """Ops with a Python-scalar operand need no saved tensor, so a later in-place write
    to their input is fine in torch."""
    x = _leaf(lib)
    y = x * 1
    z = y * 2 + y / 4 - y + 3
    y.add_(1)
    (z * z).sum().backward()
    return z, x.grad


def sc_inplace_on_detached_then_used(lib):
    x = _leaf(lib)
    y = x * 2
    d = y.detach()
    d.zero_()  # y's values change (shared memory), graph does not
    (y + x).sum().backward()
    return y, x.grad


def sc_setitem_ellipsis_and_none(lib):
    x = _leaf(lib)
    y = x * 1
    y[..., 0] = 1.0
    y[None, 1] = x[2] * 2
    (y * y).sum().backward()
    return y, x.grad


def sc_fill_with_grad_tensor(lib):
    x = _leaf(lib)
    s = _leaf(lib, 2.0)
    y = x * 1
    y[1].fill_(s * 3)
    (y * y).sum().backward()
    return y, x.grad, s.grad


def sc_div_pow_inplace(lib):
    x = _leaf(lib)
    y = x * 1
    y.div_(x.abs() + 1)
    y.pow_(2)
    y.sum().backward()
    return y, x.grad


SCENARIOS = [
    sc_mul_, sc_setitem_zero, sc_view_exp_, sc_brief_combined, sc_view_of_nonleaf,
    sc_inplace_with_grad_operand, sc_masked_fill, sc_clamp, sc_copy_,
    sc_setitem_int_array_with_grad_value, sc_setitem_bool_mask,
    sc_setitem_bool_mask_tensor_value, sc_setitem_broadcast_value, sc_augmented_index,
    sc_chain_of_views, sc_view_refreshes_after_base_write, sc_base_sees_view_write_history,
    sc_zeros_filled_with_grad_values, sc_inplace_twice_same_op,
    sc_scalar_operands_save_nothing, sc_inplace_on_detached_then_used,
    sc_setitem_ellipsis_and_none, sc_fill_with_grad_tensor,
    sc_div_pow_inplace,
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.__name__[3:] for s in SCENARIOS])
def test_gradients_through_inplace_match_torch(scenario):
    compare(scenario)


def test_inplace_on_nonleaf_updates_grad_fn():
    for lib in LIBS:
        x = _leaf(lib)
        y = x * 2
        before = y.grad_fn
        y.mul_(3)
        assert y.grad_fn is not before and y.requires_grad and not y.is_leaf
        assert y.grad_fn.name() == "MulBackward0"


def test_exp_output_modified_through_view_raises():
    for lib in LIBS:
        x = _leaf(lib)
        y = x.exp()
        y.view(-1)[0] = 1.0
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            y.sum().backward()


# --- __setitem__ values ---------------------------------------------------------------------------
SETITEMS = {
    "int": lambda lib, x: x.__setitem__(1, 7.0),
    "neg_int": lambda lib, x: x.__setitem__(-1, 7.0),
    "pair": lambda lib, x: x.__setitem__((2, 3), -1.0),
    "slice": lambda lib, x: x.__setitem__(slice(0, 2), 3.0),
    "step_slice": lambda lib, x: x.__setitem__((slice(None), slice(None, None, 2)), 0.0),
    "col_tensor": lambda lib, x: x.__setitem__((slice(None), 1), lib.tensor([1.0, 2.0, 3.0])),
    "row_bcast": lambda lib, x: x.__setitem__(slice(1, None), lib.tensor([9.0, 8.0, 7.0, 6.0])),
    "col_bcast": lambda lib, x: x.__setitem__(slice(None), lib.tensor([[1.0], [2.0], [3.0]])),
    "int_list": lambda lib, x: x.__setitem__([0, 2], 5.0),
    "int_tensor": lambda lib, x: x.__setitem__(lib.tensor([2, 0]),
                                               lib.tensor([[1.0] * 4, [2.0] * 4])),
    "pair_lists": lambda lib, x: x.__setitem__(([0, 1, 2], [3, 2, 1]), lib.tensor([1.0, 2.0,
                                                                                   3.0])),
    "bool_mask": lambda lib, x: x.__setitem__(x > 0.5, 0.0),
    "bool_mask_values": lambda lib, x: x.__setitem__(x < 0, lib.tensor([1.0, 2.0, 3.0, 4.0])),
    "bool_rows": lambda lib, x: x.__setitem__(lib.tensor([True, False, True]), -3.0),
    "ellipsis": lambda lib, x: x.__setitem__((Ellipsis, 0), 4.0),
    "none": lambda lib, x: x.__setitem__((None, 1), lib.tensor([1.0, 2.0, 3.0, 4.0])),
    "int_value_cast": lambda lib, x: x.__setitem__(0, lib.tensor([1, 2, 3, 4])),
    "f64_value": lambda lib, x: x.__setitem__(1, lib.tensor([0.1, 0.2, 0.3, 0.4],
                                                            dtype=lib.float64)),
    "0d_tensor": lambda lib, x: x.__setitem__((1, 1), lib.tensor(2.5)),
    "mixed_adv": lambda lib, x: x.__setitem__((slice(1, 3), [0, 3]), 11.0),
    "int_then_slice": lambda lib, x: x.__setitem__((1, slice(1, 3)), lib.tensor([6.0, 7.0])),
}


@pytest.mark.parametrize("name", list(SETITEMS))
def test_setitem_values(name):
    res = {}
    for lib in LIBS:
        x = lib.tensor(X, dtype=lib.float32)
        SETITEMS[name](lib, x)
        res[lib] = x
    close(res[fluxion], res[torch])


def test_setitem_into_int_tensor_truncates_floats():
    for lib in LIBS:
        x = lib.zeros(4, dtype=lib.int64)
        x[0] = 2.7
        x[1:3] = lib.tensor([-1.5, 3.9])
        x[3] = True
        assert x.tolist() == [2, -1, 3, 1]
        b = lib.zeros(3, dtype=lib.bool)
        b[1] = 5
        assert b.tolist() == [False, True, False]


@pytest.mark.parametrize("name", list(SETITEMS))
def test_setitem_gradients(name):
    """The same writes on a non-leaf: the overwritten entries get zero gradient, and a
    written tensor that requires grad gets its share."""
    res = {}
    for lib in LIBS:
        x = _leaf(lib)
        y = x * 1
        SETITEMS[name](lib, y)
        (y * y).sum().backward()
        res[lib] = (y, x.grad)
    for a, b in zip(res[fluxion], res[torch]):
        close(a, b)
