"""fluxion.utils.data: datasets, samplers, collation and the DataLoader (single process and
worker processes). Deterministic behaviour is compared with torch.utils.data."""

from __future__ import annotations

import collections
import gc
import math
import multiprocessing
import os
import pickle
import time
import warnings

import numpy as np
import pytest

import fluxion
from fluxion.utils.data import (
    BatchSampler,
    ChainDataset,
    ConcatDataset,
    DataLoader,
    Dataset,
    IterableDataset,
    RandomSampler,
    Sampler,
    SequentialSampler,
    StackDataset,
    Subset,
    SubsetRandomSampler,
    TensorDataset,
    WeightedRandomSampler,
    default_collate,
    default_convert,
    get_worker_info,
    random_split,
)

# --- helpers ------------------------------------------------------------------------------


class Range(Dataset):
    """Item i is i (a map-style dataset without randomness)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        if not 0 <= i < self.n:
            raise IndexError(i)
        return i


class Pairs(Dataset):
    """Item i is (float32 vector, int label, name)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return np.full(3, i, dtype=np.float32), i % 3, f"item{i}"


class WhoLoads(Dataset):
    """Item i is (i, pid of the process that loaded it)."""

    def __len__(self) -> int:
        return 12

    def __getitem__(self, i: int):
        return i, os.getpid()


class FailsAt(Dataset):
    def __init__(self, bad: int, exc: type[Exception] = ValueError) -> None:
        self.bad, self.exc = bad, exc

    def __len__(self) -> int:
        return 10

    def __getitem__(self, i: int) -> int:
        if i == self.bad:
            raise self.exc(f"item {i} is broken")
        return i


class Stream(IterableDataset):
    """0..n-1, split between workers with get_worker_info."""

    def __init__(self, n: int, with_len: bool = True) -> None:
        self.n, self.with_len = n, with_len

    def __iter__(self):
        info = get_worker_info()
        if info is None:
            return iter(range(self.n))
        return iter(range(info.id, self.n, info.num_workers))

    def __len__(self) -> int:
        if not self.with_len:
            raise TypeError("no len")
        return self.n


class StreamNoLen(IterableDataset):
    def __iter__(self):
        return iter(range(5))


def flat(batches) -> list[int]:
    return [v for b in batches for v in b.tolist()]


def pids_gone(pids) -> bool:
    """No process with these pids is alive (the workers were joined and reaped)."""
    deadline = time.time() + 5
    while time.time() < deadline:
        alive = []
        for p in pids:
            try:
                os.kill(p, 0)
                alive.append(p)
            except ProcessLookupError:
                pass
        if not alive:
            return True
        time.sleep(0.05)
    return False


def assert_same(f, t) -> None:
    """A fluxion collate result matches torch's: same containers, dtypes, shapes, values."""
    import torch

    if isinstance(t, torch.Tensor):
        assert isinstance(f, fluxion.Tensor), (type(f), t)
        assert f.dtype.name == str(t.dtype).removeprefix("torch."), (f.dtype, t.dtype)
        assert tuple(f.shape) == tuple(t.shape)
        np.testing.assert_array_equal(f.numpy(), t.numpy())
    elif isinstance(t, dict):
        assert type(f) is type(t) and list(f) == list(t)
        for k in t:
            assert_same(f[k], t[k])
    elif isinstance(t, (list, tuple)):
        assert type(f).__name__ == type(t).__name__, (type(f), type(t))
        assert len(f) == len(t)
        for a, b in zip(f, t):
            assert_same(a, b)
    else:
        assert type(f) is type(t) and f == t, (f, t)


# --- datasets -----------------------------------------------------------------------------


def test_tensor_dataset():
    x, y = fluxion.arange(12).reshape(6, 2), fluxion.arange(6)
    ds = TensorDataset(x, y)
    assert len(ds) == 6
    a, b = ds[4]
    assert a.tolist() == [8, 9] and b.item() == 4
    with pytest.raises(AssertionError, match="Size mismatch"):
        TensorDataset(x, fluxion.arange(5))


