"""``fluxion.nn.Module`` and the containers, compared with ``torch.nn``: registration,
traversal and naming, modes, state dicts (including PyTorch's exact error text), hooks,
weight tying, dtype casts, ``repr`` and the container protocols."""

from __future__ import annotations

import copy
import difflib
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

LIBS = [fluxion, torch]


# --- helpers ------------------------------------------------------------------------------
def arr(t):
    return np.asarray(t.detach().numpy(), dtype=np.float64)


def close(f, t, rtol=1e-5, atol=1e-6):
    if t is None or f is None:
        assert f is None and t is None, (f, t)
        return
    assert tuple(f.shape) == tuple(t.shape), (tuple(f.shape), tuple(t.shape))
    np.testing.assert_allclose(arr(f), arr(t), rtol=rtol, atol=atol)


def to_fx_state(tmod):
    """torch state dict -> fluxion tensors with the same values and dtypes."""
    return OrderedDict((k, fluxion.tensor(v.detach().numpy())) for k, v in
                       tmod.state_dict().items())


def sync(fmod, tmod):
    """Copy torch's parameters and buffers into the fluxion twin (strict)."""
    res = fmod.load_state_dict(to_fx_state(tmod))
    assert not res.missing_keys and not res.unexpected_keys
    return fmod


def same_text(a: str, b: str) -> None:
    if a != b:
        diff = "\n".join(difflib.unified_diff(b.split("\n"), a.split("\n"), "torch", "fluxion",
                                              lineterm=""))
        raise AssertionError("texts differ:\n" + diff)


def lib_of(nn):
    return fluxion if nn is fluxion.nn else torch


class _Blocks:
    """The same model definitions for either library (``nn`` is fluxion.nn or torch.nn)."""

    @staticmethod
    def custom(nn):
        lib = lib_of(nn)

        class Inner(nn.Module):
            def __init__(self):
                super().__init__()
                self.lin = nn.Linear(3, 4)
                self.register_buffer("steps", lib.zeros(1, dtype=lib.int64))
                self.register_buffer("scratch", lib.ones(2), persistent=False)
                self.scale = nn.Parameter(lib.ones(4))

            def forward(self, x):
                return self.lin(x) * self.scale

        class Outer(nn.Module):
            def __init__(self):
                super().__init__()
                self.inner = Inner()
                self.bn = nn.BatchNorm1d(4)
                self.head = nn.Sequential(nn.ReLU(), nn.Linear(4, 2, bias=False))
                self.register_parameter("unused", None)
                self.register_buffer("empty_buf", None)
                self.temperature = nn.Parameter(lib.tensor(1.5))

            def forward(self, x):
                return self.head(self.bn(self.inner(x))) / self.temperature

        return Outer()

    @staticmethod
    def mnist(nn):
        return nn.Sequential(
            nn.Conv2d(1, 10, 5), nn.MaxPool2d(2), nn.ReLU(), nn.Conv2d(10, 20, 5),
            nn.Dropout2d(), nn.MaxPool2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(320, 50),
            nn.ReLU(), nn.Dropout(), nn.Linear(50, 10), nn.LogSoftmax(dim=1))

    @staticmethod
    def mnist_class(nn):
        F = nn.functional

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv1 = nn.Conv2d(1, 10, kernel_size=5)
                self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
                self.conv2_drop = nn.Dropout2d()
                self.fc1 = nn.Linear(320, 50)
                self.fc2 = nn.Linear(50, 10)

            def forward(self, x):
                x = F.relu(F.max_pool2d(self.conv1(x), 2))
                x = F.relu(F.max_pool2d(self.conv2_drop(self.conv2(x)), 2))
                x = x.view(-1, 320)
                x = F.relu(self.fc1(x))
                x = F.dropout(x, training=self.training)
                return F.log_softmax(self.fc2(x), dim=1)

        return Net()

    @staticmethod
    def nested(nn):
        lib = lib_of(nn)
        return nn.Sequential(OrderedDict(
            blocks=nn.ModuleList([
                nn.Linear(2, 3),
                nn.Sequential(nn.Tanh(), nn.GELU(approximate="tanh"), nn.GELU()),
                nn.ModuleList([nn.Identity(), nn.Sigmoid()]),
            ]),
            heads=nn.ModuleDict({
                "bn2": nn.BatchNorm2d(3), "ln": nn.LayerNorm([3, 4]), "gn": nn.GroupNorm(2, 4),
                "emb": nn.Embedding(10, 3, padding_idx=0), "bn1": nn.BatchNorm1d(5, momentum=None,
                                                                                 affine=False),
                "lnna": nn.LayerNorm(4, elementwise_affine=False), "gnna": nn.GroupNorm(1, 2,
                                                                                        affine=False),
            }),
            conv=nn.Conv2d(2, 4, 3, stride=2, padding=1, dilation=2, groups=2, bias=False),
            convs=nn.Conv2d(2, 4, (3, 5), padding="same"),
            convv=nn.Conv2d(2, 4, 3, padding="valid"),
            tconv=nn.ConvTranspose2d(2, 4, 3, stride=2, padding=1, output_padding=1),
            tconv2=nn.ConvTranspose2d(4, 4, 3, groups=2, dilation=2, bias=False),
            conv1=nn.Conv1d(2, 4, 3, padding="same"),
            conv1s=nn.Conv1d(2, 4, 3, stride=2, padding=1),
            avg2=nn.AvgPool2d(2), avg2s=nn.AvgPool2d(3, stride=2, padding=1),
            adapt=nn.AdaptiveAvgPool2d((3, 3)), adapt1=nn.AdaptiveAvgPool2d(1),
            max1=nn.MaxPool1d(3, 2), max2=nn.MaxPool2d((2, 3), stride=1, padding=1),
            avg1=nn.AvgPool1d(2), avg1s=nn.AvgPool1d(3, stride=2, padding=1),
            leaky=nn.LeakyReLU(0.2), leaky_default=nn.LeakyReLU(), elu=nn.ELU(),
            elu2=nn.ELU(alpha=0.5), silu=nn.SiLU(), softmax=nn.Softmax(dim=-1),
            softmax_none=nn.Softmax(), logsoftmax=nn.LogSoftmax(dim=1), identity=nn.Identity(),
            unflatten=nn.Unflatten(1, (2, 3)), flatten=nn.Flatten(), flatten2=nn.Flatten(0, 2),
            drop=nn.Dropout(0.3), drop2=nn.Dropout2d(p=0.1), sigmoid=nn.Sigmoid(),
            relu_inplace=nn.ReLU(inplace=True), softplus=nn.Softplus(),
            softplus2=nn.Softplus(beta=2.0, threshold=10.0),
            ce=nn.CrossEntropyLoss(), mse=nn.MSELoss(), nll=nn.NLLLoss(), bce=nn.BCELoss(),
            l1=nn.L1Loss(), smooth=nn.SmoothL1Loss(), huber=nn.HuberLoss(),
            bcel=nn.BCEWithLogitsLoss(), kl=nn.KLDivLoss(),
            nobias=nn.Linear(3, 4, bias=False),
            emb=nn.Embedding(5, 2),
            plist=nn.ParameterList([nn.Parameter(lib.zeros(2, 3)), nn.Parameter(lib.zeros(4))]),
            plist1=nn.ParameterList([nn.Parameter(lib.zeros(2, 3))]),
            empty=nn.Sequential(),
        ))


