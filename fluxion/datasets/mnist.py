"""MNIST and Fashion-MNIST from the standard IDX files on disk (nothing is downloaded).

Put ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``
and ``t10k-labels-idx1-ubyte`` (each raw or ``.gz``) in a directory, or in
``<root>/MNIST/raw`` as torchvision lays them out, and point ``root`` at it."""

from __future__ import annotations

import gzip
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from fluxion.creation import from_numpy
from fluxion.tensor import Tensor
from fluxion.utils.data.dataset import Dataset

__all__ = ["read_idx", "write_idx", "MNIST", "FashionMNIST"]

# IDX type codes -> big-endian NumPy dtypes
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_CODES = {dt.newbyteorder("=").str: code for code, dt in _IDX_DTYPES.items()}


def _open(path: str | os.PathLike[str]) -> Any:
    return gzip.open(path, "rb") if str(path).endswith(".gz") else open(path, "rb")


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (raw, or gzip-compressed when the name ends in ``.gz``) into a
    NumPy array in native byte order.

    >>> import tempfile, os, numpy as np
    >>> from fluxion.datasets import read_idx, write_idx
    >>> path = os.path.join(tempfile.mkdtemp(), "x-idx3-ubyte.gz")
    >>> write_idx(path, np.arange(8, dtype=np.uint8).reshape(2, 2, 2))
    >>> read_idx(path)[1]
    array([[4, 5],
           [6, 7]], dtype=uint8)
    """
    with _open(path) as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic number)")
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        raise ValueError(f"{path}: unknown IDX data type code 0x{code:02x}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dt = _IDX_DTYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
    if len(raw) - header != expected:
        raise ValueError(
            f"{path}: IDX header says shape {shape} ({expected} bytes of data) but the file "
            f"holds {len(raw) - header} bytes"
        )
    arr = np.frombuffer(raw, dtype=dt, offset=header).reshape(shape)
    return arr.astype(dt.newbyteorder("="))


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write a NumPy array as an IDX file (gzip-compressed when the name ends in ``.gz``).

    >>> import tempfile, os, numpy as np
    >>> from fluxion.datasets import read_idx, write_idx
    >>> path = os.path.join(tempfile.mkdtemp(), "labels-idx1-ubyte")
    >>> write_idx(path, np.array([3, 1, 4], dtype=np.uint8))
    >>> read_idx(path).tolist()
    [3, 1, 4]
    """
    arr = np.asarray(array)
    key = arr.dtype.newbyteorder("=").str
    if key not in _IDX_CODES:
        raise TypeError(f"write_idx: IDX cannot hold dtype {arr.dtype}")
    code = _IDX_CODES[key]
    data = (struct.pack(">BBBB", 0, 0, code, arr.ndim)
            + struct.pack(f">{arr.ndim}I", *arr.shape)
            + arr.astype(_IDX_DTYPES[code]).tobytes())
    if str(path).endswith(".gz"):
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        with open(path, "wb") as f:
            f.write(data)


def _to_float_image(img: Tensor) -> Tensor:
    """uint8 HxW -> float32 1xHxW in [0, 1]."""
    arr = img.numpy().astype(np.float32) / np.float32(255.0)
    return from_numpy(arr[None])


