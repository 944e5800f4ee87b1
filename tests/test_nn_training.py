"""Training trajectories against PyTorch: the same initial weights, data and updates give the
same losses step after step (an MLP with SGD + momentum, the classic MNIST network, a
normalised conv net in training mode). Also ``nn.utils``: gradient clipping and
parameter/vector conversion."""

from __future__ import annotations

import math
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

try:  # the optimizers are written in parallel; fall back to an inline update without them
    from fluxion.optim import SGD as FLUXION_SGD
except Exception:  # pragma: no cover - depends on the state of fluxion.optim
    FLUXION_SGD = None


def arr(t):
    return np.asarray(t.detach().numpy(), dtype=np.float64)


def sync(fmod, tmod):
    fmod.load_state_dict(OrderedDict((k, fluxion.tensor(v.detach().numpy())) for k, v in
                                     tmod.state_dict().items()))
    return fmod


class ManualSGD:
    """SGD with momentum written inline (PyTorch's rule: b = m*b + g; p -= lr*b)."""

    def __init__(self, lib, params, lr, momentum):
        self.lib, self.params, self.lr, self.momentum = lib, list(params), lr, momentum
        self.bufs = [None] * len(self.params)

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    def step(self):
        with self.lib.no_grad():
            for i, p in enumerate(self.params):
                if p.grad is None:
                    continue
                g = p.grad
                if self.momentum:
                    if self.bufs[i] is None:
                        self.bufs[i] = g.clone()
                    else:
                        self.bufs[i].mul_(self.momentum).add_(g)
                    g = self.bufs[i]
                p.sub_(g * self.lr)


def make_opt(lib, params, lr, momentum, use_library):
    if not use_library:
        return ManualSGD(lib, params, lr, momentum)
    if lib is torch:
        return torch.optim.SGD(params, lr=lr, momentum=momentum)
    return FLUXION_SGD(params, lr=lr, momentum=momentum)


# fluxion.optim.SGD (against torch.optim.SGD) when it imports, else the inline update
USE_OPTIM = FLUXION_SGD is not None


def train_both(build, data, loss_fn, steps, lr, momentum, use_library, train_mode=False):
    torch.manual_seed(0)
    tm = build(torch.nn)
    fm = sync(build(fluxion.nn), tm)
    tm.train(train_mode)
    fm.train(train_mode)
    topt = make_opt(torch, tm.parameters(), lr, momentum, use_library)
    fopt = make_opt(fluxion, fm.parameters(), lr, momentum, use_library)
    losses = {"fluxion": [], "torch": []}
    for step in range(steps):
        x, y = data(step)
        for lib, m, opt, key in ((torch, tm, topt, "torch"), (fluxion, fm, fopt, "fluxion")):
            opt.zero_grad()
            loss = loss_fn(lib.nn.functional, m(lib.tensor(x)), lib.tensor(y))
            loss.backward()
            opt.step()
            losses[key].append(float(loss.item()))
    return fm, tm, np.array(losses["fluxion"]), np.array(losses["torch"])


def assert_same_trajectory(fl, tl, fm, tm, atol=1e-4, param_atol=1e-4):
    assert np.all(np.isfinite(tl))
    np.testing.assert_allclose(fl, tl, rtol=0, atol=atol)
    assert tl[-1] < tl[0]  # it actually trained
    for (nf, pf), (nt, pt) in zip(fm.state_dict().items(), tm.state_dict().items()):
        assert nf == nt
        np.testing.assert_allclose(arr(pf), arr(pt), rtol=0, atol=param_atol, err_msg=nf)


# --- (a) MLP with SGD + momentum ------------------------------------------------------------
def mlp(nn):
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))


def mlp_data():
    rng = np.random.default_rng(0)
    # a learnable synthetic task: labels from a fixed random linear teacher
    x = rng.standard_normal((256, 1, 28, 28)).astype(np.float32)
    teacher = rng.standard_normal((784, 10)).astype(np.float32)
    y = (x.reshape(256, -1) @ teacher).argmax(1).astype(np.int64)
    return x, y


def test_mlp_sgd_momentum_trajectory():
    x, y = mlp_data()

    def batch(step):
        i = (step * 64) % 256
        return x[i:i + 64], y[i:i + 64]

    fm, tm, fl, tl = train_both(mlp, batch, lambda nnf, out, t: nnf.cross_entropy(out, t), 50,
                                lr=0.05, momentum=0.9, use_library=USE_OPTIM)
    assert_same_trajectory(fl, tl, fm, tm)


