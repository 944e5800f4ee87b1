"""RNN / LSTM / GRU and their cells against PyTorch: parameter names, shapes and
initialisation; outputs, final states and the gradients of inputs, initial states and every
parameter across layer counts, directions, layouts, initial states, unbatched inputs,
dropout and dtypes; and an LSTM trained for 50 SGD steps in both frameworks."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

import fluxion

torch = pytest.importorskip("torch")

F32 = {"rtol": 1e-5, "atol": 1e-5}
F64 = {"rtol": 1e-10, "atol": 1e-10}
TOL = {"float32": F32, "float64": F64}


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny tensors: PyTorch's intra-op threads only add contention (and noise)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# --- helpers ------------------------------------------------------------------------------
def to_fx(t):
    return fluxion.tensor(t.detach().numpy())


def copy_params(fm, tm):
    """Copy torch's parameters into the Fluxion module by name."""
    fm.load_state_dict({k: to_fx(v) for k, v in tm.state_dict().items()})


def check(f, t, tol):
    assert f is not None and t is not None, (f, t)
    assert tuple(f.shape) == tuple(t.shape), (tuple(f.shape), tuple(t.shape))
    assert f.dtype.name == str(t.dtype).removeprefix("torch."), (f.dtype, t.dtype)
    np.testing.assert_allclose(f.detach().numpy(), t.detach().numpy(), **tol)


def leaf_pair(rng, shape, dtype):
    a = rng.standard_normal(shape).astype(dtype)
    return (fluxion.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True))


def flat(x):
    """Tensors of an (output, state) result, flattened: (out, h) or (out, (h, c))."""
    if isinstance(x, (tuple, list)):
        return [y for item in x for y in flat(item)]
    return [x]


def backward_both(rng, f_outs, t_outs):
    """Backpropagate the same random linear functional of every output in both."""
    f_loss, t_loss = 0, 0
    for f, t in zip(f_outs, t_outs):
        w = rng.standard_normal(tuple(t.shape)).astype(str(t.dtype).removeprefix("torch."))
        f_loss = f_loss + (f * fluxion.tensor(w)).sum()
        t_loss = t_loss + (t * torch.tensor(w)).sum()
    f_loss.backward()
    t_loss.backward()


def check_param_grads(fm, tm, tol):
    f_params = dict(fm.named_parameters())
    t_params = dict(tm.named_parameters())
    assert list(f_params) == list(t_params)
    for name, tp in t_params.items():
        assert tp.grad is not None, name
        check(f_params[name].grad, tp.grad, tol)


def make_pair(mode, *args, **kwargs):
    if mode in ("tanh", "relu"):
        tm = torch.nn.RNN(*args, nonlinearity=mode, **kwargs)
        fm = fluxion.nn.RNN(*args, nonlinearity=mode, **kwargs)
    else:
        tm = getattr(torch.nn, mode)(*args, **kwargs)
        fm = getattr(fluxion.nn, mode)(*args, **kwargs)
    copy_params(fm, tm)
    return fm, tm


def initial_state(rng, mode, shape_h, shape_c, dtype):
    if mode == "LSTM":
        (fh, th), (fc, tc) = leaf_pair(rng, shape_h, dtype), leaf_pair(rng, shape_c, dtype)
        return (fh, fc), (th, tc), [fh, fc], [th, tc]
    fh, th = leaf_pair(rng, shape_h, dtype)
    return fh, th, [fh], [th]


def run_and_compare(mode, *, num_layers=1, bidirectional=False, batch_first=False,
                    with_state=False, unbatched=False, bias=True, dtype="float32",
                    train=True, dropout=0.0, proj_size=0, seq=5, batch=3, inp=4, hidden=6):
    rng = np.random.default_rng(0)
    kwargs = {"num_layers": num_layers, "bias": bias, "batch_first": batch_first,
              "dropout": dropout, "bidirectional": bidirectional}
    if proj_size:
        kwargs["proj_size"] = proj_size
    fm, tm = make_pair(mode, inp, hidden, **kwargs)
    if dtype == "float64":
        fm.double()
        tm.double()
    fm.train(train)
    tm.train(train)
    if unbatched:
        shape = (seq, inp)
    else:
        shape = (batch, seq, inp) if batch_first else (seq, batch, inp)
    fx, tx = leaf_pair(rng, shape, dtype)
    f_leaves, t_leaves = [fx], [tx]
    f_args, t_args = [fx], [tx]
    if with_state:
        nd = num_layers * (2 if bidirectional else 1)
        hsize = proj_size or hidden
        lead = (nd,) if unbatched else (nd, batch)
        fs, ts, fl, tl = initial_state(rng, mode, (*lead, hsize), (*lead, hidden), dtype)
        f_args.append(fs)
        t_args.append(ts)
        f_leaves += fl
        t_leaves += tl
    f_res, t_res = fm(*f_args), tm(*t_args)
    tol = TOL[dtype]
    f_outs, t_outs = flat(f_res), flat(t_res)
    assert len(f_outs) == len(t_outs) == (3 if mode == "LSTM" else 2)
    for f, t in zip(f_outs, t_outs):
        check(f, t, tol)
    backward_both(rng, f_outs, t_outs)
    for f, t in zip(f_leaves, t_leaves):
        check(f.grad, t.grad, tol)
    check_param_grads(fm, tm, tol)


