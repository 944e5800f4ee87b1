"""Whole models under ``fluxion.compile``: training steps (zero_grad, forward, loss, backward,
optimizer step) compiled and eager, from identical initial weights, give the same
parameters after several steps; forward passes agree; a batch-size change recompiles
(counted) and stays right. An MLP with SGD + momentum, the MNIST network (eval, and train
mode with dropout under a shared seed), the small GPT with AdamW, an LSTM with a linear
head."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import fluxion
from fluxion import nn
from fluxion.nn import functional as F
from fluxion.train.models import GPT, MNISTNet

TOL = {"float32": (1e-5, 1e-6), "float64": (1e-9, 1e-11)}
STEPS = 5


@pytest.fixture(autouse=True)
def _hermetic_cache(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fluxion.compiler.config, "cache_dir", str(tmp_path / "kernels"))


def assert_close(actual: Any, expected: Any, what: str) -> None:
    a = actual.detach().numpy()
    b = expected.detach().numpy()
    assert a.dtype == b.dtype and a.shape == b.shape, (what, a.dtype, a.shape, b.dtype, b.shape)
    rtol, atol = TOL[a.dtype.name]
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=what)


def assert_same_params(compiled_model: nn.Module, eager_model: nn.Module) -> None:
    pc = dict(compiled_model.named_parameters())
    pe = dict(eager_model.named_parameters())
    assert pc.keys() == pe.keys()
    for name in pe:
        assert_close(pc[name], pe[name], f"parameter {name}")
    for (name, bc), (_, be) in zip(compiled_model.named_buffers(), eager_model.named_buffers()):
        assert_close(bc, be, f"buffer {name}")


def train_step(model: nn.Module, opt: Any, x: Any, y: Any) -> Any:
    opt.zero_grad()
    out = model(x)
    loss = F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))
    loss.backward()
    opt.step()
    return loss


def run_both(make: Callable[[], tuple[nn.Module, Any]], batches: list[tuple[Any, Any]],
             seeded: bool = False, train: bool = True) -> tuple[Any, nn.Module, nn.Module]:
    """The same steps eagerly and compiled on two identical models; losses compared each
    step. Returns the compiled step and both models."""
    me, oe = make()
    mc, oc = make()
    if not train:
        me.eval()
        mc.eval()
    step = fluxion.compile(train_step)
    for i, (x, y) in enumerate(batches):
        if seeded:
            fluxion.manual_seed(1000 + i)
        le = train_step(me, oe, x, y)
        if seeded:
            fluxion.manual_seed(1000 + i)
        lc = step(mc, oc, x, y)
        assert_close(lc, le, f"loss at step {i}")
    assert step.stats.calls == len(batches)
    return step, mc, me


def tensor(a: np.ndarray) -> Any:
    return fluxion.from_numpy(np.ascontiguousarray(a))


RNG = np.random.default_rng(1234)


def batches(shape: tuple, classes: int, n: int = STEPS, dtype: Any = np.float32
            ) -> list[tuple[Any, Any]]:
    return [(tensor(RNG.standard_normal(shape).astype(dtype)),
             tensor(RNG.integers(0, classes, shape[0]))) for _ in range(n)]


# --- MLP, SGD with momentum -------------------------------------------------------------
def make_mlp() -> tuple[nn.Module, Any]:
    fluxion.manual_seed(0)
    m = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 32), nn.Tanh(),
                      nn.Linear(32, 4))
    return m, mlp_sgd(m)


def mlp_sgd(m: nn.Module) -> Any:
    return fluxion.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)


def test_mlp_sgd_momentum_steps() -> None:
    step, mc, me = run_both(make_mlp, batches((8, 10), 4))
    assert_same_params(mc, me)
    assert step.stats.breaks == []  # the whole step is one graph


def test_linear_bias_gradients_sum_in_their_producers_pass() -> None:
    """Each linear layer's bias gradient is summed in the C pass that computes the
    gradient it sums (the ReLU and tanh derivatives, the loss's softmax gradient): no
    such sum is a kernel of its own. (``linear``'s backward rule records the sum before
    the products that read the same gradient; recorded after them, the sum would be a
    pass of its own.)"""
    step, mc, me = run_both(make_mlp, batches((8, 10), 4, n=2))
    assert_same_params(mc, me)
    (prog,) = step.last_programs
    if prog.backend != "c":
        pytest.skip("no working C compiler (CC): the NumPy renderer fuses no sums")
    nodes = prog.graph.nodes
    biases = [k for k in prog.kernels  # the sums over the batch: the three bias gradients
              if nodes[k.root].op == "sum" and nodes[k.root].attrs.get("dims") == (0,)]
    assert len(biases) == 3
    assert all(len(k.nodes) > 1 for k in biases), [k.nodes for k in biases]


def test_add_with_alpha_records_one_node() -> None:
    """``a.add_(b, alpha=s)`` (SGD's update) is one ``addcmul`` node while recording, equal
    to eager's two ops bit for bit; a broadcast operand keeps the two ops and their errors."""
    a, b = tensor(RNG.standard_normal((3, 4)).astype(np.float32)), \
        tensor(RNG.standard_normal((3, 4)).astype(np.float32))

    def f(x: Any, y: Any) -> Any:
        return x.add(y, alpha=0.3), fluxion.sub(x, y, alpha=-2.5), x.clone().add_(y, alpha=0.1)

    cf = fluxion.compile(f)
    for got, want in zip(cf(a, b), f(a, b)):
        np.testing.assert_array_equal(got.numpy(), want.numpy())
    assert [n.op for n in cf.last_programs[0].captured.nodes].count("addcmul") == 3
    assert [n.op for n in cf.last_programs[0].captured.nodes].count("mul") == 0
    g = fluxion.compile(lambda x, y: x.sub(y, alpha=0.5))(a.requires_grad_(), b)
    assert g.grad_fn.name() == "SubBackward0"
    with pytest.raises(RuntimeError, match="add"):
        fluxion.compile(lambda x, y: x.add(y, alpha=2.0))(a.detach(), tensor(np.ones((5, 4))))


def test_mlp_steps_with_every_product_turned_around(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each product computed as (bᵀ aᵀ)ᵀ (``orient_products``, whatever the timing would
    say): its readers, the bias and activation kernels, read it transposed."""
    from fluxion.compiler import autotune

    monkeypatch.setattr(autotune, "product_flipped", lambda a, b, dtype: True)
    step, mc, me = run_both(make_mlp, batches((8, 10), 4))
    assert_same_params(mc, me)
    graph = step.last_programs[0].graph
    flipped = [n for n in graph.nodes if n.op == "matmul" and n.shape == (32, 8)]
    assert len(flipped) >= 2, graph


def test_mlp_batch_size_change_recompiles() -> None:
    data = batches((8, 10), 4, 3) + batches((5, 10), 4, 2)
    step, mc, me = run_both(make_mlp, data)
    assert_same_params(mc, me)
    reasons = [r.reason for r in step.stats.recompiles]
    assert any("[8, 10]" in r and "[5, 10]" in r for r in reasons), reasons
    n = len(reasons)
    opt_e, opt_c = mlp_sgd(me), mlp_sgd(mc)
    for x, y in batches((8, 10), 4, 2) + batches((5, 10), 4, 2):
        train_step(me, opt_e, x, y)
        step(mc, opt_c, x, y)
    assert_same_params(mc, me)
    # a fresh optimizer of the same kind, batch sizes seen before: every graph is known
    assert len(step.stats.recompiles) == n


def test_mlp_forward_only() -> None:
    m, _ = make_mlp()
    cm = fluxion.compile(m)
    for shape in ((8, 10), (3, 10), (8, 10)):
        x = tensor(RNG.standard_normal(shape).astype(np.float32))
        assert_close(cm(x), m(x), f"forward {shape}")
        with fluxion.no_grad():
            y = cm(x)
        assert not y.requires_grad
        assert_close(y, m(x), f"no_grad forward {shape}")
    assert cm._compiled.stats.graphs >= 2 and len(cm._compiled.stats.recompiles) >= 1


def test_step_with_a_loss_item_break() -> None:
    """The common ``losses.append(loss.item())`` inside the step: a break, same result."""
    me, oe = make_mlp()
    mc, oc = make_mlp()

    def step(model: nn.Module, opt: Any, x: Any, y: Any) -> float:
        loss = train_step(model, opt, x, y)
        return loss.item()

    compiled = fluxion.compile(step)
    for x, y in batches((8, 10), 4, 3):
        assert compiled(mc, oc, x, y) == pytest.approx(step(me, oe, x, y), rel=1e-5)
    assert_same_params(mc, me)
    assert len(compiled.stats.breaks) == 3


# --- the MNIST network ------------------------------------------------------------------
def make_mnist() -> tuple[nn.Module, Any]:
    fluxion.manual_seed(0)
    m = MNISTNet()
    return m, fluxion.optim.SGD(m.parameters(), lr=0.05, momentum=0.5)


MNIST_BATCHES = batches((4, 1, 28, 28), 10)


def test_mnist_eval_mode_steps() -> None:
    _, mc, me = run_both(make_mnist, MNIST_BATCHES, train=False)
    assert_same_params(mc, me)


def test_mnist_train_mode_steps_with_dropout() -> None:
    _, mc, me = run_both(make_mnist, MNIST_BATCHES, seeded=True, train=True)
    assert_same_params(mc, me)


def test_mnist_forward_and_batch_change() -> None:
    m, _ = make_mnist()
    m.eval()
    cm = fluxion.compile(m)
    for n in (4, 2, 4):
        x = tensor(RNG.standard_normal((n, 1, 28, 28)).astype(np.float32))
        assert_close(cm(x), m(x), f"forward batch {n}")
    stats = cm._compiled.stats
    assert len(stats.recompiles) >= 1 and stats.calls == 3


# --- the small GPT, AdamW ---------------------------------------------------------------
VOCAB, BLOCK = 11, 8


def make_gpt(dtype: Any = fluxion.float64) -> tuple[nn.Module, Any]:
    fluxion.manual_seed(0)
    m = GPT(vocab_size=VOCAB, block_size=BLOCK, n_layer=1, n_head=2, n_embd=16, dropout=0.1)
    m = m.to(dtype)
    return m, fluxion.optim.AdamW(m.parameters(), lr=1e-2, weight_decay=0.1)


def gpt_batches(n: int, b: int = 2, t: int = BLOCK) -> list[tuple[Any, Any]]:
    out = []
    for _ in range(n):
        idx = RNG.integers(0, VOCAB, (b, t + 1))
        out.append((tensor(idx[:, :-1]), tensor(idx[:, 1:])))
    return out


def test_gpt_adamw_steps_train_mode_and_shape_change() -> None:
    """float64: Adam divides by sqrt(v), so a gradient near zero turns float32 rounding
    noise (an ulp of libm vs NumPy) into an update of either sign; float64 keeps the
    comparison tight. Three steps on (2, 8) token batches, then two on (3, 5)."""
    data = gpt_batches(3) + gpt_batches(2, b=3, t=5)
    step, mc, me = run_both(make_gpt, data, seeded=True, train=True)
    assert_same_params(mc, me)
    assert mc.head.weight is mc.tok_emb.weight  # tying survives
    assert any("[2, 8]" in r.reason and "[3, 5]" in r.reason for r in step.stats.recompiles)


def test_gpt_float32_forward_and_gradients() -> None:
    me, _ = make_gpt(fluxion.float32)
    mc, _ = make_gpt(fluxion.float32)
    me.eval()
    mc.eval()
    cm = fluxion.compile(mc)
    (x, y), = gpt_batches(1)
    le = F.cross_entropy(me(x).reshape(-1, VOCAB), y.reshape(-1))
    logits = cm(x)
    lc = F.cross_entropy(logits.reshape(-1, VOCAB), y.reshape(-1))
    assert_close(logits, me(x), "logits")
    le.backward()
    lc.backward()
    for (name, pc), (_, pe) in zip(mc.named_parameters(), me.named_parameters()):
        assert pc.grad is not None, name
        np.testing.assert_allclose(pc.grad.numpy(), pe.grad.numpy(), rtol=1e-5, atol=1e-6,
                                   err_msg=name)


# --- LSTM + linear head -----------------------------------------------------------------
class LSTMClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(6, 12, num_layers=2, batch_first=True)
        self.head = nn.Linear(12, 3)

    def forward(self, x: Any) -> Any:
        out, (h, _) = self.lstm(x)
        return self.head(out[:, -1] + h[-1] * 0.5)


def make_lstm() -> tuple[nn.Module, Any]:
    fluxion.manual_seed(0)
    m = LSTMClassifier()
    return m, fluxion.optim.SGD(m.parameters(), lr=0.2, momentum=0.9, nesterov=True)


def test_lstm_steps() -> None:
    _, mc, me = run_both(make_lstm, batches((3, 4, 6), 3))
    assert_same_params(mc, me)


def test_lstm_forward_sequence_length_change() -> None:
    m, _ = make_lstm()
    cm = fluxion.compile(m)
    for t in (4, 2, 4):
        x = tensor(RNG.standard_normal((3, t, 6)).astype(np.float32))
        assert_close(cm(x), m(x), f"forward length {t}")
    assert len(cm._compiled.stats.recompiles) >= 1