# --- registration and traversal -----------------------------------------------------------------
def test_named_parameters_buffers_match_torch():
    f, t = _Blocks.custom(fluxion.nn), _Blocks.custom(torch.nn)
    for kw in ({}, {"prefix": "model"}, {"recurse": False}, {"prefix": "m", "recurse": False}):
        fn = [(n, tuple(p.shape)) for n, p in f.named_parameters(**kw)]
        tn = [(n, tuple(p.shape)) for n, p in t.named_parameters(**kw)]
        assert fn == tn, kw
        fb = [(n, tuple(b.shape)) for n, b in f.named_buffers(**kw)]
        tb = [(n, tuple(b.shape)) for n, b in t.named_buffers(**kw)]
        assert fb == tb, kw
    assert len(list(f.parameters())) == len(list(t.parameters()))
    assert len(list(f.buffers())) == len(list(t.buffers()))
    assert len(list(f.parameters(recurse=False))) == 1
    assert all(isinstance(p, fluxion.nn.Parameter) for p in f.parameters())
    # non-persistent buffers: in named_buffers but not in state_dict
    assert "inner.scratch" in dict(f.named_buffers())
    assert list(f.state_dict()) == list(t.state_dict())
    assert "inner.scratch" not in f.state_dict()


def test_named_modules_children_match_torch():
    f, t = _Blocks.custom(fluxion.nn), _Blocks.custom(torch.nn)

    def names(it):
        return [(n, type(m).__name__) for n, m in it]

    assert names(f.named_modules()) == names(t.named_modules())
    assert names(f.named_modules(prefix="root")) == names(t.named_modules(prefix="root"))
    assert names(f.named_children()) == names(t.named_children())
    assert [type(m).__name__ for m in f.modules()] == [type(m).__name__ for m in t.modules()]
    assert [type(m).__name__ for m in f.children()] == [type(m).__name__ for m in t.children()]
    fm, tm = _Blocks.nested(fluxion.nn), _Blocks.nested(torch.nn)
    assert names(fm.named_modules()) == names(tm.named_modules())
    assert [n for n, _ in fm.named_parameters()] == [n for n, _ in tm.named_parameters()]
    assert list(fm.state_dict()) == list(tm.state_dict())


def test_shared_module_appears_once_unless_duplicates_requested():
    for nn in (fluxion.nn, torch.nn):
        lin = nn.Linear(2, 2)
        seq = nn.Sequential(lin, nn.ReLU(), lin)
        assert [n for n, _ in seq.named_modules()] == ["", "0", "1"]
        assert [n for n, _ in seq.named_modules(remove_duplicate=False)] == ["", "0", "1", "2"]
        assert [n for n, _ in seq.named_parameters()] == ["0.weight", "0.bias"]
        assert list(seq.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]
        assert len(list(seq.children())) == 2


