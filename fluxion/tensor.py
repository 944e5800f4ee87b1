"""``Tensor``: an array, its dtype and device, and its place in the autograd graph.

Operators and op methods (``+``, ``exp``, ``sum``...) are attached in
``fluxion/_tensor_methods.py`` from the public functions, so each op has one definition.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from fluxion import _dtype
from fluxion.backends import CPU, device


class Size(tuple):
    """A tensor's shape, a tuple like ``torch.Size``.

    >>> import fluxion
    >>> fluxion.zeros(2, 3).shape
    fluxion.Size([2, 3])
    """

    def __repr__(self) -> str:
        return f"fluxion.Size({list(self)})"

    def numel(self) -> int:
        """Product of the sizes."""
        n = 1
        for s in self:
            n *= s
        return n


class Tensor:
    """A multi-dimensional array that records operations for autograd.

    >>> import fluxion
    >>> x = fluxion.tensor([1.0, 2.0], requires_grad=True)
    >>> (x * x).sum().backward()
    >>> x.grad
    tensor([2., 4.])
    """

    __slots__ = (
        "_data", "requires_grad", "grad", "grad_fn", "_vbox", "_base", "_hooks",
        "_retains_grad", "_view", "__weakref__", "__dict__",
    )
    __array_ufunc__ = None  # NumPy defers to our reflected operators
    __hash__ = object.__hash__

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # fluxion.Tensor(data) or fluxion.Tensor(2, 3), as torch.Tensor: float32 storage
        from fluxion.creation import _tensor_data

        if len(args) == 1 and not isinstance(args[0], int):
            data = _tensor_data(args[0], _dtype.get_default_dtype())
        else:
            data = np.empty(tuple(args), dtype=_dtype.get_default_dtype().np)
        self._init(data)
        if kwargs.get("requires_grad"):
            self.requires_grad_(True)

    def _init(self, data: np.ndarray) -> None:
        self._data = data
        self.requires_grad = False
        self.grad = None
        self.grad_fn = None
        self._vbox = [0]
        self._base = None
        self._hooks = None
        self._retains_grad = False
        self._view = None

    @classmethod
    def _make(cls, data: np.ndarray) -> Tensor:
        """Wrap an array without copying (the fast path every op uses)."""
        t = object.__new__(cls)
        t._data = data
        t.requires_grad = False
        t.grad = None
        t.grad_fn = None
        t._vbox = [0]
        t._base = None
        t._hooks = None
        t._retains_grad = False
        t._view = None  # (source tensor, op, attrs) when this is a view made by an op
        return t

    # --- facts ----------------------------------------------------------------
    @property
    def shape(self) -> Size:
        return Size(self._data.shape)

    @property
    def dtype(self) -> _dtype.dtype:
        return _dtype._FROM_NP[self._data.dtype]

    @property
    def device(self) -> device:
        return CPU

    @property
    def is_cuda(self) -> bool:
        return False

    @property
    def ndim(self) -> int:
        return self._data.ndim

    @property
    def is_leaf(self) -> bool:
        return self.grad_fn is None

    @property
    def _version(self) -> int:
        return self._vbox[0]

    @property
    def data(self) -> Tensor:
        """The same storage, detached from the graph."""
        return Tensor._make(self._data)

    @data.setter
    def data(self, value: Tensor) -> None:
        self._data = value._data

    def is_floating_point(self) -> bool:
        """Whether the dtype is a floating type."""
        return self._data.dtype.kind == "f"

    def size(self, dim: int | None = None) -> Size | int:
        """The shape, or the size of one dimension."""
        if dim is None:
            return Size(self._data.shape)
        return self._data.shape[self._dim(dim)]

    def dim(self) -> int:
        """Number of dimensions."""
        return self._data.ndim

    ndimension = dim

    def numel(self) -> int:
        """Number of elements."""
        return self._data.size

    nelement = numel

    def element_size(self) -> int:
        """Bytes per element."""
        return self._data.itemsize

    def stride(self, dim: int | None = None) -> tuple[int, ...] | int:
        """Strides in elements, as PyTorch reports them."""
        st = tuple(s // self._data.itemsize for s in self._data.strides)
        return st if dim is None else st[self._dim(dim)]

    def is_contiguous(self, memory_format: Any = None) -> bool:
        """Whether the elements are laid out densely in row-major order."""
        return bool(self._data.flags.c_contiguous)

    def data_ptr(self) -> int:
        """Address of the first element."""
        return int(self._data.__array_interface__["data"][0])

    def untyped_storage(self) -> Any:
        """The underlying array's base buffer (to compare whether views share memory)."""
        d = self._data
        while d.base is not None and isinstance(d.base, np.ndarray):
            d = d.base
        return d

    def get_device(self) -> int:
        """-1 for CPU tensors, as in PyTorch."""
        return -1

    def _dim(self, dim: int) -> int:
        """Normalise a possibly negative dim, with PyTorch's IndexError when out of range."""
        n = max(self._data.ndim, 1)
        if not -n <= dim < n:
            raise IndexError(
                f"Dimension out of range (expected to be in range of [{-n}, {n - 1}], "
                f"but got {dim})"
            )
        return dim + n if dim < 0 else dim

    # --- leaving the graph: conversions (graph breaks for the compiler) -------------
    def numpy(self, *, force: bool = False) -> np.ndarray:
        """The data as a NumPy array sharing memory; errors if it requires grad."""
        if self.requires_grad and not force:
            raise RuntimeError(
                "Can't call numpy() on Tensor that requires grad. Use tensor.detach().numpy() "
                "instead."
            )
        return self._arr("Tensor.numpy()")

    def item(self) -> bool | int | float:
        """The value of a one-element tensor as a Python number."""
        if self._data.size != 1:
            raise RuntimeError(
                f"a Tensor with {self._data.size} elements cannot be converted to Scalar"
            )
        return self._arr("Tensor.item()").reshape(()).item()

    def tolist(self) -> Any:
        """Nested Python lists of the values."""
        return self._arr("Tensor.tolist()").tolist()

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        d = self._arr("converted with np.asarray")
        return d if dtype is None else d.astype(dtype)

    def _arr(self, why: str) -> np.ndarray:
        """The data as an array; inside a compiled call this is a graph break."""
        d = self._data
        if type(d) is not np.ndarray:
            d = d.realize(why)
        return d

    def __bool__(self) -> bool:
        if self._data.size != 1:
            raise RuntimeError(
                f"Boolean value of Tensor with {self._data.size} elements is ambiguous"
            )
        return bool(self._arr("bool(tensor): data-dependent control flow").reshape(()))

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __index__(self) -> int:
        if self._data.dtype.kind not in "iub" or self._data.size != 1:
            raise TypeError("only integer tensors of a single element can be converted to an index")
        return int(self.item())

    def __len__(self) -> int:
        if self._data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self._data.shape[0]

    def __iter__(self) -> Iterator[Tensor]:
        if self._data.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(self._data.shape[0]))

    def __repr__(self) -> str:
        from fluxion._format import format_tensor

        self._arr("printing a tensor")
        return format_tensor(self)

    def __format__(self, spec: str) -> str:
        if self._data.ndim == 0:
            return format(self.item(), spec)
        return repr(self)

    def __reduce_ex__(self, protocol: Any) -> Any:
        # pickling (DataLoader workers) keeps the values and requires_grad, not the graph
        return (_rebuild, (self._data, self.requires_grad))

    # --- autograd ---------------------------------------------------------------
    def backward(
        self,
        gradient: Tensor | None = None,
        retain_graph: bool | None = None,
        create_graph: bool = False,
        inputs: Any = None,
    ) -> None:
        """Accumulate d(self)/d(leaf) into every leaf's ``.grad``.

        >>> import fluxion
        >>> w = fluxion.tensor(3.0, requires_grad=True)
        >>> (w ** 2).backward(); w.grad
        tensor(6.)
        """
        from fluxion.autograd.engine import backward, compiled_owner
        from fluxion.ops.registry import capture

        # a graph recorded by a compiled call differentiates as a compiled graph too
        owner = compiled_owner([self]) if capture.segment is None and not create_graph \
            else None
        if owner is not None:
            owner.run_backward(lambda: backward(self, gradient, retain_graph, create_graph,
                                                inputs))
            return
        backward(self, gradient, retain_graph, create_graph, inputs)

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        """Set ``requires_grad`` in place on a leaf."""
        if not self.is_leaf:
            if not requires_grad:
                raise RuntimeError(
                    "you can only change requires_grad flags of leaf variables. If you want to "
                    "use a computed variable in a subgraph that doesn't require "
                    "differentiation use var_no_grad = var.detach()."
                )
            return self
        if requires_grad and self._data.dtype.kind != "f":
            raise RuntimeError(
                "only Tensors of floating point dtype can require gradients "
                f"(got {self.dtype})"
            )
        self.requires_grad = requires_grad
        return self

    def detach(self) -> Tensor:
        """A tensor sharing storage (and version counter) but cut from the graph."""
        t = Tensor._make(self._data)
        t._vbox = self._vbox  # in-place writes through either are seen by both's checks
        return t

    def detach_(self) -> Tensor:
        """Cut this tensor from the graph in place."""
        self.grad_fn = None
        self.requires_grad = False
        return self

    def retain_grad(self) -> None:
        """Keep ``.grad`` for this non-leaf tensor after backward."""
        if self.grad_fn is None:
            if not self.requires_grad:
                raise RuntimeError("can't retain_grad on Tensor that has requires_grad=False")
            return
        if self._retains_grad:
            return
        self._retains_grad = True
        import weakref

        ref = weakref.ref(self)

        def keep(g: Tensor) -> None:
            t = ref()
            if t is not None and t._retains_grad:
                t.grad = g.detach() if t.grad is None else t.grad + g.detach()

        keep._retain = True  # type: ignore[attr-defined]  # runs after the other hooks
        self.__dict__["_retain_hook"] = keep
        self._add_node_hook(keep)

    def register_hook(self, hook: Callable[[Tensor], Tensor | None]) -> Any:
        """Call ``hook(grad)`` when this tensor's gradient is computed; a returned tensor
        replaces the gradient. Returns a handle with ``remove()``.

        >>> import fluxion
        >>> x = fluxion.ones(2, requires_grad=True)
        >>> h = x.register_hook(lambda g: g * 10)
        >>> x.sum().backward(); x.grad
        tensor([10., 10.])
        """
        if not self.requires_grad:
            raise RuntimeError("cannot register a hook on a tensor that doesn't require gradient")
        if self.grad_fn is None:
            if self._hooks is None:
                self._hooks = []
            return _HookHandle(self._hooks, hook)
        return self._add_node_hook(hook)

    def _add_node_hook(self, hook: Callable) -> Any:
        node = self.grad_fn
        if node.pre_hooks is None:
            node.pre_hooks = []
        return _HookHandle(node.pre_hooks, hook)

    @property
    def retains_grad(self) -> bool:
        return self._retains_grad

    @property
    def is_inference(self) -> bool:
        return False

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(
            f"'Tensor' object has no attribute '{name}' (Fluxion does not implement "
            f"torch.Tensor.{name}; see the README's coverage table)"
        )


class _HookHandle:
    """Returned by ``register_hook``; ``remove()`` unregisters the hook."""

    def __init__(self, hooks: list, hook: Callable) -> None:
        self._hooks = hooks
        self._hook = hook
        hooks.append(hook)

    def remove(self) -> None:
        if self._hook in self._hooks:
            self._hooks.remove(self._hook)


def _rebuild(data: np.ndarray, requires_grad: bool) -> Tensor:
    t = Tensor._make(data)
    t.requires_grad = requires_grad
    return t

