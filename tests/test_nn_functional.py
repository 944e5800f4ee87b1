"""``fluxion.nn.functional`` against ``torch.nn.functional``: values and gradients of the
losses (every reduction, class weights, ``ignore_index``, label smoothing, probability
targets), activations, softmaxes, resampling, attention, padding, unfold/fold, embedding and
dropout; and the loss modules."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import fluxion

torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True, scope="module")
def _torch_one_thread():
    """PyTorch's intra-op threads oversubscribe small CI machines (a 10x slowdown on
    2 cores for these tiny ops); the oracle runs single-threaded."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

FF = fluxion.nn.functional
TF = torch.nn.functional
REDUCTIONS = ["none", "mean", "sum"]


# --- helpers ------------------------------------------------------------------------------
def arr(t):
    return np.asarray(t.detach().numpy(), dtype=np.float64)


def close(f, t, rtol=1e-5, atol=1e-6, what=""):
    if t is None or f is None:
        assert f is None and t is None, (what, f, t)
        return
    assert tuple(f.shape) == tuple(t.shape), (what, tuple(f.shape), tuple(t.shape))
    assert f.dtype.name == str(t.dtype).removeprefix("torch."), (what, f.dtype, t.dtype)
    np.testing.assert_allclose(arr(f), arr(t), rtol=rtol, atol=atol, err_msg=what)


def rand(*shape, seed=0, scale=1.0, dtype=np.float32):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype)


def uniform(*shape, seed=0, lo=0.0, hi=1.0):
    return np.random.default_rng(seed).uniform(lo, hi, shape).astype(np.float32)


def check(fn, *arrays, grad=None, rtol=1e-5, atol=1e-6, seed=7):
    """Evaluate ``fn(nnf, lib, *tensors)`` in both libraries and compare the outputs and the
    gradients of every floating input (or the inputs listed in ``grad``)."""
    outs, grads = [], []
    for lib, nnf in ((fluxion, FF), (torch, TF)):
        ts = []
        for i, a in enumerate(arrays):
            if a is None or not isinstance(a, np.ndarray):
                ts.append(a)
                continue
            want = a.dtype.kind == "f" and (grad is None or i in grad)
            ts.append(lib.tensor(a, requires_grad=want))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            y = fn(nnf, lib, *ts)
        outs.append(y)
        ys = y if isinstance(y, tuple) else (y,)
        total = None
        for k, yi in enumerate(ys):
            if not yi.requires_grad:
                continue
            g = rand(*yi.shape, seed=seed + k).astype(str(yi.dtype).split(".")[-1])
            term = (yi * lib.tensor(g)).sum()
            total = term if total is None else total + term
        if total is not None:
            total.backward()
        grads.append([t.grad if isinstance(t, (fluxion.Tensor, torch.Tensor)) and t.requires_grad
                      else None for t in ts])
    yf, yt = outs
    if isinstance(yt, tuple):
        assert len(yf) == len(yt)
        for k, (a, b) in enumerate(zip(yf, yt)):
            close(a, b, rtol, atol, f"output {k}")
    else:
        close(yf, yt, rtol, atol, "output")
    for i, (gf, gt) in enumerate(zip(*grads)):
        close(gf, gt, rtol, atol, f"grad of input {i}")
    return yf, yt


def ce_inputs(shape, c, seed=0, ignore=None):
    x = rand(*shape, seed=seed, scale=2.0)
    tshape = (shape[0], *shape[2:]) if len(shape) > 1 else ()
    t = np.random.default_rng(seed + 1).integers(0, c, tshape).astype(np.int64)
    if ignore is not None and t.ndim:
        flat = t.reshape(-1)
        flat[::3] = ignore
    return x, t


# --- cross_entropy / nll_loss -------------------------------------------------------------------
CE_SHAPES = {"NC": (6, 5), "NCd1d2": (3, 5, 4, 2), "NCd": (4, 5, 3), "C": (5,)}


@pytest.mark.parametrize("shape", list(CE_SHAPES))
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("ignore", [None, 2, -1])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_cross_entropy_class_indices(shape, reduction, weighted, ignore, smoothing):
    x, t = ce_inputs(CE_SHAPES[shape], 5, ignore=ignore)
    w = uniform(5, seed=3, lo=0.2, hi=2.0) if weighted else None
    kw = dict(reduction=reduction, label_smoothing=smoothing)
    if ignore is not None:
        kw["ignore_index"] = ignore
    check(lambda nnf, lib, x, t, w: nnf.cross_entropy(x, t, weight=w, **kw), x, t, w, grad=(0,))