def test_concat_subset_stack_chain():
    c = ConcatDataset([Range(3), Range(2)])
    assert len(c) == 5 and [c[i] for i in range(5)] == [0, 1, 2, 0, 1]
    assert c[-1] == 1 and c.cumulative_sizes == [3, 5]
    assert len(Range(3) + Range(4)) == 7
    with pytest.raises(ValueError, match="absolute value"):
        c[-6]
    with pytest.raises(AssertionError, match="empty"):
        ConcatDataset([])
    with pytest.raises(AssertionError, match="IterableDataset"):
        ConcatDataset([Stream(3)])
    s = Subset(Range(10), [9, 2, 5])
    assert len(s) == 3 and [s[i] for i in range(3)] == [9, 2, 5]
    assert s.__getitems__([0, 2]) == [9, 5]
    st = StackDataset(Range(3), Range(3))
    assert st[2] == (2, 2) and len(st) == 3
    assert StackDataset(a=Range(2), b=Range(2))[1] == {"a": 1, "b": 1}
    with pytest.raises(ValueError, match="Size mismatch"):
        StackDataset(Range(2), Range(3))
    assert list(Stream(2) + Stream(3)) == [0, 1, 0, 1, 2]
    assert len(ChainDataset([Stream(2), Stream(3)])) == 5
    with pytest.raises(NotImplementedError):
        Dataset()[0]


def test_getitems_is_used_for_batches():
    calls = []

    class Batched(Range):
        def __getitems__(self, indices):
            calls.append(list(indices))
            return [i * 10 for i in indices]

    out = list(DataLoader(Batched(5), batch_size=2))
    assert flat(out) == [0, 10, 20, 30, 40]
    assert calls == [[0, 1], [2, 3], [4]]
    # a Subset forwards to the wrapped dataset's __getitems__
    calls.clear()
    assert flat(DataLoader(Subset(Batched(5), [4, 0]), batch_size=2)) == [40, 0]
    assert calls == [[4, 0]]


def test_random_split_sizes_disjoint_reproducible():
    ds = Range(10)
    a, b, c = random_split(ds, [5, 3, 2], generator=fluxion.Generator().manual_seed(0))
    assert (len(a), len(b), len(c)) == (5, 3, 2)
    items = list(a) + list(b) + list(c)
    assert sorted(items) == list(range(10))  # disjoint and complete
    again = random_split(ds, [5, 3, 2], generator=fluxion.Generator().manual_seed(0))
    assert [list(s) for s in again] == [list(a), list(b), list(c)]
    other = random_split(ds, [5, 3, 2], generator=fluxion.Generator().manual_seed(1))
    assert [list(s) for s in other] != [list(a), list(b), list(c)]
    with pytest.raises(ValueError, match="Sum of input lengths"):
        random_split(ds, [5, 4])
    with pytest.raises(ValueError, match="not between 0 and 1"):
        random_split(ds, [1.5, -0.5])


@pytest.mark.parametrize("n, fracs", [(10, [0.7, 0.3]), (11, [0.5, 0.5]), (7, [0.1, 0.2, 0.7]),
                                      (3, [1 / 3] * 3), (100, [0.8, 0.1, 0.1]), (5, [0.25] * 4)])
def test_random_split_fraction_sizes_match_torch(n, fracs):
    pytest.importorskip("torch")
    from torch.utils.data import random_split as t_split

    got = [len(s) for s in random_split(Range(n), fracs)]
    want = [len(s) for s in t_split(list(range(n)), fracs)]
    assert got == want and sum(got) == n


def test_random_split_warns_on_empty_split():
    with pytest.warns(UserWarning, match="Length of split at index 1 is 0"):
        random_split(Range(1), [0.5, 0.5])


# --- samplers -----------------------------------------------------------------------------


