"""Tensor operators and methods, attached from the public functions so every op keeps
one definition; and the in-place machinery (version counters, views, autograd)."""

from __future__ import annotations

from typing import Any

import numpy as np

from fluxion import _dtype
from fluxion import functional as F
from fluxion import random as R
from fluxion.autograd.grad_mode import state
from fluxion.backends import device, resolve
from fluxion.indexing import getitem, setitem
from fluxion.ops import OPS, apply
from fluxion.ops.elementwise import call_binary, call_unary, wrap_int
from fluxion.ops.registry import capture, label
from fluxion.tensor import Tensor


# --- in-place writes -----------------------------------------------------------------
def recording_inplace(t: Tensor, *others: Any) -> bool:
    """Whether an in-place op on ``t`` must go through ``commit_inplace`` (to be recorded
    for autograd, or functionalised while a compiled call records)."""
    if capture.segment is not None:
        return True
    if not state.enabled:
        return False
    if t.requires_grad or any(getattr(o, "requires_grad", False) for o in others):
        return True
    base = t._base
    return base is not None and base.requires_grad


def _can_cast(src: _dtype.dtype, dst: _dtype.dtype) -> bool:
    return src.category <= dst.category


def commit_inplace(t: Tensor, new: Tensor, name: str) -> Tensor:
    """Write ``new`` (computed out of place from ``t``) into ``t``'s memory and make it
    ``t``'s history: PyTorch's in-place semantics, views and version counters included."""
    if t.requires_grad and t.grad_fn is None and state.enabled:
        raise RuntimeError(
            f"{name}: a leaf Variable that requires grad is being used in an in-place "
            "operation. Wrap it in `with fluxion.no_grad():` (e.g. for parameter updates) or "
            "clone() it first."
        )
    if t._base is not None and t._base.requires_grad and t._base.grad_fn is None \
            and state.enabled:
        raise RuntimeError(
            f"{name}: a view of a leaf Variable that requires grad is being used in an in-place "
            "operation."
        )
    if new._data.dtype != t._data.dtype:
        if not _can_cast(new.dtype, t.dtype):
            raise RuntimeError(
                f"{name}: result type {new.dtype.name} can't be cast to the desired output "
                f"type {t.dtype.name}"
            )
        new = new.to(t.dtype)
    if new._data.shape != t._data.shape:
        raise RuntimeError(
            f"{name}: output with shape {list(t.shape)} doesn't match the broadcast shape "
            f"{list(new.shape)}"
        )
    t._check_writeable(name)
    if state.enabled and not new.requires_grad and (t.requires_grad or (
            t._base is not None and t._base.requires_grad)):
        # the write cuts the old values out of the graph: gradient zero, values exact
        new = F.where(Tensor._make(np.ones((), bool)), new, t)
    seg = capture.segment  # recording: the write is functionalised
    node = new.grad_fn
    if node is not None and node._inputs is not None and any(x is t for x in node._inputs):
        # the op saved the old values of t, which are about to be overwritten
        snap = Tensor._make(t._data.copy() if seg is None else t._data)
        snap.grad_fn, snap.requires_grad, snap._vbox = t.grad_fn, t.requires_grad, [t._vbox[0]]
        node._inputs = tuple(snap if x is t else x for x in node._inputs)
    chain = _view_chain(t) if (node is not None or seg is not None) and t._view is not None \
        else None
    if chain is not None:
        base, ops = chain
        new_base = apply(OPS["view_scatter"], base, new, chain=ops)
        if seg is not None:
            seg.mutate(base, new_base._data)
    if seg is None:
        t._data[...] = new._data
    else:
        seg.mutate(t, new._data)
    t._vbox[0] += 1
    if node is not None:
        old_node = t.grad_fn
        if chain is not None:
            base.grad_fn, base.requires_grad = new_base.grad_fn, True
            r = base
            for op, attrs in ops:
                r = apply(op, r, **attrs)
            t.grad_fn = r.grad_fn
        else:
            t.grad_fn = node
        t.requires_grad = True
        if t._retains_grad:  # retain_grad follows the tensor to its new version
            hook = t.__dict__["_retain_hook"]
            if old_node is not None and old_node.pre_hooks and hook in old_node.pre_hooks:
                old_node.pre_hooks.remove(hook)
            t._add_node_hook(hook)
    if t._view is not None:
        src, op, attrs, _ = t._view
        t._view = (src, op, attrs, t._vbox[0])  # its grad_fn is current
    return t


