"""Progress bars for training: tqdm when installed, otherwise a plain self-rewriting line."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any


class Progress:
    """Iterate with a bar showing position, rate and the latest metrics.

    >>> bar = Progress(range(3), desc="demo", disable=True)
    >>> [i for i in bar]
    [0, 1, 2]
    """

    def __init__(self, iterable: Iterable[Any], total: int | None = None, desc: str = "",
                 disable: bool = False, unit: str = "it") -> None:
        self.iterable = iterable
        self.total = total if total is not None else _len(iterable)
        self.desc, self.disable, self.unit = desc, disable, unit
        self.metrics: dict[str, Any] = {}
        self._bar: Any = None
        if not disable:
            try:
                from tqdm.auto import tqdm

                self._bar = tqdm(total=self.total, desc=desc, unit=unit, dynamic_ncols=True,
                                 leave=True, file=sys.stdout)
            except ImportError:
                self._bar = None
        self._start = time.perf_counter()
        self._n = 0
        self._last_print = 0.0

    def set_postfix(self, **metrics: Any) -> None:
        """Show these metrics beside the bar."""
        self.metrics = metrics
        if self._bar is not None:
            self._bar.set_postfix({k: _fmt(v) for k, v in metrics.items()}, refresh=False)

    def __iter__(self) -> Iterator[Any]:
        for item in self.iterable:
            yield item
            self._n += 1
            if self.disable:
                continue
            if self._bar is not None:
                self._bar.update(1)
            else:
                self._plain()
        self.close()

    def _plain(self) -> None:
        now = time.perf_counter()
        if now - self._last_print < 0.5 and self._n != self.total:
            return
        self._last_print = now
        rate = self._n / max(now - self._start, 1e-9)
        frac = f"{self._n}/{self.total}" if self.total else str(self._n)
        width = 24
        filled = int(width * self._n / self.total) if self.total else 0
        bar = "#" * filled + "-" * (width - filled)
        post = " ".join(f"{k}={_fmt(v)}" for k, v in self.metrics.items())
        end = "\n" if self._n == self.total else ""
        sys.stdout.write(f"\r{self.desc} [{bar}] {frac} {rate:.1f}{self.unit}/s {post}{end}")
        sys.stdout.flush()

    def close(self) -> None:
        """Finish the bar."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _len(x: Any) -> int | None:
    try:
        return len(x)
    except TypeError:
        return None


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