def test_sequential_and_random_sampler():
    assert list(SequentialSampler(Range(4))) == [0, 1, 2, 3]
    g = fluxion.Generator().manual_seed(3)
    s = RandomSampler(Range(20), generator=g)
    first, second = list(s), list(s)
    assert sorted(first) == list(range(20)) and first != second  # a new order each pass
    g2 = fluxion.Generator().manual_seed(3)
    assert [list(RandomSampler(Range(20), generator=g2)) for _ in range(2)] == [first, second]
    assert list(RandomSampler(Range(20), generator=fluxion.Generator().manual_seed(4))) != first
    # more samples than items without replacement: whole permutations, then a cut one
    many = list(RandomSampler(Range(3), num_samples=7, generator=g))
    assert len(many) == 7 and all(many.count(i) >= 2 for i in range(3))
    rep = RandomSampler(Range(5), replacement=True, num_samples=70, generator=g)
    draws = list(rep)
    assert len(rep) == len(draws) == 70 and set(draws) <= set(range(5))


def test_random_sampler_follows_manual_seed():
    fluxion.manual_seed(123)
    a = list(RandomSampler(Range(30)))
    fluxion.manual_seed(123)
    b = list(RandomSampler(Range(30)))
    assert a == b and sorted(a) == list(range(30))


def test_sampler_argument_errors_match_torch():
    pytest.importorskip("torch")
    from torch.utils import data as td

    cases = [
        (lambda m: m.RandomSampler([1, 2], replacement=1), TypeError),
        (lambda m: m.RandomSampler([1, 2], num_samples=0), ValueError),
        (lambda m: m.RandomSampler([1, 2], num_samples=1.5), ValueError),
        (lambda m: m.WeightedRandomSampler([1.0, 2.0], 0), ValueError),
        (lambda m: m.WeightedRandomSampler([1.0, 2.0], 2, replacement=None), ValueError),
        (lambda m: m.WeightedRandomSampler([[1.0, 2.0]], 2), ValueError),
        (lambda m: m.BatchSampler(range(3), 0, False), ValueError),
        (lambda m: m.BatchSampler(range(3), True, False), ValueError),
        (lambda m: m.BatchSampler(range(3), 2, 1), ValueError),
    ]
    from fluxion.utils import data as fd

    for make, exc in cases:
        with pytest.raises(exc) as ours:
            make(fd)
        with pytest.raises(exc) as theirs:
            make(td)
        assert str(ours.value) == str(theirs.value)


def test_subset_and_weighted_samplers():
    g = fluxion.Generator().manual_seed(0)
    assert sorted(SubsetRandomSampler([5, 1, 9], generator=g)) == [1, 5, 9]
    assert len(SubsetRandomSampler([5, 1, 9])) == 3
    w = WeightedRandomSampler([0.0, 1.0, 0.0, 3.0], 200, generator=g)
    draws = list(w)
    assert len(draws) == 200 and set(draws) == {1, 3} and draws.count(3) > draws.count(1)
    nr = list(WeightedRandomSampler([1.0, 1.0, 1.0, 1.0], 4, replacement=False, generator=g))
    assert sorted(nr) == [0, 1, 2, 3]
    for w in (fluxion.tensor([1, 2]), np.array([1, 2], np.float32), fluxion.tensor([1.0, 2.0])):
        assert WeightedRandomSampler(w, 3).weights.dtype == fluxion.float64


@pytest.mark.parametrize("n", [0, 1, 7, 10])
@pytest.mark.parametrize("bs", [1, 3, 5, 12])
@pytest.mark.parametrize("drop_last", [False, True])
def test_batch_sampler_matches_torch(n, bs, drop_last):
    pytest.importorskip("torch")
    from torch.utils.data import BatchSampler as TBatchSampler
    from torch.utils.data import SequentialSampler as TSequentialSampler

    ours = BatchSampler(SequentialSampler(range(n)), bs, drop_last)
    theirs = TBatchSampler(TSequentialSampler(range(n)), bs, drop_last)
    assert list(ours) == list(theirs)
    assert len(ours) == len(theirs)