def test_get_submodule_and_parameter():
    for nn in (fluxion.nn, torch.nn):
        m = _Blocks.custom(nn)
        assert m.get_submodule("inner.lin") is m.inner.lin
        assert m.get_submodule("") is m
        assert m.get_parameter("inner.lin.weight") is m.inner.lin.weight
        assert m.get_parameter("temperature") is m.temperature
        with pytest.raises(AttributeError):
            m.get_submodule("inner.nope")
        with pytest.raises(AttributeError):
            m.get_parameter("inner.nope")


def test_setattr_registration_rules():
    for nn in (fluxion.nn, torch.nn):
        lib = lib_of(nn)
        m = nn.Linear(2, 3)
        with pytest.raises(TypeError):
            m.weight = lib.zeros(3, 2)  # a plain tensor cannot replace a parameter
        m.weight = nn.Parameter(lib.zeros(3, 2))
        assert [n for n, _ in m.named_parameters()] == ["weight", "bias"]
        m.bias = None
        assert [n for n, _ in m.named_parameters()] == ["weight"]
        assert "bias" in m.state_dict() or True  # None parameters are skipped
        assert list(m.state_dict()) == ["weight"]
        m.extra = nn.ReLU()
        assert [n for n, _ in m.named_children()] == ["extra"]
        del m.extra
        assert list(m.named_children()) == []
        with pytest.raises(AttributeError):
            _ = m.does_not_exist
        m.register_buffer("stat", lib.zeros(2))
        m.stat = lib.ones(2)
        assert float(m.stat.sum()) == 2.0 and "stat" in m.state_dict()
        with pytest.raises(TypeError):
            m.stat = 3
        with pytest.raises(KeyError):
            m.register_buffer("a.b", lib.zeros(1))
        with pytest.raises(KeyError):
            m.register_parameter("a.b", None)
        # a parameter name only takes a Parameter or None; a module name moves a buffer
        m.p = nn.Parameter(lib.zeros(1))
        with pytest.raises(TypeError):
            m.p = nn.ReLU()
        m.p = None
        assert "p" not in dict(m.named_parameters())
        m.register_buffer("q", lib.zeros(1))
        m.q = nn.ReLU()
        assert "q" not in dict(m.named_buffers()) and "q" in dict(m.named_children())
        with pytest.raises(KeyError):  # an existing plain attribute
            m.register_buffer("in_features", lib.zeros(1))
        # re-registering keeps the position
        m.register_buffer("stat", lib.zeros(3), persistent=False)
        assert [n for n, _ in m.named_buffers()] == ["stat"] and "stat" not in m.state_dict()


def test_buffer_class_registers_buffers():
    for nn in (fluxion.nn, torch.nn):
        lib = lib_of(nn)
        m = nn.Module()
        m.a = nn.Buffer(lib.ones(2))
        m.b = nn.Buffer(lib.zeros(3), persistent=False)
        assert [n for n, _ in m.named_buffers()] == ["a", "b"]
        assert list(m.state_dict()) == ["a"]
        assert not isinstance(m.a, nn.Parameter)


def test_parameter_basics():
    p = fluxion.nn.Parameter(fluxion.ones(2, 3))
    tp = torch.nn.Parameter(torch.ones(2, 3))
    assert p.requires_grad and p.is_leaf and p.grad_fn is None
    assert isinstance(p, fluxion.Tensor)
    assert repr(p).startswith("Parameter containing:\n")
    assert repr(tp).startswith("Parameter containing:\n")
    q = fluxion.nn.Parameter(fluxion.ones(2), requires_grad=False)
    assert not q.requires_grad
    # the Parameter shares memory with the tensor it wraps
    base = fluxion.zeros(3)
    p2 = fluxion.nn.Parameter(base)
    with fluxion.no_grad():
        p2.add_(1)
    np.testing.assert_array_equal(base.numpy(), np.ones(3, np.float32))
    assert isinstance(fluxion.nn.Parameter(), fluxion.nn.Parameter)
    assert tuple(fluxion.nn.Parameter().shape) == tuple(torch.nn.Parameter().shape)
    # gradients flow into the Parameter through ops
    (p * 2).sum().backward()
    np.testing.assert_array_equal(p.grad.numpy(), np.full((2, 3), 2.0, np.float32))
    # a deep copy is an independent Parameter
    c = copy.deepcopy(p)
    assert isinstance(c, fluxion.nn.Parameter) and c.requires_grad
    with fluxion.no_grad():
        c.mul_(0)
    assert float(p.sum()) == 6.0


# --- modes, gradients, casting ----------------------------------------------------------------
def test_train_eval_propagate():
    for nn in (fluxion.nn, torch.nn):
        m = _Blocks.nested(nn)
        assert all(x.training for x in m.modules())
        assert m.eval() is m
        assert not any(x.training for x in m.modules())
        m.train()
        assert all(x.training for x in m.modules())
        m.heads.train(False)
        assert m.training and not m.heads.training and not m.heads["bn2"].training
        with pytest.raises(ValueError):
            m.train("yes")


