"""Every ``fluxion.nn`` layer against its ``torch.nn`` twin: with PyTorch's parameters
copied in, the same inputs give the same outputs, input gradients, parameter gradients and
(for batch norm) running statistics. Also default initialisation (shapes, dtypes, bounds and
moments) and dropout's statistics."""

from __future__ import annotations

import math
import warnings
from collections import OrderedDict

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


# --- helpers ------------------------------------------------------------------------------
def arr(t):
    return np.asarray(t.detach().numpy(), dtype=np.float64)


def close(f, t, rtol=1e-5, atol=1e-5, what=""):
    if t is None or f is None:
        assert f is None and t is None, (what, f, t)
        return
    assert tuple(f.shape) == tuple(t.shape), (what, tuple(f.shape), tuple(t.shape))
    assert f.dtype.name == str(t.dtype).removeprefix("torch."), (what, f.dtype, t.dtype)
    np.testing.assert_allclose(arr(f), arr(t), rtol=rtol, atol=atol, err_msg=what)


def sync(fmod, tmod):
    sd = OrderedDict((k, fluxion.tensor(v.detach().numpy())) for k, v in
                     tmod.state_dict().items())
    fmod.load_state_dict(sd)
    return fmod


def rand(*shape, seed=0, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def run_pair(build, x, *, train=False, steps=1, rtol=1e-5, atol=1e-5, x_grad=True,
             perturb_params=True):
    """Build the layer in both libraries with torch's parameters, run ``steps`` forward and
    backward passes on ``x`` (and shifted copies) and compare everything."""
    torch.manual_seed(0)
    tm = build(torch.nn)
    fm = build(fluxion.nn)
    if perturb_params:  # make affine parameters non-trivial (default ones/zeros hide bugs)
        with torch.no_grad():
            for p in tm.parameters():
                p.add_(torch.randn(p.shape) * 0.1)
    sync(fm, tm)
    tm.train(train)
    fm.train(train)
    for step in range(steps):
        xs = x + np.float32(0.25 * step) if x.dtype.kind == "f" else x
        xt = torch.tensor(xs, requires_grad=x_grad and xs.dtype.kind == "f")
        xf = fluxion.tensor(xs, requires_grad=x_grad and xs.dtype.kind == "f")
        yt, yf = tm(xt), fm(xf)
        close(yf, yt, rtol, atol, f"output (step {step})")
        g = rand(*yt.shape, seed=100 + step)
        tm.zero_grad()
        fm.zero_grad()
        (yt * torch.tensor(g)).sum().backward()
        (yf * fluxion.tensor(g)).sum().backward()
        if xt.requires_grad:
            close(xf.grad, xt.grad, rtol, atol, f"input grad (step {step})")
        tp, fp = dict(tm.named_parameters()), dict(fm.named_parameters())
        assert list(tp) == list(fp)
        for name in tp:
            close(fp[name].grad, tp[name].grad, rtol, atol, f"grad of {name} (step {step})")
        ts, fs = tm.state_dict(), fm.state_dict()
        assert list(ts) == list(fs)
        for name in ts:
            close(fs[name], ts[name], rtol, atol, f"state {name} (step {step})")
    return fm, tm


# --- Linear ---------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(4, 6), (2, 3, 6), (6,), (0, 6)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear(shape, bias):
    run_pair(lambda nn: nn.Linear(6, 5, bias=bias), rand(*shape))


def test_linear_float64():
    run_pair(lambda nn: nn.Linear(6, 5, dtype=(fluxion if nn is fluxion.nn else torch).float64),
             rand(3, 6).astype(np.float64), rtol=1e-12, atol=1e-12)


# --- convolutions ----------------------------------------------------------------------------
CONV2D = {
    "basic": (dict(in_channels=3, out_channels=4, kernel_size=3), (2, 3, 9, 8)),
    "rect_kernel": (dict(in_channels=3, out_channels=4, kernel_size=(2, 4)), (2, 3, 9, 8)),
    "stride": (dict(in_channels=3, out_channels=4, kernel_size=3, stride=2), (2, 3, 9, 8)),
    "stride_pair": (dict(in_channels=3, out_channels=4, kernel_size=3, stride=(1, 3)),
                    (2, 3, 9, 10)),
    "padding": (dict(in_channels=3, out_channels=4, kernel_size=3, padding=1), (2, 3, 7, 6)),
    "padding_pair": (dict(in_channels=3, out_channels=4, kernel_size=3, padding=(2, 0)),
                     (2, 3, 7, 6)),
    "same_odd": (dict(in_channels=3, out_channels=4, kernel_size=3, padding="same"),
                 (2, 3, 7, 6)),
    "same_even": (dict(in_channels=3, out_channels=4, kernel_size=(4, 2), padding="same"),
                  (2, 3, 7, 6)),
    "same_dilated": (dict(in_channels=3, out_channels=4, kernel_size=3, padding="same",
                          dilation=2), (2, 3, 9, 8)),
    "valid": (dict(in_channels=3, out_channels=4, kernel_size=3, padding="valid"),
              (2, 3, 7, 6)),
    "dilation": (dict(in_channels=3, out_channels=4, kernel_size=3, dilation=2), (2, 3, 9, 8)),
    "dilation_pair": (dict(in_channels=3, out_channels=4, kernel_size=2, dilation=(3, 1),
                           padding=1), (2, 3, 9, 8)),
    "groups": (dict(in_channels=4, out_channels=6, kernel_size=3, groups=2), (2, 4, 7, 6)),
    "depthwise": (dict(in_channels=4, out_channels=4, kernel_size=3, groups=4, padding=1),
                  (2, 4, 7, 6)),
    "no_bias": (dict(in_channels=3, out_channels=4, kernel_size=3, bias=False), (2, 3, 7, 6)),
    "everything": (dict(in_channels=4, out_channels=8, kernel_size=(3, 2), stride=(2, 1),
                        padding=(1, 2), dilation=(1, 2), groups=2, bias=False), (3, 4, 11, 9)),
    "1x1": (dict(in_channels=5, out_channels=2, kernel_size=1), (2, 5, 4, 4)),
    "unbatched": (dict(in_channels=3, out_channels=4, kernel_size=3, padding=1), (3, 5, 6)),
}


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("name", list(CONV2D))
def test_conv2d(name):
    kw, shape = CONV2D[name]
    run_pair(lambda nn: nn.Conv2d(**kw), rand(*shape))


CONV1D = {
    "basic": (dict(in_channels=3, out_channels=4, kernel_size=3), (2, 3, 10)),
    "stride_pad": (dict(in_channels=3, out_channels=4, kernel_size=4, stride=2, padding=2),
                   (2, 3, 11)),
    "same": (dict(in_channels=3, out_channels=4, kernel_size=4, padding="same", dilation=2),
             (2, 3, 11)),
    "groups": (dict(in_channels=4, out_channels=2, kernel_size=3, groups=2, bias=False),
               (2, 4, 9)),
    "unbatched": (dict(in_channels=3, out_channels=4, kernel_size=3), (3, 10)),
}


@pytest.mark.parametrize("name", list(CONV1D))
def test_conv1d(name):
    kw, shape = CONV1D[name]
    run_pair(lambda nn: nn.Conv1d(**kw), rand(*shape))


TCONV = {
    "basic": (dict(in_channels=3, out_channels=4, kernel_size=3), (2, 3, 5, 4)),
    "stride": (dict(in_channels=3, out_channels=4, kernel_size=3, stride=2), (2, 3, 5, 4)),
    "stride_padding": (dict(in_channels=3, out_channels=4, kernel_size=4, stride=2, padding=1),
                       (2, 3, 5, 4)),
    "output_padding": (dict(in_channels=3, out_channels=4, kernel_size=3, stride=2, padding=1,
                            output_padding=1), (2, 3, 5, 4)),
    "output_padding_pair": (dict(in_channels=3, out_channels=4, kernel_size=3, stride=(3, 2),
                                 padding=(1, 0), output_padding=(2, 1)), (2, 3, 4, 5)),
    "groups": (dict(in_channels=4, out_channels=6, kernel_size=3, stride=2, groups=2),
               (2, 4, 4, 3)),
    "dilation": (dict(in_channels=3, out_channels=2, kernel_size=3, dilation=2), (2, 3, 4, 5)),
    "dilation_stride_pad": (dict(in_channels=2, out_channels=4, kernel_size=(2, 3), stride=2,
                                 dilation=(2, 1), padding=(1, 2), output_padding=1),
                            (2, 2, 5, 5)),
    "no_bias": (dict(in_channels=3, out_channels=4, kernel_size=2, bias=False), (2, 3, 5, 4)),
    "groups_everything": (dict(in_channels=6, out_channels=9, kernel_size=3, stride=2,
                               padding=1, output_padding=1, groups=3, dilation=1),
                          (2, 6, 4, 4)),
    "unbatched": (dict(in_channels=3, out_channels=4, kernel_size=3, stride=2), (3, 4, 4)),
}


@pytest.mark.parametrize("name", list(TCONV))
def test_conv_transpose2d(name):
    kw, shape = TCONV[name]
    run_pair(lambda nn: nn.ConvTranspose2d(**kw), rand(*shape))


def test_conv_transpose2d_positional_arguments_follow_torch():
    # ConvTranspose2d(in, out, k, stride, padding, output_padding, groups, bias, dilation)
    run_pair(lambda nn: nn.ConvTranspose2d(4, 6, 3, 2, 1, 1, 2, False, 1), rand(2, 4, 3, 3))
    f, t = fluxion.nn.ConvTranspose2d(4, 6, 3, 2, 1, 1, 2), torch.nn.ConvTranspose2d(
        4, 6, 3, 2, 1, 1, 2)
    assert repr(f) == repr(t)


def test_conv_transpose2d_output_size():
    tm = torch.nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1)
    fm = sync(fluxion.nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1), tm)
    x = rand(1, 3, 4, 4)
    close(fm(fluxion.tensor(x), output_size=[8, 8]), tm(torch.tensor(x), output_size=[8, 8]))
    close(fm(fluxion.tensor(x), output_size=(1, 2, 7, 7)),
          tm(torch.tensor(x), output_size=(1, 2, 7, 7)))


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
@pytest.mark.parametrize("kw", [dict(padding=1), dict(padding=(2, 1), stride=2),
                                dict(padding="same", dilation=2), dict(padding=0)])
