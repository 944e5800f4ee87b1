"""``fluxion.nn.init`` against ``torch.nn.init``: gains, fan computation, and each
initialiser's bounds and moments (Fluxion draws its own random numbers, so distributions are
compared, not values), plus the deterministic fillers value for value."""

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

FI = fluxion.nn.init
TI = torch.nn.init


def arr(t):
    return np.asarray(t.detach().numpy(), dtype=np.float64)


def fresh(*shape, dtype="float32"):
    return fluxion.empty(*shape, dtype=getattr(fluxion, dtype))


def moments_close(x, mean, std, n_sigma=6.0):
    """Sample mean and std of ``x`` agree with ``mean`` and ``std`` to within ``n_sigma``
    standard errors."""
    x = np.asarray(x, np.float64).ravel()
    n = x.size
    se_mean = std / math.sqrt(n)
    assert abs(x.mean() - mean) < n_sigma * se_mean + 1e-12, (x.mean(), mean)
    # the standard error of a sample std is about std / sqrt(2n) (exact for normals; a safe
    # bound for the lighter-tailed uniform)
    se_std = std / math.sqrt(2 * n)
    assert abs(x.std() - std) < n_sigma * se_std + 1e-12, (x.std(), std)


# --- gains and fans -------------------------------------------------------------------------
@pytest.mark.parametrize("nl,param", [("linear", None), ("conv1d", None), ("conv2d", None),
                                      ("conv3d", None), ("conv_transpose1d", None),
                                      ("conv_transpose2d", None), ("conv_transpose3d", None),
                                      ("sigmoid", None), ("tanh", None), ("relu", None),
                                      ("leaky_relu", None), ("leaky_relu", 0.2),
                                      ("leaky_relu", 0), ("leaky_relu", 1), ("selu", None)])
def test_calculate_gain(nl, param):
    assert FI.calculate_gain(nl, param) == pytest.approx(TI.calculate_gain(nl, param), rel=1e-12)


def test_calculate_gain_errors():
    for init in (FI, TI):
        with pytest.raises(ValueError):
            init.calculate_gain("swish")
        with pytest.raises(ValueError):
            init.calculate_gain("leaky_relu", "0.1")
        with pytest.raises(ValueError):
            init.calculate_gain("leaky_relu", True)


@pytest.mark.parametrize("shape", [(3, 5), (7, 2), (4, 3, 5), (8, 4, 3, 3), (2, 3, 1, 4, 5),
                                   (1, 1), (6, 0)])
def test_fan_in_and_fan_out(shape):
    f = FI._calculate_fan_in_and_fan_out(fluxion.empty(*shape))
    t = TI._calculate_fan_in_and_fan_out(torch.empty(*shape))
    assert tuple(f) == tuple(t)


def test_fan_needs_two_dimensions():
    for lib, init in ((fluxion, FI), (torch, TI)):
        for t in (lib.empty(5), lib.tensor(0.5)):
            with pytest.raises(ValueError):
                init._calculate_fan_in_and_fan_out(t)
            with pytest.raises(ValueError):
                init.xavier_uniform_(t)
            with pytest.raises(ValueError):
                init.kaiming_normal_(t)


# --- deterministic fillers -------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(3, 4), (2, 3, 4), (5,)])
def test_constant_zeros_ones(shape):
    for name, args in (("constant_", (0.75,)), ("constant_", (-3,)), ("zeros_", ()),
                       ("ones_", ())):
        f = getattr(FI, name)(fresh(*shape), *args)
        t = getattr(TI, name)(torch.empty(*shape), *args)
        np.testing.assert_array_equal(arr(f), arr(t))
        assert f.dtype == fluxion.float32


@pytest.mark.parametrize("shape", [(3, 3), (2, 5), (5, 2)])
def test_eye(shape):
    np.testing.assert_array_equal(arr(FI.eye_(fresh(*shape))), arr(TI.eye_(torch.empty(*shape))))
    for lib, init in ((fluxion, FI), (torch, TI)):
        with pytest.raises(ValueError):
            init.eye_(lib.empty(2, 2, 2))