def _refresh_view(t: Tensor) -> None:
    """Rebuild a view's ``grad_fn`` after its base was written in place (PyTorch does
    this lazily too): replay the view ops from the base's current history."""
    base, ops = _view_chain(t)
    seg = capture.segment
    if base.requires_grad or seg is not None:
        r = base
        for op, attrs in ops:
            r = apply(op, r, **attrs)
        if base.requires_grad:
            t.grad_fn, t.requires_grad = r.grad_fn, r.requires_grad
        if seg is not None:  # functionalised base: the view's values follow it
            t._data = r._data
            seg.track(t)
    src, op, attrs, _ = t._view
    t._view = (src, op, attrs, t._vbox[0])


Tensor._refresh_view = _refresh_view  # type: ignore[attr-defined]


def _view_chain(t: Tensor) -> tuple[Tensor, list]:
    ops = []
    while t._view is not None:
        src, op, attrs, _ = t._view
        ops.append((op, attrs))
        t = src
    ops.reverse()
    return t, ops


def _check_writeable(self: Tensor, name: str) -> None:
    if not self._data.flags.writeable:
        raise RuntimeError(
            f"{name}: unsupported operation: more than one element of the written-to tensor "
            "refers to a single memory location (an expanded tensor). Please clone() the "
            "tensor before performing the operation."
        )


Tensor._check_writeable = _check_writeable  # type: ignore[attr-defined]

_UFUNC = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.true_divide}


def _inplace_binary(name: str, method: str) -> Any:
    fast = _UFUNC.get(name)

    def fn(self: Tensor, other: Any, *, alpha: Any = 1) -> Tensor:
        if alpha != 1:
            scaled = F._scaled_sum(name, self, other, alpha) if name in ("add", "sub") else None
            if scaled is not None:
                return commit_inplace(self, scaled, method)
            other = call_binary("mul", other, alpha)
        if name == "sub":
            F._check_bool_sub(self, other)
        if fast is not None and not recording_inplace(self, other):
            # no graph to record: compute straight into the tensor's memory
            o = other._data if isinstance(other, Tensor) else other
            if type(o) is int and self._data.dtype.kind in "iu":
                o = wrap_int(o, self._data.dtype)
            rd = _dtype.result_type(self, other)
            if name == "div" and not rd.is_floating_point:
                rd = _dtype.get_default_dtype()
            if not _can_cast(rd, self.dtype):
                raise RuntimeError(f"{method}: result type {rd.name} can't be cast to the "
                                   f"desired output type {self.dtype.name}")
            self._check_writeable(method)
            try:
                with np.errstate(all="ignore"):  # writes in place: never run twice
                    fast(self._data, o, out=self._data, casting="unsafe")
            except ValueError:
                raise RuntimeError(
                    f"{method}: output with shape {list(self.shape)} doesn't match the "
                    f"broadcast shape {list(np.broadcast_shapes(self.shape, np.shape(o)))}"
                ) from None
            self._vbox[0] += 1
            return self
        return commit_inplace(self, call_binary(name, self, other), method)

    fn.__name__ = method
    fn.__doc__ = f"In-place ``{name}``: writes the result into this tensor."
    return fn