@pytest.mark.parametrize("shape", ["NC", "NCd1d2", "C"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("smoothing", [0.0, 0.3])
def test_cross_entropy_probability_targets(shape, reduction, weighted, smoothing):
    x = rand(*CE_SHAPES[shape], scale=2.0)
    cdim = 0 if len(CE_SHAPES[shape]) == 1 else 1
    p = np.exp(rand(*CE_SHAPES[shape], seed=5))
    p = (p / p.sum(cdim, keepdims=True)).astype(np.float32)
    w = uniform(5, seed=3, lo=0.2, hi=2.0) if weighted else None
    check(lambda nnf, lib, x, p, w: nnf.cross_entropy(x, p, weight=w, reduction=reduction,
                                                  label_smoothing=smoothing), x, p, w,
          grad=(0, 1))


def test_cross_entropy_all_ignored_and_extremes():
    x, t = ce_inputs((4, 3), 3)
    t[:] = -100
    for red in REDUCTIONS:
        check(lambda nnf, lib, x, t: nnf.cross_entropy(x, t, reduction=red), x, t, grad=())
    # huge logits stay finite
    x = rand(4, 6, scale=1e4)
    t = np.array([0, 5, 2, 3])
    check(lambda nnf, lib, x, t: nnf.cross_entropy(x, t), x, t, rtol=1e-5, atol=1e-4)
    check(lambda nnf, lib, x, t: nnf.cross_entropy(x, t, label_smoothing=0.1), x, t, atol=1e-3)


def test_cross_entropy_float64():
    x, t = ce_inputs((5, 4, 3), 4)
    x = x.astype(np.float64)
    w = uniform(4, seed=2).astype(np.float64) + 0.5
    check(lambda nnf, lib, x, t, w: nnf.cross_entropy(x, t, w, label_smoothing=0.1), x, t, w,
          grad=(0,), rtol=1e-12, atol=1e-12)


def test_cross_entropy_errors():
    for lib, nnf in ((fluxion, FF), (torch, TF)):
        with pytest.raises((IndexError, RuntimeError)):
            nnf.cross_entropy(lib.zeros(2, 3), lib.tensor([0, 3]))
        with pytest.raises(RuntimeError):
            nnf.cross_entropy(lib.zeros(2, 3), lib.tensor([0, 1]), label_smoothing=1.5)
        with pytest.raises((ValueError, RuntimeError)):
            nnf.cross_entropy(lib.zeros(2, 3), lib.tensor([0, 1, 2]))


@pytest.mark.parametrize("shape", list(CE_SHAPES))
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("ignore", [None, 1])
def test_nll_loss(shape, reduction, weighted, ignore):
    x, t = ce_inputs(CE_SHAPES[shape], 5, ignore=ignore)
    w = uniform(5, seed=3, lo=0.2, hi=2.0) if weighted else None
    kw = dict(reduction=reduction)
    if ignore is not None:
        kw["ignore_index"] = ignore
    check(lambda nnf, lib, x, t, w: nnf.nll_loss(nnf.log_softmax(x, 0 if x.ndim == 1 else 1), t,
                                             weight=w, **kw), x, t, w, grad=(0,))


def test_nll_loss_legacy_arguments():
    x, t = ce_inputs((6, 4), 4)
    for kw in (dict(size_average=False), dict(reduce=False), dict(size_average=True)):
        check(lambda nnf, lib, x, t: nnf.nll_loss(x, t, **kw), x, t)


# --- regression losses ---------------------------------------------------------------------------
PAIR = (rand(4, 5, seed=1, scale=2.0), rand(4, 5, seed=2, scale=2.0))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", ["mse_loss", "l1_loss"])
def test_mse_l1(name, reduction):
    x, y = PAIR
    y[0, :2] = x[0, :2]  # exact zeros of the difference
    check(lambda nnf, lib, x, y: getattr(nnf, name)(x, y, reduction=reduction), x, y)


@pytest.mark.parametrize("name", ["mse_loss", "l1_loss"])
def test_regression_broadcasting(name):
    x, y = rand(4, 5), rand(5, seed=3)
    check(lambda nnf, lib, x, y: getattr(nnf, name)(x, y), x, y)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("beta", [1.0, 0.5, 2.0, 0.0])
def test_smooth_l1(reduction, beta):
    x, y = PAIR
    y = y.copy()
    y[0, :2] = x[0, :2]
    y[1, 0] = x[1, 0] + np.float32(beta) if beta else y[1, 0]  # exactly at the threshold
    check(lambda nnf, lib, x, y: nnf.smooth_l1_loss(x, y, reduction=reduction, beta=beta), x, y)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("delta", [1.0, 0.3, 2.5])
def test_huber(reduction, delta):
    x, y = PAIR
    y = y.copy()
    y[1, 0] = x[1, 0] + np.float32(delta)
    check(lambda nnf, lib, x, y: nnf.huber_loss(x, y, reduction=reduction, delta=delta), x, y)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
def test_binary_cross_entropy(reduction, weighted):
    p = uniform(4, 5, seed=1, lo=0.02, hi=0.98)
    t = uniform(4, 5, seed=2)
    t[0] = (t[0] > 0.5).astype(np.float32)
    w = uniform(4, 5, seed=3, lo=0.1, hi=2.0) if weighted else None
    check(lambda nnf, lib, p, t, w: nnf.binary_cross_entropy(p, t, w, reduction=reduction),
          p, t, w, grad=(0, 1))


def test_binary_cross_entropy_saturated_inputs():
    p = np.array([0.0, 1.0, 0.0, 1.0, 1e-30, 1 - 1e-7], np.float32)
    t = np.array([0.0, 1.0, 1.0, 0.0, 1.0, 0.0], np.float32)
    check(lambda nnf, lib, p, t: nnf.binary_cross_entropy(p, t, reduction="none"), p, t, grad=())
    for lib, nnf in ((fluxion, FF), (torch, TF)):
        with pytest.raises((RuntimeError, ValueError)):
            nnf.binary_cross_entropy(lib.tensor([1.5]), lib.tensor([1.0]))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("pos_weight", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_bce_with_logits(reduction, pos_weight, weighted):
    x = rand(4, 5, seed=1, scale=3.0)
    x[0, :4] = [80.0, -80.0, 0.0, 20.0]
    t = uniform(4, 5, seed=2)
    t[1] = (t[1] > 0.5).astype(np.float32)
    pw = uniform(5, seed=4, lo=0.5, hi=3.0) if pos_weight else None
    w = uniform(4, 5, seed=3, lo=0.1, hi=2.0) if weighted else None
    check(lambda nnf, lib, x, t, w, pw: nnf.binary_cross_entropy_with_logits(
        x, t, w, reduction=reduction, pos_weight=pw), x, t, w, pw, grad=(0, 1))


def test_bce_with_logits_broadcast_weight():
    x, t = rand(3, 4), uniform(3, 4)
    w = uniform(4, seed=9, lo=0.5, hi=1.5)
    check(lambda nnf, lib, x, t, w: nnf.binary_cross_entropy_with_logits(x, t, w), x, t, w,
          grad=(0,))


@pytest.mark.parametrize("reduction", [*REDUCTIONS, "batchmean"])
@pytest.mark.parametrize("log_target", [False, True])
def test_kl_div(reduction, log_target):
    x = np.log(np.random.default_rng(0).dirichlet(np.ones(5), 4)).astype(np.float32)
    p = np.random.default_rng(1).dirichlet(np.ones(5), 4).astype(np.float32)
    p[0, 1] = 0.0  # zero target probability contributes 0
    tgt = np.log(np.maximum(p, 1e-12)).astype(np.float32) if log_target else p
    check(lambda nnf, lib, x, t: nnf.kl_div(x, t, reduction=reduction, log_target=log_target),
          x, tgt, grad=(0, 1) if log_target else (0,))


def test_kl_div_target_gradient_without_zeros():
    x = np.log(np.random.default_rng(0).dirichlet(np.ones(5), 4)).astype(np.float32)
    p = np.random.default_rng(1).dirichlet(np.ones(5), 4).astype(np.float32)
    check(lambda nnf, lib, x, t: nnf.kl_div(x, t, reduction="batchmean"), x, p)


# --- similarity and encodings ---------------------------------------------------------------------
@pytest.mark.parametrize("dim,shapes", [(1, ((4, 5), (4, 5))), (-1, ((2, 3, 4), (2, 3, 4))),
                                        (0, ((6, 3), (6, 3))), (1, ((4, 5), (1, 5))),
                                        (-1, ((3, 1, 4), (2, 4)))])
def test_cosine_similarity(dim, shapes):
    a, b = rand(*shapes[0], seed=1), rand(*shapes[1], seed=2)
    check(lambda nnf, lib, a, b: nnf.cosine_similarity(a, b, dim=dim), a, b)


def test_cosine_similarity_zero_vector_and_eps():
    # a zero vector and a short one: each norm is clamped at eps separately, as in PyTorch
    a = np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0], [0.5, -1.0, 2.0]], np.float32)
    b = np.array([[1.0, 1.0, 1.0], [1e-3, 2e-3, -1e-3], [0.0, 0.0, 0.0]], np.float32)
    check(lambda nnf, lib, a, b: nnf.cosine_similarity(a, b), a, b, atol=1e-5)
    check(lambda nnf, lib, a, b: nnf.cosine_similarity(a, b, eps=0.1), a, b)
    # gradients of a 1e-5-long vector are ~1e5 times its direction's; the tolerance scales
    b[1] = [1e-5, 0.0, 0.0]
    check(lambda nnf, lib, a, b: nnf.cosine_similarity(a, b), a, b, atol=1e-5 * 1e5)


