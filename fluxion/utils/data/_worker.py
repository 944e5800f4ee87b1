"""What runs inside a ``DataLoader`` worker process, and what it shares with the main one:
the fetchers, ``get_worker_info``, and the wrapper that carries an exception (with its
traceback as text) back to the main process."""

from __future__ import annotations

import os
import pickle
import queue
import random
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

import numpy as np

__all__ = ["WorkerInfo", "get_worker_info"]

# How often (seconds) a worker checks that its parent lives, and the main process checks
# that its workers live while it waits for a batch.
MP_STATUS_CHECK_INTERVAL = 1.0


@dataclass(frozen=True)
class WorkerInfo:
    """Facts about the current ``DataLoader`` worker (see ``get_worker_info``).

    ``id`` is in ``range(num_workers)``; ``seed`` is what the worker seeded Fluxion's
    default generator and Python's ``random`` with; ``dataset`` is this worker's copy.

    >>> from fluxion.utils.data import WorkerInfo
    >>> WorkerInfo(id=0, num_workers=2, seed=7, dataset=None).num_workers
    2
    """

    id: int
    num_workers: int
    seed: int
    dataset: Any


_worker_info: WorkerInfo | None = None


def get_worker_info() -> WorkerInfo | None:
    """The ``WorkerInfo`` of the ``DataLoader`` worker this code runs in, or ``None`` in
    the main process. Use it in ``IterableDataset.__iter__`` or ``worker_init_fn`` to
    split work between workers.

    >>> from fluxion.utils.data import get_worker_info
    >>> get_worker_info() is None
    True
    """
    return _worker_info


class _KeyErrorMessage(str):
    """A str whose repr is itself, so a KeyError shows a readable multi-line message."""

    def __repr__(self) -> str:
        return self


class ExceptionWrapper:
    """An exception's type and formatted traceback, picklable across processes."""

    def __init__(self, exc_info: Any = None, where: str = "in background") -> None:
        if exc_info is None:
            exc_info = sys.exc_info()
        self.exc_type: type[BaseException] | None = exc_info[0]
        self.exc_type_name = exc_info[0].__name__
        self.exc_msg = "".join(traceback.format_exception(*exc_info))
        self.where = where

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        try:  # a class defined inside a function can't travel: raise a RuntimeError then
            pickle.dumps(self.exc_type)
        except Exception:
            state["exc_type"] = None
        return state

    def reraise(self) -> NoReturn:
        """Raise the original exception type with a message naming where it happened and
        holding the original traceback (a ``RuntimeError`` if that type can't be built)."""
        # no local holds the new exception, so its traceback makes no reference cycle
        # with this frame (the DataLoader iterator is then freed, and its workers shut
        # down, as soon as the caller lets go of it)
        raise self._rebuild()

    def _rebuild(self) -> BaseException:
        msg: str = f"Caught {self.exc_type_name} {self.where}.\nOriginal {self.exc_msg}"
        if self.exc_type is KeyError:
            msg = _KeyErrorMessage(msg)
        if self.exc_type is not None:
            try:
                return self.exc_type(msg)
            except Exception:
                pass
        return RuntimeError(msg)


@dataclass(frozen=True)
class _IterableDatasetStopIteration:
    worker_id: int


@dataclass(frozen=True)
class _ResumeIteration:
    seed: int | None = None


class _MapDatasetFetcher:
    def __init__(self, dataset: Any, auto_collation: bool, collate_fn: Callable[[Any], Any],
                 drop_last: bool) -> None:
        self.dataset = dataset
        self.auto_collation = auto_collation
        self.collate_fn = collate_fn
        self.drop_last = drop_last

    def fetch(self, possibly_batched_index: Any) -> Any:
        if self.auto_collation:
            getitems = getattr(self.dataset, "__getitems__", None)
            if getitems:
                data = getitems(possibly_batched_index)
            else:
                data = [self.dataset[i] for i in possibly_batched_index]
        else:
            data = self.dataset[possibly_batched_index]
        return self.collate_fn(data)