def _inplace_from(fn: Any, method: str) -> Any:
    def inplace(self: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        return commit_inplace(self, fn(self, *args, **kwargs), method)

    inplace.__name__ = method
    inplace.__doc__ = f"In-place ``{fn.__name__}``: writes the result into this tensor."
    return inplace


def _fused(name: str, self: Tensor, *operands: Any) -> Tensor | None:
    """The primitive ``name`` when every tensor operand is floating point of one dtype and
    the numbers are Python numbers; None where PyTorch's integer and mixed-dtype rules
    apply (the callers' composites follow them)."""
    tensors = [self, *(o for o in operands if isinstance(o, Tensor))]
    dt = self.dtype
    if not dt.is_floating_point or any(t.dtype is not dt for t in tensors) or not all(
            isinstance(o, (Tensor, int, float)) for o in operands):
        return None
    try:
        np.broadcast_shapes(*(t._data.shape for t in tensors))
    except ValueError:
        raise RuntimeError(f"{name}: the shapes {[list(t.shape) for t in tensors]} do not "
                           "broadcast to one") from None
    return apply(OPS[name], self, *operands)


def addcmul(self: Tensor, tensor1: Tensor, tensor2: Tensor, *, value: Any = 1) -> Tensor:
    """``self + value * tensor1 * tensor2``, in PyTorch's order of rounding.

    >>> import fluxion
    >>> fluxion.ones(2).addcmul(fluxion.tensor([1.0, 2.0]), fluxion.tensor([3.0, 4.0]),
    ...                         value=0.5)
    tensor([2.5000, 5.0000])
    """
    out = _fused("addcmul", self, tensor1, tensor2, value)
    return out if out is not None else self + value * (tensor1 * tensor2)


def addcdiv(self: Tensor, tensor1: Tensor, tensor2: Tensor, *, value: Any = 1) -> Tensor:
    """``self + value * tensor1 / tensor2``, in PyTorch's order of rounding.

    >>> import fluxion
    >>> fluxion.ones(2).addcdiv(fluxion.tensor([1.0, 2.0]), fluxion.tensor([4.0, 4.0]))
    tensor([1.2500, 1.5000])
    """
    out = _fused("addcdiv", self, tensor1, tensor2, value)
    return out if out is not None else self + value * (tensor1 / tensor2)


def lerp(self: Tensor, end: Tensor, weight: Any) -> Tensor:
    """``self + weight * (end - self)``, computed from the nearer end as PyTorch does.

    >>> import fluxion
    >>> fluxion.zeros(2).lerp(fluxion.tensor([1.0, 2.0]), 0.75)
    tensor([0.7500, 1.5000])
    """
    if not isinstance(end, Tensor):
        raise TypeError(f"lerp(): argument 'end' must be Tensor, not {type(end).__name__}")
    out = _fused("lerp", self, end, weight)
    if out is not None:
        return out
    diff = call_binary("sub", end, self)
    if isinstance(weight, Tensor):
        return F.where(weight.abs() < 0.5, self + weight * diff, end - diff * (1 - weight))
    return self + weight * diff if abs(weight) < 0.5 else end - diff * (1 - weight)


addcmul_ = _inplace_from(addcmul, "addcmul_")
addcdiv_ = _inplace_from(addcdiv, "addcdiv_")


def lerp_(self: Tensor, end: Tensor, weight: Any) -> Tensor:
    """In-place ``lerp`` (the result becomes this tensor's value and history, as every
    in-place op's: no extra copy op).

    >>> import fluxion
    >>> fluxion.zeros(2).lerp_(fluxion.tensor([1.0, 2.0]), 0.25)
    tensor([0.2500, 0.5000])
    """
    return commit_inplace(self, lerp(self, end, weight), "lerp_")


def zero_(self: Tensor) -> Tensor:
    """Fill with zeros in place."""
    return fill_(self, 0)


def fill_(self: Tensor, value: Any) -> Tensor:
    """Fill with ``value`` in place."""
    if isinstance(value, Tensor):
        if value.ndim:
            raise RuntimeError(f"fill_ only supports 0-dimension value tensor but got tensor "
                               f"with {value.ndim} dimensions.")
        if recording_inplace(self, value):
            return commit_inplace(self, value.to(self.dtype).expand(self.shape), "fill_")
        value = value.item()
    if recording_inplace(self):
        return commit_inplace(self, Tensor._make(np.full(self._data.shape, value,
                                                          self._data.dtype)), "fill_")
    self._check_writeable("fill_")
    self._data.fill(value)
    self._vbox[0] += 1
    return self


def copy_(self: Tensor, src: Tensor, non_blocking: bool = False) -> Tensor:
    """Copy ``src`` (broadcast, cast) into this tensor in place."""
    if not isinstance(src, Tensor):
        raise TypeError(f"copy_(): argument 'src' must be Tensor, not {type(src).__name__}")
    try:
        np.broadcast_shapes(src._data.shape, self._data.shape)
    except ValueError:
        raise RuntimeError(f"copy_: the size of src {list(src.shape)} doesn't broadcast to "
                           f"the destination's {list(self.shape)}") from None
    if recording_inplace(self, src):
        new = src.to(self.dtype).expand(self.shape) if src.shape != self.shape else src.to(
            self.dtype)
        if new is src:
            new = src.clone()
        return commit_inplace(self, new, "copy_")
    self._check_writeable("copy_")
    self._data[...] = src._data
    self._vbox[0] += 1
    return self


def _random_inplace(sample: Any, method: str) -> Any:
    def fn(self: Tensor, *args: Any, generator: Any = None, **kw: Any) -> Tensor:
        arr = sample(R._rng(generator), self._data.shape, *args, **kw)
        if capture.segment is not None:
            return commit_inplace(self, Tensor._make(np.asarray(arr, self._data.dtype)), method)
        self._check_writeable(method)
        self._data[...] = arr
        self._vbox[0] += 1
        return self

    fn.__name__ = method
    fn.__doc__ = f"Fill in place with random values ({method})."
    return fn


uniform_ = _random_inplace(lambda rng, s, a=0.0, b=1.0: rng.uniform(a, b, s), "uniform_")
normal_ = _random_inplace(lambda rng, s, mean=0.0, std=1.0: rng.normal(mean, std, s), "normal_")
bernoulli_ = _random_inplace(lambda rng, s, p=0.5: rng.random(s) < p, "bernoulli_")
exponential_ = _random_inplace(lambda rng, s, lambd=1.0: rng.exponential(1 / lambd, s),
                               "exponential_")


def random_(self: Tensor, from_: int = 0, to: int | None = None, *,
            generator: Any = None) -> Tensor:
    """Fill with integers uniform in [from, to) in place."""
    if to is None:
        from_, to = 0, from_ if from_ else 2**24
    self._data[...] = R._rng(generator).integers(from_, to, self._data.shape)
    self._vbox[0] += 1
    return self


# --- conversions -----------------------------------------------------------------------
def to(self: Tensor, *args: Any, **kwargs: Any) -> Tensor:
    """Convert dtype and/or device: ``to(dtype)``, ``to(device)``, ``to(other)``,
    ``to(device, dtype)``. Returns ``self`` when nothing changes.

    >>> import fluxion
    >>> fluxion.tensor([1.5]).to(fluxion.float64).dtype
    fluxion.float64
    """
    dtype = kwargs.pop("dtype", None)
    dev = kwargs.pop("device", None)
    copy = kwargs.pop("copy", False)
    for a in args:
        if isinstance(a, _dtype.dtype):
            dtype = a
        elif isinstance(a, Tensor):
            dtype = a.dtype
        elif isinstance(a, (str, device)):
            dev = a
        elif a is not None:
            raise TypeError(f"to() received an invalid combination of arguments: {a!r}")
    if dev is not None:
        resolve(dev)
    if dtype is None or dtype is self.dtype:
        return self.clone() if copy else self
    return label(apply(OPS["cast"], self, dtype=dtype), "ToCopyBackward0")


def _caster(d: _dtype.dtype, name: str) -> Any:
    def fn(self: Tensor, memory_format: Any = None) -> Tensor:
        return to(self, d)

    fn.__name__ = name
    fn.__doc__ = f"``self.to({d!r})``."
    return fn


def type_(self: Tensor, dtype: Any = None) -> Any:
    """With no argument, the type name (``'torch.FloatTensor'``); else convert."""
    names = {"float32": "Float", "float64": "Double", "float16": "Half", "int64": "Long",
             "int32": "Int", "int16": "Short", "int8": "Char", "uint8": "Byte", "bool": "Bool"}
    if dtype is None:
        return f"torch.{names[self.dtype.name]}Tensor"
    return to(self, dtype)


def contiguous(self: Tensor, memory_format: Any = None) -> Tensor:
    """``self`` if contiguous, else a contiguous copy."""
    return self if self._data.flags.c_contiguous else F.clone(self)


def cpu(self: Tensor) -> Tensor:
    """``self`` (Fluxion tensors live on the CPU)."""
    return self


def cuda(self: Tensor, device: Any = None, non_blocking: bool = False) -> Tensor:
    """Fails clearly: the CUDA backend is not built yet."""
    resolve("cuda")
    return self


def _new(kind: str) -> Any:
    def fn(self: Tensor, *args: Any, dtype: Any = None, device: Any = None,
           requires_grad: bool = False, **kw: Any) -> Tensor:
        from fluxion import creation as C

        d = dtype or self.dtype
        if kind == "tensor":
            return C.tensor(args[0], dtype=d, requires_grad=requires_grad)
        if kind == "full":
            return C.full(args[0], args[1], dtype=d, requires_grad=requires_grad)
        return getattr(C, kind)(*args, dtype=d, requires_grad=requires_grad)

    fn.__name__ = f"new_{kind}"
    fn.__doc__ = f"A new ``{kind}`` tensor with this tensor's dtype and device."
    return fn


# --- operators ---------------------------------------------------------------------------
def _binop(name: str) -> Any:
    op = OPS[name]
    return lambda self, other: call_binary(op, self, other)


def _swap(name: str) -> Any:
    op = OPS[name]
    return lambda self, other: call_binary(op, other, self)


def _ipow(self: Tensor, other: Any) -> Tensor:
    return commit_inplace(self, call_binary("pow", self, other), "pow_")


_METHODS: dict[str, Any] = {
    # operators
    "__add__": _binop("add"), "__radd__": _binop("add"), "__sub__": F.sub,
    "__rsub__": lambda self, other: F.sub(other, self), "__mul__": _binop("mul"),
    "__rmul__": _binop("mul"),
    "__truediv__": _binop("div"), "__rtruediv__": _swap("div"),
    "__floordiv__": F.floor_divide, "__rfloordiv__": _swap("floor_divide"),
    "__mod__": F.remainder, "__rmod__": _swap("remainder"), "__pow__": F.pow,
    "__rpow__": _swap("pow"), "__matmul__": F.matmul,
    "__rmatmul__": lambda self, other: F.matmul(other, self),
    "__neg__": lambda self: call_unary("neg", self), "__pos__": lambda self: self,
    "__abs__": lambda self: call_unary("abs", self), "__invert__": F.bitwise_not,
    "__and__": F.bitwise_and, "__or__": F.bitwise_or, "__xor__": F.bitwise_xor,
    "__rand__": F.bitwise_and, "__ror__": F.bitwise_or, "__rxor__": F.bitwise_xor,
    "__eq__": F.eq, "__ne__": F.ne, "__lt__": F.lt, "__le__": F.le, "__gt__": F.gt,
    "__ge__": F.ge, "__getitem__": getitem, "__setitem__": setitem,
    "__iadd__": _inplace_binary("add", "add_"), "__isub__": _inplace_binary("sub", "sub_"),
    "__imul__": _inplace_binary("mul", "mul_"), "__itruediv__": _inplace_binary("div", "div_"),
    "__ipow__": _ipow,
    # in place
    "add_": _inplace_binary("add", "add_"), "sub_": _inplace_binary("sub", "sub_"),
    "mul_": _inplace_binary("mul", "mul_"), "div_": _inplace_binary("div", "div_"),
    "pow_": _ipow, "addcmul_": addcmul_, "addcdiv_": addcdiv_, "lerp_": lerp_,
    "addcmul": addcmul, "addcdiv": addcdiv,
    "lerp": lerp,
    "zero_": zero_, "fill_": fill_, "copy_": copy_,
    "uniform_": uniform_, "normal_": normal_, "bernoulli_": bernoulli_,
    "exponential_": exponential_, "random_": random_,
    # conversions and structure
    "to": to, "type": type_, "contiguous": contiguous, "cpu": cpu, "cuda": cuda,
    "float": _caster(_dtype.float32, "float"), "double": _caster(_dtype.float64, "double"),
    "half": _caster(_dtype.float16, "half"), "long": _caster(_dtype.int64, "long"),
    "int": _caster(_dtype.int32, "int"), "short": _caster(_dtype.int16, "short"),
    "char": _caster(_dtype.int8, "char"), "byte": _caster(_dtype.uint8, "byte"),
    "bool": _caster(_dtype.bool_, "bool"),
    "new_zeros": _new("zeros"), "new_ones": _new("ones"), "new_empty": _new("empty"),
    "new_full": _new("full"), "new_tensor": _new("tensor"),
    "type_as": lambda self, other: to(self, other.dtype),
    "view_as": lambda self, other: F.view(self, other.shape),
    "reshape_as": lambda self, other: F.reshape(self, other.shape),
    "where": lambda self, condition, other: F.where(condition, self, other),
    "clamp_min": lambda self, min: F.clamp(self, min=min),
    "clamp_max": lambda self, max: F.clamp(self, max=max),
}

# public functions that are also methods, with the same signature (input first)
_SAME = """add sub mul div true_divide divide multiply subtract floor_divide remainder fmod pow
atan2 maximum minimum neg negative abs absolute sign exp exp2 log log2 log10 log1p expm1 sqrt
rsqrt reciprocal sin cos tan tanh sigmoid relu erf floor ceil round trunc fix square clamp clip
nan_to_num eq ne lt le gt ge greater greater_equal less less_equal not_equal logical_and
logical_or logical_xor logical_not bitwise_and bitwise_or bitwise_xor bitwise_not isnan isinf
isfinite equal allclose isclose sum mean prod var std max min amax amin argmax argmin all any
logsumexp cumsum norm sort argsort topk reshape view permute transpose swapaxes swapdims t
movedim expand expand_as broadcast_to squeeze unsqueeze flatten unflatten narrow select flip
fliplr flipud roll repeat tile split tensor_split chunk unbind tril triu clone gather scatter
scatter_add index_select masked_fill masked_select nonzero count_nonzero matmul mm bmm mv dot
outer""".split()

_INPLACE = """neg abs sign exp log log1p expm1 sqrt rsqrt reciprocal sin cos tan tanh sigmoid
relu erf floor ceil round trunc clamp clip nan_to_num masked_fill scatter scatter_add
remainder floor_divide fmod square tril triu logical_not maximum minimum""".split()


def _inplace_view(fn: Any, method: str) -> Any:
    def inplace(self: Tensor, *args: Any) -> Tensor:
        new = fn(self, *args)
        self._data = new._data
        if new.grad_fn is not None:
            self.grad_fn = new.grad_fn
        return self

    inplace.__name__ = method
    inplace.__doc__ = f"In-place ``{fn.__name__}``: this tensor becomes the view."
    return inplace


def _softmax(self: Tensor, dim: int, dtype: Any = None) -> Tensor:
    from fluxion.nn.functional import softmax

    return softmax(self, dim, dtype=dtype)


def _log_softmax(self: Tensor, dim: int, dtype: Any = None) -> Tensor:
    from fluxion.nn.functional import log_softmax

    return log_softmax(self, dim, dtype=dtype)


def _attach() -> None:
    for name in ("t", "transpose", "unsqueeze", "squeeze", "swapaxes"):
        setattr(Tensor, name + "_", _inplace_view(getattr(F, name), name + "_"))
    Tensor.softmax = _softmax
    Tensor.log_softmax = _log_softmax
    for name in _SAME:
        setattr(Tensor, name, getattr(F, name))
    for name, fn in _METHODS.items():
        setattr(Tensor, name, fn)
    for name in _INPLACE:
        setattr(Tensor, name + "_", _inplace_from(getattr(F, name), name + "_"))
    Tensor.T = property(lambda self: F.permute(self, tuple(reversed(range(self.ndim)))))
    Tensor.mT = property(lambda self: F.transpose(self, -2, -1))
    Tensor.H = Tensor.T
    Tensor.mH = Tensor.mT


_attach()
