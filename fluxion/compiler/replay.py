"""Backward passes and optimizer steps replayed from the last call's recording
(AOTAutograd's idea, kept define-by-run).

Inside a compiled call, ``loss.backward()`` walks the autograd graph and runs each node's
backward rule, which records the gradient ops; ``opt.step()`` runs its update rule, which
records the update ops. In a training loop both are the same on every call, and running
the rules again only derives the same ops again (most of an MLP step's capture time). So
the engine and the optimizer first take a fingerprint of what their rules read:

- a backward: per node its op, attributes, saved values (graph values by reference,
  Python numbers by value), shapes and edges; per leaf its value and gradient state;
- an optimizer step: its hyper-parameters by value; per parameter its value, gradient
  and state (tensors by reference, or by layout where the step reads them first).

When the fingerprint, the place in the recording and everything recorded before it equal
last call's, the ops recorded last call from that place on are what the rules would record
now: they are appended as they are, and their effects are applied (the leaves' gradients;
the tensors the step writes in place), no rule run. Whatever the fingerprint cannot vouch
for runs the rules as usual: hooks, custom Functions, anomaly mode, ``create_graph``,
``inputs=``, views, a graph break inside, a gradient that is not a recorded value, a
tensor hyper-parameter. An optimizer's rule reads no data: what changes every step (Adam's
bias corrections) is computed before it and handed to it as graph inputs of its own."""

from __future__ import annotations

import math
import operator
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fluxion.autograd.node import Node
from fluxion.compiler.lazy import LazyArray, Segment
from fluxion.ops.registry import OPS
from fluxion.tensor import Tensor


class _UnsureError(Exception):
    """The fingerprint cannot vouch for a value: run the rules."""


_PLAIN = frozenset({int, float, bool, str, type(None), slice, type(Ellipsis)})


def _key(seg: Segment, v: Any) -> Any:
    """What a rule can see of ``v``: a graph value by its reference, a Python value by
    its type and value."""
    if isinstance(v, Tensor):
        v = v._data
    t = type(v)
    if t is LazyArray:
        if v.segment is seg and v.value is None:
            return v.ref
        v = v.value
        t = type(v)
    if t is np.ndarray:
        k = seg._input_ids.get(id(v))
        if k is None:  # not read by the graph so far: it would be a new input
            raise _UnsureError
        return ("in", k)
    if t in _PLAIN:
        return (t, v)
    if t is tuple or t is list:
        return (t, tuple([_key(seg, x) for x in v]))
    if isinstance(v, (np.generic, np.dtype)) or t.__module__ == "fluxion._dtype":
        return (t, v)
    raise _UnsureError


@dataclass
class _Recorded:
    """One recorded region: where, from what, and what it did."""

    fingerprint: list
    n_inputs: int  # graph inputs before it
    entries: list  # the segment's memo entries of the ops it recorded
    # the graph inputs it added: (which of its tensors' arrays, or None and a constant the
    # rules made: the root gradient's ones, a lifted number)
    new_inputs: list[tuple[int | None, np.ndarray]]
    new_lifted: dict[tuple, tuple]  # the Python numbers among them (Segment.lifted)
    # backward: (leaf, its gradient's reference); step: (tensor, its new value's
    # reference, how many in-place writes it counted)
    effects: list[tuple] = field(default_factory=list)
    released: list[int] = field(default_factory=list)  # backward: nodes it freed


def _record(seg: Segment, fingerprint: list, start: int, n_inputs: int,
            origin: dict[int, int]) -> _Recorded:
    recording = seg.memo if seg.memo is not None else seg._prev
    return _Recorded(fingerprint, n_inputs, recording[start:len(seg.nodes)],
                     [(origin.get(id(a)), a) for a in seg.inputs[n_inputs:]],
                     {k: r for k, r in seg.lifted.items() if r[1] >= n_inputs})


def _append(seg: Segment, last: _Recorded, fingerprint: list,
            tensors: list[Tensor]) -> bool:
    """Append last call's recording if it applies here; whether it did."""
    start = len(seg.nodes)
    end = start + len(last.entries)
    if not seg.matched or len(seg.inputs) != last.n_inputs or len(seg._prev) < end \
            or not all(map(operator.is_, seg._prev[start:end], last.entries)) \
            or fingerprint != last.fingerprint:
        return False
    arrays = [a if j is None else tensors[j]._data for j, a in last.new_inputs]
    if any(type(a) is not np.ndarray or id(a) in seg._input_ids for a in arrays):
        return False
    for a in arrays:
        seg._ref(a)
    seg.lifted.update(last.new_lifted)
    seg.nodes.extend(e[2] for e in last.entries)
    return True


def _values(seg: Segment, last: _Recorded) -> list[LazyArray]:
    """Fresh pending values for the references of ``last.effects``, results of the ops
    just appended."""
    start = len(seg.nodes) - len(last.entries)
    entries, lazies = last.entries, seg.lazies
    out = []
    for effect in last.effects:
        ref = effect[1]
        la = LazyArray(seg, ref, *entries[ref[1] - start][1])  # (shape, dtype, layout)
        lazies.append(weakref.ref(la))
        out.append(la)
    return out