def test_apply_visits_children_first():
    orders = []
    for nn in (fluxion.nn, torch.nn):
        m = _Blocks.custom(nn)
        seen = []
        assert m.apply(lambda mod, seen=seen: seen.append(type(mod).__name__)) is m
        orders.append(seen)
    assert orders[0] == orders[1]
    assert orders[0][-1] == "Outer"


def test_apply_init_function():
    def init_fn(m):
        if isinstance(m, (fluxion.nn.Linear, torch.nn.Linear)):
            lib = fluxion if isinstance(m, fluxion.nn.Linear) else torch
            with lib.no_grad():
                m.weight.fill_(0.5)
                if m.bias is not None:
                    m.bias.zero_()

    f, t = _Blocks.custom(fluxion.nn), _Blocks.custom(torch.nn)
    f.apply(init_fn)
    t.apply(init_fn)
    for (nf, pf), (nt, pt) in zip(f.named_parameters(), t.named_parameters()):
        assert nf == nt
        if "lin" in nf or "head" in nf:
            close(pf, pt)


def _grads_from(m, lib):
    x = lib.ones(5, 3)
    m(x).sum().backward()


@pytest.mark.parametrize("set_to_none", [True, False])
def test_zero_grad(set_to_none):
    for lib in LIBS:
        m = _Blocks.custom(lib.nn)
        _grads_from(m, lib)
        assert all(p.grad is not None for p in m.parameters())
        m.zero_grad(set_to_none=set_to_none)
        for p in m.parameters():
            if set_to_none:
                assert p.grad is None
            else:
                assert p.grad is not None and float(p.grad.abs().sum()) == 0.0
                assert not p.grad.requires_grad
    for lib in LIBS:  # default is set_to_none=True
        m = lib.nn.Linear(3, 2)
        _grads_from(m, lib)
        m.zero_grad()
        assert m.weight.grad is None


def test_zero_grad_then_accumulate():
    out = []
    for lib in LIBS:
        m = lib.nn.Linear(3, 2)
        with lib.no_grad():
            m.weight.fill_(0.1)
        _grads_from(m, lib)
        m.zero_grad(set_to_none=False)
        _grads_from(m, lib)
        _grads_from(m, lib)
        out.append(m.weight.grad)
    close(*out)


def test_requires_grad_():
    for lib in LIBS:
        m = _Blocks.custom(lib.nn)
        assert m.requires_grad_(False) is m
        assert not any(p.requires_grad for p in m.parameters())
        y = m(lib.ones(2, 3))
        assert not y.requires_grad
        m.inner.requires_grad_()
        assert [n for n, p in m.named_parameters() if p.requires_grad] == \
            ["inner.scale", "inner.lin.weight", "inner.lin.bias"]


def test_to_dtype_casts_floating_state_only():
    for lib in LIBS:
        m = _Blocks.custom(lib.nn)
        params = list(m.parameters())
        assert m.to(lib.float64) is m
        assert all(p.dtype == lib.float64 for p in m.parameters())
        # the Parameter objects survive (optimizers keep references)
        assert all(a is b for a, b in zip(params, m.parameters()))
        assert all(isinstance(p, lib.nn.Parameter) for p in m.parameters())
        assert m.bn.running_mean.dtype == lib.float64
        assert m.bn.num_batches_tracked.dtype == lib.int64
        assert m.inner.steps.dtype == lib.int64
        assert m.inner.scratch.dtype == lib.float64
        y = m(lib.ones(4, 3, dtype=lib.float64))
        assert y.dtype == lib.float64
        m.float()
        assert all(p.dtype == lib.float32 for p in m.parameters())
        m.double()
        assert m.inner.lin.weight.dtype == lib.float64
        m.to(dtype=lib.float32)
        assert m.inner.lin.weight.dtype == lib.float32
        assert m.to("cpu") is m
        with pytest.raises(TypeError):
            m.to(lib.int32)
        m.to(lib.zeros(1, dtype=lib.float64))  # to(other): other's dtype
        assert m.inner.lin.weight.dtype == lib.float64 and m.inner.steps.dtype == lib.int64
        m.to("cpu", lib.float32)
        assert m.inner.lin.weight.dtype == lib.float32
        m.to(tensor=lib.zeros(1, dtype=lib.float64))
        assert m.inner.lin.weight.dtype == lib.float64
        with pytest.raises(TypeError):
            m.to(lib.zeros(1, dtype=lib.int64))


def test_to_dtype_keeps_values_and_grads():
    f, t = _Blocks.custom(fluxion.nn), _Blocks.custom(torch.nn)
    sync(f, t)
    f.double()
    t.double()
    for (_, pf), (_, pt) in zip(f.named_parameters(), t.named_parameters()):
        close(pf, pt, rtol=0, atol=0)
    x = np.random.default_rng(0).standard_normal((5, 3))
    f(fluxion.tensor(x)).sum().backward()
    t(torch.tensor(x)).sum().backward()
    for (_, pf), (_, pt) in zip(f.named_parameters(), t.named_parameters()):
        close(pf.grad, pt.grad, rtol=1e-10, atol=1e-12)