def test_conv2d_padding_modes(mode, kw):
    run_pair(lambda nn: nn.Conv2d(3, 4, 3, padding_mode=mode, **kw), rand(2, 3, 7, 6))
    assert repr(fluxion.nn.Conv2d(3, 4, 3, padding_mode=mode, **kw)) == repr(
        torch.nn.Conv2d(3, 4, 3, padding_mode=mode, **kw))


@pytest.mark.parametrize("mode", ["reflect", "circular"])
def test_conv1d_padding_modes(mode):
    run_pair(lambda nn: nn.Conv1d(3, 4, 4, padding="same", padding_mode=mode), rand(2, 3, 9))
    run_pair(lambda nn: nn.Conv1d(3, 4, 3, padding=2, padding_mode=mode), rand(3, 9))


def test_conv_errors_like_torch():
    for nn in (fluxion.nn, torch.nn):
        with pytest.raises(ValueError):
            nn.Conv2d(3, 4, 3, groups=2)
        with pytest.raises(ValueError):
            nn.Conv2d(4, 3, 3, groups=2)
        with pytest.raises(ValueError):
            nn.Conv2d(4, 4, 3, stride=2, padding="same")
        with pytest.raises(ValueError):
            nn.Conv2d(4, 4, 3, padding="full")
        with pytest.raises(ValueError):
            nn.Conv2d(4, 4, 3, padding_mode="mirror")
        with pytest.raises(ValueError):
            nn.ConvTranspose2d(4, 4, 3, padding_mode="reflect")
        lib = fluxion if nn is fluxion.nn else torch
        with pytest.raises(RuntimeError):
            nn.Conv2d(3, 4, 3)(lib.zeros(1, 2, 5, 5))  # wrong channel count
        with pytest.raises(RuntimeError):
            nn.Conv2d(3, 4, 5)(lib.zeros(1, 3, 3, 3))  # kernel larger than input