class MNIST(Dataset[tuple[Any, Any]]):
    """The MNIST handwritten digits, read from IDX files the user already has.

    ``root`` is searched for the files directly, then in ``root/MNIST/raw`` and
    ``root/MNIST`` (torchvision's layout); each may be raw or ``.gz``. ``train`` picks the
    60,000 training images or the 10,000 test (``t10k``) images. Item ``i`` is
    ``(image, label)``: a float32 tensor of shape 1x28x28 scaled to [0, 1] and an ``int``.
    With ``transform`` the image is instead the raw uint8 28x28 tensor passed through it
    (torchvision passes a PIL image); ``target_transform`` maps the label. ``data`` (uint8
    Nx28x28) and ``targets`` (int64 N) hold everything. ``download=True`` is refused:
    nothing is fetched at run time.

    >>> import tempfile, os, numpy as np
    >>> from fluxion.datasets import MNIST, write_idx
    >>> root = tempfile.mkdtemp()
    >>> write_idx(os.path.join(root, "t10k-images-idx3-ubyte"), np.zeros((3, 28, 28), np.uint8))
    >>> write_idx(os.path.join(root, "t10k-labels-idx1-ubyte.gz"), np.array([7, 2, 1], np.uint8))
    >>> ds = MNIST(root, train=False)
    >>> len(ds), ds[0][0].shape, ds[0][0].dtype, ds[0][1]
    (3, fluxion.Size([1, 28, 28]), fluxion.float32, 7)
    """

    folder_name = "MNIST"
    classes: ClassVar[list[str]] = [
        "0 - zero", "1 - one", "2 - two", "3 - three", "4 - four",
        "5 - five", "6 - six", "7 - seven", "8 - eight", "9 - nine",
    ]

    def __init__(
        self,
        root: str | os.PathLike[str],
        train: bool = True,
        transform: Callable[[Tensor], Any] | None = None,
        target_transform: Callable[[int], Any] | None = None,
        download: bool = False,
    ) -> None:
        self.root = os.fspath(root)
        self.train = train
        self.transform = transform
        self.target_transform = target_transform
        prefix = "train" if train else "t10k"
        names = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
        found = [self._find(n) for n in names]
        if None in found:
            if download:
                raise RuntimeError(
                    f"{type(self).__name__}: download=True is not supported (Fluxion downloads "
                    f"nothing); {self._missing_message(names)}"
                )
            raise FileNotFoundError(f"{type(self).__name__}: {self._missing_message(names)}")
        images = read_idx(found[0])  # type: ignore[arg-type]
        labels = read_idx(found[1])  # type: ignore[arg-type]
        if images.ndim != 3:
            raise ValueError(f"{found[0]}: expected images of shape (N, H, W), got {images.shape}")
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise ValueError(
                f"{found[1]}: expected {images.shape[0]} labels, got shape {labels.shape}"
            )
        self.data = from_numpy(np.ascontiguousarray(images.astype(np.uint8)))
        self.targets = from_numpy(labels.astype(np.int64))

    def _search_dirs(self) -> list[Path]:
        root = Path(self.root)
        return [root, root / self.folder_name / "raw", root / self.folder_name]

    def _find(self, name: str) -> Path | None:
        for d in self._search_dirs():
            for candidate in (name, name + ".gz", name.replace("-idx", ".idx"),
                              name.replace("-idx", ".idx") + ".gz"):
                p = d / candidate
                if p.is_file():
                    return p
        return None

    def _missing_message(self, names: tuple[str, ...]) -> str:
        where = ", ".join(str(d) for d in self._search_dirs())
        files = ", ".join(f"{n}[.gz]" for n in names)
        return f"could not find the IDX files {files} in any of: {where}"

    @property
    def class_to_idx(self) -> dict[str, int]:
        """Class name -> label."""
        return {c: i for i, c in enumerate(self.classes)}

    def __len__(self) -> int:
        return self.data.shape[0]

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        img = self.data[index]
        target: Any = int(self.targets[index])
        img_out: Any = self.transform(img) if self.transform is not None else _to_float_image(img)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return img_out, target

    def __repr__(self) -> str:
        split = "Train" if self.train else "Test"
        return (f"Dataset {type(self).__name__}\n    Number of datapoints: {len(self)}\n"
                f"    Root location: {self.root}\n    Split: {split}")


class FashionMNIST(MNIST):
    """Fashion-MNIST: Zalando's clothing images, with MNIST's file names and layout
    (searched in ``root``, ``root/FashionMNIST/raw`` and ``root/FashionMNIST``).

    >>> from fluxion.datasets import FashionMNIST
    >>> FashionMNIST.classes[:3]
    ['T-shirt/top', 'Trouser', 'Pullover']
    """

    folder_name = "FashionMNIST"
    classes: ClassVar[list[str]] = [
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ]
