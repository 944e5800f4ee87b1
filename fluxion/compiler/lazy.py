"""Capture: inside a compiled call, ops are recorded instead of run.

Every op still goes through ``ops.registry.apply``; while a ``Segment`` is active, apply
hands the op here and gets back a ``LazyArray`` (shape and dtype from the op table's shape
rules, no data). Python keeps running the user's code, so control flow, ``requires_grad``,
``training`` and Python scalars are decided afresh on every call (nothing can go stale).
Reading data (``.item()``, ``bool()``, ``.numpy()``, printing, a bounds check in a
wrapper...) is a *graph break*: the segment so far is compiled and run, the value is
returned, and recording resumes in a new segment. In-place writes are functionalised: the
tensor is rebound to the new value and, at the end of the segment, written back into the
memory it had before."""

from __future__ import annotations

import math
import time
import weakref
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from fluxion.compiler.graph import GNode, Graph
from fluxion.compiler.layout import c_strides as _c_strides
from fluxion.compiler.layout import probe as _probe
from fluxion.compiler.layout import view_layout
from fluxion.ops.registry import Op, Spec, capture

state = capture  # ops.registry.apply consults state.segment


def active() -> bool:
    """Whether ops are being captured (inside a compiled call)."""
    return state.segment is not None


class _Flags(NamedTuple):
    """What NumPy's ``flags`` would say of a pending value (read-only, shared)."""

    c_contiguous: bool
    writeable: bool = True
    owndata: bool = True


_FLAGS = {True: _Flags(True), False: _Flags(False)}


class LazyArray:
    """A value of the graph being captured: shape and dtype now, data after the segment
    runs. Anything that needs the data realises it (a graph break)."""

    __slots__ = ("shape", "dtype", "segment", "ref", "value", "_estrides", "is_view",
                 "__weakref__")

    def __init__(self, segment: Segment, ref: tuple, shape: tuple[int, ...],
                 dtype: np.dtype, estrides: tuple[int, ...] | None = None,
                 is_view: bool = False) -> None:
        # shape a tuple, dtype an np.dtype (the recorder hands them over as they are)
        self.segment, self.ref = segment, ref
        self.shape, self.dtype = shape, dtype
        self.value: np.ndarray | None = None
        # the layout it would have in memory (element strides): views keep their base's;
        # None: contiguous (worked out only when asked)
        self._estrides = estrides
        self.is_view = is_view

    @property
    def estrides(self) -> tuple[int, ...]:
        if self._estrides is None:
            self._estrides = _c_strides(self.shape)
        return self._estrides

    @property
    def contiguous(self) -> bool:
        return self._estrides is None or self.estrides == _c_strides(self.shape) \
            or self.size <= 1

    def probe(self) -> np.ndarray:
        """A memory-less stand-in with this layout (never read): for layout questions."""
        return _probe(self.shape, self.estrides)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def itemsize(self) -> int:
        return self.dtype.itemsize

    @property
    def strides(self) -> tuple[int, ...]:
        return tuple(s * self.dtype.itemsize for s in self.estrides)

    @property
    def flags(self) -> _Flags:
        return _FLAGS[self.contiguous]

    @property
    def base(self) -> None:
        return None

    def realize(self, reason: str = "the data was read") -> np.ndarray:
        """The data, running the pending segment first if needed (a graph break)."""
        if self.value is None:
            self.segment.flush(reason)
        assert self.value is not None
        return self.value

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        v = self.realize("converted to a NumPy array")
        return v if dtype is None else v.astype(dtype)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.realize(f"array attribute .{name} was read"), name)

    def __getitem__(self, key: Any) -> Any:
        return self.realize("indexed as an array")[key]

    def __setitem__(self, key: Any, value: Any) -> None:
        self.realize("written as an array")[key] = value

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        status = "ready" if self.value is not None else "pending"
        return f"LazyArray({self.shape}, {self.dtype}, {status})"


def _binary_dunder(name: str) -> Callable[..., Any]:
    def method(self: LazyArray, other: Any) -> Any:
        other = other.realize() if isinstance(other, LazyArray) else other
        return getattr(self.realize(f"array operator {name}"), name)(other)

    return method