# --- state dicts ------------------------------------------------------------------------------
def test_state_dict_contents():
    f, t = _Blocks.custom(fluxion.nn), _Blocks.custom(torch.nn)
    sync(f, t)
    sf, st = f.state_dict(), t.state_dict()
    assert list(sf) == list(st)
    for k in st:
        assert sf[k].dtype.name == str(st[k].dtype).removeprefix("torch."), k
        close(sf[k], st[k], rtol=0, atol=0)
        assert not sf[k].requires_grad
    # keep_vars returns the Parameter objects themselves
    kv = f.state_dict(keep_vars=True)
    assert kv["inner.lin.weight"] is f.inner.lin.weight
    # prefix
    assert list(f.state_dict(prefix="x.")) == list(t.state_dict(prefix="x."))
    # detached entries share memory with the parameters, as in PyTorch
    with fluxion.no_grad():
        sf["inner.lin.bias"].fill_(7.0)
    assert float(f.inner.lin.bias.sum()) == 7.0 * 4


def test_load_state_dict_round_trip_and_result():
    f, t = _Blocks.custom(fluxion.nn), _Blocks.custom(torch.nn)
    res = f.load_state_dict(to_fx_state(t))
    tres = t.load_state_dict(t.state_dict())
    assert repr(res) == repr(tres) == "<All keys matched successfully>"
    assert res.missing_keys == [] and res.unexpected_keys == []
    for (nf, vf), (nt, vt) in zip(f.state_dict().items(), t.state_dict().items()):
        assert nf == nt
        close(vf, vt, rtol=0, atol=0)
    # loading copies values: the Parameter objects are kept
    w = f.inner.lin.weight
    f.load_state_dict(f.state_dict())
    assert f.inner.lin.weight is w and w.requires_grad


def _load_errors(strict, edit):
    """Run the same faulty load in both libraries; return (fluxion_msg, torch_msg)."""
    msgs, results = [], []
    for nn in (fluxion.nn, torch.nn):
        lib = lib_of(nn)
        m = _Blocks.custom(nn)
        sd = OrderedDict(m.state_dict())
        edit(sd, lib)
        try:
            results.append(m.load_state_dict(sd, strict=strict))
            msgs.append(None)
        except RuntimeError as e:
            msgs.append(str(e))
            results.append(None)
    return msgs, results


def _missing(sd, lib):
    del sd["inner.lin.bias"]
    del sd["bn.running_var"]


def _unexpected(sd, lib):
    sd["extra"] = lib.zeros(1)
    sd["inner.lin.nope"] = lib.zeros(2)


def _mismatch(sd, lib):
    sd["inner.lin.weight"] = lib.zeros(5, 3)
    sd["temperature"] = lib.zeros(1)


def _all_three(sd, lib):
    _missing(sd, lib)
    _unexpected(sd, lib)
    _mismatch(sd, lib)


@pytest.mark.parametrize("edit", [_missing, _unexpected, _mismatch, _all_three])
def test_load_state_dict_strict_error_text(edit):
    (mf, mt), _ = _load_errors(True, edit)
    assert mt is not None and mf is not None
    same_text(mf, mt.replace("torch.Size", "fluxion.Size"))


@pytest.mark.parametrize("edit", [_missing, _unexpected, _all_three])
def test_load_state_dict_non_strict(edit):
    (mf, mt), (rf, rt) = _load_errors(False, edit)
    if mt is None:
        assert mf is None
        assert rf.missing_keys == rt.missing_keys
        assert rf.unexpected_keys == rt.unexpected_keys
        assert repr(rf) == repr(rt)
    else:  # size mismatches raise even when not strict
        same_text(mf, mt.replace("torch.Size", "fluxion.Size"))


def test_load_state_dict_unexpected_key_order_follows_modules():
    def edit(sd, lib):
        sd["inner.lin.zzz"] = lib.zeros(1)
        sd["top_level"] = lib.zeros(1)

    (mf, mt), _ = _load_errors(True, edit)
    same_text(mf, mt)


def test_load_state_dict_size_mismatch_leaves_values_untouched_non_strict():
    f = fluxion.nn.Linear(3, 2)
    before = f.weight.detach().numpy().copy()
    sd = {"weight": fluxion.zeros(2, 4), "bias": fluxion.zeros(2)}
    with pytest.raises(RuntimeError, match="size mismatch for weight"):
        f.load_state_dict(sd, strict=False)
    np.testing.assert_array_equal(f.weight.detach().numpy(), before)


