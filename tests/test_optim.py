"""Optimizers against PyTorch: same initial values, same data, same steps; the parameters
must agree after every step (float32 to ~1e-5 relative, float64 to ~1e-12), and so must
the optimizer state. Also parameter groups, state_dict round trips (and loading PyTorch's
own state dicts), closures, hooks, zero_grad, and PyTorch's errors."""

from __future__ import annotations

import copy
import pickle
import warnings

import numpy as np
import pytest

import fluxion
import fluxion.optim as optim
from fluxion.nn.parameter import Parameter

torch = pytest.importorskip("torch")

STEPS = 25
TOL = {"float32": {"rtol": 1e-5, "atol": 1e-6}, "float64": {"rtol": 1e-12, "atol": 1e-14}}
NAMES = ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta"]


# --- the problem: a tiny 2-layer tanh regression net, written in each library ----------
def _arrays(dtype: str, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((16, 4))
    y = np.sin(x @ rng.standard_normal((4, 3)))
    params = [rng.standard_normal((4, 8)) * 0.5, rng.standard_normal(8) * 0.1,
              rng.standard_normal((8, 3)) * 0.5, rng.standard_normal(3) * 0.1]
    return [a.astype(dtype) for a in params], [x.astype(dtype), y.astype(dtype)]


def _loss(lib, params, data):
    w1, b1, w2, b2 = params
    x, y = data
    out = lib.tanh(x @ w1 + b1) @ w2 + b2
    return ((out - y) ** 2).mean()


class Pair:
    """The same parameters, data and optimizer in Fluxion (``f*``) and PyTorch (``t*``)."""

    def __init__(self, name: str, kwargs: dict, dtype: str = "float32", groups=None,
                 seed: int = 0) -> None:
        params, data = _arrays(dtype, seed)
        self.dtype = dtype
        self.fp = [Parameter(fluxion.tensor(a)) for a in params]
        self.tp = [torch.nn.Parameter(torch.tensor(a)) for a in params]
        self.fd = [fluxion.tensor(a) for a in data]
        self.td = [torch.tensor(a) for a in data]
        self.fopt = getattr(optim, name)(_spec(self.fp, groups), foreach=False, **kwargs)
        self.topt = getattr(torch.optim, name)(_spec(self.tp, groups), foreach=False, **kwargs)
        self.steps = 0

    def step(self, n: int = 1, check: bool = True) -> None:
        for _ in range(n):
            for lib, ps, d, opt in ((fluxion, self.fp, self.fd, self.fopt),
                                    (torch, self.tp, self.td, self.topt)):
                opt.zero_grad()
                _loss(lib, ps, d).backward()
                opt.step()
            self.steps += 1
            if check:
                self.check_params(f"after step {self.steps}")

    def check_params(self, where: str = "") -> None:
        for i, (f, t) in enumerate(zip(self.fp, self.tp)):
            assert f.dtype.name == self.dtype
            np.testing.assert_allclose(f.detach().numpy(), t.detach().numpy(),
                                       **TOL[self.dtype], err_msg=f"param {i} {where}")

    def check_state(self) -> None:
        fs, ts = self.fopt.state_dict(), self.topt.state_dict()
        assert sorted(fs["state"]) == sorted(ts["state"])
        for k, tstate in ts["state"].items():
            fstate = fs["state"][k]
            assert sorted(fstate) == sorted(tstate), (k, sorted(fstate), sorted(tstate))
            for key, tv in tstate.items():
                fv = fstate[key]
                if key == "step":
                    assert fv.dtype.name == str(tv.dtype).removeprefix("torch.")
                    assert fv.item() == tv.item()
                else:
                    # relative to the tensor's scale: a state element can be a cancellation
                    # of larger terms (RMSprop's momentum buffer sums g / avg ~ 10)
                    tol = TOL[self.dtype]
                    atol = tol["atol"] + tol["rtol"] * float(np.max(np.abs(tv.numpy())))
                    np.testing.assert_allclose(fv.numpy(), tv.numpy(), rtol=tol["rtol"],
                                               atol=atol, err_msg=f"state {k} {key}")
        assert len(fs["param_groups"]) == len(ts["param_groups"])
        for fg, tg in zip(fs["param_groups"], ts["param_groups"]):
            assert fg == tg


def _spec(params, groups):
    """Params as a flat list, or as groups: ``[{'idx': [0, 1], 'lr': ...}, ...]``."""
    if groups is None:
        return params
    out = []
    for g in groups:
        d = {k: v for k, v in g.items() if k != "idx"}
        d["params"] = [params[i] for i in g["idx"]]
        out.append(d)
    return out


# --- trajectories over a grid of options, float32 and float64 --------------------------
CONFIGS = {
    "SGD": [
        {}, {"lr": 0.1}, {"lr": 0.1, "momentum": 0.9},
        {"lr": 0.05, "momentum": 0.9, "dampening": 0.5},
        {"lr": 0.05, "momentum": 0.9, "nesterov": True},
        {"lr": 0.1, "weight_decay": 0.1},
        {"lr": 0.05, "momentum": 0.8, "weight_decay": 0.05, "nesterov": True},
        {"lr": 0.02, "momentum": 0.5, "maximize": True},
    ],
    "Adam": [
        {}, {"lr": 0.01}, {"lr": 0.02, "betas": (0.8, 0.99)}, {"lr": 0.01, "eps": 1e-3},
        {"lr": 0.01, "weight_decay": 0.1}, {"lr": 0.01, "amsgrad": True},
        {"lr": 0.01, "amsgrad": True, "weight_decay": 0.05}, {"lr": 0.01, "maximize": True},
        {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True},
    ],
    "AdamW": [
        {}, {"lr": 0.01}, {"lr": 0.01, "weight_decay": 0.3}, {"lr": 0.01, "amsgrad": True},
        {"lr": 0.01, "betas": (0.5, 0.9)}, {"lr": 0.01, "maximize": True, "amsgrad": True},
    ],
    "RMSprop": [
        {}, {"lr": 0.001, "alpha": 0.9}, {"lr": 0.001, "centered": True},
        {"lr": 0.001, "momentum": 0.9}, {"lr": 0.001, "momentum": 0.5, "centered": True},
        {"lr": 0.001, "weight_decay": 0.1, "eps": 1e-4}, {"lr": 0.001, "maximize": True},
    ],
    "Adagrad": [
        {}, {"lr": 0.1}, {"lr": 0.1, "lr_decay": 0.05}, {"lr": 0.1, "weight_decay": 0.1},
        {"lr": 0.1, "initial_accumulator_value": 0.5}, {"lr": 0.05, "eps": 1e-4},
        {"lr": 0.05, "maximize": True},
    ],
    "Adadelta": [
        {}, {"lr": 0.5}, {"rho": 0.5}, {"eps": 1e-3}, {"weight_decay": 0.1},
        {"lr": 0.5, "maximize": True},
    ],
}
CASES = [(name, kw) for name, kws in CONFIGS.items() for kw in kws]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(("name", "kwargs"), CASES, ids=[f"{n}-{kw}" for n, kw in CASES])
def test_trajectory_matches_torch(name, kwargs, dtype):
    pair = Pair(name, kwargs, dtype)
    pair.step(STEPS)
    pair.check_state()


@pytest.mark.parametrize("name", NAMES)
def test_param_groups_with_their_own_options(name):
    extra = {"SGD": {"momentum": 0.9}, "Adam": {"amsgrad": True}, "AdamW": {"weight_decay": 0.2},
             "RMSprop": {"centered": True}, "Adagrad": {"lr_decay": 0.1},
             "Adadelta": {"rho": 0.7}}[name]
    lr = {"SGD": 0.1, "Adam": 0.01, "AdamW": 0.01, "RMSprop": 0.001, "Adagrad": 0.1,
          "Adadelta": 1.0}[name]
    groups = [{"idx": [0, 1]}, {"idx": [2], "lr": lr / 4, **extra}, {"idx": [3], "lr": lr * 2}]
    for dtype in ("float32", "float64"):
        pair = Pair(name, {"lr": lr}, dtype, groups=groups)
        pair.step(STEPS)
        pair.check_state()
        assert [g["lr"] for g in pair.fopt.param_groups] == [lr, lr / 4, lr * 2]


@pytest.mark.parametrize("name", NAMES)
def test_params_without_grad_are_skipped(name):
    pair = Pair(name, {})
    for ps in (pair.fp, pair.tp):
        for p in ps[2:]:
            p.requires_grad_(False)
    pair.step(5)
    pair.check_state()


def test_grads_and_graph_untouched_by_step():
    for name, kw in [("SGD", {"momentum": 0.9, "weight_decay": 0.1, "maximize": True}),
                     ("Adam", {"weight_decay": 0.1, "maximize": True}),
                     ("RMSprop", {"centered": True, "momentum": 0.5, "weight_decay": 0.1}),
                     ("Adagrad", {"weight_decay": 0.1, "maximize": True}),
                     ("Adadelta", {"weight_decay": 0.1})]:
        pair = Pair(name, kw)
        _loss(fluxion, pair.fp, pair.fd).backward()
        grads = [p.grad.numpy().copy() for p in pair.fp]
        pair.fopt.step()
        for p, g in zip(pair.fp, grads):
            np.testing.assert_array_equal(p.grad.numpy(), g)  # the update must not write grads
            assert p.is_leaf and p.requires_grad and p.grad_fn is None
        for state in pair.fopt.state.values():
            for v in state.values():
                assert not v.requires_grad and v.grad_fn is None


def test_tensor_lr():
    pair = Pair("SGD", {}, "float64")
    pair.fopt = optim.SGD(pair.fp, lr=fluxion.tensor(0.1, dtype=fluxion.float64), momentum=0.9)
    pair.topt = torch.optim.SGD(pair.tp, lr=torch.tensor(0.1, dtype=torch.float64),
                                momentum=0.9, foreach=False)
    pair.step(10)
    pair2 = Pair("Adam", {}, "float64")
    pair2.fopt = optim.Adam(pair2.fp, lr=fluxion.tensor(0.01))
    pair2.topt = torch.optim.Adam(pair2.tp, lr=torch.tensor(0.01), foreach=False)
    pair2.step(10)


def test_closure_returns_loss():
    pair = Pair("SGD", {"lr": 0.1, "momentum": 0.9})
    for _ in range(5):
        losses = []
        for lib, ps, d, opt in ((fluxion, pair.fp, pair.fd, pair.fopt),
                                (torch, pair.tp, pair.td, pair.topt)):
            def closure(lib=lib, ps=ps, d=d, opt=opt):
                assert lib.is_grad_enabled()
                opt.zero_grad()
                loss = _loss(lib, ps, d)
                loss.backward()
                return loss
            with lib.no_grad():  # the closure still runs with gradients enabled
                losses.append(opt.step(closure).item())
        assert losses[0] == pytest.approx(losses[1], rel=1e-5)
        pair.check_params()


# --- state_dict --------------------------------------------------------------------------
RESUME = [("SGD", {"lr": 0.1, "momentum": 0.9, "nesterov": True}),
          ("Adam", {"lr": 0.01, "amsgrad": True}), ("AdamW", {"lr": 0.01}),
          ("RMSprop", {"lr": 0.001, "momentum": 0.5, "centered": True}),
          ("Adagrad", {"lr": 0.1, "lr_decay": 0.01}), ("Adadelta", {})]


@pytest.mark.parametrize(("name", "kwargs"), RESUME, ids=[n for n, _ in RESUME])
def test_state_dict_round_trip_continues_identically(name, kwargs):
    groups = [{"idx": [0, 1]}, {"idx": [2, 3], "lr": kwargs.get("lr", 1.0) / 2}]
    ref = Pair(name, kwargs, groups=groups)
    run = Pair(name, kwargs, groups=groups)
    ref.step(7, check=False)
    run.step(7, check=False)
    saved = copy.deepcopy(run.fopt.state_dict())
    # the format is PyTorch's: the same keys, indices and hyper-parameters
    tsaved = run.topt.state_dict()
    assert saved["param_groups"] == tsaved["param_groups"]
    assert {k: sorted(v) for k, v in saved["state"].items()} == \
        {k: sorted(v) for k, v in tsaved["state"].items()}
    # a fresh optimizer on fresh parameters holding the same values
    fresh = [Parameter(fluxion.tensor(p.detach().numpy().copy())) for p in run.fp]
    opt = getattr(optim, name)(_spec(fresh, groups), **kwargs)
    opt.load_state_dict(pickle.loads(pickle.dumps(saved)))
    assert opt.state_dict()["param_groups"] == saved["param_groups"]
    ref.step(8)  # uninterrupted, Fluxion beside PyTorch
    for _ in range(8):
        opt.zero_grad()
        _loss(fluxion, fresh, run.fd).backward()
        opt.step()
    for a, b in zip(ref.fp, fresh):  # bit for bit
        np.testing.assert_array_equal(a.detach().numpy(), b.detach().numpy())


@pytest.mark.parametrize(("name", "kwargs"), RESUME, ids=[n for n, _ in RESUME])
def test_load_torch_state_dict(name, kwargs):
    """A PyTorch state dict (tensors converted) loads and continues like PyTorch."""
    pair = Pair(name, kwargs, "float64")
    pair.step(5)
    tsd = pair.topt.state_dict()
    fsd = {"state": {k: {kk: fluxion.tensor(v.numpy().copy()) for kk, v in s.items()}
                     for k, s in tsd["state"].items()},
           "param_groups": copy.deepcopy(tsd["param_groups"])}
    fresh = [Parameter(fluxion.tensor(p.detach().numpy().copy())) for p in pair.fp]
    pair.fp = fresh
    pair.fopt = getattr(optim, name)(fresh, **kwargs)
    pair.fopt.load_state_dict(fsd)
    pair.step(5)
    pair.check_state()


def test_load_state_dict_casts_state_to_param_dtype():
    p = Parameter(fluxion.zeros(3, dtype=fluxion.float64))
    opt = optim.Adam([p])
    sd = {"state": {0: {"step": fluxion.tensor(2.0), "exp_avg": fluxion.ones(3),
                        "exp_avg_sq": fluxion.ones(3)}},
          "param_groups": copy.deepcopy(opt.state_dict()["param_groups"])}
    opt.load_state_dict(sd)
    assert opt.state[p]["exp_avg"].dtype == fluxion.float64
    assert opt.state[p]["step"].dtype == fluxion.float32  # the step is kept as saved


def test_load_state_dict_errors():
    ps = [Parameter(fluxion.ones(2)) for _ in range(3)]
    opt = optim.SGD([{"params": ps[:2]}, {"params": ps[2:]}], lr=0.1)
    sd = opt.state_dict()
    with pytest.raises(ValueError, match="different number of parameter groups"):
        optim.SGD(ps, lr=0.1).load_state_dict(sd)
    with pytest.raises(ValueError, match="doesn't match the size of optimizer's group"):
        optim.SGD([{"params": ps[:1]}, {"params": ps[1:]}], lr=0.1).load_state_dict(sd)


def test_state_dict_matches_torch_before_any_step():
    for name in NAMES:
        pair = Pair(name, {})
        fs, ts = pair.fopt.state_dict(), pair.topt.state_dict()
        assert fs["param_groups"] == ts["param_groups"], name
        assert sorted(fs["state"]) == sorted(ts["state"]), name  # Adagrad fills it eagerly


# --- the Optimizer base ------------------------------------------------------------------
def test_zero_grad():
    p = Parameter(fluxion.ones(2))
    opt = optim.SGD([p], lr=0.1)
    (p * 2).sum().backward()
    opt.zero_grad(set_to_none=False)
    assert p.grad is not None and p.grad.tolist() == [0.0, 0.0]
    opt.zero_grad()
    assert p.grad is None
    opt.zero_grad()  # no grads at all is fine


def test_add_param_group_fills_defaults():
    a, b = Parameter(fluxion.ones(2)), Parameter(fluxion.ones(2))
    opt = optim.SGD([a], lr=0.1, momentum=0.9)
    opt.add_param_group({"params": b, "lr": 0.01})
    g = opt.param_groups[1]
    assert g["params"][0] is b and g["lr"] == 0.01 and g["momentum"] == 0.9
    ta, tb = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    topt = torch.optim.SGD([ta], lr=0.1, momentum=0.9)
    topt.add_param_group({"params": tb, "lr": 0.01})
    assert opt.state_dict()["param_groups"] == topt.state_dict()["param_groups"]


def test_adagrad_initializes_state_eagerly_and_for_new_groups():
    a, b = Parameter(fluxion.ones(2)), Parameter(fluxion.ones(2))
    opt = optim.Adagrad([a], initial_accumulator_value=0.5)
    assert opt.state[a]["sum"].tolist() == [0.5, 0.5] and opt.state[a]["step"].item() == 0
    opt.add_param_group({"params": [b]})
    (a.sum() + b.sum()).backward()
    opt.step()
    assert opt.state[b]["sum"].tolist() == [1.5, 1.5]


def test_named_parameters():
    a, b = Parameter(fluxion.ones(2)), Parameter(fluxion.ones(2))
    opt = optim.SGD([("a", a), ("b", b)], lr=0.1)
    assert opt.param_groups[0]["param_names"] == ["a", "b"]
    assert opt.state_dict()["param_groups"][0]["param_names"] == ["a", "b"]


def test_step_hooks():
    p = Parameter(fluxion.ones(2))
    opt = optim.Adam([p])
    calls = []
    h1 = opt.register_step_pre_hook(lambda o, args, kwargs: calls.append(("pre", o)))
    h2 = opt.register_step_post_hook(lambda o, args, kwargs: calls.append(("post", o)))
    p.sum().backward()
    opt.step()
    assert calls == [("pre", opt), ("post", opt)]
    h1.remove()
    h2.remove()
    opt.step()
    assert len(calls) == 2


def test_subclass_step_calling_super_runs_hooks_once():
    class MySGD(optim.SGD):
        def step(self, closure=None):
            return super().step(closure)

    p = Parameter(fluxion.ones(2))
    opt = MySGD([p], lr=0.5)
    calls = []
    opt.register_step_pre_hook(lambda *a: calls.append(1))
    p.sum().backward()
    opt.step()
    assert calls == [1] and p.tolist() == [0.5, 0.5]


def test_pickle_and_repr():
    p = Parameter(fluxion.ones(2))
    opt = optim.SGD([p], lr=0.1, momentum=0.9)
    p.sum().backward()
    opt.step()
    clone = pickle.loads(pickle.dumps(opt))
    assert clone.param_groups[0]["lr"] == 0.1 and len(clone.state) == 1
    text = repr(opt)
    assert text.startswith("SGD (\nParameter Group 0\n") and "    momentum: 0.9\n" in text
    assert text == repr(torch.optim.SGD([torch.nn.Parameter(torch.ones(2))], lr=0.1,
                                        momentum=0.9))


def test_import_paths():
    import fluxion.optim.lr_scheduler as sched_mod

    assert optim.lr_scheduler is sched_mod
    assert issubclass(optim.AdamW, optim.Adam) and issubclass(optim.Adam, optim.Optimizer)


# --- errors like PyTorch's -------------------------------------------------------------------
BAD = [
    ("SGD", {"lr": -1.0}), ("SGD", {"momentum": -0.5}), ("SGD", {"weight_decay": -1e-3}),
    ("SGD", {"nesterov": True}), ("SGD", {"nesterov": True, "momentum": 0.9, "dampening": 0.1}),
    ("Adam", {"lr": -1.0}), ("Adam", {"eps": -1.0}), ("Adam", {"betas": (1.0, 0.999)}),
    ("Adam", {"betas": (0.9, -0.1)}), ("Adam", {"weight_decay": -1.0}),
    ("Adam", {"betas": (0, 0.9)}), ("AdamW", {"lr": -0.5}), ("AdamW", {"betas": (0.9, 1.5)}),
    ("RMSprop", {"lr": -1.0}), ("RMSprop", {"alpha": -0.1}), ("RMSprop", {"eps": -1.0}),
    ("RMSprop", {"momentum": -1.0}), ("RMSprop", {"weight_decay": -1.0}),
    ("Adagrad", {"lr": -1.0}), ("Adagrad", {"lr_decay": -1.0}),
    ("Adagrad", {"weight_decay": -1.0}), ("Adagrad", {"initial_accumulator_value": -1.0}),
    ("Adagrad", {"eps": -1.0}), ("Adadelta", {"lr": -1.0}), ("Adadelta", {"rho": 1.5}),
    ("Adadelta", {"eps": -1.0}), ("Adadelta", {"weight_decay": -1.0}),
]


def _error(fn):
    try:
        fn()
    except Exception as e:
        return type(e), str(e)
    return None


@pytest.mark.parametrize(("name", "kwargs"), BAD, ids=[f"{n}-{kw}" for n, kw in BAD])
def test_bad_hyperparameters_raise_like_torch(name, kwargs):
    f = _error(lambda: getattr(optim, name)([Parameter(fluxion.ones(1))], **kwargs))
    t = _error(lambda: getattr(torch.optim, name)([torch.nn.Parameter(torch.ones(1))],
                                                  **kwargs))
    assert t is not None and f == t


def test_invalid_learning_rate_message():
    with pytest.raises(ValueError, match=r"^Invalid learning rate: -1.0$"):
        optim.SGD([Parameter(fluxion.ones(1))], lr=-1.0)


def _both_errors(build):
    f = _error(lambda: build(fluxion, Parameter))
    t = _error(lambda: build(torch, torch.nn.Parameter))
    assert t is not None
    assert f == t
    return f


def test_param_in_two_groups():
    _, msg = _both_errors(lambda lib, param: (p := param(lib.ones(2)), lib.optim.SGD(
        [{"params": [p]}, {"params": [p], "lr": 0.1}], lr=0.1)))
    assert msg == "some parameters appear in more than one parameter group"


def test_param_twice_in_a_group_warns():
    p = Parameter(fluxion.ones(2))
    with pytest.warns(UserWarning, match="duplicate parameters"):
        optim.SGD([p, p], lr=0.1)


def test_non_leaf_param():
    _, msg = _both_errors(lambda lib, param: lib.optim.SGD([param(lib.ones(2)) * 2], lr=0.1))
    assert msg == "can't optimize a non-leaf Tensor"


def test_other_construction_errors():
    _both_errors(lambda lib, param: lib.optim.SGD([], lr=0.1))
    _both_errors(lambda lib, param: lib.optim.SGD([{"params": {param(lib.ones(2))}}]))
    _both_errors(lambda lib, param: lib.optim.SGD([{"params": [param(lib.ones(2))]}, 3]))
    assert _error(lambda: optim.SGD(Parameter(fluxion.ones(2)), lr=0.1))[0] is TypeError
    assert _error(lambda: optim.SGD([1.0], lr=0.1))[0] is TypeError


def test_unsupported_implementation_switches():
    p = Parameter(fluxion.ones(2))
    optim.Adam([p], foreach=True)  # accepted: the single-tensor algorithm runs
    for kw in ({"fused": True}, {"capturable": True}, {"differentiable": True}):
        with pytest.raises(NotImplementedError):
            optim.Adam([p], **kw)


def test_no_warnings_in_a_normal_run():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Pair("Adam", {}).step(2)