def test_custom_sampler_subclass():
    class Reverse(Sampler):
        def __init__(self, n):
            self.n = n

        def __iter__(self):
            return iter(range(self.n - 1, -1, -1))

        def __len__(self):
            return self.n

    loader = DataLoader(Range(5), batch_size=2, sampler=Reverse(5))
    assert flat(loader) == [4, 3, 2, 1, 0] and len(loader) == 3
    # any iterable of indices works as a sampler, and of index lists as a batch_sampler
    assert flat(DataLoader(Range(5), sampler=[3, 3, 0])) == [3, 3, 0]
    assert [b.tolist() for b in DataLoader(Range(5), batch_sampler=[[4, 0], [1]])] == [[4, 0], [1]]


# --- collation ----------------------------------------------------------------------------

Point = collections.namedtuple("Point", ["x", "y"])


def _collate_cases(lib):
    """Batches (lists of samples) built with ``lib`` (fluxion or torch) for tensor leaves."""
    return {
        "tensor_int_pairs": [(lib.tensor([1.0, 2.0]), 3), (lib.tensor([4.0, 5.0]), 6)],
        "ints": [1, 2, 3],
        "floats": [0.5, 1.5],
        "bools": [True, False],
        "dicts": [{"a": 1, "b": 0.5, "s": "x"}, {"a": 2, "b": 1.5, "s": "y"}],
        "namedtuples": [Point(1, 2.0), Point(3, 4.0)],
        "lists": [[1, 2], [3, 4]],
        "np_float32": [np.zeros((2, 3), np.float32), np.ones((2, 3), np.float32)],
        "np_float64": [np.zeros(2), np.ones(2)],
        "np_int32": [np.arange(3, dtype=np.int32), np.arange(3, dtype=np.int32)],
        "np_uint8": [np.zeros((2, 2), np.uint8), np.full((2, 2), 255, np.uint8)],
        "np_bool": [np.array([True, False]), np.array([False, False])],
        "np_scalars_f32": [np.float32(1.5), np.float32(2.5)],
        "np_scalars_i64": [np.int64(1), np.int64(2)],
        "np_scalars_f64": [np.float64(1.5), np.float64(2.5)],
        "strings": ["a", "bc"],
        "nested": [({"img": np.zeros(2, np.float32)}, [1, 2.0]),
                   ({"img": np.ones(2, np.float32)}, [3, 4.0])],
        "int64_tensors": [lib.tensor(1), lib.tensor(2)],
        "int32_tensors": [lib.zeros(2, dtype=lib.int32), lib.ones(2, dtype=lib.int32)],
    }


@pytest.mark.parametrize("case", list(_collate_cases(fluxion)))
def test_default_collate_matches_torch(case):
    torch = pytest.importorskip("torch")
    from torch.utils.data import default_collate as t_collate

    ours = default_collate(_collate_cases(fluxion)[case])
    theirs = t_collate(_collate_cases(torch)[case])
    assert_same(ours, theirs)


@pytest.mark.parametrize("case", ["dicts", "np_float32", "np_scalars_f32", "strings", "nested"])
def test_default_convert_matches_torch(case):
    torch = pytest.importorskip("torch")
    from torch.utils.data import default_convert as t_convert

    for f_sample, t_sample in zip(_collate_cases(fluxion)[case], _collate_cases(torch)[case]):
        assert_same(default_convert(f_sample), t_convert(t_sample))


def test_default_collate_dtypes_without_torch():
    b = default_collate([(1, 0.5, np.float32(1)), (2, 1.5, np.float32(2))])
    assert isinstance(b, list) and [t.dtype for t in b] == [
        fluxion.int64, fluxion.float64, fluxion.float32]
    p = default_collate([Point(fluxion.zeros(2), 1), Point(fluxion.ones(2), 2)])
    assert isinstance(p, Point) and p.x.shape == (2, 2) and p.y.tolist() == [1, 2]