def test_fillers_keep_parameters_leaves_and_dtype():
    p = fluxion.nn.Parameter(fluxion.empty(4, 6, dtype=fluxion.float64))
    for fn in (lambda t: FI.uniform_(t), lambda t: FI.normal_(t), lambda t: FI.constant_(t, 2),
               lambda t: FI.xavier_uniform_(t), lambda t: FI.xavier_normal_(t),
               lambda t: FI.kaiming_uniform_(t), lambda t: FI.kaiming_normal_(t),
               lambda t: FI.trunc_normal_(t), lambda t: FI.orthogonal_(t),
               lambda t: FI.eye_(t), lambda t: FI.zeros_(t), lambda t: FI.ones_(t)):
        out = fn(p)
        assert out is p
        assert p.is_leaf and p.requires_grad and p.grad_fn is None
        assert p.dtype == fluxion.float64
    # the parameter still trains normally afterwards
    (p * 2).sum().backward()
    np.testing.assert_array_equal(arr(p.grad), np.full((4, 6), 2.0))


def test_fillers_write_into_views():
    base = fluxion.zeros(4, 6)
    FI.constant_(base[1:3, ::2], 5.0)
    tb = torch.zeros(4, 6)
    TI.constant_(tb[1:3, ::2], 5.0)
    np.testing.assert_array_equal(arr(base), arr(tb))


# --- random initialisers: bounds and moments --------------------------------------------------
N = (300, 400)  # 120k samples: standard errors ~0.3% of the std


def test_uniform_():
    fluxion.manual_seed(0)
    for a, b in ((0.0, 1.0), (-2.0, 3.0), (5.0, 5.5)):
        x = arr(FI.uniform_(fresh(*N), a, b))
        assert x.min() >= a and x.max() <= b
        moments_close(x, (a + b) / 2, (b - a) / math.sqrt(12))
        # torch's samples obey the same law
        moments_close(arr(TI.uniform_(torch.empty(*N), a, b)), (a + b) / 2, (b - a) / math.sqrt(12))


def test_normal_():
    fluxion.manual_seed(1)
    for mean, std in ((0.0, 1.0), (3.0, 0.02), (-1.0, 5.0)):
        moments_close(arr(FI.normal_(fresh(*N), mean, std)), mean, std)


def _truncnorm_moments(mu, sigma, a, b):
    def pdf(z):
        return math.exp(-z * z / 2) / math.sqrt(2 * math.pi)

    def cdf(z):
        return 0.5 * (1 + math.erf(z / math.sqrt(2)))

    al, be = (a - mu) / sigma, (b - mu) / sigma
    z = cdf(be) - cdf(al)
    mean = mu + sigma * (pdf(al) - pdf(be)) / z
    var = sigma**2 * (1 + (al * pdf(al) - be * pdf(be)) / z - ((pdf(al) - pdf(be)) / z) ** 2)
    return mean, math.sqrt(var)


@pytest.mark.parametrize("mean,std,a,b", [(0.0, 1.0, -2.0, 2.0), (0.0, 0.02, -0.04, 0.04),
                                          (1.0, 2.0, 0.0, 5.0), (0.0, 1.0, -0.5, 0.5)])
def test_trunc_normal_(mean, std, a, b):
    fluxion.manual_seed(2)
    x = arr(FI.trunc_normal_(fresh(*N), mean, std, a, b))
    assert x.min() >= a and x.max() <= b
    m, s = _truncnorm_moments(mean, std, a, b)
    moments_close(x, m, s)
    t = arr(TI.trunc_normal_(torch.empty(*N), mean, std, a, b))
    assert t.min() >= a and t.max() <= b
    moments_close(t, m, s)


@pytest.mark.parametrize("shape", [(300, 200), (64, 32, 3, 3)])
@pytest.mark.parametrize("gain", [1.0, 2.5])
def test_xavier(shape, gain):
    fluxion.manual_seed(3)
    fan_in, fan_out = TI._calculate_fan_in_and_fan_out(torch.empty(*shape))
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    x = arr(FI.xavier_uniform_(fresh(*shape), gain=gain))
    assert np.abs(x).max() <= bound * (1 + 1e-6)
    moments_close(x, 0.0, bound / math.sqrt(3))
    std = gain * math.sqrt(2.0 / (fan_in + fan_out))
    moments_close(arr(FI.xavier_normal_(fresh(*shape), gain=gain)), 0.0, std)


@pytest.mark.parametrize("shape", [(300, 200), (64, 32, 3, 3)])
@pytest.mark.parametrize("mode", ["fan_in", "fan_out"])
@pytest.mark.parametrize("nl,a", [("relu", 0.0), ("leaky_relu", 0.0), ("leaky_relu", 0.2),
                                  ("leaky_relu", math.sqrt(5)), ("linear", 0.0),
                                  ("tanh", 0.0)])