@pytest.mark.parametrize("p,dim", [(2.0, 1), (1.0, 1), (2.0, 0), (3.0, -1), (math.inf, 1)])
def test_normalize(p, dim):
    x = rand(4, 5, 3)
    x[0, :, 0] = 0.0  # a zero vector along dim 1
    check(lambda nnf, lib, x: nnf.normalize(x, p=p, dim=dim), x)
    check(lambda nnf, lib, x: nnf.normalize(x, p=p, dim=dim, eps=0.5), x)


def test_one_hot():
    for t, n in ((np.array([0, 2, 1, 2]), -1), (np.array([[1, 0], [3, 3]]), 5),
                 (np.array(2), 4), (np.zeros(0, np.int64), 3)):
        yf = FF.one_hot(fluxion.tensor(t), n)
        yt = TF.one_hot(torch.tensor(t), n)
        close(yf, yt, rtol=0, atol=0)
    for lib, nnf in ((fluxion, FF), (torch, TF)):
        with pytest.raises(RuntimeError):
            nnf.one_hot(lib.tensor([0, 3]), 3)
        with pytest.raises(RuntimeError):
            nnf.one_hot(lib.tensor([-1, 0]), 3)
        with pytest.raises(RuntimeError):
            nnf.one_hot(lib.tensor([0.0, 1.0]), 3)
        with pytest.raises(RuntimeError):
            nnf.one_hot(lib.tensor([0, 1], dtype=lib.int32), 3)


