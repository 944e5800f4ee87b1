"""``fluxion.utils.data``: datasets, samplers, collation and the ``DataLoader``, with the
names and semantics of ``torch.utils.data``.

>>> import fluxion
>>> from fluxion.utils.data import DataLoader, TensorDataset
>>> x, y = fluxion.randn(6, 3), fluxion.tensor([0, 1, 0, 1, 0, 1])
>>> [tuple(xb.shape) for xb, _ in DataLoader(TensorDataset(x, y), batch_size=4)]
[(4, 3), (2, 3)]
"""

from fluxion.utils.data._collate import (
    collate,
    default_collate,
    default_collate_fn_map,
    default_convert,
)
from fluxion.utils.data._worker import WorkerInfo, get_worker_info
from fluxion.utils.data.dataloader import DataLoader
from fluxion.utils.data.dataset import (
    ChainDataset,
    ConcatDataset,
    Dataset,
    IterableDataset,
    StackDataset,
    Subset,
    TensorDataset,
    random_split,
)
from fluxion.utils.data.sampler import (
    BatchSampler,
    RandomSampler,
    Sampler,
    SequentialSampler,
    SubsetRandomSampler,
    WeightedRandomSampler,
)

__all__ = [
    "Dataset",
    "IterableDataset",
    "TensorDataset",
    "StackDataset",
    "ConcatDataset",
    "ChainDataset",
    "Subset",
    "random_split",
    "Sampler",
    "SequentialSampler",
    "RandomSampler",
    "SubsetRandomSampler",
    "WeightedRandomSampler",
    "BatchSampler",
    "DataLoader",
    "default_collate",
    "default_convert",
    "collate",
    "default_collate_fn_map",
    "get_worker_info",
    "WorkerInfo",
]