# --- pooling ---------------------------------------------------------------------------------
POOL = {
    "max2d": (lambda nn: nn.MaxPool2d(2), (2, 3, 8, 6)),
    "max2d_odd": (lambda nn: nn.MaxPool2d(2), (2, 3, 7, 5)),
    "max2d_stride": (lambda nn: nn.MaxPool2d(3, stride=2), (2, 3, 9, 8)),
    "max2d_pad": (lambda nn: nn.MaxPool2d(3, stride=2, padding=1), (2, 3, 9, 8)),
    "max2d_rect": (lambda nn: nn.MaxPool2d((2, 3), stride=(1, 2)), (2, 2, 6, 9)),
    "max2d_dilation": (lambda nn: nn.MaxPool2d(2, stride=1, dilation=2), (2, 2, 6, 6)),
    "max2d_ceil": (lambda nn: nn.MaxPool2d(2, ceil_mode=True), (2, 2, 7, 5)),
    "max2d_ceil_pad": (lambda nn: nn.MaxPool2d(3, 2, 1, ceil_mode=True), (1, 2, 8, 7)),
    "max2d_unbatched": (lambda nn: nn.MaxPool2d(2), (3, 6, 6)),
    "max1d": (lambda nn: nn.MaxPool1d(2), (2, 3, 9)),
    "max1d_stride_pad": (lambda nn: nn.MaxPool1d(3, stride=2, padding=1), (2, 3, 10)),
    "max1d_ceil": (lambda nn: nn.MaxPool1d(2, ceil_mode=True), (2, 3, 9)),
    "avg2d": (lambda nn: nn.AvgPool2d(2), (2, 3, 8, 6)),
    "avg2d_stride": (lambda nn: nn.AvgPool2d(3, stride=2), (2, 3, 9, 8)),
    "avg2d_pad": (lambda nn: nn.AvgPool2d(3, stride=2, padding=1), (2, 3, 9, 8)),
    "avg2d_pad_exclude": (lambda nn: nn.AvgPool2d(3, stride=2, padding=1,
                                                  count_include_pad=False), (2, 3, 9, 8)),
    "avg2d_ceil": (lambda nn: nn.AvgPool2d(2, ceil_mode=True), (2, 2, 7, 5)),
    "avg2d_ceil_pad": (lambda nn: nn.AvgPool2d(3, 2, 1, ceil_mode=True), (1, 2, 8, 7)),
    "avg2d_ceil_pad_exclude": (lambda nn: nn.AvgPool2d(3, 2, 1, ceil_mode=True,
                                                       count_include_pad=False), (1, 2, 8, 7)),
    "avg2d_divisor": (lambda nn: nn.AvgPool2d(2, divisor_override=3), (2, 2, 6, 6)),
    "avg2d_rect": (lambda nn: nn.AvgPool2d((3, 2), stride=(2, 1)), (2, 2, 7, 6)),
    "avg1d": (lambda nn: nn.AvgPool1d(2), (2, 3, 9)),
    "avg1d_pad": (lambda nn: nn.AvgPool1d(3, stride=2, padding=1), (2, 3, 10)),
    "avg1d_pad_exclude": (lambda nn: nn.AvgPool1d(3, 2, 1, count_include_pad=False),
                          (2, 3, 10)),
    "avg1d_ceil": (lambda nn: nn.AvgPool1d(2, ceil_mode=True), (2, 3, 9)),
    "adaptive_div": (lambda nn: nn.AdaptiveAvgPool2d((2, 3)), (2, 3, 8, 6)),
    "adaptive_global": (lambda nn: nn.AdaptiveAvgPool2d(1), (2, 3, 7, 5)),
    "adaptive_nondiv": (lambda nn: nn.AdaptiveAvgPool2d((3, 4)), (2, 3, 7, 5)),
    "adaptive_upsample": (lambda nn: nn.AdaptiveAvgPool2d((5, 7)), (2, 3, 3, 4)),
    "adaptive_none": (lambda nn: nn.AdaptiveAvgPool2d((None, 2)), (2, 3, 5, 5)),
    "adaptive_mixed": (lambda nn: nn.AdaptiveAvgPool2d((2, 3)), (2, 3, 4, 7)),
    "adaptive_int": (lambda nn: nn.AdaptiveAvgPool2d(3), (2, 3, 7, 8)),
    "adaptive_unbatched": (lambda nn: nn.AdaptiveAvgPool2d((2, 2)), (3, 5, 5)),
}