# --- interpolate ----------------------------------------------------------------------------------
INTERP = {
    "nearest_size_up": ((2, 3, 4, 5), dict(size=(7, 9), mode="nearest")),
    "nearest_size_down": ((2, 3, 8, 9), dict(size=(3, 4), mode="nearest")),
    "nearest_scale_2": ((1, 2, 3, 4), dict(scale_factor=2, mode="nearest")),
    "nearest_scale_frac": ((1, 2, 5, 6), dict(scale_factor=1.7, mode="nearest")),
    "nearest_scale_pair": ((1, 2, 5, 6), dict(scale_factor=(0.5, 2.5), mode="nearest")),
    "nearest_int_size": ((1, 2, 5, 6), dict(size=4, mode="nearest")),
    "nearest_1d": ((2, 3, 7), dict(size=11, mode="nearest")),
    "nearest_1d_scale": ((2, 3, 7), dict(scale_factor=0.6, mode="nearest")),
    "bilinear_up": ((2, 3, 4, 5), dict(size=(7, 9), mode="bilinear", align_corners=False)),
    "bilinear_up_ac": ((2, 3, 4, 5), dict(size=(7, 9), mode="bilinear", align_corners=True)),
    "bilinear_down": ((2, 3, 9, 8), dict(size=(4, 3), mode="bilinear", align_corners=False)),
    "bilinear_down_ac": ((2, 3, 9, 8), dict(size=(4, 3), mode="bilinear", align_corners=True)),
    "bilinear_scale": ((1, 2, 4, 5), dict(scale_factor=2, mode="bilinear",
                                          align_corners=False)),
    "bilinear_scale_frac": ((1, 2, 5, 6), dict(scale_factor=1.5, mode="bilinear",
                                               align_corners=False)),
    "bilinear_scale_down": ((1, 2, 9, 7), dict(scale_factor=0.4, mode="bilinear",
                                               align_corners=False)),
    "bilinear_scale_ac": ((1, 2, 4, 5), dict(scale_factor=(2, 3), mode="bilinear",
                                             align_corners=True)),
    "bilinear_to_one": ((1, 2, 4, 5), dict(size=(1, 1), mode="bilinear", align_corners=True)),
    "bilinear_recompute": ((1, 2, 5, 6), dict(scale_factor=1.7, mode="bilinear",
                                              recompute_scale_factor=True)),
    "linear_3d": ((2, 3, 6), dict(size=10, mode="linear", align_corners=False)),
    "linear_3d_ac": ((2, 3, 6), dict(size=10, mode="linear", align_corners=True)),
    "linear_3d_scale": ((2, 3, 6), dict(scale_factor=0.5, mode="linear")),
    "linear_3d_scale_up": ((2, 3, 5), dict(scale_factor=2.3, mode="linear")),
}