def test_default_collate_errors():
    with pytest.raises(TypeError, match="batch must contain"):
        default_collate([np.array(["a"]), np.array(["b"])])
    with pytest.raises(TypeError, match="batch must contain"):
        default_collate([object(), object()])
    with pytest.raises(RuntimeError, match="equal size"):
        default_collate([[1, 2], [3]])


# --- DataLoader: single process -----------------------------------------------------------


def test_sequential_batches_and_drop_last():
    assert [b.tolist() for b in DataLoader(Range(7), batch_size=3)] == [[0, 1, 2], [3, 4, 5], [6]]
    assert [b.tolist() for b in DataLoader(Range(7), batch_size=3, drop_last=True)] == [
        [0, 1, 2], [3, 4, 5]]
    assert [b.tolist() for b in DataLoader(Range(3))] == [[0], [1], [2]]  # batch_size=1
    assert len(DataLoader(Range(7), batch_size=3)) == 3
    assert len(DataLoader(Range(7), batch_size=3, drop_last=True)) == 2


def test_batches_of_tuples():
    xb, yb, names = next(iter(DataLoader(Pairs(5), batch_size=4)))
    assert xb.shape == (4, 3) and xb.dtype == fluxion.float32
    assert yb.tolist() == [0, 1, 2, 0] and yb.dtype == fluxion.int64
    assert names == ("item0", "item1", "item2", "item3")  # as PyTorch: the transposed tuple


def test_shuffle_with_generator_repeats_and_differs():
    def order(seed, epochs=1):
        loader = DataLoader(Range(50), batch_size=8, shuffle=True,
                            generator=fluxion.Generator().manual_seed(seed))
        return [flat(loader) for _ in range(epochs)]

    a = order(0, epochs=2)
    assert sorted(a[0]) == list(range(50)) and a[0] != list(range(50))
    assert a[0] != a[1]  # each epoch a new order
    assert order(0, epochs=2) == a  # same seed: same orders
    assert order(1)[0] != a[0]  # different seed: different order


def test_shuffle_follows_manual_seed():
    fluxion.manual_seed(7)
    a = flat(DataLoader(Range(40), batch_size=5, shuffle=True))
    fluxion.manual_seed(7)
    b = flat(DataLoader(Range(40), batch_size=5, shuffle=True))
    fluxion.manual_seed(8)
    c = flat(DataLoader(Range(40), batch_size=5, shuffle=True))
    assert a == b and a != c and sorted(a) == list(range(40))


def test_batch_size_none_disables_batching():
    loader = DataLoader(Pairs(3), batch_size=None)
    x, y, name = next(iter(loader))
    assert isinstance(x, fluxion.Tensor) and x.shape == (3,)  # default_convert: array -> tensor
    assert y == 0 and name == "item0"
    assert len(loader) == 3


def test_custom_collate_fn():
    loader = DataLoader(Range(5), batch_size=2, collate_fn=lambda b: sum(b))
    assert list(loader) == [1, 5, 4]


@pytest.mark.parametrize("kwargs", [
    {"sampler": [0, 1], "shuffle": True},
    {"batch_sampler": [[0]], "batch_size": 2},
    {"batch_sampler": [[0]], "shuffle": True},
    {"batch_sampler": [[0]], "sampler": [0]},
    {"batch_sampler": [[0]], "drop_last": True},
    {"batch_size": None, "drop_last": True},
    {"num_workers": -1},
    {"timeout": -1},
    {"prefetch_factor": 2},
    {"persistent_workers": True},
    {"multiprocessing_context": "fork"},
])
def test_dataloader_argument_errors_match_torch(kwargs):
    pytest.importorskip("torch")
    from torch.utils.data import DataLoader as TDataLoader

    with pytest.raises(ValueError):
        DataLoader(Range(4), **kwargs)
    with pytest.raises(ValueError):
        TDataLoader(list(range(4)), **kwargs)


