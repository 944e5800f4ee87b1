"""The example models of ``fluxion.train`` against the same models written in PyTorch: the
small GPT (AdamW with decay groups, warm-up + cosine LambdaLR and gradient clipping as in
``fluxion train charlm``) and the classic MNIST network (SGD with momentum), from the same
initial parameters on the same NumPy data: the loss trajectories agree to 1e-4."""

from __future__ import annotations

import math

import numpy as np
import pytest

import fluxion
from fluxion.nn import functional as FF
from fluxion.train.models import GPT, MNISTNet
from fluxion.train.tasks import _warmup_cosine

torch = pytest.importorskip("torch")
tnn = torch.nn
TF = torch.nn.functional

VOCAB, BLOCK, LAYERS, HEADS, WIDTH, BATCH, STEPS = 30, 16, 2, 2, 32, 4, 50


# --- the GPT, written in PyTorch with the same parameter names ------------------------------
class TorchAttention(tnn.Module):
    def __init__(self, n_embd, n_head):
        super().__init__()
        self.n_head = n_head
        self.qkv = tnn.Linear(n_embd, 3 * n_embd)
        self.proj = tnn.Linear(n_embd, n_embd)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2)
                   for z in (q, k, v))
        y = TF.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, t, c))


class TorchBlock(tnn.Module):
    def __init__(self, n_embd, n_head):
        super().__init__()
        self.ln1 = tnn.LayerNorm(n_embd)
        self.attn = TorchAttention(n_embd, n_head)
        self.ln2 = tnn.LayerNorm(n_embd)
        self.mlp = tnn.Sequential(tnn.Linear(n_embd, 4 * n_embd), tnn.GELU(approximate="tanh"),
                                  tnn.Linear(4 * n_embd, n_embd), tnn.Dropout(0.0))

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class TorchGPT(tnn.Module):
    def __init__(self, vocab_size, block_size, n_layer, n_head, n_embd):
        super().__init__()
        self.tok_emb = tnn.Embedding(vocab_size, n_embd)
        self.pos_emb = tnn.Embedding(block_size, n_embd)
        self.drop = tnn.Dropout(0.0)
        self.blocks = tnn.ModuleList([TorchBlock(n_embd, n_head) for _ in range(n_layer)])
        self.ln_f = tnn.LayerNorm(n_embd)
        self.head = tnn.Linear(n_embd, vocab_size, bias=False)
        self.head.weight = self.tok_emb.weight

    def forward(self, idx):
        pos = torch.arange(idx.shape[1])
        x = self.drop(self.tok_emb(idx) + self.pos_emb(pos))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


def copy_into_torch(fmodel, tmodel):
    state = {k: torch.from_numpy(v.numpy().copy()) for k, v in fmodel.state_dict().items()}
    tmodel.load_state_dict(state)


def token_data(seed=0):
    """Learnable sequences: arithmetic progressions mod VOCAB with a random start and step."""
    rng = np.random.default_rng(seed)
    start = rng.integers(0, VOCAB, (STEPS, BATCH, 1))
    step = rng.integers(1, 4, (STEPS, BATCH, 1))
    seq = (start + step * np.arange(BLOCK + 1)) % VOCAB
    return seq[..., :-1].astype(np.int64), seq[..., 1:].astype(np.int64)