@pytest.mark.parametrize("name", list(POOL))
def test_pooling(name):
    build, shape = POOL[name]
    run_pair(build, rand(*shape))
    assert repr(build(fluxion.nn)) == repr(build(torch.nn))


def test_pooling_rejects_2d_inputs():
    for nn in (fluxion.nn, torch.nn):
        lib = fluxion if nn is fluxion.nn else torch
        for m in (nn.MaxPool2d(2), nn.AvgPool2d(2), nn.AdaptiveAvgPool2d(2)):
            with pytest.raises((RuntimeError, IndexError)):
                m(lib.zeros(4, 4))


def test_maxpool_return_indices():
    x = rand(2, 3, 9, 8)
    for kw in (dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1),
               dict(kernel_size=2, stride=1, dilation=2), dict(kernel_size=2, ceil_mode=True)):
        yf, inf = fluxion.nn.MaxPool2d(return_indices=True, **kw)(fluxion.tensor(x))
        yt, itt = torch.nn.MaxPool2d(return_indices=True, **kw)(torch.tensor(x))
        close(yf, yt)
        np.testing.assert_array_equal(inf.numpy(), itt.numpy())
    x1 = rand(2, 3, 11)
    yf, inf = fluxion.nn.MaxPool1d(3, 2, 1, return_indices=True)(fluxion.tensor(x1))
    yt, itt = torch.nn.MaxPool1d(3, 2, 1, return_indices=True)(torch.tensor(x1))
    close(yf, yt)
    np.testing.assert_array_equal(inf.numpy(), itt.numpy())


def test_maxpool_gradient_with_ties():
    # constant windows: PyTorch routes each window's gradient to one element
    x = np.ones((1, 1, 4, 4), np.float32)
    run_pair(lambda nn: nn.MaxPool2d(2), x)
    run_pair(lambda nn: nn.MaxPool2d(3, stride=1), x)


# --- normalisation ---------------------------------------------------------------------------
@pytest.mark.parametrize("momentum", [0.1, 0.5, None])
@pytest.mark.parametrize("shape", [(8, 4), (6, 4, 5)])
def test_batchnorm1d_train_then_eval(momentum, shape):
    x = rand(*shape, scale=2.0) + 1.0
    fm, tm = run_pair(lambda nn: nn.BatchNorm1d(4, momentum=momentum), x, train=True, steps=3)
    assert int(fm.num_batches_tracked) == 3
    # eval uses the running statistics
    for m in (fm, tm):
        m.eval()
    close(fm(fluxion.tensor(x)), tm(torch.tensor(x)))
    run_pair(lambda nn: nn.BatchNorm1d(4, momentum=momentum), x, train=False)


@pytest.mark.parametrize("momentum", [0.1, None])
def test_batchnorm2d_train_then_eval(momentum):
    x = rand(4, 3, 5, 6, scale=3.0) - 0.5
    fm, tm = run_pair(lambda nn: nn.BatchNorm2d(3, momentum=momentum), x, train=True, steps=3)
    for m in (fm, tm):
        m.eval()
    xf, xt = fluxion.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    yf, yt = fm(xf), tm(xt)
    close(yf, yt)
    yf.sum().backward()
    yt.sum().backward()
    close(xf.grad, xt.grad)
    run_pair(lambda nn: nn.BatchNorm2d(3, momentum=momentum), x, train=False)


@pytest.mark.parametrize("kw", [dict(affine=False), dict(track_running_stats=False),
                                dict(affine=False, track_running_stats=False),
                                dict(eps=1e-2), dict(bias=False)])
def test_batchnorm_options(kw):
    x = rand(5, 3, 4, 4, scale=2.0)
    run_pair(lambda nn: nn.BatchNorm2d(3, **kw), x, train=True, steps=2)
    run_pair(lambda nn: nn.BatchNorm2d(3, **kw), x, train=False)
    assert repr(fluxion.nn.BatchNorm2d(3, **kw)) == repr(torch.nn.BatchNorm2d(3, **kw))


def test_batchnorm_errors():
    for nn in (fluxion.nn, torch.nn):
        lib = fluxion if nn is fluxion.nn else torch
        with pytest.raises(ValueError):
            nn.BatchNorm2d(3)(lib.zeros(2, 3, 4))
        with pytest.raises(ValueError):
            nn.BatchNorm1d(3)(lib.zeros(1, 3))  # one value per channel in training
        with pytest.raises(RuntimeError):
            nn.BatchNorm1d(3)(lib.zeros(4, 5))  # wrong channel count
        nn.BatchNorm1d(3).eval()(lib.zeros(1, 3))  # fine in eval