def test_dataloader_argument_errors():
    with pytest.raises(ValueError, match="mutually exclusive with shuffle"):
        DataLoader(Range(4), sampler=[0, 1], shuffle=True)
    with pytest.raises(ValueError, match="batch_sampler option is mutually exclusive"):
        DataLoader(Range(4), batch_sampler=[[0]], batch_size=2)
    with pytest.raises(ValueError, match="expected unspecified shuffle"):
        DataLoader(Stream(3), shuffle=True)
    with pytest.raises(ValueError, match="expected unspecified sampler"):
        DataLoader(Stream(3), sampler=[0])
    with pytest.raises(ValueError, match="expected unspecified batch_sampler"):
        DataLoader(Stream(3), batch_sampler=[[0]])
    with pytest.raises(ValueError, match="multiprocessing_context option should specify"):
        DataLoader(Range(4), num_workers=1, multiprocessing_context="nope")
    loader = DataLoader(Range(4), batch_size=2)
    with pytest.raises(ValueError, match="should not be set after DataLoader is initialized"):
        loader.batch_size = 3
    loader.num_workers = 0  # other attributes may change
    DataLoader(Range(4), pin_memory=True, pin_memory_device="")  # accepted, a no-op


@pytest.mark.parametrize("n", [0, 5, 6])
@pytest.mark.parametrize("bs, drop_last", [(None, False), (1, False), (4, False), (1, True),
                                           (4, True)])
@pytest.mark.parametrize("iterable", [False, True])
def test_len_rules_match_torch(n, bs, drop_last, iterable):
    pytest.importorskip("torch")
    from torch.utils.data import DataLoader as TDataLoader
    from torch.utils.data import IterableDataset as TIterableDataset

    class TStream(TIterableDataset):
        def __iter__(self):
            return iter(range(n))

        def __len__(self):
            return n

    ours = DataLoader(Stream(n) if iterable else Range(n), batch_size=bs, drop_last=drop_last)
    theirs = TDataLoader(TStream() if iterable else list(range(n)), batch_size=bs,
                         drop_last=drop_last)
    assert len(ours) == len(theirs)
    assert len(list(ours)) == len(list(theirs))


def test_iterable_dataset_loading():
    assert [b.tolist() for b in DataLoader(Stream(5), batch_size=2)] == [[0, 1], [2, 3], [4]]
    assert [b.tolist() for b in DataLoader(Stream(5), batch_size=2, drop_last=True)] == [
        [0, 1], [2, 3]]
    assert list(DataLoader(Stream(3), batch_size=None)) == [0, 1, 2]
    with pytest.raises(TypeError):
        len(DataLoader(StreamNoLen()))


def test_iterable_dataset_longer_than_its_len_warns():
    class Liar(Stream):
        def __len__(self):
            return 2

    loader = DataLoader(Liar(4), batch_size=None)
    assert len(loader) == 2
    with pytest.warns(UserWarning, match="was reported to be 2"):
        list(loader)


# --- DataLoader: worker processes ---------------------------------------------------------


@pytest.mark.parametrize("bs, drop_last", [(1, False), (3, False), (3, True), (None, False)])
def test_workers_give_the_same_batches(bs, drop_last):
    def batches(workers):
        loader = DataLoader(Pairs(11), batch_size=bs, drop_last=drop_last, num_workers=workers)
        return list(loader)

    single, multi = batches(0), batches(2)
    assert len(single) == len(multi)
    for a, b in zip(single, multi):
        for x, y in zip(a, b):
            if isinstance(x, fluxion.Tensor):
                assert x.dtype == y.dtype and x.tolist() == y.tolist()
            else:
                assert x == y


def test_workers_with_shuffle_follow_the_generator():
    def order(workers):
        g = fluxion.Generator().manual_seed(5)
        return flat(DataLoader(Range(30), batch_size=4, shuffle=True, generator=g,
                               num_workers=workers))

    assert order(2) == order(0)