MODES = ["tanh", "relu", "LSTM", "GRU"]


# --- parity over configurations ---------------------------------------------------------------
@pytest.mark.parametrize(
    "mode,num_layers,bidirectional,batch_first,with_state",
    list(itertools.product(MODES, [1, 2], [False, True], [False, True], [False, True])),
)
def test_parity_grid(mode, num_layers, bidirectional, batch_first, with_state):
    run_and_compare(mode, num_layers=num_layers, bidirectional=bidirectional,
                    batch_first=batch_first, with_state=with_state)


@pytest.mark.parametrize("mode,with_state,bidirectional",
                         list(itertools.product(MODES, [False, True], [False, True])))
def test_unbatched(mode, with_state, bidirectional):
    run_and_compare(mode, num_layers=2, unbatched=True, with_state=with_state,
                    bidirectional=bidirectional)


@pytest.mark.parametrize("mode", MODES)
def test_no_bias(mode):
    run_and_compare(mode, num_layers=2, bias=False, bidirectional=True, with_state=True)


@pytest.mark.parametrize("mode", MODES)
def test_float64(mode):
    run_and_compare(mode, num_layers=2, bidirectional=True, with_state=True, dtype="float64",
                    batch_first=True)


@pytest.mark.parametrize("mode", MODES)
def test_eval_with_dropout_matches(mode):
    """Dropout between layers is off in eval mode."""
    run_and_compare(mode, num_layers=3, dropout=0.5, train=False, bidirectional=True)


@pytest.mark.parametrize("mode", MODES)
def test_train_zero_dropout_matches(mode):
    run_and_compare(mode, num_layers=2, dropout=0.0, train=True)


@pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")
@pytest.mark.parametrize("bidirectional,with_state,unbatched",
                         list(itertools.product([False, True], repeat=3)))
def test_lstm_proj_size(bidirectional, with_state, unbatched):
    run_and_compare("LSTM", num_layers=2, proj_size=3, bidirectional=bidirectional,
                    with_state=with_state, unbatched=unbatched)


def test_single_step_and_long_sequence():
    run_and_compare("LSTM", seq=1, batch=1)
    run_and_compare("GRU", seq=40, batch=2, hidden=5, bidirectional=True)
    run_and_compare("LSTM", seq=23, batch=2, hidden=5, num_layers=2, with_state=True)


def test_train_dropout_is_applied_between_layers_only():
    fluxion.manual_seed(0)
    m = fluxion.nn.LSTM(4, 8, num_layers=2, dropout=0.5)
    x = fluxion.randn(6, 3, 4)
    m.eval()
    ref, _ = m(x)
    m.train()
    a, _ = m(x)
    b, _ = m(x)
    assert not np.allclose(a.detach().numpy(), ref.detach().numpy())
    assert not np.allclose(a.detach().numpy(), b.detach().numpy())  # a fresh mask each call
    # one layer: the dropout applies to nothing (PyTorch warns about it)
    with pytest.warns(UserWarning, match="num_layers greater than 1"):
        one = fluxion.nn.GRU(4, 8, dropout=0.5)
    o1, _ = one(x)
    o2, _ = one.eval()(x)
    np.testing.assert_array_equal(o1.detach().numpy(), o2.detach().numpy())


# --- cells ---------------------------------------------------------------------------------------
CELLS = [("RNNCell", {"nonlinearity": "tanh"}), ("RNNCell", {"nonlinearity": "relu"}),
         ("LSTMCell", {}), ("GRUCell", {})]


@pytest.mark.parametrize("cell,kw,with_state,unbatched,bias,dtype", [
    (c, kw, s, u, b, d) for (c, kw), s, u, b, d in itertools.product(
        CELLS, [False, True], [False, True], [True, False], ["float32", "float64"])
])
def test_cells(cell, kw, with_state, unbatched, bias, dtype):
    rng = np.random.default_rng(1)
    tm = getattr(torch.nn, cell)(5, 7, bias=bias, **kw)
    fm = getattr(fluxion.nn, cell)(5, 7, bias=bias, **kw)
    copy_params(fm, tm)
    if dtype == "float64":
        fm.double()
        tm.double()
    lead = () if unbatched else (4,)
    fx, tx = leaf_pair(rng, (*lead, 5), dtype)
    f_leaves, t_leaves = [fx], [tx]
    f_args, t_args = [fx], [tx]
    if with_state:
        fs, ts, fl, tl = initial_state(rng, "LSTM" if cell == "LSTMCell" else cell,
                                       (*lead, 7), (*lead, 7), dtype)
        f_args.append(fs)
        t_args.append(ts)
        f_leaves += fl
        t_leaves += tl
    f_outs, t_outs = flat(fm(*f_args)), flat(tm(*t_args))
    tol = TOL[dtype]
    for f, t in zip(f_outs, t_outs):
        check(f, t, tol)
    backward_both(rng, f_outs, t_outs)
    for f, t in zip(f_leaves, t_leaves):
        check(f.grad, t.grad, tol)
    check_param_grads(fm, tm, tol)