@pytest.mark.parametrize("ns,shape", [(6, (4, 6)), ((3, 4), (2, 5, 3, 4)), ([4], (3, 2, 4)),
                                      (5, (5,))])
@pytest.mark.parametrize("kw", [{}, dict(elementwise_affine=False), dict(bias=False),
                                dict(eps=1e-3)])
def test_layernorm(ns, shape, kw):
    run_pair(lambda nn: nn.LayerNorm(ns, **kw), rand(*shape, scale=3.0) + 2.0)


@pytest.mark.parametrize("groups,channels,shape", [(2, 4, (3, 4, 5)), (1, 6, (2, 6, 3, 3)),
                                                   (6, 6, (2, 6, 4)), (3, 6, (2, 6, 2, 3)),
                                                   (2, 4, (3, 4))])
@pytest.mark.parametrize("kw", [{}, dict(affine=False), dict(eps=1e-3), dict(bias=False)])
def test_groupnorm(groups, channels, shape, kw):
    run_pair(lambda nn: nn.GroupNorm(groups, channels, **kw), rand(*shape, scale=2.0) - 1.0)


# --- embedding --------------------------------------------------------------------------------
@pytest.mark.parametrize("padding_idx", [None, 0, 3, -1])
def test_embedding(padding_idx):
    idx = np.array([[0, 3, 9, 3], [1, 3, 0, 9]])
    fm, tm = run_pair(lambda nn: nn.Embedding(10, 5, padding_idx=padding_idx), idx,
                      perturb_params=False)
    if padding_idx is not None:
        assert fm.padding_idx == tm.padding_idx
        row = padding_idx % 10
        assert float(fm.weight.grad[row].abs().sum()) == 0.0
        # a freshly built layer starts with a zero padding row
        fresh = fluxion.nn.Embedding(10, 5, padding_idx=padding_idx)
        assert float(fresh.weight[row].abs().sum()) == 0.0
        assert fresh.weight.requires_grad
    assert repr(fm) == repr(tm)


def test_embedding_index_shapes_and_errors():
    for idx in (np.array(4), np.array([2, 2, 2]), np.zeros((2, 0), np.int64),
                np.array([[[1, 2]], [[3, 4]]])):
        run_pair(lambda nn: nn.Embedding(6, 3), idx, perturb_params=False)
    for nn in (fluxion.nn, torch.nn):
        lib = fluxion if nn is fluxion.nn else torch
        e = nn.Embedding(4, 2)
        with pytest.raises((IndexError, RuntimeError)):
            e(lib.tensor([4]))
        with pytest.raises(RuntimeError):
            e(lib.tensor([1.0]))


@pytest.mark.parametrize("kw", [dict(max_norm=1.0), dict(max_norm=0.5, norm_type=1.0),
                                dict(scale_grad_by_freq=True),
                                dict(scale_grad_by_freq=True, padding_idx=2, max_norm=2.0)])
def test_embedding_max_norm_and_scale_grad_by_freq(kw):
    idx = np.array([[0, 2, 2], [4, 0, 2]])
    # weights scaled up so max_norm renormalises (in place, as PyTorch) some rows
    build = lambda nn: nn.Embedding(6, 3, **kw)
    tm = build(torch.nn)
    with torch.no_grad():
        tm.weight.mul_(2)
    fm = sync(build(fluxion.nn), tm)
    g = rand(2, 3, 3, seed=4)
    yt, yf = tm(torch.tensor(idx)), fm(fluxion.tensor(idx))
    close(yf, yt)
    (yt * torch.tensor(g)).sum().backward()
    (yf * fluxion.tensor(g)).sum().backward()
    close(fm.weight.grad, tm.weight.grad)
    close(fm.weight, tm.weight)  # the renormalised rows were written back
    assert repr(fm) == repr(tm)


def test_embedding_from_pretrained():
    w = rand(5, 3)
    f = fluxion.nn.Embedding.from_pretrained(fluxion.tensor(w))
    t = torch.nn.Embedding.from_pretrained(torch.tensor(w))
    assert not f.weight.requires_grad and not t.weight.requires_grad
    idx = np.array([4, 0, 2])
    close(f(fluxion.tensor(idx)), t(torch.tensor(idx)))
    f2 = fluxion.nn.Embedding.from_pretrained(fluxion.tensor(w), freeze=False, padding_idx=1)
    t2 = torch.nn.Embedding.from_pretrained(torch.tensor(w), freeze=False, padding_idx=1)
    assert f2.weight.requires_grad
    f2(fluxion.tensor(np.array([1, 2]))).sum().backward()
    t2(torch.tensor(np.array([1, 2]))).sum().backward()
    close(f2.weight.grad, t2.weight.grad)