for _name in ("__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__",
              "__truediv__", "__rtruediv__", "__eq__", "__ne__", "__lt__", "__le__", "__gt__",
              "__ge__", "__and__", "__or__", "__iadd__", "__imul__"):
    setattr(LazyArray, _name, _binary_dunder(_name))
LazyArray.__hash__ = object.__hash__  # type: ignore[method-assign]


class Break:
    """A graph break: why the captured graph had to stop, and the user's line."""

    def __init__(self, reason: str, location: str) -> None:
        self.reason, self.location = reason, location

    def __repr__(self) -> str:
        return f"Break({self.reason!r} at {self.location})"


def user_location() -> str:
    """``file:line`` of the innermost frame of model code: outside the framework's own
    modules (``fluxion.train``'s example models and recipes count as model code)."""
    import os
    import traceback

    import fluxion

    pkg = fluxion.__path__[0]
    models = os.path.join(pkg, "train")
    for frame in reversed(traceback.extract_stack()[:-1]):
        if not frame.filename.startswith(pkg) or frame.filename.startswith(models):
            return f"{frame.filename}:{frame.lineno}"
    return "<fluxion>"


def _view_layout(op: Op, src: Any, attrs: dict) -> tuple[tuple[int, ...] | None, bool]:
    """Element strides of a view op's result (None: contiguous), and whether it is a view
    at all."""
    if op.name == "reshape" and type(src) is LazyArray and src._estrides is None:
        return None, True  # contiguous stays contiguous (most reshapes of a model)
    estrides = src.estrides if isinstance(src, LazyArray) else \
        tuple(st // src.itemsize for st in src.strides)
    return view_layout(op.name, tuple(src.shape), estrides, attrs)


class Segment:
    """The ops recorded since the last break; ``flush`` compiles and runs them."""

    def __init__(self, owner: Any) -> None:
        self.owner = owner
        self.inputs: list[np.ndarray] = []
        self._input_ids: dict[int, int] = {}
        # lifted Python numbers by (type, dtype, value, sign): one input per value (the
        # learning rate every parameter's update reads), not one per use
        self.lifted: dict[tuple, tuple] = {}
        self.nodes: list[GNode] = []
        self.lazies: list[weakref.ref] = []
        self.tensors: list[weakref.ref] = []
        self.autograd_nodes: list[weakref.ref] = []
        self.mutations: dict[int, tuple[Any, np.ndarray]] = {}
        self.done = False
        # the Python numbers that become graph inputs rather than constants
        self.lift: tuple[type, ...] = (int, float) if owner.lift_scalars else \
            (float,) if owner.dynamic is not False else ()
        # the same place's recording last call: while every op so far has matched it
        # (same op, operands, attributes and input layouts), its shapes, dtypes and
        # layouts are reused instead of inferred again, and a graph that matched all
        # the way through needs no node-by-node comparison to find its key
        self.slot: int = owner._slot
        self._prev, self._prev_inputs = owner._memo.get(self.slot, ([], []))
        self.memo: list[tuple] | None = None  # None: last call's, as far as recorded
        self.input_layouts: list[tuple] = []  # each input's (shape, dtype, strides)
        self.matched = True

    # --- recording -----------------------------------------------------------------
    def _ref(self, x: Any) -> Any:
        if isinstance(x, LazyArray):
            if x.value is None and x.segment is self:
                return x.ref
            x = x.realize() if x.value is None else x.value
        if isinstance(x, np.ndarray):
            k = self._input_ids.get(id(x))
            if k is None:
                k = len(self.inputs)
                self.inputs.append(x)  # holds it alive, so the id stays unique
                self._input_ids[id(x)] = k
                layout = (x.shape, x.dtype, x.strides)
                self.input_layouts.append(layout)
                if self.matched and (k >= len(self._prev_inputs)
                                     or self._prev_inputs[k] != layout):
                    self.matched = False  # an input unlike last call's k-th
            return ("in", k)
        if isinstance(x, np.generic):
            return x.item()
        return x

    def _attr(self, v: Any) -> Any:
        t = type(v)
        if t in _PLAIN or (t is tuple and all(type(x) is int for x in v)):
            return v
        if isinstance(v, (np.ndarray, LazyArray)):
            return self._ref(v)
        if isinstance(v, tuple):
            return tuple(self._attr(x) for x in v)
        if isinstance(v, list):
            return [self._attr(x) for x in v]
        return v

    def record(self, op: Op, arrays: list, attrs: dict) -> Any:
        """Add ``op`` to the graph; its outputs come back as LazyArrays."""
        operands = arrays
        # Python floats (learning rates, bias corrections...) in elementwise ops are inputs,
        # not constants, so a new value is not a new graph; ints too once they have changed
        lift = self.lift if op.kind in _ELEMENTWISE else ()
        refs = []
        numbers = ()  # the types of Python numbers among the operands: 2 and 2.0 differ
        for a in arrays:
            t = type(a)
            if t is LazyArray and a.segment is self and a.value is None:
                refs.append(a.ref)
            else:
                r = None
                if lift and t in lift:
                    like = next((x.dtype for x in arrays
                                 if isinstance(x, (LazyArray, np.ndarray))), None)
                    if like is not None:
                        key = (t, like, a, math.copysign(1.0, a))  # (0.0 and -0.0 differ)
                        r = self.lifted.get(key)
                        if r is None:
                            r = self.lifted[key] = self._ref(np.asarray(a, like))
                if r is None:
                    r = self._ref(a)
                refs.append(r)
                if type(r) is not tuple:
                    numbers += (type(r),)
        args = tuple(refs)
        i = len(self.nodes)
        if attrs:
            gattrs = attrs  # (a fresh dict per call) as it is when every value is plain
            for v in attrs.values():
                t = type(v)
                if t not in _PLAIN and not (t is tuple and all(type(x) is int for x in v)):
                    gattrs = {k: self._attr(v) for k, v in attrs.items()}
                    break
            sig = (op, args, numbers, gattrs, tuple(map(type, gattrs.values())))
        else:
            gattrs = {}
            sig = (op, args, numbers)
        if self.matched and i < len(self._prev) and self._prev[i][0] == sig:
            # the same node as last call's (equal op, operands, attributes, so shape): its
            # object again (passes build new nodes, never change one)
            (shape, dtype, estrides, is_view), node = self._prev[i][1:]
            aux = node.aux
        else:
            self.matched = False
            if self.memo is None:
                self.memo = self._prev[:i]
            shape, dtype = _same_shape_rule(op, operands) \
                if op.kind in _ELEMENTWISE and not attrs else (None, None)
            if shape is None:
                specs = [Spec(a.shape, a.dtype) if isinstance(a, (LazyArray, np.ndarray))
                         else a for a in operands]
                shape, dtype = op.infer(*specs, **{k: _attr_value(v) for k, v in attrs.items()})
            shape, dtype = tuple(shape), np.dtype(dtype)
            estrides, is_view = _view_layout(op, arrays[0], attrs) if op.view else (None, False)
            if estrides is not None:
                estrides = tuple(estrides)
            aux = tuple((shape, _INT64) for _ in range(op.n_aux)) if op.n_aux else ()
            node = GNode(op.name, args, gattrs, shape, dtype, aux)
            self.memo.append((sig, (shape, dtype, estrides, is_view), node))
        self.nodes.append(node)
        out = LazyArray(self, ("n", i), shape, dtype, estrides, is_view)
        self.lazies.append(weakref.ref(out))
        if not op.n_aux:
            return out
        extras = []
        for j, (s, d) in enumerate(aux):
            la = LazyArray(self, ("aux", i, j), s, d)
            self.lazies.append(weakref.ref(la))
            extras.append(la)
        return (out, *extras)

    def track(self, tensor: Any) -> None:
        """Remember a tensor whose data is lazy, to hand it its array after the run."""
        self.tensors.append(weakref.ref(tensor))

    def track_node(self, node: Any) -> None:
        """Remember an autograd node that saved a lazy output."""
        self.autograd_nodes.append(weakref.ref(node))

    def mutate(self, tensor: Any, new_data: LazyArray) -> None:
        """Functionalised in-place write: rebind now, write back into memory at flush."""
        old = tensor._data
        if isinstance(old, np.ndarray) and id(tensor) not in self.mutations:
            self.mutations[id(tensor)] = (tensor, old)
        tensor._data = new_data
        self.track(tensor)

    # --- running -------------------------------------------------------------------
    def flush(self, reason: str = "return") -> None:
        """Compile (or fetch from the cache) and run the recorded graph; give every live
        value its array; write functionalised mutations back."""
        if self.done:
            return
        self.done = True
        if state.segment is self:
            state.segment = None
        try:
            self._run(reason)
        finally:
            self.owner._segment_finished(self, reason)

    def _run(self, reason: str) -> None:
        live = [la for r in self.lazies if (la := r()) is not None and la.value is None]
        if not self.nodes:
            return
        outputs: list[tuple] = []
        index: dict[tuple, int] = {}
        position = []  # each live value's output
        for la in live:
            j = index.get(la.ref)
            if j is None:
                j = index[la.ref] = len(outputs)
                outputs.append(la.ref)
            position.append(j)
        graph = Graph(inputs=[(a.shape, a.dtype) for a in self.inputs], nodes=self.nodes,
                      outputs=outputs)
        t0 = time.perf_counter()
        same = self.matched and len(self.nodes) == len(self._prev)
        program = self.owner._program_for(graph, reason, same)
        memo = self.memo if self.memo is not None else \
            self._prev if same else self._prev[:len(self.nodes)]
        self.owner._memo[self.slot] = (memo, self.input_layouts)
        targets = {}  # output position -> the memory that value must end up in
        for t, memory in self.mutations.values():
            d = t._data
            if isinstance(d, LazyArray) and d.segment is self and d.value is None:
                targets[index[d.ref]] = memory
        results = program.run(self.inputs, targets)
        self.owner.timings["run_s"] += time.perf_counter() - t0
        for la, j in zip(live, position):
            la.value = results[j]
        for r in self.tensors:
            t = r()
            if t is not None and type(d := t._data) is LazyArray and d.value is not None:
                t._data = d.value
        for r in self.autograd_nodes:
            n = r()
            if n is None:
                continue
            d = n._out_data
            if isinstance(d, LazyArray) and d.value is not None:
                n._out_data = d.value
            if n.aux is not None:
                n.aux = tuple(a.value if isinstance(a, LazyArray) and a.value is not None
                              else a for a in n.aux)
        for t, memory in self.mutations.values():
            data = t._data.value if isinstance(t._data, LazyArray) else t._data
            if data is not memory:
                np.copyto(memory, data)  # the tensor keeps its memory (views, optimizers)
                t._data = memory


_ELEMENTWISE = frozenset({"unary", "binary", "ternary"})


def _same_shape_rule(op: Op, arrays: list) -> tuple[Any, Any]:
    """The elementwise shape rule's answer when every array operand has one shape and
    dtype and any Python numbers meet a float array (most ops of a model): nothing to
    broadcast, and NumPy's weak scalars keep the array's dtype. (None, None) otherwise."""
    if op.shape_rule is not None or op.name == "where":  # not its condition's dtype
        return None, None
    shape = dtype = None
    scalars = False
    for a in arrays:
        t = type(a)
        if t is LazyArray or t is np.ndarray:
            if shape is None:
                shape, dtype = a.shape, a.dtype
            elif a.shape != shape or a.dtype != dtype:
                return None, None
        elif t is float or t is int or t is bool:
            scalars = True
        else:
            return None, None
    if shape is None or (scalars and dtype.kind != "f"):
        return None, None
    rule = op.dtype_rule
    if rule == "bool":
        return shape, _BOOL
    if rule in ("same", "promote") or (rule == "float" and dtype.kind == "f"):
        return shape, dtype
    return None, None


_BOOL = np.dtype(bool)
_INT64 = np.dtype(np.int64)


_PLAIN = frozenset({int, float, bool, str, type(None)})


def _attr_value(v: Any) -> Any:
    """Attributes for shape inference: a pending array stands in as zeros of its shape
    (shape rules never read values; realising here would split the graph)."""
    t = type(v)
    if t in _PLAIN or (t is tuple and all(type(x) is int for x in v)):
        return v
    if isinstance(v, LazyArray):
        return v.value if v.value is not None else np.zeros(v.shape, v.dtype)
    if isinstance(v, tuple):
        return tuple(_attr_value(x) for x in v)
    return v