def test_cell_unrolled_equals_layer():
    """An LSTMCell stepped over time gives the LSTM layer's output (same weights)."""
    layer = fluxion.nn.LSTM(3, 5)
    cell = fluxion.nn.LSTMCell(3, 5)
    cell.load_state_dict({k[:-3]: v for k, v in layer.state_dict().items()})
    x = fluxion.randn(4, 2, 3)
    out, (_h_n, c_n) = layer(x)
    h = c = fluxion.zeros(2, 5)
    for t in range(4):
        h, c = cell(x[t], (h, c))
        np.testing.assert_allclose(h.detach().numpy(), out[t].detach().numpy(), atol=1e-6)
    np.testing.assert_allclose(c.detach().numpy(), c_n[0].detach().numpy(), atol=1e-6)


# --- construction: names, shapes, init, repr, errors ----------------------------------------------
@pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")
@pytest.mark.parametrize("mode,kwargs", [
    ("tanh", {}), ("relu", {"num_layers": 3, "bidirectional": True}),
    ("LSTM", {"num_layers": 2, "bias": False, "bidirectional": True}),
    ("LSTM", {"num_layers": 2, "proj_size": 2, "bidirectional": True}),
    ("GRU", {"num_layers": 2, "batch_first": True, "dropout": 0.25}),
])
def test_parameter_names_shapes_repr(mode, kwargs):
    fm, tm = make_pair(mode, 4, 6, **kwargs)
    f = [(n, tuple(p.shape)) for n, p in fm.named_parameters()]
    t = [(n, tuple(p.shape)) for n, p in tm.named_parameters()]
    assert f == t
    assert repr(fm) == repr(tm)
    assert fm._flat_weights_names == tm._flat_weights_names
    assert [[tuple(p.shape) for p in ws] for ws in fm.all_weights] == \
        [[tuple(p.shape) for p in ws] for ws in tm.all_weights]


@pytest.mark.parametrize("cell,kw", [*CELLS, ("GRUCell", {"bias": False})])
def test_cell_names_shapes_repr(cell, kw):
    tm = getattr(torch.nn, cell)(4, 6, **kw)
    fm = getattr(fluxion.nn, cell)(4, 6, **kw)
    assert [(n, tuple(p.shape)) for n, p in fm.named_parameters()] == \
        [(n, tuple(p.shape)) for n, p in tm.named_parameters()]
    assert repr(fm) == repr(tm)


@pytest.mark.parametrize("factory", [
    lambda: fluxion.nn.LSTM(8, 64, num_layers=2, bidirectional=True),
    lambda: fluxion.nn.GRU(8, 64),
    lambda: fluxion.nn.RNN(8, 64),
    lambda: fluxion.nn.LSTMCell(8, 64),
    lambda: fluxion.nn.GRUCell(8, 64),
])
def test_default_init_is_uniform_one_over_sqrt_hidden(factory):
    fluxion.manual_seed(0)
    m = factory()
    bound = 1 / math.sqrt(64)
    values = np.concatenate([p.detach().numpy().ravel() for p in m.parameters()])
    assert np.abs(values).max() <= bound
    assert np.abs(values).max() > 0.99 * bound  # fills the interval
    assert abs(values.mean()) < 0.05 * bound
    np.testing.assert_allclose(values.std(), bound / math.sqrt(3), rtol=0.05)  # U(-b, b)
    for p in m.parameters():  # every tensor drawn, none left at its empty() contents
        assert p.detach().numpy().std() > 0.3 * bound


def test_dtype_argument_and_double():
    m = fluxion.nn.GRU(3, 4, dtype=fluxion.float64)
    assert all(p.dtype == fluxion.float64 for p in m.parameters())
    out, h = m(fluxion.randn(2, 1, 3, dtype=fluxion.float64))
    assert out.dtype == fluxion.float64 and h.dtype == fluxion.float64