def test_load_state_dict_into_module_shared_twice():
    mods = []
    for nn in (fluxion.nn, torch.nn):
        lin = nn.Linear(2, 2)
        seq = nn.Sequential(lin, nn.ReLU(), lin)
        mods.append(seq)
    f, t = mods
    sd = to_fx_state(t)
    assert list(sd) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    sync(f, t)
    close(f[0].weight, t[0].weight)
    del sd["2.bias"]
    msgs = []
    for m, s in ((f, sd), (t, {k: torch.tensor(v.numpy()) for k, v in sd.items()})):
        with pytest.raises(RuntimeError) as ei:
            m.load_state_dict(s)
        msgs.append(str(ei.value))
    same_text(*msgs)


# --- hooks ---------------------------------------------------------------------------------
def test_forward_pre_hook_replaces_args_and_removes():
    outs = []
    for lib in LIBS:
        m = lib.nn.Linear(3, 2)
        with lib.no_grad():
            m.weight.fill_(1.0)
            m.bias.zero_()
        calls = []

        def pre(mod, args, calls=calls):
            calls.append(("pre", type(mod).__name__, len(args)))
            return args[0] * 2  # single value: wrapped into a tuple

        h = m.register_forward_pre_hook(pre)
        y1 = m(lib.ones(1, 3))
        h.remove()
        y2 = m(lib.ones(1, 3))
        h.remove()  # removing twice is harmless
        outs.append((arr(y1), arr(y2), calls))
    (f1, f2, fc), (t1, t2, tc) = outs
    np.testing.assert_array_equal(f1, t1)
    np.testing.assert_array_equal(f2, t2)
    assert fc == tc == [("pre", "Linear", 1)]
    np.testing.assert_array_equal(f1, np.full((1, 2), 6.0))


def test_forward_hooks_with_kwargs_and_order():
    logs = []
    for lib in LIBS:
        nn = lib.nn
        log = []

        class Scale(nn.Module):
            def forward(self, x, factor=1.0):
                log.append(("forward", factor))
                return x * factor

        m = Scale()

        def pre_kw(mod, args, kwargs):
            log.append(("pre_kw", sorted(kwargs)))
            return args, {**kwargs, "factor": kwargs.get("factor", 1.0) * 10}

        def pre_plain(mod, args):
            log.append(("pre_plain", len(args)))

        def post_kw(mod, args, kwargs, out):
            log.append(("post_kw", sorted(kwargs)))
            return out + 1

        def post_plain(mod, args, out):
            log.append(("post_plain", len(args)))

        def post_first(mod, args, out):
            log.append(("post_first",))

        hs = [m.register_forward_pre_hook(pre_kw, with_kwargs=True),
              m.register_forward_pre_hook(pre_plain),
              m.register_forward_hook(post_kw, with_kwargs=True),
              m.register_forward_hook(post_plain),
              m.register_forward_hook(post_first, prepend=True)]
        y = m(lib.ones(2), factor=2.0)
        log.append(("value", arr(y).tolist()))
        for h in hs:
            h.remove()
        y = m(lib.ones(2), factor=2.0)
        log.append(("value", arr(y).tolist()))
        with m.register_forward_hook(lambda mod, a, o: o * 0) as _:
            log.append(("ctx", arr(m(lib.ones(2))).tolist()))
        log.append(("after", arr(m(lib.ones(2))).tolist()))
        logs.append(log)
    assert logs[0] == logs[1]


def test_forward_hook_sees_output_and_can_capture_features():
    feats = []
    for lib in LIBS:
        m = _Blocks.mnist(lib.nn).eval()
        got = {}
        m[3].register_forward_hook(lambda mod, a, o, got=got: got.update(c2=o.shape))
        m(lib.zeros(2, 1, 28, 28))
        feats.append(tuple(got["c2"]))
    assert feats[0] == feats[1] == (2, 20, 8, 8)


def test_missing_forward_raises():
    for nn in (fluxion.nn, torch.nn):
        with pytest.raises(NotImplementedError):
            nn.Module()(1)


# --- weight tying -----------------------------------------------------------------------------
def _tied(nn):
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(6, 4)
            self.mid = nn.Linear(4, 4)
            self.out = nn.Linear(4, 6, bias=False)
            self.out.weight = self.emb.weight

        def forward(self, idx):
            return self.out(self.mid(self.emb(idx)).tanh())

    return Tied()


def test_weight_tying_parameters_once_and_summed_gradient():
    f, t = _tied(fluxion.nn), _tied(torch.nn)
    assert [n for n, _ in f.named_parameters()] == [n for n, _ in t.named_parameters()] == \
        ["emb.weight", "mid.weight", "mid.bias"]
    assert list(f.state_dict()) == list(t.state_dict())
    assert "out.weight" in f.state_dict()
    sync(f, t)
    assert f.out.weight is f.emb.weight
    idx = np.array([[0, 3, 5], [2, 2, 1]])
    target = np.random.default_rng(1).standard_normal((2, 3, 6)).astype(np.float32)
    (f(fluxion.tensor(idx)) * fluxion.tensor(target)).sum().backward()
    (t(torch.tensor(idx)) * torch.tensor(target)).sum().backward()
    close(f.emb.weight.grad, t.emb.weight.grad)
    close(f.mid.weight.grad, t.mid.weight.grad)
    # the gradient really is the sum of both uses
    e = f.emb.weight.grad.numpy()
    assert np.abs(e[4]).sum() > 0  # row 4 never looked up: only the output layer touched it