# --- (b) the classic MNIST network ------------------------------------------------------------
def mnist_net(nn):
    return nn.Sequential(
        nn.Conv2d(1, 10, 5), nn.MaxPool2d(2), nn.ReLU(), nn.Conv2d(10, 20, 5), nn.Dropout2d(),
        nn.MaxPool2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(320, 50), nn.ReLU(), nn.Dropout(),
        nn.Linear(50, 10), nn.LogSoftmax(dim=1))


def test_mnist_net_eval_mode_trajectory():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((16, 1, 28, 28)).astype(np.float32)
    x[:, :, 8:20, 8:20] += np.arange(16, dtype=np.float32)[:, None, None, None] % 3
    y = (np.arange(16) % 10).astype(np.int64)
    fm, tm, fl, tl = train_both(mnist_net, lambda step: (x, y),
                                lambda nnf, out, t: nnf.nll_loss(out, t), 50, lr=0.03,
                                momentum=0.5, use_library=USE_OPTIM)
    assert_same_trajectory(fl, tl, fm, tm)


# --- (c) normalisation layers in training mode ------------------------------------------------
def norm_net(nn):
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.GELU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding="same", groups=2), nn.GroupNorm(2, 8), nn.SiLU(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.LayerNorm(32), nn.Linear(32, 5))


def test_norm_net_train_mode_trajectory():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((12, 3, 8, 8)).astype(np.float32)
    y = (np.arange(12) % 5).astype(np.int64)

    def batch(step):
        return x + np.float32(0.1 * (step % 3)), y

    fm, tm, fl, tl = train_both(norm_net, batch,
                                lambda nnf, out, t: nnf.cross_entropy(out, t, label_smoothing=0.1),
                                20, lr=0.05, momentum=0.9, use_library=False, train_mode=True)
    assert_same_trajectory(fl, tl, fm, tm)
    assert int(fm[1].num_batches_tracked) == 20


# --- nn.utils: clipping ---------------------------------------------------------------------------
def _grad_pair(seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    shapes = [(4, 3), (3,), (2, 2, 2)]
    out = []
    for lib in (fluxion, torch):
        ps = []
        for s in shapes:
            p = lib.nn.Parameter(lib.zeros(*s))
            ps.append(p)
        out.append(ps)
    for i, s in enumerate(shapes):
        g = (rng.standard_normal(s) * scale).astype(np.float32)
        out[0][i].grad = fluxion.tensor(g)
        out[1][i].grad = torch.tensor(g)
    return out


@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf, 3.0, "inf"])
@pytest.mark.parametrize("max_norm", [0.5, 1e3])
def test_clip_grad_norm(norm_type, max_norm):
    fps, tps = _grad_pair()
    nt = float(norm_type)
    tf = fluxion.nn.utils.clip_grad_norm_(fps, max_norm, norm_type=nt)
    tt = torch.nn.utils.clip_grad_norm_(tps, max_norm, norm_type=nt)
    assert tuple(tf.shape) == tuple(tt.shape) == ()
    np.testing.assert_allclose(arr(tf), arr(tt), rtol=1e-6)
    for a, b in zip(fps, tps):
        np.testing.assert_allclose(arr(a.grad), arr(b.grad), rtol=1e-6, atol=1e-7)


def test_clip_grad_norm_single_tensor_generator_and_missing_grads():
    fps, tps = _grad_pair(seed=1)
    fps[1].grad = None
    tps[1].grad = None
    tf = fluxion.nn.utils.clip_grad_norm_((p for p in fps), 1.0)
    tt = torch.nn.utils.clip_grad_norm_((p for p in tps), 1.0)
    assert not isinstance(tf, float)
    np.testing.assert_allclose(arr(tf), arr(tt), rtol=1e-6)
    for a, b in zip(fps, tps):
        if b.grad is not None:
            np.testing.assert_allclose(arr(a.grad), arr(b.grad), rtol=1e-6)
    # a single tensor
    tf = fluxion.nn.utils.clip_grad_norm_(fps[0], 0.1)
    tt = torch.nn.utils.clip_grad_norm_(tps[0], 0.1)
    np.testing.assert_allclose(arr(tf), arr(tt), rtol=1e-6)
    np.testing.assert_allclose(arr(fps[0].grad), arr(tps[0].grad), rtol=1e-6)
    # no gradients at all: total norm 0
    empty_f = fluxion.nn.utils.clip_grad_norm_([fluxion.nn.Parameter(fluxion.ones(2))], 1.0)
    empty_t = torch.nn.utils.clip_grad_norm_([torch.nn.Parameter(torch.ones(2))], 1.0)
    assert float(empty_f) == float(empty_t) == 0.0