def _pending(seg: Segment, d: Any) -> tuple | None:
    """``d``'s reference if it is a value this segment recorded and has not run."""
    if type(d) is LazyArray and d.segment is seg and d.value is None and d.ref[0] == "n":
        return d.ref
    return None


# --- backward passes ---------------------------------------------------------------------
@dataclass
class _Walk:
    """The graph a backward is about to differentiate, in a fixed order."""

    fingerprint: list
    nodes: list[Node]
    leaves: list[Tensor]


def _walk(seg: Segment, outputs: list[Tensor], grad_outputs: list) -> _Walk:
    """Fingerprint the graph reachable from ``outputs`` (raises ``_UnsureError``), checking
    each node's saved values as the engine would (its errors, raised before anything is
    recorded)."""
    index: dict[Any, int] = {}  # node -> its position
    leaf_index: dict[int, int] = {}
    nodes: list[Node] = []
    leaves: list[Tensor] = []

    def edge(e: Any) -> Any:
        if e is None:
            return None
        if type(e) is Node:
            k = index.get(e)
            if k is None:
                k = index[e] = len(nodes)
                nodes.append(e)
            return k
        if isinstance(e, Node) or not isinstance(e, Tensor):  # a custom Function's
            raise _UnsureError
        k = leaf_index.get(id(e))
        if k is None:
            k = leaf_index[id(e)] = len(leaves)
            leaves.append(e)
        return (k,)

    fingerprint: list = []
    for i, t in enumerate(outputs):
        g = grad_outputs[i] if i < len(grad_outputs) else None
        fingerprint.append((edge(t.grad_fn if t.grad_fn is not None else t),
                            None if g is None else _key(seg, g)))
    done = 0
    while done < len(nodes):
        n = nodes[done]
        done += 1
        op = n.op
        if n.pre_hooks or OPS.get(op.name) is not op or n._freed:
            raise _UnsureError
        n.check_saved()
        saved = n._inputs
        fingerprint.append((
            op, tuple([(k, _key(seg, v)) for k, v in n.attrs.items()]) if n.attrs else (),
            None if saved is None else tuple([_key(seg, x) for x in saved]),
            None if n._out_data is None else _key(seg, n._out_data),
            None if n.aux is None else tuple([_key(seg, a) for a in n.aux]),
            n.shapes, n.dtypes, tuple([edge(e) for e in n.next])))
    for leaf in leaves:
        if leaf._hooks:
            raise _UnsureError
        fingerprint.append((_key(seg, leaf), None if leaf.grad is None
                            else _key(seg, leaf.grad)))
    return _Walk(fingerprint, nodes, leaves)


def backward(seg: Segment, outputs: list[Tensor], grad_outputs: list, retain_graph: bool,
             run_rules: Callable[[], None]) -> None:
    """Run a backward pass inside a compiled call: replayed from the last call's
    recording when nothing it depends on differs, else by the rules (and recorded).

    >>> import fluxion
    >>> w = fluxion.ones(2, requires_grad=True)
    >>> @fluxion.compile
    ... def f():
    ...     w.grad = None
    ...     (w * 3).sum().backward()
    >>> f(); f(); f.stats.backward_replays, w.grad
    (1, tensor([3., 3.]))
    """
    try:
        walk = _walk(seg, outputs, grad_outputs)
    except _UnsureError:
        run_rules()
        return
    memo = seg.owner._replays
    key = ("backward", seg.slot, len(seg.nodes), retain_graph)
    last = memo.get(key)
    if last is not None and _append(seg, last, walk.fingerprint, []):
        for (j, _), value in zip(last.effects, _values(seg, last)):
            g = Tensor._make(value)
            seg.track(g)
            walk.leaves[j].grad = g
        for i in last.released:
            walk.nodes[i].release()
        seg.owner.stats.backward_replays += 1
        return
    memo.pop(key, None)
    start, n_inputs = len(seg.nodes), len(seg.inputs)
    before = [leaf.grad for leaf in walk.leaves]
    run_rules()
    if seg.done:  # a graph break inside the backward
        return
    grads = []
    for j, (leaf, old) in enumerate(zip(walk.leaves, before)):
        g = leaf.grad
        if g is old:
            continue
        ref = _pending(seg, g._data) if isinstance(g, Tensor) else None
        if ref is None:
            return  # a gradient that is not a value recorded here: not replayable
        grads.append((j, ref))
    rec = _record(seg, walk.fingerprint, start, n_inputs, {})  # (inputs it adds: constants)
    rec.effects = sorted(grads, key=lambda e: e[1][1])  # in creation order (see below)
    rec.released = [i for i, n in enumerate(walk.nodes) if n._freed]
    memo[key] = rec


