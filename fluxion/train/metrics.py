"""Metrics: a JSON-lines log of every epoch and a PNG plot of the curves."""

from __future__ import annotations

import json
import os
import warnings
from typing import Any


class MetricsLog:
    """Append one record per epoch to ``path`` (JSON lines) and keep the history.

    >>> import tempfile, os
    >>> log = MetricsLog(os.path.join(tempfile.mkdtemp(), "metrics.jsonl"))
    >>> log.append({"epoch": 1, "train_loss": 0.5}); log.history
    [{'epoch': 1, 'train_loss': 0.5}]
    """

    def __init__(self, path: str, history: list[dict[str, Any]] | None = None) -> None:
        self.path = path
        self.history: list[dict[str, Any]] = list(history or [])
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as f:  # rewrite what a resumed run already had
            for rec in self.history:
                f.write(json.dumps(rec) + "\n")

    def append(self, record: dict[str, Any]) -> None:
        """Add one record."""
        self.history.append(record)
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def plot(self, png_path: str, title: str = "") -> bool:
        """Draw loss and accuracy curves by epoch; False (with a warning) without
        matplotlib."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            warnings.warn("matplotlib is not installed: no plot written (pip install matplotlib)",
                          stacklevel=2)
            return False
        epochs = [r["epoch"] for r in self.history]
        losses = [k for k in ("train_loss", "val_loss", "test_loss") if k in self.history[0]]
        accs = [k for k in ("train_acc", "val_acc", "test_acc") if k in self.history[0]]
        fig, axes = plt.subplots(1, 2 if accs else 1, figsize=(10 if accs else 5, 4))
        axes = axes if accs else [axes]
        for k in losses:
            axes[0].plot(epochs, [r.get(k) for r in self.history], marker="o", label=k)
        axes[0].set_xlabel("epoch")
        axes[0].set_ylabel("loss")
        axes[0].legend()
        axes[0].grid(alpha=0.3)
        for k in accs:
            axes[1].plot(epochs, [r.get(k) for r in self.history], marker="o", label=k)
        if accs:
            axes[1].set_xlabel("epoch")
            axes[1].set_ylabel("accuracy")
            axes[1].legend()
            axes[1].grid(alpha=0.3)
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(png_path, dpi=100)
        plt.close(fig)
        return True