# --- repr ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["mnist", "mnist_class", "custom", "nested"])
def test_repr_identical_to_torch(name):
    build = getattr(_Blocks, name)
    rf, rt = repr(build(fluxion.nn)), repr(build(torch.nn))
    same_text(rf, rt.replace("torch.float32", "fluxion.float32"))


def test_repr_extra_repr_multiline_and_custom_name():
    texts = []
    for nn in (fluxion.nn, torch.nn):
        class Custom(nn.Module):
            def __init__(self):
                super().__init__()
                self.a = nn.Linear(1, 1)

            def extra_repr(self):
                return "first line\nsecond line"

        class Leaf(nn.Module):
            def extra_repr(self):
                return "one\ntwo"

        texts.append(repr(nn.Sequential(Custom(), Leaf(), nn.Module())))
    same_text(*texts)


# --- containers ---------------------------------------------------------------------------------
def test_sequential_protocol():
    for nn in (fluxion.nn, torch.nn):
        a, b, c, d = nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1), nn.Tanh()
        s = nn.Sequential(a, b, c)
        assert len(s) == 3 and s[0] is a and s[-1] is c and list(s) == [a, b, c]
        sl = s[1:]
        assert isinstance(sl, nn.Sequential) and list(sl) == [b, c]
        assert [n for n, _ in sl.named_children()] == ["1", "2"]
        assert list(s[::2]) == [a, c]
        with pytest.raises(IndexError):
            s[3]
        s[1] = d
        assert s[1] is d and [n for n, _ in s.named_children()] == ["0", "1", "2"]
        s.append(nn.Identity())
        assert len(s) == 4 and type(s[3]).__name__ == "Identity"
        del s[0]  # the rest are renumbered, as in PyTorch
        assert [n for n, _ in s.named_children()] == ["0", "1", "2"] and s[0] is d
        od = nn.Sequential(OrderedDict([("first", a), ("second", b)]))
        assert [n for n, _ in od.named_children()] == ["first", "second"]
        assert od.first is a and od[1] is b


def test_sequential_insert_extend_and_pop_match_torch():
    outs = []
    for nn in (fluxion.nn, torch.nn):
        s = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
        s.extend([nn.Tanh(), nn.Sigmoid()])
        s.insert(1, nn.Identity())
        s.insert(-1, nn.ELU())
        popped = s.pop(0)
        outs.append(([(n, type(m).__name__) for n, m in s.named_children()],
                     type(popped).__name__, repr(s)))
    assert outs[0] == outs[1]


def test_sequential_forward_and_add():
    f, t = _Blocks.mnist(fluxion.nn), _Blocks.mnist(torch.nn)
    sync(f, t)
    f.eval()
    t.eval()
    x = np.random.default_rng(0).standard_normal((3, 1, 28, 28)).astype(np.float32)
    close(f[:4](fluxion.tensor(x)), t[:4](torch.tensor(x)), atol=1e-5)
    close(f(fluxion.tensor(x)), t(torch.tensor(x)), atol=1e-5)


def test_modulelist_protocol():
    for nn in (fluxion.nn, torch.nn):
        layers = [nn.Linear(2, 2) for _ in range(3)]
        ml = nn.ModuleList(layers)
        assert len(ml) == 3 and ml[0] is layers[0] and ml[-1] is layers[2]
        assert list(ml) == layers
        sub = ml[1:]
        assert isinstance(sub, nn.ModuleList) and list(sub) == layers[1:]
        ml.append(nn.ReLU())
        ml.extend([nn.Tanh(), nn.Sigmoid()])
        assert len(ml) == 6
        ml.insert(1, nn.Identity())
        assert type(ml[1]).__name__ == "Identity" and ml[2] is layers[1]
        assert [n for n, _ in ml.named_children()] == [str(i) for i in range(7)]
        ml.insert(6, nn.ELU())
        assert [type(m).__name__ for m in ml][-2:] == ["ELU", "Sigmoid"]
        ml[0] = nn.GELU()
        assert type(ml[0]).__name__ == "GELU"
        ml[-1] = nn.SiLU()
        assert type(ml[7]).__name__ == "SiLU"
        with pytest.raises(IndexError):
            ml[8]
        del ml[0]
        assert len(ml) == 7 and [n for n, _ in ml.named_children()] == [str(i) for i in range(7)]
        assert len(list(ml.parameters())) == 4
        empty = nn.ModuleList()
        assert len(empty) == 0 and list(empty) == []
        total = nn.ModuleList([nn.ReLU()]) + nn.ModuleList([nn.Tanh()])
        assert [type(m).__name__ for m in total] == ["ReLU", "Tanh"]


