"""``Parameter``: a tensor that a ``Module`` registers as learnable."""

from __future__ import annotations

from typing import Any

import numpy as np

from fluxion.tensor import Tensor


class Parameter(Tensor):
    """A leaf tensor (sharing ``data``'s memory) that requires grad by default and is
    registered by ``Module`` when assigned as an attribute.

    >>> import fluxion
    >>> p = fluxion.nn.Parameter(fluxion.zeros(2))
    >>> p.requires_grad, p.is_leaf
    (True, True)
    """

    def __init__(self, data: Tensor | None = None, requires_grad: bool = True) -> None:
        if data is None:
            arr = np.empty(0, dtype=np.float32)
        elif isinstance(data, Tensor):
            arr = data._data
        else:
            arr = np.asarray(data)
        self._init(arr)
        if requires_grad:
            self.requires_grad_(True)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()

    def __reduce_ex__(self, protocol: Any) -> Any:
        return (Parameter, (Tensor._make(self._data), self.requires_grad))


class Buffer(Tensor):
    """Marks a tensor to be registered as a module buffer when assigned (PyTorch 2.5+)."""

    def __init__(self, data: Tensor, *, persistent: bool = True) -> None:
        self._init(data._data)
        self.persistent = persistent