# --- activations -------------------------------------------------------------------------------
ACTS = {
    "relu": lambda nn: nn.ReLU(),
    "leaky": lambda nn: nn.LeakyReLU(),
    "leaky_0.2": lambda nn: nn.LeakyReLU(0.2),
    "gelu": lambda nn: nn.GELU(),
    "gelu_tanh": lambda nn: nn.GELU(approximate="tanh"),
    "silu": lambda nn: nn.SiLU(),
    "elu": lambda nn: nn.ELU(),
    "elu_0.5": lambda nn: nn.ELU(alpha=0.5),
    "tanh": lambda nn: nn.Tanh(),
    "sigmoid": lambda nn: nn.Sigmoid(),
    "softplus": lambda nn: nn.Softplus(),
    "softplus_beta": lambda nn: nn.Softplus(beta=2.0, threshold=3.0),
    "softmax_1": lambda nn: nn.Softmax(dim=1),
    "softmax_-1": lambda nn: nn.Softmax(dim=-1),
    "softmax_0": lambda nn: nn.Softmax(dim=0),
    "logsoftmax_1": lambda nn: nn.LogSoftmax(dim=1),
    "logsoftmax_-1": lambda nn: nn.LogSoftmax(dim=-1),
}


@pytest.mark.parametrize("name", list(ACTS))
def test_activation(name):
    x = rand(3, 4, 5, scale=3.0)
    x[0, 0, :3] = [0.0, 1e-3, -1e-3]
    run_pair(ACTS[name], x)
    assert repr(ACTS[name](fluxion.nn)) == repr(ACTS[name](torch.nn))


@pytest.mark.parametrize("name", ["softmax_1", "logsoftmax_1", "softmax_-1", "logsoftmax_-1"])
def test_softmax_large_values(name):
    x = rand(2, 6, scale=1.0) * 1000
    x[0, 0] = 3e4
    run_pair(ACTS[name], x)


def test_softmax_implicit_dim_matches_torch():
    import warnings

    for shape in ((5,), (3, 4), (2, 3, 4), (2, 3, 4, 5)):
        x = rand(*shape)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            close(fluxion.nn.Softmax()(fluxion.tensor(x)), torch.nn.Softmax()(torch.tensor(x)))
            close(fluxion.nn.LogSoftmax()(fluxion.tensor(x)),
                  torch.nn.LogSoftmax()(torch.tensor(x)))


@pytest.mark.parametrize("name", ["relu", "leaky_0.2", "elu", "silu"])
def test_inplace_activations(name):
    builders = {"relu": lambda nn: nn.ReLU(inplace=True),
                "leaky_0.2": lambda nn: nn.LeakyReLU(0.2, inplace=True),
                "elu": lambda nn: nn.ELU(inplace=True), "silu": lambda nn: nn.SiLU(inplace=True)}
    build = builders[name]
    x = rand(3, 7, scale=2.0)
    outs = []
    for lib in (fluxion, torch):
        xl = lib.tensor(x, requires_grad=True)
        h = xl * 1.5
        y = build(lib.nn)(h)
        assert y is h or y.data_ptr() == h.data_ptr() if lib is torch else True
        (y * lib.tensor(x)).sum().backward()
        outs.append((h, xl.grad))
    close(outs[0][0], outs[1][0])
    close(outs[0][1], outs[1][1])
    assert repr(build(fluxion.nn)) == repr(build(torch.nn))


# --- dropout -----------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", ["Dropout", "Dropout2d"])
def test_dropout_eval_is_identity(cls):
    m = getattr(fluxion.nn, cls)(0.7).eval()
    x = fluxion.tensor(rand(2, 3, 4, 4), requires_grad=True)
    y = m(x)
    close(y, torch.tensor(rand(2, 3, 4, 4)), rtol=0, atol=0)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.ones((2, 3, 4, 4), np.float32))
    assert repr(m) == repr(getattr(torch.nn, cls)(0.7))


@pytest.mark.parametrize("p", [0.2, 0.5, 0.8])
def test_dropout_train_statistics_and_gradient(p):
    fluxion.manual_seed(0)
    m = fluxion.nn.Dropout(p)
    x = fluxion.tensor(np.full((200, 500), 2.0, np.float32), requires_grad=True)
    y = m(x)
    out = y.detach().numpy()
    kept = out != 0
    frac_zero = 1 - kept.mean()
    n = out.size
    assert abs(frac_zero - p) < 5 * math.sqrt(p * (1 - p) / n)
    np.testing.assert_allclose(out[kept], 2.0 / (1 - p), rtol=1e-6)
    g = rand(200, 500)
    (y * fluxion.tensor(g)).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), np.where(kept, g / (1 - p), 0.0), rtol=1e-6,
                               atol=1e-7)
    # the expectation is preserved
    assert abs(out.mean() - 2.0) < 0.05


def test_dropout_extremes_and_errors():
    x = fluxion.tensor(rand(4, 5), requires_grad=True)
    close(fluxion.nn.Dropout(0.0)(x), torch.tensor(x.detach().numpy()), rtol=0, atol=0)
    y = fluxion.nn.Dropout(1.0)(x)
    assert float(y.abs().sum()) == 0.0
    y.sum().backward()
    assert float(x.grad.abs().sum()) == 0.0
    for nn in (fluxion.nn, torch.nn):
        with pytest.raises(ValueError):
            nn.Dropout(1.5)
        with pytest.raises(ValueError):
            nn.Dropout(-0.1)