def adamw(lib, model):
    """AdamW with the decay groups of ``fluxion train charlm``."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    return lib.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                            {"params": no_decay, "weight_decay": 0.0}], lr=3e-3,
                           betas=(0.9, 0.95))


def train_lm(lib, model, xs, ys):
    opt = adamw(lib, model)
    sched = lib.optim.lr_scheduler.LambdaLR(opt, _warmup_cosine(10, STEPS))
    losses, lrs = [], []
    for x, y in zip(xs, ys):
        x, y = lib.from_numpy(x.copy()), lib.from_numpy(y.copy())
        opt.zero_grad()
        logits = model(x)
        loss = lib.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), y.reshape(-1))
        loss.backward()
        lib.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        lrs.append(opt.param_groups[0]["lr"])
    return np.array(losses), lrs


def test_gpt_architecture_matches():
    fluxion.manual_seed(0)
    fmodel = GPT(VOCAB, BLOCK, LAYERS, HEADS, WIDTH, dropout=0.0)
    tmodel = TorchGPT(VOCAB, BLOCK, LAYERS, HEADS, WIDTH)
    fnames = [(n, tuple(p.shape)) for n, p in fmodel.named_parameters()]
    tnames = [(n, tuple(p.shape)) for n, p in tmodel.named_parameters()]
    assert fnames == tnames
    assert list(fmodel.state_dict()) == list(tmodel.state_dict())
    assert fmodel.head.weight is fmodel.tok_emb.weight
    # the initialisation: N(0, 0.02), the residual projections scaled by 1/sqrt(2 n_layer)
    sd = fmodel.state_dict()
    assert sd["blocks.0.attn.qkv.weight"].numpy().std() == pytest.approx(0.02, rel=0.1)
    assert sd["blocks.1.attn.proj.weight"].numpy().std() == pytest.approx(
        0.02 / math.sqrt(2 * LAYERS), rel=0.1)
    assert not sd["blocks.0.mlp.0.bias"].numpy().any()
    # and the same function: one forward from the same parameters
    copy_into_torch(fmodel, tmodel)
    xs, _ = token_data()
    f_out = fmodel(fluxion.from_numpy(xs[0].copy())).detach().numpy()
    t_out = tmodel(torch.from_numpy(xs[0].copy())).detach().numpy()
    np.testing.assert_allclose(f_out, t_out, rtol=1e-5, atol=1e-6)
    # causal: changing the last token changes only the last position's logits
    x2 = xs[0].copy()
    x2[:, -1] = (x2[:, -1] + 1) % VOCAB
    f_out2 = fmodel(fluxion.from_numpy(x2)).detach().numpy()
    np.testing.assert_array_equal(f_out2[:, :-1], f_out[:, :-1])
    assert not np.allclose(f_out2[:, -1], f_out[:, -1])


def test_gpt_training_trajectory_matches_pytorch():
    fluxion.manual_seed(0)
    fmodel = GPT(VOCAB, BLOCK, LAYERS, HEADS, WIDTH, dropout=0.0)
    tmodel = TorchGPT(VOCAB, BLOCK, LAYERS, HEADS, WIDTH)
    copy_into_torch(fmodel, tmodel)
    xs, ys = token_data()
    f_losses, f_lrs = train_lm(fluxion, fmodel, xs, ys)
    t_losses, t_lrs = train_lm(torch, tmodel, xs, ys)
    assert f_lrs == pytest.approx(t_lrs, rel=1e-12)
    assert np.all(np.isfinite(t_losses))
    np.testing.assert_allclose(f_losses, t_losses, rtol=1e-4, atol=0)
    assert t_losses[-5:].mean() < 0.8 * t_losses[0]  # it learned something: a real test
    assert fmodel.head.weight is fmodel.tok_emb.weight  # still tied after training
    t_state = tmodel.state_dict()
    for k, v in fmodel.state_dict().items():
        np.testing.assert_allclose(v.numpy(), t_state[k].numpy(), rtol=0, atol=5e-4,
                                   err_msg=k)


# --- the MNIST network ------------------------------------------------------------------------
class TorchMNISTNet(tnn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = tnn.Conv2d(1, 10, kernel_size=5)
        self.conv2 = tnn.Conv2d(10, 20, kernel_size=5)
        self.conv2_drop = tnn.Dropout2d()
        self.fc1 = tnn.Linear(320, 50)
        self.fc2 = tnn.Linear(50, 10)

    def forward(self, x):
        x = TF.relu(TF.max_pool2d(self.conv1(x), 2))
        x = TF.relu(TF.max_pool2d(self.conv2_drop(self.conv2(x)), 2))
        x = x.view(-1, 320)
        x = TF.relu(self.fc1(x))
        x = TF.dropout(x, training=self.training)
        x = self.fc2(x)
        return TF.log_softmax(x, dim=1)


def test_mnistnet_sgd_trajectory_matches_pytorch():
    fluxion.manual_seed(0)
    fmodel = MNISTNet().eval()  # eval: no dropout, so both are deterministic
    tmodel = TorchMNISTNet().eval()
    copy_into_torch(fmodel, tmodel)
    rng = np.random.default_rng(1)
    images = rng.standard_normal((8, 16, 1, 28, 28)).astype(np.float32)
    labels = rng.integers(0, 10, (8, 16)).astype(np.int64)
    # 50 steps cycling over 8 fixed batches, so the loss goes down
    batches = [(images[i % 8], labels[i % 8]) for i in range(STEPS)]
    losses = {}
    for lib, model, loss_fn in ((fluxion, fmodel, FF.nll_loss), (torch, tmodel, TF.nll_loss)):
        opt = lib.optim.SGD(model.parameters(), lr=0.05, momentum=0.5)
        out = []
        for x, y in batches:
            opt.zero_grad()
            loss = loss_fn(model(lib.from_numpy(x)), lib.from_numpy(y))
            loss.backward()
            opt.step()
            out.append(loss.item())
        losses[lib.__name__] = np.array(out)
    assert not fmodel.training
    np.testing.assert_allclose(losses["fluxion"], losses["torch"], rtol=1e-4, atol=0)
    assert losses["torch"][-8:].mean() < losses["torch"][:8].mean()
    t_state = tmodel.state_dict()
    for k, v in fmodel.state_dict().items():
        np.testing.assert_allclose(v.numpy(), t_state[k].numpy(), rtol=0, atol=1e-5,
                                   err_msg=k)