@pytest.mark.parametrize("name,args", [
    ("GRU", ([5, 3, 4], [3, 6])),
    ("LSTM", ([5, 3, 4], ([3, 6], [3, 6]))),
    ("LSTM", ([5, 4], ([1, 3, 6], [1, 3, 6]))),
    ("RNN", ([5, 4], [1, 1, 6])),
    ("LSTMCell", ([3, 4], ([2, 6], [3, 6]))),
    ("GRUCell", ([3, 4], [3, 5])),
    ("RNNCell", ([3, 5], None)),
])
def test_error_messages_equal_torch(name, args):
    def build(lib, shapes):
        if shapes is None:
            return None
        if isinstance(shapes, tuple):
            return tuple(build(lib, s) for s in shapes)
        return lib.zeros(*shapes)

    tm, fm = getattr(torch.nn, name)(4, 6), getattr(fluxion.nn, name)(4, 6)
    with pytest.raises(RuntimeError) as te:
        tm(*[build(torch, a) for a in args if a is not None])
    with pytest.raises(RuntimeError) as fe:
        fm(*[build(fluxion, a) for a in args if a is not None])
    assert str(fe.value) == str(te.value)


def test_errors_match_torch():
    fm, tm = make_pair("LSTM", 4, 6, num_layers=2)
    for bad in [np.zeros((5, 3, 5), np.float32), np.zeros((5,), np.float32),
                np.zeros((1, 5, 3, 4), np.float32)]:
        with pytest.raises(Exception) as te:
            tm(torch.tensor(bad))
        with pytest.raises(type(te.value)):
            fm(fluxion.tensor(bad))
    x = np.zeros((5, 3, 4), np.float32)
    h = np.zeros((1, 3, 6), np.float32)
    msg = r"Expected hidden\[0\] size \(2, 3, 6\), got \[1, 3, 6\]"
    with pytest.raises(RuntimeError, match=msg):
        fm(fluxion.tensor(x), (fluxion.tensor(h), fluxion.tensor(h)))
    with pytest.raises(RuntimeError, match="should also be 3-D"):
        fm(fluxion.tensor(x), (fluxion.tensor(h[0]), fluxion.tensor(h[0])))
    with pytest.raises(ValueError, match="does not match weight dtype"):
        fm(fluxion.tensor(x.astype(np.float64)))
    with pytest.raises(ValueError, match="Unknown nonlinearity"):
        fluxion.nn.RNN(3, 4, nonlinearity="gelu")
    with pytest.raises(ValueError, match="proj_size has to be smaller"):
        fluxion.nn.LSTM(3, 4, proj_size=4)
    with pytest.raises(ValueError, match="dropout should be a number"):
        fluxion.nn.GRU(3, 4, dropout=1.5)
    with pytest.raises(RuntimeError, match="Expected hidden size"):
        fluxion.nn.GRU(4, 6)(fluxion.tensor(x), fluxion.zeros(1, 2, 6))


# --- training ------------------------------------------------------------------------------------
def test_lstm_sgd_trajectory_matches_torch():
    """50 SGD steps of LSTM + linear head from identical weights and data."""
    rng = np.random.default_rng(42)
    torch.manual_seed(0)
    t_lstm = torch.nn.LSTM(3, 8, num_layers=2, batch_first=True)
    t_head = torch.nn.Linear(8, 1)
    f_lstm = fluxion.nn.LSTM(3, 8, num_layers=2, batch_first=True)
    f_head = fluxion.nn.Linear(8, 1)
    copy_params(f_lstm, t_lstm)
    copy_params(f_head, t_head)
    x = rng.standard_normal((4, 10, 3)).astype(np.float32)
    y = np.cumsum(x[..., :1], axis=1).astype(np.float32) / 3  # running sum to learn
    fx, fy, tx, ty = fluxion.tensor(x), fluxion.tensor(y), torch.tensor(x), torch.tensor(y)
    f_params = list(f_lstm.parameters()) + list(f_head.parameters())
    t_params = list(t_lstm.parameters()) + list(t_head.parameters())
    lr = 0.3
    f_losses, t_losses = [], []
    for _ in range(50):
        f_loss = ((f_head(f_lstm(fx)[0]) - fy) ** 2).mean()
        t_loss = ((t_head(t_lstm(tx)[0]) - ty) ** 2).mean()
        f_loss.backward()
        t_loss.backward()
        f_losses.append(f_loss.item())
        t_losses.append(t_loss.item())
        with fluxion.no_grad():
            for p in f_params:
                p.sub_(p.grad * lr)
                p.grad = None
        with torch.no_grad():
            for p in t_params:
                p.sub_(p.grad * lr)
                p.grad = None
    np.testing.assert_allclose(f_losses, t_losses, rtol=1e-4, atol=1e-6)
    assert f_losses[-1] < 0.75 * f_losses[0]  # it actually learned
    for fp, tp in zip(f_params, t_params):
        np.testing.assert_allclose(fp.detach().numpy(), tp.detach().numpy(), atol=1e-4)