def test_dropout_is_random_across_calls_and_seeded():
    m = fluxion.nn.Dropout(0.5)
    x = fluxion.ones(1000)
    a, b = m(x).numpy(), m(x).numpy()
    assert (a != b).any()
    fluxion.manual_seed(123)
    c = m(x).numpy()
    fluxion.manual_seed(123)
    d = m(x).numpy()
    np.testing.assert_array_equal(c, d)


@pytest.mark.parametrize("shape", [(8, 50, 3, 3), (50, 4, 4)])
def test_dropout2d_zeroes_whole_channels(shape):
    p = 0.4
    fluxion.manual_seed(1)
    m = fluxion.nn.Dropout2d(p)
    x = fluxion.tensor(np.ones(shape, np.float32) * 3.0, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        y = m(x)
    out = y.detach().numpy()
    per_channel = out.reshape(shape[0], shape[1], -1)  # a 3-D input is (N, C, L), as torch
    # each channel is all zero or all 3/(1-p)
    zero = (per_channel == 0).all(-1)
    full = np.isclose(per_channel, 3.0 / (1 - p)).all(-1)
    assert (zero | full).all()
    frac = zero.mean()
    assert abs(frac - p) < 5 * math.sqrt(p * (1 - p) / zero.size)
    g = rand(*shape)
    (y * fluxion.tensor(g)).sum().backward()
    mask = (out != 0).astype(np.float32)
    np.testing.assert_allclose(x.grad.numpy(), g * mask / (1 - p), rtol=1e-6, atol=1e-7)


def test_dropout2d_mask_layout_matches_torch():
    # which entries share one draw: PyTorch's feature dropout draws once per entry of the
    # first two dimensions (a 3-D input counts as (N, C, L), with a warning)
    for shape in ((6, 8, 5), (4, 8, 2, 2), (6, 8), (2, 8, 2, 2, 2)):
        for lib in (fluxion, torch):
            lib.manual_seed(0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                y = lib.nn.functional.dropout2d(lib.ones(*shape), 0.5).numpy()
            groups = y.reshape(shape[0], shape[1], -1) != 0
            assert (groups.all(-1) | ~groups.any(-1)).all(), (lib.__name__, shape)
            # and the draws do differ along the second dimension
            assert (groups[:, :, 0].any(1) & ~groups[:, :, 0].all(1)).any(), (lib.__name__,
                                                                               shape)
    for lib in (fluxion, torch):
        with pytest.raises(RuntimeError), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lib.nn.functional.dropout2d(lib.ones(4), 0.5)
    with pytest.warns(UserWarning):
        fluxion.nn.functional.dropout2d(fluxion.ones(2, 3, 4), 0.5)


def test_dropout_inplace():
    fluxion.manual_seed(3)
    x = fluxion.ones(100, 10)
    y = fluxion.nn.Dropout(0.5, inplace=True)(x)
    np.testing.assert_array_equal(x.numpy(), y.numpy())
    assert set(np.unique(x.numpy())) <= {0.0, 2.0}


# --- default initialisation -------------------------------------------------------------------
INIT = {
    "linear": lambda nn: nn.Linear(40, 30),
    "linear_nobias": lambda nn: nn.Linear(7, 3, bias=False),
    "conv1d": lambda nn: nn.Conv1d(4, 6, 5),
    "conv2d": lambda nn: nn.Conv2d(3, 8, (3, 5)),
    "conv2d_groups": lambda nn: nn.Conv2d(4, 6, 3, groups=2),
    "tconv": lambda nn: nn.ConvTranspose2d(4, 6, 3),
    "tconv_groups": lambda nn: nn.ConvTranspose2d(4, 6, 3, groups=2),
    "bn1": lambda nn: nn.BatchNorm1d(5),
    "bn2": lambda nn: nn.BatchNorm2d(5, affine=False),
    "ln": lambda nn: nn.LayerNorm((3, 4)),
    "gn": lambda nn: nn.GroupNorm(2, 6),
    "emb": lambda nn: nn.Embedding(20, 4, padding_idx=2),
}


def _weight_fan_in(m):
    w = m.weight
    if isinstance(m, torch.nn.ConvTranspose2d):
        # PyTorch computes fan_in from dim 1 of the (in, out/groups, k, k) weight
        return w.shape[1] * math.prod(w.shape[2:])
    return w.shape[1] * math.prod(w.shape[2:])


@pytest.mark.parametrize("name", list(INIT))
def test_default_init_shapes_dtypes_bounds(name):
    fluxion.manual_seed(0)
    torch.manual_seed(0)
    f, t = INIT[name](fluxion.nn), INIT[name](torch.nn)
    fs, ts = f.state_dict(), t.state_dict()
    assert list(fs) == list(ts)
    for k in ts:
        assert tuple(fs[k].shape) == tuple(ts[k].shape), k
        assert fs[k].dtype.name == str(ts[k].dtype).removeprefix("torch."), k
    fp = dict(f.named_parameters())
    assert list(fp) == [n for n, _ in t.named_parameters()]
    for n, p in fp.items():
        assert isinstance(p, fluxion.nn.Parameter) and p.requires_grad and p.is_leaf, n
    if isinstance(t, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d,
                      torch.nn.ConvTranspose2d)):
        fan_in = _weight_fan_in(t)
        bound = 1 / math.sqrt(fan_in)  # kaiming_uniform_(a=sqrt(5)) gives 1/sqrt(fan_in)
        w = arr(f.weight)
        assert np.abs(w).max() <= bound + 1e-7
        assert np.abs(w).max() > 0.5 * bound  # actually spread over the range
        assert np.abs(arr(t.weight)).max() <= bound + 1e-7
        if t.bias is not None:
            b = arr(f.bias)
            assert np.abs(b).max() <= bound + 1e-7
            assert len(np.unique(b)) == b.size
    elif isinstance(t, torch.nn.Embedding):
        w = arr(f.weight)
        assert (w[2] == 0).all()
        assert np.abs(w).max() < 6
    else:  # norms: ones/zeros and fresh running statistics
        for k in ts:
            close(fs[k], ts[k], rtol=0, atol=0, what=k)


def test_default_init_statistics_large_layers():
    fluxion.manual_seed(1234)
    lin = fluxion.nn.Linear(400, 600)
    w = arr(lin.weight)
    bound = 1 / math.sqrt(400)
    # U(-b, b): mean 0, std b / sqrt(3)
    assert abs(w.mean()) < 0.01 * bound
    assert abs(w.std() - bound / math.sqrt(3)) < 0.01 * bound
    assert abs(arr(lin.bias).std() - bound / math.sqrt(3)) < 0.1 * bound
    conv = fluxion.nn.Conv2d(32, 64, 3)
    w = arr(conv.weight)
    bound = 1 / math.sqrt(32 * 9)
    assert abs(w.mean()) < 0.02 * bound
    assert abs(w.std() - bound / math.sqrt(3)) < 0.02 * bound
    emb = fluxion.nn.Embedding(1000, 100)
    e = arr(emb.weight)
    assert abs(e.mean()) < 0.01 and abs(e.std() - 1.0) < 0.01
    # the same layers from torch have the same moments (sanity of the expectations)
    torch.manual_seed(0)
    tw = torch.nn.Linear(400, 600).weight.detach().numpy()
    assert abs(tw.std() - (1 / math.sqrt(400)) / math.sqrt(3)) < 0.01 / math.sqrt(400)


def test_default_init_seeded_reproducible():
    fluxion.manual_seed(7)
    a = fluxion.nn.Linear(5, 4).weight.detach().numpy().copy()
    fluxion.manual_seed(7)
    b = fluxion.nn.Linear(5, 4).weight.detach().numpy().copy()
    np.testing.assert_array_equal(a, b)
    c = fluxion.nn.Linear(5, 4).weight.detach().numpy()
    assert (a != c).any()


def test_layer_dtype_argument():
    for nn, lib in ((fluxion.nn, fluxion), (torch.nn, torch)):
        for m in (nn.Linear(3, 2, dtype=lib.float64), nn.Conv2d(1, 2, 3, dtype=lib.float64),
                  nn.BatchNorm1d(3, dtype=lib.float64), nn.LayerNorm(3, dtype=lib.float64),
                  nn.Embedding(4, 2, dtype=lib.float64), nn.GroupNorm(1, 2, dtype=lib.float64)):
            assert all(p.dtype == lib.float64 for p in m.parameters()), m


# --- float64 end to end ------------------------------------------------------------------------
F64 = {
    "linear": (lambda nn, dt: nn.Linear(5, 4, dtype=dt), (3, 5)),
    "conv2d": (lambda nn, dt: nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2, dtype=dt),
               (2, 4, 7, 6)),
    "conv1d": (lambda nn, dt: nn.Conv1d(3, 2, 3, padding="same", dtype=dt), (2, 3, 8)),
    "tconv": (lambda nn, dt: nn.ConvTranspose2d(3, 4, 3, stride=2, output_padding=1, dtype=dt),
              (2, 3, 4, 4)),
    "bn2d": (lambda nn, dt: nn.BatchNorm2d(3, dtype=dt), (4, 3, 3, 3)),
    "bn1d": (lambda nn, dt: nn.BatchNorm1d(3, momentum=None, dtype=dt), (6, 3)),
    "ln": (lambda nn, dt: nn.LayerNorm((3, 4), dtype=dt), (2, 3, 4)),
    "gn": (lambda nn, dt: nn.GroupNorm(2, 4, dtype=dt), (2, 4, 5)),
    "maxpool": (lambda nn, dt: nn.MaxPool2d(3, 2, 1), (2, 3, 7, 7)),
    "avgpool": (lambda nn, dt: nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False),
                (2, 3, 8, 7)),
    "adaptive": (lambda nn, dt: nn.AdaptiveAvgPool2d((3, 2)), (2, 3, 7, 5)),
    "softmax": (lambda nn, dt: nn.LogSoftmax(dim=1), (3, 5)),
    "gelu": (lambda nn, dt: nn.GELU(approximate="tanh"), (3, 5)),
}


@pytest.mark.parametrize("name", list(F64))
@pytest.mark.parametrize("train", [False, True])
def test_layers_float64(name, train):
    build, shape = F64[name]
    fm, _ = run_pair(lambda nn: build(nn, (fluxion if nn is fluxion.nn else torch).float64),
                     rand(*shape).astype(np.float64), train=train, steps=2, rtol=1e-10,
                     atol=1e-12)
    assert all(v.dtype == fluxion.float64 for k, v in fm.state_dict().items()
               if "num_batches" not in k)