@pytest.mark.parametrize("name", list(INTERP))
def test_interpolate(name):
    shape, kw = INTERP[name]
    check(lambda nnf, lib, x: nnf.interpolate(x, **kw), rand(*shape))


def test_interpolate_errors():
    with pytest.raises(NotImplementedError):  # not silently wrong
        FF.interpolate(fluxion.zeros(1, 1, 8, 8), size=3, mode="bilinear", antialias=True)
    for lib, nnf in ((fluxion, FF), (torch, TF)):
        with pytest.raises(ValueError):
            nnf.interpolate(lib.zeros(1, 1, 2, 2), scale_factor=2, align_corners=True)
        with pytest.raises(ValueError):
            nnf.interpolate(lib.zeros(1, 1, 2, 2), size=3, scale_factor=2)
        with pytest.raises(ValueError):
            nnf.interpolate(lib.zeros(1, 1, 2, 2))


# --- attention --------------------------------------------------------------------------------
def _qkv(b=(2, 3), lq=4, lk=5, e=8, ev=6):
    return (rand(*b, lq, e, seed=1), rand(*b, lk, e, seed=2), rand(*b, lk, ev, seed=3))


@pytest.mark.parametrize("case", ["plain", "scale", "causal", "causal_rect", "bool_mask",
                                  "bool_mask_broadcast", "float_mask", "float_mask_broadcast",
                                  "three_dim", "causal_scale"])
def test_scaled_dot_product_attention(case):
    q, k, v = _qkv()
    mask = None
    kw = {}
    if case == "scale":
        kw["scale"] = 0.37
    elif case == "causal":
        q, k, v = _qkv(lq=5, lk=5)
        kw["is_causal"] = True
    elif case == "causal_rect":
        q, k, v = _qkv(lq=3, lk=5)
        kw["is_causal"] = True
    elif case == "causal_scale":
        q, k, v = _qkv(lq=5, lk=5)
        kw.update(is_causal=True, scale=0.5)
    elif case == "bool_mask":
        mask = np.random.default_rng(4).random((2, 3, 4, 5)) > 0.4
        mask[..., 0] = True  # no fully masked rows
    elif case == "bool_mask_broadcast":
        mask = np.random.default_rng(4).random((4, 5)) > 0.4
        mask[..., 0] = True
    elif case == "float_mask":
        mask = rand(2, 3, 4, 5, seed=9)
    elif case == "float_mask_broadcast":
        mask = rand(1, 3, 1, 5, seed=9)
    elif case == "three_dim":
        q, k, v = _qkv(b=(3,))
    check(lambda nnf, lib, q, k, v, m: nnf.scaled_dot_product_attention(q, k, v, attn_mask=m, **kw),
          q, k, v, mask, grad=(0, 1, 2))


@pytest.mark.parametrize("kind", ["bool", "float"])
def test_sdpa_fully_masked_row_attends_to_nothing(kind):
    # PyTorch's math kernel returns zeros (not nan) for a query that may see no key, and
    # the gradients stay finite
    q, k, v = _qkv(lq=3, lk=4)
    keep = np.random.default_rng(2).random((3, 4)) > 0.3
    keep[:, 0] = True
    keep[1] = False
    mask = keep if kind == "bool" else np.where(keep, 0.0, -np.inf).astype(np.float32)
    yf, _ = check(lambda nnf, lib, q, k, v, m: nnf.scaled_dot_product_attention(q, k, v,
                                                                            attn_mask=m),
                  q, k, v, mask, grad=(0, 1, 2))
    assert float(yf[:, :, 1].abs().sum()) == 0.0


def test_sdpa_grouped_query_attention():
    q, k, v = rand(2, 6, 3, 8, seed=1), rand(2, 2, 5, 8, seed=2), rand(2, 2, 5, 4, seed=3)
    check(lambda nnf, lib, q, k, v: nnf.scaled_dot_product_attention(q, k, v, enable_gqa=True,
                                                                     is_causal=True),
          q, k, v)


def test_sdpa_mask_and_causal_together_is_an_error():
    q, k, v = (fluxion.tensor(a) for a in _qkv(lq=5, lk=5))
    with pytest.raises(RuntimeError):
        FF.scaled_dot_product_attention(q, k, v, attn_mask=fluxion.ones(5, 5, dtype=fluxion.bool),
                                        is_causal=True)


