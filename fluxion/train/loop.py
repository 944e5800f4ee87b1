"""The fit loop: epochs of training with a progress bar, evaluation, a per-epoch summary,
metrics, a plot, checkpoints every epoch, and exact resume."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import fluxion
from fluxion.nn import Module
from fluxion.tensor import Tensor
from fluxion.train.metrics import MetricsLog
from fluxion.train.progress import Progress

Batch = tuple[Tensor, Tensor]


@dataclass
class FitConfig:
    """How to train: epochs, where to write, gradient clipping, and what to report."""

    epochs: int
    out_dir: str
    clip_grad_norm: float | None = None
    scheduler_per: str = "step"  # "step" or "epoch"
    classification: bool = True  # report accuracy
    resume: bool = False
    progress: bool = True
    max_steps_per_epoch: int | None = None
    name: str = "run"
    extra_state: dict[str, Any] = field(default_factory=dict)
    compile: bool = False  # run each training step as one compiled graph


def _accuracy(output: Tensor, target: Tensor) -> int:
    return int((output.argmax(-1) == target).sum().item())


def evaluate(model: Module, loader: Iterable[Batch], loss_fn: Callable[[Tensor, Tensor], Tensor],
             classification: bool = True, max_batches: int | None = None) -> dict[str, float]:
    """Mean loss (and accuracy) of ``model`` over ``loader``, in eval mode without grad."""
    was_training = model.training
    model.eval()
    total_loss, correct, count = 0.0, 0, 0
    with fluxion.no_grad():
        for i, (x, y) in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            out = model(x)
            n = y.numel()
            total_loss += float(loss_fn(out, y).item()) * n
            if classification:
                correct += _accuracy(out.reshape(-1, out.shape[-1]), y.reshape(-1))
            count += n
    model.train(was_training)
    res = {"loss": total_loss / max(count, 1)}
    if classification:
        res["acc"] = correct / max(count, 1)
    return res


def checkpoint_path(out_dir: str) -> str:
    """Where a run keeps its checkpoint."""
    return os.path.join(out_dir, "checkpoint.safetensors")


def fit(model: Module, optimizer: Any, train_loader: Any,
        loss_fn: Callable[[Tensor, Tensor], Tensor], cfg: FitConfig,
        eval_loader: Any = None, scheduler: Any = None,
        on_epoch_end: Callable[[int], None] | None = None,
        step_fn: Callable[[Batch], Tensor] | None = None) -> list[dict[str, Any]]:
    """Train for ``cfg.epochs`` epochs; returns the metrics history.

    Every epoch ends with an evaluation, a summary line, a metrics record, the plot and a
    checkpoint (model, optimizer, scheduler, RNG and loader-generator states), so that
    ``cfg.resume`` continues exactly as the uninterrupted run would have.
    """
    os.makedirs(cfg.out_dir, exist_ok=True)
    ckpt = checkpoint_path(cfg.out_dir)
    start_epoch, history = 1, []
    loader_gen = getattr(getattr(train_loader, "sampler", None), "generator", None)
    if cfg.resume and os.path.exists(ckpt):
        state = fluxion.load(ckpt)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler") is not None:
            scheduler.load_state_dict(state["scheduler"])
        fluxion.set_rng_state(state["rng"])
        if loader_gen is not None and state.get("loader_rng") is not None:
            loader_gen.set_state(state["loader_rng"])
        start_epoch = state["epoch"] + 1
        history = state["history"]
        print(f"resumed from {ckpt} at epoch {state['epoch']}")
    elif cfg.resume:
        print(f"no checkpoint at {ckpt}: starting from scratch")
    log = MetricsLog(os.path.join(cfg.out_dir, "metrics.jsonl"), history)

    def default_step(batch: Batch) -> tuple[Tensor, Tensor]:
        x, y = batch
        out = model(x)
        return loss_fn(out, y), out

    def train_step(batch: Batch) -> tuple[Tensor, Tensor]:
        optimizer.zero_grad()
        loss, out = (step_fn or default_step)(batch)
        loss.backward()
        if cfg.clip_grad_norm is not None:
            fluxion.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad_norm)
        optimizer.step()
        return loss.detach(), out.detach()

    if cfg.compile:  # forward, backward and the update as one fused, generated graph
        train_step = fluxion.compile(train_step)

    for epoch in range(start_epoch, cfg.epochs + 1):
        model.train()
        total = len(train_loader)
        if cfg.max_steps_per_epoch is not None:
            total = min(total, cfg.max_steps_per_epoch)
        bar = Progress(_take(train_loader, total), total=total,
                       desc=f"epoch {epoch}/{cfg.epochs}", disable=not cfg.progress,
                       unit="batch")
        t0 = time.perf_counter()
        seen, loss_sum, correct = 0, 0.0, 0
        for batch in bar:
            loss, out = train_step(batch)
            if scheduler is not None and cfg.scheduler_per == "step":
                scheduler.step()
            y = batch[1]
            n = y.numel()
            seen += n
            loss_sum += float(loss.item()) * n
            metrics: dict[str, Any] = {"loss": loss_sum / seen}
            if cfg.classification:
                correct += _accuracy(out.reshape(-1, out.shape[-1]).detach(), y.reshape(-1))
                metrics["acc"] = correct / seen
            metrics["samples/s"] = round(seen / max(time.perf_counter() - t0, 1e-9))
            bar.set_postfix(**metrics)
        if scheduler is not None and cfg.scheduler_per == "epoch":
            scheduler.step()
        took = time.perf_counter() - t0
        record: dict[str, Any] = {"epoch": epoch, "train_loss": loss_sum / max(seen, 1)}
        if cfg.classification:
            record["train_acc"] = correct / max(seen, 1)
        if eval_loader is not None:
            ev = evaluate(model, eval_loader, loss_fn, cfg.classification)
            record["val_loss"] = ev["loss"]
            if cfg.classification:
                record["val_acc"] = ev["acc"]
        record["seconds"] = round(took, 3)
        record["samples_per_s"] = round(seen / max(took, 1e-9), 1)
        log.append(record)
        print(_summary(record))
        log.plot(os.path.join(cfg.out_dir, "curves.png"), title=cfg.name)
        if on_epoch_end is not None:
            on_epoch_end(epoch)
        fluxion.save({
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "rng": fluxion.get_rng_state(),
            "loader_rng": loader_gen.get_state() if loader_gen is not None else None,
            "epoch": epoch,
            "history": log.history,
            **cfg.extra_state,
        }, ckpt)
    return log.history


def _take(it: Iterable[Any], n: int) -> Iterable[Any]:
    yield from itertools.islice(it, n)  # (never fetches batch n + 1)


def _summary(r: dict[str, Any]) -> str:
    parts = [f"epoch {r['epoch']}", f"train loss {r['train_loss']:.4f}"]
    if "train_acc" in r:
        parts.append(f"train acc {100 * r['train_acc']:.2f}%")
    if "val_loss" in r:
        parts.append(f"val loss {r['val_loss']:.4f}")
    if "val_acc" in r:
        parts.append(f"val acc {100 * r['val_acc']:.2f}%")
    parts.append(f"{r['seconds']:.1f}s ({r['samples_per_s']:.0f} samples/s)")
    return " | ".join(parts)