def test_modulelist_repr_and_names_match_torch():
    outs = []
    for nn in (fluxion.nn, torch.nn):
        ml = nn.ModuleList([nn.Linear(2, 2), nn.Linear(2, 2), nn.Linear(2, 2), nn.ReLU()])
        ml.insert(0, nn.Tanh())
        del ml[2]
        outs.append((repr(ml), [n for n, _ in ml.named_parameters()]))
    assert outs[0] == outs[1]


def test_moduledict_protocol():
    for nn in (fluxion.nn, torch.nn):
        a, b = nn.Linear(2, 2), nn.ReLU()
        md = nn.ModuleDict({"a": a, "b": b})
        assert len(md) == 2 and md["a"] is a and "b" in md and "c" not in md
        assert list(md) == ["a", "b"] and list(md.keys()) == ["a", "b"]
        assert list(md.values()) == [a, b] and list(md.items()) == [("a", a), ("b", b)]
        md["c"] = nn.Tanh()
        md.update([("d", nn.Sigmoid())])
        md.update({"a": nn.Identity()})
        assert list(md) == ["a", "b", "c", "d"] and type(md["a"]).__name__ == "Identity"
        assert md.pop("b") is b and list(md) == ["a", "c", "d"]
        del md["c"]
        assert list(md) == ["a", "d"]
        assert [n for n, _ in md.named_children()] == ["a", "d"]
        with pytest.raises(KeyError):
            md["zzz"]
        md.clear()
        assert len(md) == 0


def test_parameterlist_protocol():
    for nn in (fluxion.nn, torch.nn):
        lib = lib_of(nn)
        ps = nn.ParameterList([nn.Parameter(lib.ones(2)), lib.zeros(3)])
        assert len(ps) == 2
        assert isinstance(ps[1], nn.Parameter) and ps[1].requires_grad
        ps.append(nn.Parameter(lib.ones(4)))
        ps.extend([nn.Parameter(lib.ones(5))])
        assert [tuple(p.shape) for p in ps] == [(2,), (3,), (4,), (5,)]
        assert tuple(ps[-1].shape) == (5,)
        assert [n for n, _ in ps.named_parameters()] == ["0", "1", "2", "3"]
        sub = ps[1:3]
        assert [tuple(p.shape) for p in sub] == [(3,), (4,)]
        ps[0] = nn.Parameter(lib.zeros(7))
        assert tuple(ps[0].shape) == (7,)
        with pytest.raises(IndexError):
            ps[10]


def test_parameterdict_protocol():
    for nn in (fluxion.nn, torch.nn):
        lib = lib_of(nn)
        # a plain dict is inserted in sorted key order (PyTorch's rule)
        pd = nn.ParameterDict({"w": nn.Parameter(lib.ones(2)), "b": lib.zeros(1)})
        assert len(pd) == 2 and list(pd) == ["b", "w"] and "w" in pd
        assert isinstance(pd["b"], nn.Parameter)
        assert [n for n, _ in pd.named_parameters()] == ["b", "w"]
        pd["c"] = nn.Parameter(lib.ones(3))
        assert list(pd.keys()) == ["b", "w", "c"]
        del pd["w"]
        assert list(pd.keys()) == ["b", "c"]
        od = nn.ParameterDict(OrderedDict([("z", lib.ones(1)), ("a", lib.ones(2))]))
        assert list(od) == ["z", "a"]
        assert od.get("q") is None and od.pop("z") is not None and list(od) == ["a"]
        assert [k for k, _ in od.items()] == ["a"]


def test_containers_inside_model_state_dict_matches_torch():
    f, t = _Blocks.nested(fluxion.nn), _Blocks.nested(torch.nn)
    sync(f, t)
    for (nf, vf), (nt, vt) in zip(f.state_dict().items(), t.state_dict().items()):
        assert nf == nt
        close(vf, vt, rtol=0, atol=0)


# --- Identity, Flatten, Unflatten -------------------------------------------------------------
def test_identity_flatten_unflatten():
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    cases = [
        lambda nn: nn.Identity(3, some_arg=True),
        lambda nn: nn.Flatten(),
        lambda nn: nn.Flatten(0, -1),
        lambda nn: nn.Flatten(2),
        lambda nn: nn.Flatten(1, 2),
        lambda nn: nn.Sequential(nn.Flatten(), nn.Unflatten(1, (3, 20))),
        lambda nn: nn.Sequential(nn.Flatten(), nn.Unflatten(-1, (6, 10))),
        lambda nn: nn.Unflatten(3, (5, 1)),
    ]
    for case in cases:
        xf = fluxion.tensor(x, requires_grad=True)
        xt = torch.tensor(x, requires_grad=True)
        mf, mt = case(fluxion.nn), case(torch.nn)
        yf, yt = mf(xf), mt(xt)
        close(yf, yt, rtol=0, atol=0)
        assert repr(mf) == repr(mt)
        g = np.random.default_rng(0).standard_normal(tuple(yt.shape)).astype(np.float32)
        (yf * fluxion.tensor(g)).sum().backward()
        (yt * torch.tensor(g)).sum().backward()
        close(xf.grad, xt.grad, rtol=0, atol=0)
    i = fluxion.ones(2)
    assert fluxion.nn.Identity()(i) is i