# --- optimizer steps ---------------------------------------------------------------------
def _optimizer_walk(seg: Segment, opt: Any) -> tuple[list, list[Tensor]]:
    """Fingerprint what an optimizer's update reads (raises ``_UnsureError``): its
    hyper-parameters, and per parameter its value, gradient and state."""
    tensors: list[Tensor] = []

    def tensor(t: Tensor) -> Any:
        if t._view is not None or t._base is not None or t._hooks:
            raise _UnsureError
        tensors.append(t)
        d = t._data
        if type(d) is not np.ndarray:
            return _key(seg, d)
        # (writable: the update's in-place writes would fail on read-only memory)
        if id(d) not in seg._input_ids:  # the update reads it first: it becomes an input
            return ("first read", d.shape, d.dtype, d.strides, d.flags.writeable)
        return (_key(seg, d), d.flags.writeable)

    fingerprint: list = [type(opt)]
    for group in opt.param_groups:
        # by value only: a tensor learning rate is read as a number (.item())
        if any(isinstance(v, Tensor) for k, v in group.items() if k != "params"):
            raise _UnsureError
        fingerprint.append(tuple([(k, _key(seg, v)) for k, v in group.items() if k != "params"]))
        for p in group["params"]:
            state = opt.state.get(p)
            fingerprint.append((
                tensor(p), p.requires_grad, None if p.grad is None else _key(seg, p.grad),
                tuple([(k, tensor(v) if isinstance(v, Tensor) else _key(seg, v))
                       for k, v in state.items()]) if state else None))
    return fingerprint, tensors


def optimizer_step(seg: Segment, opt: Any,
                   numbers: Sequence[tuple[float, np.dtype]] = ()) -> None:
    """Run an optimizer's update inside a compiled call (its ``_update``, a rule that reads
    no data): replayed from the last call's recording when nothing it depends on differs,
    else by the rule (and recorded).

    ``numbers`` are the per-call values the rule needs, each with the dtype it computes
    in: Adam's step size and bias correction, which change every step. The rule gets them
    as 0-d tensors, fresh graph inputs that no other number shares, so a replay feeds it
    this call's values where a recorded constant would replay last call's.

    >>> import fluxion
    >>> w = fluxion.nn.Parameter(fluxion.ones(2))
    >>> opt = fluxion.optim.SGD([w], lr=0.5, momentum=0.9)
    >>> @fluxion.compile
    ... def step():
    ...     opt.zero_grad()
    ...     (w * 2).sum().backward()
    ...     opt.step()
    >>> for _ in range(3):
    ...     step()
    >>> step.stats.step_replays, w  # 1 - 0.5 * (2 + 3.8 + 5.42)
    (1, Parameter containing:
    tensor([-4.6100, -4.6100], requires_grad=True))
    """
    distinct, values, pattern = _number_tensors(numbers)
    try:
        fingerprint, tensors = _optimizer_walk(seg, opt)
    except _UnsureError:
        opt._update(values)
        return
    fingerprint.append(pattern)
    walked = len(tensors)
    tensors += distinct  # (their arrays: the graph inputs a replay feeds anew)
    memo = seg.owner._replays
    key = ("step", seg.slot, len(seg.nodes), id(opt))
    last = memo.get(key)
    if last is not None and _append(seg, last, fingerprint, tensors):
        for (j, _, writes), value in zip(last.effects, _values(seg, last)):
            t = tensors[j]
            seg.mutate(t, value)
            t._vbox[0] += writes
        seg.owner.stats.step_replays += 1
        return
    memo.pop(key, None)
    start, n_inputs = len(seg.nodes), len(seg.inputs)
    before = [(t._data, t._vbox[0]) for t in tensors]
    opt._update(values)
    if seg.done:
        return
    try:  # the same tensors afterwards (a first step adds state: not replayable)
        if not all(map(operator.is_, _optimizer_walk(seg, opt)[1], tensors[:walked])):
            return
    except _UnsureError:
        return
    writes = []
    for j, (t, (data, version)) in enumerate(zip(tensors, before)):
        if t._data is data:
            if t._vbox[0] != version:
                return
            continue
        ref = _pending(seg, t._data)
        if ref is None:
            return
        writes.append((j, ref, t._vbox[0] - version))
    origin = {id(d): j for j, (d, _) in enumerate(before) if type(d) is np.ndarray}
    rec = _record(seg, fingerprint, start, n_inputs, origin)
    rec.effects = sorted(writes, key=lambda e: e[1][1])  # (as the rule made them: the
    # graph's outputs keep their order, so the replayed graph is the recorded one)
    memo[key] = rec


def _number_tensors(numbers: Sequence[tuple[float, np.dtype]]
                    ) -> tuple[list[Tensor], list[Tensor], tuple]:
    """The rule's numbers as 0-d tensors, one per distinct value and dtype; each number's
    tensor, in the rule's order; and which numbers share one, for the fingerprint (a
    replay needs the same pattern, not the same values)."""
    first: dict[tuple, int] = {}
    distinct: list[Tensor] = []
    pattern = []
    for v, dtype in numbers:
        k = first.setdefault((v, math.copysign(1.0, v), dtype), len(first))
        if k == len(distinct):
            distinct.append(Tensor._make(np.asarray(v, dtype)))
        pattern.append((k, dtype))
    return distinct, [distinct[k] for k, _ in pattern], ("numbers", tuple(pattern))