def test_kaiming(shape, mode, nl, a):
    fluxion.manual_seed(4)
    fan_in, fan_out = TI._calculate_fan_in_and_fan_out(torch.empty(*shape))
    fan = fan_in if mode == "fan_in" else fan_out
    std = TI.calculate_gain(nl, a) / math.sqrt(fan)
    bound = math.sqrt(3.0) * std
    x = arr(FI.kaiming_uniform_(fresh(*shape), a=a, mode=mode, nonlinearity=nl))
    assert np.abs(x).max() <= bound * (1 + 1e-6)
    moments_close(x, 0.0, std)
    moments_close(arr(FI.kaiming_normal_(fresh(*shape), a=a, mode=mode, nonlinearity=nl)),
                  0.0, std)
    # torch's own samples agree with the same expectations
    moments_close(arr(TI.kaiming_normal_(torch.empty(*shape), a=a, mode=mode,
                                         nonlinearity=nl)), 0.0, std)


def test_kaiming_bad_mode():
    for lib, init in ((fluxion, FI), (torch, TI)):
        with pytest.raises(ValueError):
            init.kaiming_uniform_(lib.empty(3, 4), mode="fan_avg")


@pytest.mark.parametrize("shape", [(5, 5), (3, 7), (7, 3), (6, 2, 3), (4, 2, 2, 2)])
@pytest.mark.parametrize("gain", [1.0, 0.5])
def test_orthogonal(shape, gain):
    fluxion.manual_seed(5)
    q = arr(FI.orthogonal_(fresh(*shape), gain=gain))
    rows = shape[0]
    flat = q.reshape(rows, -1) / gain
    if rows <= flat.shape[1]:
        np.testing.assert_allclose(flat @ flat.T, np.eye(rows), atol=1e-5)
    else:
        np.testing.assert_allclose(flat.T @ flat, np.eye(flat.shape[1]), atol=1e-5)
    t = arr(TI.orthogonal_(torch.empty(*shape), gain=gain)).reshape(rows, -1) / gain
    small = min(t.shape)
    np.testing.assert_allclose(np.sort(np.linalg.svd(flat, compute_uv=False)),
                               np.sort(np.linalg.svd(t, compute_uv=False)), atol=1e-5)
    assert small > 0
    for lib, init in ((fluxion, FI), (torch, TI)):
        with pytest.raises(ValueError):
            init.orthogonal_(lib.empty(4))


def test_orthogonal_is_random_rotation():
    # the sign correction makes Q Haar-distributed: entries have mean 0, variance 1/n
    fluxion.manual_seed(6)
    n = 8
    samples = np.stack([arr(FI.orthogonal_(fresh(n, n))) for _ in range(400)])
    moments_close(samples, 0.0, 1 / math.sqrt(n))


def test_seeding_and_generators():
    fluxion.manual_seed(10)
    a = arr(FI.normal_(fresh(50)))
    fluxion.manual_seed(10)
    b = arr(FI.normal_(fresh(50)))
    np.testing.assert_array_equal(a, b)
    g1, g2 = fluxion.Generator().manual_seed(3), fluxion.Generator().manual_seed(3)
    for name in ("uniform_", "normal_", "trunc_normal_", "xavier_uniform_", "xavier_normal_",
                 "kaiming_uniform_", "kaiming_normal_", "orthogonal_"):
        x = arr(getattr(FI, name)(fresh(6, 5), generator=g1))
        y = arr(getattr(FI, name)(fresh(6, 5), generator=g2))
        np.testing.assert_array_equal(x, y, err_msg=name)


def test_zero_element_tensors_are_a_no_op():
    for lib, init in ((fluxion, FI), (torch, TI)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for name in ("kaiming_uniform_", "kaiming_normal_", "xavier_uniform_",
                         "xavier_normal_", "uniform_", "normal_", "orthogonal_"):
                t = lib.empty(0, 3)
                assert getattr(init, name)(t) is t, name
            # layers with an empty dimension build, as in PyTorch
            assert tuple(lib.nn.Linear(0, 3).weight.shape) == (3, 0)
            assert tuple(lib.nn.Linear(3, 0).weight.shape) == (0, 3)
