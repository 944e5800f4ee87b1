"""A character-level text corpus that every machine has: the Python standard library's
own ``.py`` source files. For next-character language models (char-RNN, nanoGPT-style)
without downloading anything."""

from __future__ import annotations

import functools
import os
import sysconfig
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from fluxion.creation import from_numpy
from fluxion.tensor import Tensor
from fluxion.utils.data.dataset import Dataset

__all__ = ["stdlib_source_files", "CharCorpus"]


def stdlib_source_files() -> list[Path]:
    """The ``.py`` files at the top level of this Python's standard library directory
    (``sysconfig.get_paths()['stdlib']``), sorted by name; sub-packages, tests and
    ``site-packages`` are left out. The same Python version gives the same list.

    >>> from fluxion.datasets import stdlib_source_files
    >>> files = stdlib_source_files()
    >>> len(files) > 50, all(f.suffix == ".py" for f in files), files == sorted(files)
    (True, True, True)
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    return sorted(p for p in root.glob("*.py") if p.is_file())


@functools.lru_cache(maxsize=8)
def _read_files(files: tuple[str, ...], max_chars: int | None) -> str:
    parts: list[str] = []
    total = 0
    for f in files:
        try:
            text = Path(f).read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue  # a file that is not UTF-8 text is skipped, deterministically
        if not text.endswith("\n"):
            text += "\n"
        parts.append(text)
        total += len(text)
        if max_chars is not None and total >= max_chars:
            break
    joined = "".join(parts)
    return joined if max_chars is None else joined[:max_chars]


class _Encoded:
    """A text, its vocabulary and its characters as ids (shared by the splits)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.itos = sorted(set(text))
        self.stoi = {c: i for i, c in enumerate(self.itos)}
        codes = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
        vocab_codes = np.array([ord(c) for c in self.itos], dtype=np.uint32)
        self.ids = np.searchsorted(vocab_codes, codes).astype(np.int64)
        self.ids.flags.writeable = False


@functools.lru_cache(maxsize=8)
def _encode_corpus(text: str) -> _Encoded:
    return _Encoded(text)


class CharCorpus(Dataset[tuple[Tensor, Tensor]]):
    """Next-character blocks from a text: item ``i`` is ``(x, y)`` with ``x`` the
    ``block_size`` character ids starting at ``i`` and ``y`` the same shifted by one (int64
    tensors of shape ``(block_size,)``).

    The text is ``text`` if given, else the ``files`` read in order, else
    ``stdlib_source_files()`` (the standard library's own sources, so it is on every
    machine), concatenated and cut at ``max_chars``. The vocabulary is the sorted set of
    its characters (``itos``; ``stoi`` the inverse; ``encode``/``decode`` convert), the same
    for both splits. The first ``1 - val_fraction`` of the text is ``split='train'``, the
    rest ``'val'``: deterministic, no shuffling (the ``DataLoader`` shuffles).

    >>> from fluxion.datasets import CharCorpus
    >>> ds = CharCorpus(block_size=4, text="hello world, hello fluxion", val_fraction=0.25)
    >>> ds.vocab_size, len(ds), ds.decode(ds.encode("hello"))
    (14, 15, 'hello')
    >>> x, y = ds[0]
    >>> ds.decode(x), ds.decode(y), x.dtype
    ('hell', 'ello', fluxion.int64)
    >>> CharCorpus(block_size=32, max_chars=20_000).vocab_size > 50  # stdlib sources
    True
    """

    def __init__(
        self,
        block_size: int,
        split: str = "train",
        *,
        max_chars: int | None = 1_000_000,
        files: Sequence[str | os.PathLike[str]] | None = None,
        text: str | None = None,
        val_fraction: float = 0.1,
    ) -> None:
        if not isinstance(block_size, int) or block_size <= 0:
            raise ValueError(f"block_size should be a positive int, got {block_size!r}")
        if split not in ("train", "val"):
            raise ValueError(f"split should be 'train' or 'val', got {split!r}")
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction should be in [0, 1), got {val_fraction}")
        if max_chars is not None and max_chars <= 0:
            raise ValueError(f"max_chars should be positive or None, got {max_chars}")
        self.block_size = block_size
        self.split = split
        self.val_fraction = val_fraction
        if text is not None:
            self.files: list[Path] = []
            corpus_text = text if max_chars is None else text[:max_chars]
        else:
            self.files = [Path(f) for f in files] if files is not None else stdlib_source_files()
            corpus_text = _read_files(tuple(str(f) for f in self.files), max_chars)
        if not corpus_text:
            raise ValueError("CharCorpus: the text is empty (no readable files?)")
        enc = _encode_corpus(corpus_text)
        self.text = enc.text
        self.itos: list[str] = enc.itos
        self.stoi: dict[str, int] = enc.stoi
        n_train = int(len(enc.ids) * (1.0 - val_fraction))
        ids = enc.ids[:n_train] if split == "train" else enc.ids[n_train:]
        if len(ids) <= block_size:
            raise ValueError(
                f"CharCorpus: the {split} split has {len(ids)} characters, too few for "
                f"block_size={block_size}; give more text (max_chars) or a smaller block_size"
            )
        self._ids = ids
        self.data = from_numpy(ids.copy())

    @property
    def vocab_size(self) -> int:
        """How many distinct characters the corpus has."""
        return len(self.itos)

    def encode(self, s: str) -> list[int]:
        """Characters -> ids (a ``KeyError`` names a character not in the vocabulary)."""
        try:
            return [self.stoi[c] for c in s]
        except KeyError as e:
            raise KeyError(f"character {e.args[0]!r} is not in the corpus vocabulary") from None

    def decode(self, ids: Iterable[int] | Tensor) -> str:
        """Ids (a list or a tensor) -> the string."""
        if isinstance(ids, Tensor):
            ids = ids.reshape(-1).tolist()
        return "".join(self.itos[int(i)] for i in ids)

    def __len__(self) -> int:
        return len(self._ids) - self.block_size

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"index {index} is out of range for a CharCorpus of length {n}")
        chunk = self._ids[index : index + self.block_size + 1]
        return from_numpy(chunk[:-1].copy()), from_numpy(chunk[1:].copy())