class _IterableDatasetFetcher(_MapDatasetFetcher):
    def __init__(self, dataset: Any, auto_collation: bool, collate_fn: Callable[[Any], Any],
                 drop_last: bool) -> None:
        super().__init__(dataset, auto_collation, collate_fn, drop_last)
        self.dataset_iter = iter(dataset)
        self.ended = False

    def fetch(self, possibly_batched_index: Any) -> Any:
        if self.ended:
            raise StopIteration
        if self.auto_collation:
            data = []
            for _ in possibly_batched_index:
                try:
                    data.append(next(self.dataset_iter))
                except StopIteration:
                    self.ended = True
                    break
            if len(data) == 0 or (self.drop_last and len(data) < len(possibly_batched_index)):
                raise StopIteration
        else:
            data = next(self.dataset_iter)
        return self.collate_fn(data)


def _create_fetcher(iterable: bool, dataset: Any, auto_collation: bool,
                    collate_fn: Callable[[Any], Any], drop_last: bool) -> _MapDatasetFetcher:
    cls = _IterableDatasetFetcher if iterable else _MapDatasetFetcher
    return cls(dataset, auto_collation, collate_fn, drop_last)


def _dumps(obj: Any) -> bytes:
    # Pickle here rather than in the queue's feeder thread, so a batch that can't be
    # pickled becomes an error the main process sees instead of a silent hang.
    return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def _seed_worker(base_seed: int, worker_id: int) -> int:
    from fluxion.random import manual_seed

    seed = base_seed + worker_id
    random.seed(seed)
    manual_seed(seed)
    np.random.seed(np.random.SeedSequence([worker_id, base_seed]).generate_state(4))
    return seed


def _worker_loop(
    iterable: bool,
    dataset: Any,
    index_queue: Any,
    data_queue: Any,
    done_event: Any,
    auto_collation: bool,
    collate_fn: Callable[[Any], Any],
    drop_last: bool,
    base_seed: int,
    init_fn: Callable[[int], None] | None,
    worker_id: int,
    num_workers: int,
) -> None:
    """The body of a worker process: take ``(idx, index)`` tasks, put ``(idx, batch)``
    results (or an ``ExceptionWrapper``) until told to stop with ``None``."""
    global _worker_info
    manager_pid = os.getppid()
    try:
        seed = _seed_worker(base_seed, worker_id)
        _worker_info = WorkerInfo(id=worker_id, num_workers=num_workers, seed=seed,
                                  dataset=dataset)
        where = f"in DataLoader worker process {worker_id}"
        init_exception: ExceptionWrapper | None = None
        fetcher: _MapDatasetFetcher | None = None
        try:
            if init_fn is not None:
                init_fn(worker_id)
            fetcher = _create_fetcher(iterable, dataset, auto_collation, collate_fn, drop_last)
        except Exception:
            init_exception = ExceptionWrapper(where=where)
        iteration_end = False
        while os.getppid() == manager_pid:
            try:
                r = index_queue.get(timeout=MP_STATUS_CHECK_INTERVAL)
            except queue.Empty:
                continue
            if isinstance(r, _ResumeIteration):
                data_queue.put(_dumps((r, None)))
                iteration_end = False
                try:
                    fetcher = _create_fetcher(iterable, dataset, auto_collation, collate_fn,
                                              drop_last)
                except Exception:
                    init_exception = ExceptionWrapper(where=where)
                continue
            if r is None:
                break
            if done_event.is_set() or iteration_end:
                continue
            idx, index = r
            data: Any
            if init_exception is not None:
                data, init_exception = init_exception, None
            else:
                try:
                    assert fetcher is not None
                    data = fetcher.fetch(index)
                except Exception as e:
                    if isinstance(e, StopIteration) and iterable:
                        data = _IterableDatasetStopIteration(worker_id)
                        iteration_end = True
                    else:
                        data = ExceptionWrapper(where=where)
            try:
                payload = _dumps((idx, data))
            except Exception:  # a batch that cannot be pickled: report it, don't hang
                payload = _dumps((idx, ExceptionWrapper(where=where)))
            data_queue.put(payload)
            del data, idx, index, r, payload
    except KeyboardInterrupt:
        pass  # the main process raises KeyboardInterrupt itself
    if done_event.is_set():
        data_queue.cancel_join_thread()
        data_queue.close()