def test_workers_load_in_other_processes_and_shut_down():
    loader = DataLoader(WhoLoads(), batch_size=2, num_workers=2)
    batches = list(loader)
    assert flat(b[0] for b in batches) == list(range(12))
    pids = set(flat(b[1] for b in batches))
    assert len(pids) == 2 and os.getpid() not in pids
    assert pids_gone(pids)  # shut down at the end of the epoch


def test_workers_shut_down_when_iterator_is_dropped_early():
    it = iter(DataLoader(WhoLoads(), batch_size=1, num_workers=2))
    _, pid = next(it)
    del it
    gc.collect()
    assert pids_gone(pid.tolist())
    assert multiprocessing.active_children() == []


def test_persistent_workers_survive_epochs():
    loader = DataLoader(WhoLoads(), batch_size=3, num_workers=2, persistent_workers=True)
    first = list(loader)
    second = list(loader)
    p1, p2 = set(flat(b[1] for b in first)), set(flat(b[1] for b in second))
    assert p1 == p2 and len(p1) == 2
    assert flat(b[0] for b in second) == list(range(12))
    # an epoch abandoned half way: the next epoch starts clean
    it = iter(loader)
    next(it)
    assert flat(b[0] for b in loader) == list(range(12))
    del loader, it
    gc.collect()
    assert pids_gone(p1)


class SeedReport(Dataset):
    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int):
        info = get_worker_info()
        r = float(fluxion.rand(1).item())
        return info.id, info.seed, info.num_workers, r, float(np.random.rand())


def test_each_worker_gets_its_own_seed():
    def run(seed):
        g = fluxion.Generator().manual_seed(seed)
        return list(DataLoader(SeedReport(), batch_size=None, num_workers=2, generator=g))

    rows = run(0)
    by_worker = {}
    for wid, seed, nw, _r, _npr in rows:
        assert nw == 2
        by_worker.setdefault(wid, set()).add(seed)
    assert set(by_worker) == {0, 1}
    s0, s1 = by_worker[0].pop(), by_worker[1].pop()
    assert s1 == s0 + 1  # base_seed + worker_id
    assert len({r for *_, r, _ in rows}) == 8 and len({n for *_, n in rows}) == 8
    assert run(0) == rows  # same generator seed: same worker seeds and random numbers
    assert run(1) != rows