def test_clip_grad_norm_nonfinite():
    for lib in (fluxion, torch):
        p = lib.nn.Parameter(lib.zeros(3))
        p.grad = lib.tensor([1.0, float("inf"), 2.0])
        with pytest.raises(RuntimeError, match="non-finite"):
            lib.nn.utils.clip_grad_norm_([p], 1.0, error_if_nonfinite=True)
    out = []
    for lib in (fluxion, torch):
        p = lib.nn.Parameter(lib.zeros(3))
        p.grad = lib.tensor([1.0, float("nan"), 2.0])
        total = lib.nn.utils.clip_grad_norm_([p], 1.0)
        out.append((float(total), np.isnan(arr(p.grad)).tolist()))
    assert math.isnan(out[0][0]) and math.isnan(out[1][0])
    assert out[0][1] == out[1][1]


def test_clip_grad_norm_on_a_trained_model():
    torch.manual_seed(0)
    tm = mlp(torch.nn)
    fm = sync(mlp(fluxion.nn), tm)
    x, y = mlp_data()
    for lib, m in ((torch, tm), (fluxion, fm)):
        lib.nn.functional.cross_entropy(m(lib.tensor(x[:32])), lib.tensor(y[:32])).backward()
    nf = fluxion.nn.utils.clip_grad_norm_(fm.parameters(), 0.01)
    nt = torch.nn.utils.clip_grad_norm_(tm.parameters(), 0.01)
    np.testing.assert_allclose(float(nf), float(nt), rtol=1e-5)
    for (_, a), (_, b) in zip(fm.named_parameters(), tm.named_parameters()):
        np.testing.assert_allclose(arr(a.grad), arr(b.grad), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("clip", [0.1, 1.0, 5.0])
def test_clip_grad_value(clip):
    fps, tps = _grad_pair(scale=2.0)
    assert fluxion.nn.utils.clip_grad_value_(fps, clip) is None
    torch.nn.utils.clip_grad_value_(tps, clip)
    for a, b in zip(fps, tps):
        np.testing.assert_array_equal(arr(a.grad), arr(b.grad))
    # a single tensor works too
    fluxion.nn.utils.clip_grad_value_(fps[0], 0.01)
    assert np.abs(arr(fps[0].grad)).max() <= 0.01 + 1e-9


# --- nn.utils: parameters <-> vector ----------------------------------------------------------
def test_parameters_to_vector_and_back():
    torch.manual_seed(0)
    tm = mnist_net(torch.nn)
    fm = sync(mnist_net(fluxion.nn), tm)
    vf = fluxion.nn.utils.parameters_to_vector(fm.parameters())
    vt = torch.nn.utils.parameters_to_vector(tm.parameters())
    assert tuple(vf.shape) == tuple(vt.shape)
    np.testing.assert_array_equal(arr(vf), arr(vt))
    new = np.random.default_rng(0).standard_normal(vt.shape[0]).astype(np.float32)
    fluxion.nn.utils.vector_to_parameters(fluxion.tensor(new), fm.parameters())
    torch.nn.utils.vector_to_parameters(torch.tensor(new), tm.parameters())
    for (nf, a), (_, b) in zip(fm.named_parameters(), tm.named_parameters()):
        np.testing.assert_array_equal(arr(a), arr(b), err_msg=nf)
        assert a.is_leaf and a.requires_grad
    # the flat vector is differentiable with respect to the parameters
    vf = fluxion.nn.utils.parameters_to_vector(fm.parameters())
    (vf * 2).sum().backward()
    assert all(np.all(arr(p.grad) == 2.0) for p in fm.parameters())
    for lib in (fluxion, torch):
        with pytest.raises(TypeError):
            lib.nn.utils.vector_to_parameters(np.zeros(3), [lib.nn.Parameter(lib.zeros(3))])