# --- softmax family ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("dim", [0, 1, 2, -1, -2])
def test_softmax_dims(name, dim):
    check(lambda nnf, lib, x: getattr(nnf, name)(x, dim=dim), rand(3, 4, 5, scale=3.0))


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_large_and_special_values(name):
    x = rand(3, 6) * 100
    x[0] = [1e4, 1e4, -1e4, 0.0, 3e4, 3e4]
    x[1] = [-1e30, -1e30, -1e30, -1e30, -1e30, 0.0]
    check(lambda nnf, lib, x: getattr(nnf, name)(x, dim=1), x, atol=1e-5)
    y = np.array([[0.0, -np.inf, 1.0]], np.float32)  # -inf entries (masked logits)
    check(lambda nnf, lib, x: getattr(nnf, name)(x, dim=1), y, grad=())


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_dtype_and_scalar(name):
    check(lambda nnf, lib, x: getattr(nnf, name)(x, dim=1, dtype=lib.float64), rand(3, 4))
    check(lambda nnf, lib, x: getattr(nnf, name)(x, dim=0), np.array(1.5, np.float32))
    check(lambda nnf, lib, x: getattr(nnf, name)(x, dim=-1), np.zeros((2, 0), np.float32))


# --- activations ------------------------------------------------------------------------------
ACTS = {
    "relu": lambda nnf, lib, x: nnf.relu(x),
    "leaky_relu": lambda nnf, lib, x: nnf.leaky_relu(x),
    "leaky_relu_0.3": lambda nnf, lib, x: nnf.leaky_relu(x, 0.3),
    "leaky_relu_neg": lambda nnf, lib, x: nnf.leaky_relu(x, -0.5),
    "elu": lambda nnf, lib, x: nnf.elu(x),
    "elu_2": lambda nnf, lib, x: nnf.elu(x, alpha=2.0),
    "gelu": lambda nnf, lib, x: nnf.gelu(x),
    "gelu_tanh": lambda nnf, lib, x: nnf.gelu(x, approximate="tanh"),
    "silu": lambda nnf, lib, x: nnf.silu(x),
    "softplus": lambda nnf, lib, x: nnf.softplus(x),
    "softplus_beta": lambda nnf, lib, x: nnf.softplus(x, beta=2.0),
    "softplus_thresh": lambda nnf, lib, x: nnf.softplus(x, beta=0.5, threshold=2.0),
    "sigmoid": lambda nnf, lib, x: nnf.sigmoid(x),
    "tanh": lambda nnf, lib, x: nnf.tanh(x),
    "hardtanh": lambda nnf, lib, x: nnf.hardtanh(x, -0.5, 2.0),
    "relu6": lambda nnf, lib, x: nnf.relu6(x * 3),
}


@pytest.mark.parametrize("name", list(ACTS))
def test_activations(name):
    x = rand(4, 25, scale=4.0)
    x[0, :6] = [0.0, -0.0, 30.0, -30.0, 1e-4, -1e-4]
    check(ACTS[name], x)


@pytest.mark.parametrize("name", list(ACTS))
def test_activations_float64(name):
    x = rand(3, 7, scale=4.0, dtype=np.float64)
    check(ACTS[name], x, rtol=1e-10, atol=1e-12)