def test_worker_init_fn_runs_in_each_worker():
    class InitSeen(Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return int(os.environ.get("FLUXION_TEST_WORKER_INIT", "-1"))

    def init(worker_id):
        os.environ["FLUXION_TEST_WORKER_INIT"] = str(worker_id)

    out = flat(DataLoader(InitSeen(), batch_size=1, num_workers=2, worker_init_fn=init))
    assert sorted(out) == [0, 0, 1, 1]
    assert "FLUXION_TEST_WORKER_INIT" not in os.environ  # it ran in the workers only


def test_iterable_dataset_split_between_workers():
    loader = DataLoader(Stream(11), batch_size=2, num_workers=2)
    out = flat(loader)
    assert sorted(out) == list(range(11))
    assert len(loader) == 6
    # without a split every worker yields the whole stream (as in PyTorch)
    assert sorted(flat(DataLoader(StreamNoLen(), batch_size=2, num_workers=2))) == sorted(
        list(range(5)) * 2)


def test_worker_error_is_raised_with_original_traceback():
    loader = DataLoader(FailsAt(5), batch_size=2, num_workers=2)
    with pytest.raises(ValueError) as info:
        list(loader)
    msg = str(info.value)
    assert "Caught ValueError in DataLoader worker process 0." in msg
    assert "Original Traceback (most recent call last):" in msg
    assert "item 5 is broken" in msg
    assert "in __getitem__" in msg and "test_data.py" in msg  # the worker's own frames


class NeedsTwoArgsError(Exception):
    def __init__(self, a, b):
        super().__init__(a, b)


class RaisesNeedsTwoArgsError(Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, i):
        raise NeedsTwoArgsError(1, 2)


def test_worker_key_error_and_untyped_errors():
    with pytest.raises(KeyError) as info:
        list(DataLoader(FailsAt(1, KeyError), num_workers=1))
    assert "Caught KeyError in DataLoader worker process 0" in str(info.value)

    # an exception class that can't be built from one message: a RuntimeError instead
    with pytest.raises(RuntimeError, match="Caught NeedsTwoArgsError in DataLoader worker process"):
        list(DataLoader(RaisesNeedsTwoArgsError(), num_workers=1))

    class LocalError(Exception):  # can't be pickled back to the main process
        pass

    class RaisesLocal(Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            raise LocalError("local failure")

    with pytest.raises(RuntimeError, match="Caught LocalError in DataLoader worker") as info:
        list(DataLoader(RaisesLocal(), num_workers=1))
    assert "local failure" in str(info.value)


def test_worker_init_fn_error_is_reported():
    def bad_init(worker_id):
        raise OSError(f"cannot open shard {worker_id}")

    with pytest.raises(OSError, match="cannot open shard"):
        list(DataLoader(Range(4), num_workers=2, worker_init_fn=bad_init))


def test_unpicklable_batch_is_an_error_not_a_hang():
    loader = DataLoader(Range(4), batch_size=2, num_workers=1,
                        collate_fn=lambda b: (lambda: b), timeout=10)
    errors = (pickle.PicklingError, AttributeError, TypeError)
    with pytest.raises(errors, match="DataLoader worker"):
        list(loader)


def test_dead_worker_is_detected():
    class Crashes(Dataset):
        def __len__(self):
            return 6

        def __getitem__(self, i):
            if i == 3:
                os._exit(3)
            return i

    with pytest.raises(RuntimeError, match="exited unexpectedly"):
        list(DataLoader(Crashes(), num_workers=2))


def test_timeout():
    class Slow(Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            time.sleep(1.5)
            return i

    with pytest.raises(RuntimeError, match=r"DataLoader timed out after 0\.2 seconds"):
        list(DataLoader(Slow(), num_workers=1, timeout=0.2))


class ZeroWaitsForThree(Dataset):
    """Item 0 (worker 0) is only ready after worker 1 has loaded items 1 and 3."""

    def __init__(self) -> None:
        self.three_loaded = multiprocessing.get_context().Event()

    def __len__(self) -> int:
        return 6

    def __getitem__(self, i: int) -> int:
        if i == 0:
            assert self.three_loaded.wait(10)
            time.sleep(0.05)
        elif i == 3:
            self.three_loaded.set()
        return i


def test_results_come_back_in_order_even_when_workers_finish_out_of_order():
    assert flat(DataLoader(ZeroWaitsForThree(), num_workers=2)) == list(range(6))
    unordered = flat(DataLoader(ZeroWaitsForThree(), num_workers=2, in_order=False))
    assert sorted(unordered) == list(range(6)) and unordered[0] == 1


def test_prefetch_factor_and_spawn_context():
    loader = DataLoader(Range(9), batch_size=2, num_workers=2, prefetch_factor=1,
                        multiprocessing_context="spawn")
    assert loader.prefetch_factor == 1
    assert flat(loader) == list(range(9))
    assert DataLoader(Range(2), num_workers=1).prefetch_factor == 2


def test_too_many_workers_warns():
    with pytest.warns(UserWarning, match="worker processes in total"):
        DataLoader(Range(2), num_workers=(os.cpu_count() or 1) * 4 + 1)


def test_training_loop_over_tensor_dataset_with_workers():
    g = fluxion.Generator().manual_seed(0)
    x = fluxion.randn(64, 4, generator=g)
    y = (x.sum(1) > 0).long()
    loader = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True, num_workers=2,
                        generator=fluxion.Generator().manual_seed(1))
    seen = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for xb, yb in loader:
            assert xb.shape == (16, 4) and yb.dtype == fluxion.int64
            seen += xb.shape[0]
    assert seen == 64 and len(loader) == math.ceil(64 / 16)