# --- linear, pad, unfold/fold, embedding ------------------------------------------------------
@pytest.mark.parametrize("xshape", [(4, 3), (2, 5, 3), (3,), (0, 3)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear(xshape, bias):
    x, w = rand(*xshape), rand(6, 3, seed=1)
    b = rand(6, seed=2) if bias else None
    check(lambda nnf, lib, x, w, b: nnf.linear(x, w, b), x, w, b)


def test_linear_shape_error():
    for lib, nnf in ((fluxion, FF), (torch, TF)):
        with pytest.raises(RuntimeError):
            nnf.linear(lib.zeros(2, 3), lib.zeros(4, 5))


@pytest.mark.parametrize("pad,value", [((1, 2), None), ((1, 1, 2, 0), 0.5), ((0, 0, 0, 0, 1, 1), 0),
                                       ((-1, 2), None), ((2, -1, -1, 1), 3.0), ((0, 0), None),
                                       ((1, 1, 1, 1, 1, 1, 1, 1), -2.0)])
def test_pad_constant(pad, value):
    check(lambda nnf, lib, x: nnf.pad(x, pad, value=value), rand(2, 3, 4, 5))


PAD_MODES = [((2, 1), (2, 3, 5)), ((2, 1), (3, 5)), ((1, 2, 2, 0), (2, 3, 4, 5)),
             ((1, 2, 2, 0), (3, 4, 5)), ((1, 1, 0, 2, 2, 1), (1, 2, 3, 4, 5)),
             ((1, 1, 0, 2, 2, 1), (2, 3, 4, 5)), ((-1, 2), (2, 3, 5)), ((4, 0), (1, 2, 5)),
             ((-2, 3), (1, 2, 5)), ((3, -2), (1, 2, 5)), ((-1, -1), (2, 5)),
             ((2, -1, -1, 2), (1, 4, 5))]


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
@pytest.mark.parametrize("case", range(len(PAD_MODES)))
def test_pad_modes(mode, case):
    pad, shape = PAD_MODES[case]
    check(lambda nnf, lib, x: nnf.pad(x, pad, mode=mode), rand(*shape))


def test_pad_mode_errors():
    for lib, nnf in ((fluxion, FF), (torch, TF)):
        with pytest.raises(NotImplementedError):
            nnf.pad(lib.zeros(5), (1, 1), mode="reflect")
        with pytest.raises(NotImplementedError):
            nnf.pad(lib.zeros(1, 2, 3, 5), (1, 1), mode="replicate")
        with pytest.raises(RuntimeError):
            nnf.pad(lib.zeros(1, 2, 5), (5, 0), mode="reflect")


def test_pad_errors():
    for lib, nnf in ((fluxion, FF), (torch, TF)):
        with pytest.raises((ValueError, RuntimeError)):
            nnf.pad(lib.zeros(2, 2), (1,))
        with pytest.raises((ValueError, RuntimeError)):
            nnf.pad(lib.zeros(2), (1, 1, 1, 1))


UNFOLD = [dict(kernel_size=3), dict(kernel_size=(2, 3), stride=2),
          dict(kernel_size=2, dilation=2, padding=1), dict(kernel_size=3, padding=(1, 2),
                                                           stride=(2, 1), dilation=(1, 2))]


@pytest.mark.parametrize("kw", UNFOLD)
def test_unfold(kw):
    check(lambda nnf, lib, x: nnf.unfold(x, **kw), rand(2, 3, 7, 8))


@pytest.mark.parametrize("kw", UNFOLD[:2])
def test_unfold_fold_unbatched(kw):
    check(lambda nnf, lib, x: nnf.unfold(x, **kw), rand(3, 7, 8))
    cols = TF.unfold(torch.zeros(3, 7, 8), **kw).shape
    check(lambda nnf, lib, c: nnf.fold(c, (7, 8), **kw), rand(*cols))


def test_fold_shape_errors():
    for lib, nnf in ((fluxion, FF), (torch, TF)):
        with pytest.raises(RuntimeError):
            nnf.fold(lib.zeros(1, 10, 16), (5, 5), 2)  # 10 is not a multiple of 2*2
        with pytest.raises(RuntimeError):
            nnf.fold(lib.zeros(1, 12, 15), (5, 5), 2)  # 4x4 = 16 blocks expected


@pytest.mark.parametrize("kw", UNFOLD)
def test_fold(kw):
    out = (7, 8)
    cols = TF.unfold(torch.zeros(2, 3, *out), **kw).shape
    check(lambda nnf, lib, c: nnf.fold(c, out, **kw), rand(*cols))
    # fold(unfold(x)) counts the overlaps
    x = rand(2, 3, *out)
    check(lambda nnf, lib, x: nnf.fold(nnf.unfold(x, **kw), out, **kw), x)


def test_embedding_rejects_out_of_range_and_negative_indices():
    for lib, nnf in ((fluxion, FF), (torch, TF)):
        w = lib.eye(3)
        for bad in ([3], [-1], [[0, 5]]):
            with pytest.raises(IndexError):
                nnf.embedding(lib.tensor(bad), w)


@pytest.mark.parametrize("padding_idx", [None, 2, -1])
def test_embedding_functional(padding_idx):
    idx = np.array([[0, 2, 4], [2, 2, 1]])
    w = rand(5, 3)
    check(lambda nnf, lib, i, w: nnf.embedding(i, w, padding_idx=padding_idx), idx, w)


# --- dropout ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["dropout", "dropout2d"])
def test_dropout_functional_eval_identity(name):
    check(lambda nnf, lib, x: getattr(nnf, name)(x, 0.6, training=False), rand(2, 3, 4, 4))


def test_dropout_functional_training():
    fluxion.manual_seed(0)
    x = fluxion.ones(400, 250, requires_grad=True)
    y = FF.dropout(x, 0.3)
    out = y.detach().numpy()
    assert abs((out == 0).mean() - 0.3) < 0.01
    np.testing.assert_allclose(out[out != 0], 1 / 0.7, rtol=1e-6)
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), out, rtol=1e-6)  # d(x*mask)/dx = mask
    # default p is 0.5 and training defaults to True, as in PyTorch
    z = FF.dropout(fluxion.ones(10000)).numpy()
    assert abs((z == 0).mean() - 0.5) < 0.03


# --- loss modules -----------------------------------------------------------------------------
def _loss_cases():
    x, t = ce_inputs((6, 5), 5, ignore=1)
    w = uniform(5, seed=3, lo=0.2, hi=2.0)
    p = uniform(6, 5, seed=4, lo=0.05, hi=0.95)
    bt = uniform(6, 5, seed=5)
    a, b = rand(6, 5, seed=8), rand(6, 5, seed=9)
    logp = np.log(np.random.default_rng(0).dirichlet(np.ones(5), 6)).astype(np.float32)
    q = np.random.default_rng(1).dirichlet(np.ones(5), 6).astype(np.float32)
    return {
        "ce": (lambda nn, lib: nn.CrossEntropyLoss(), (x, t)),
        "ce_all": (lambda nn, lib: nn.CrossEntropyLoss(weight=lib.tensor(w), ignore_index=1,
                                                       reduction="sum", label_smoothing=0.1),
                   (x, t)),
        "ce_none": (lambda nn, lib: nn.CrossEntropyLoss(reduction="none"), (x, t)),
        "nll": (lambda nn, lib: nn.NLLLoss(), (logp, t)),
        "nll_w": (lambda nn, lib: nn.NLLLoss(weight=lib.tensor(w), ignore_index=1), (logp, t)),
        "mse": (lambda nn, lib: nn.MSELoss(), (a, b)),
        "mse_sum": (lambda nn, lib: nn.MSELoss(reduction="sum"), (a, b)),
        "l1": (lambda nn, lib: nn.L1Loss(reduction="none"), (a, b)),
        "smooth": (lambda nn, lib: nn.SmoothL1Loss(beta=0.5), (a, b)),
        "smooth0": (lambda nn, lib: nn.SmoothL1Loss(beta=0.0), (a, b)),
        "huber": (lambda nn, lib: nn.HuberLoss(delta=0.7), (a, b)),
        "huber_sum": (lambda nn, lib: nn.HuberLoss(reduction="sum"), (a, b)),
        "bce": (lambda nn, lib: nn.BCELoss(), (p, bt)),
        "bce_w": (lambda nn, lib: nn.BCELoss(weight=lib.tensor(bt + 0.5), reduction="sum"),
                  (p, bt)),
        "bcel": (lambda nn, lib: nn.BCEWithLogitsLoss(), (a, bt)),
        "bcel_pw": (lambda nn, lib: nn.BCEWithLogitsLoss(pos_weight=lib.tensor(w),
                                                         weight=lib.tensor(bt + 0.1)),
                    (a, bt)),
        "kl": (lambda nn, lib: nn.KLDivLoss(reduction="batchmean"), (logp, q)),
        "kl_log": (lambda nn, lib: nn.KLDivLoss(reduction="sum", log_target=True),
                   (logp, np.log(q))),
        "kl_mean": (lambda nn, lib: nn.KLDivLoss(), (logp, q)),
    }


@pytest.mark.parametrize("name", list(_loss_cases()))
def test_loss_modules(name):
    build, (x, t) = _loss_cases()[name]
    check(lambda nnf, lib, x, t: build(lib.nn, lib)(x, t), x, t, grad=(0,))
    mf, mt = build(fluxion.nn, fluxion), build(torch.nn, torch)
    assert repr(mf) == repr(mt)
    assert mf.reduction == mt.reduction
    assert [n for n, _ in mf.named_buffers()] == [n for n, _ in mt.named_buffers()]
    assert list(mf.state_dict()) == list(mt.state_dict())


def test_loss_module_legacy_arguments():
    a, b = rand(6, 5, seed=8), rand(6, 5, seed=9)
    for kw in (dict(size_average=False), dict(reduce=False), dict(size_average=True,
                                                                   reduce=True)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mf, mt = fluxion.nn.MSELoss(**kw), torch.nn.MSELoss(**kw)
        assert mf.reduction == mt.reduction
        close(mf(fluxion.tensor(a), fluxion.tensor(b)), mt(torch.tensor(a), torch.tensor(b)))


def test_all_ignored_targets_give_zero_gradient():
    # a batch whose targets are all ignore_index: the mean is 0/0 = nan in both libraries,
    # but PyTorch's gradient is exactly zero (so one padded batch cannot poison the weights)
    x = rand(3, 4)
    t = np.full(3, 2)
    for fn in (lambda nnf, lib, x, t: nnf.nll_loss(x, t, ignore_index=2),
               lambda nnf, lib, x, t: nnf.cross_entropy(x, t, ignore_index=2),
               lambda nnf, lib, x, t: nnf.cross_entropy(x, t, ignore_index=2, label_smoothing=0.1)):
        check(fn, x, t)
