"""Backward passes replayed from the last call's recording (AOTAutograd's idea, kept
define-by-run).

Inside a compiled call, ``loss.backward()`` walks the autograd graph and runs each node's
backward rule, which records the gradient ops. In a training loop the graph is the same on
every call, and so are the ops the rules record: running the rules again only derives them
again (half of an MLP step's capture time). So the engine first takes a fingerprint of the
graph it is about to differentiate: per node its op, attributes, saved values (graph values
by reference, Python numbers by value), shapes and edges; per leaf its value and gradient
state. When the fingerprint, the place in the recording and everything recorded before it
equal last call's, the ops recorded last call from that place on are what the rules would
record now: they are appended as they are and the leaves get their gradients, no rule run.
Whatever the fingerprint cannot vouch for (hooks, custom Functions, anomaly mode,
``create_graph``, ``inputs=``, a graph break inside the backward, a gradient that is not a
recorded value) runs the rules as usual."""

from __future__ import annotations

import operator
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from fluxion.autograd.node import Node
from fluxion.compiler.lazy import LazyArray, Segment
from fluxion.ops.registry import OPS
from fluxion.tensor import Tensor


class _UnsureError(Exception):
    """The fingerprint cannot vouch for a value: run the backward rules."""


_PLAIN = frozenset({int, float, bool, str, type(None), slice, type(Ellipsis)})


def _key(seg: Segment, v: Any) -> Any:
    """What a backward rule can see of ``v``: a graph value by its reference, a Python
    value by its type and value."""
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
        return (t, tuple(_key(seg, x) for x in v))
    if isinstance(v, (np.generic, np.dtype)) or t.__module__ == "fluxion._dtype":
        return (t, v)
    raise _UnsureError


def _attrs_key(seg: Segment, attrs: dict) -> tuple:
    return tuple((k, _key(seg, v)) for k, v in attrs.items())


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
            op, _attrs_key(seg, n.attrs) if n.attrs else (),
            None if saved is None else tuple(_key(seg, x) for x in saved),
            None if n._out_data is None else _key(seg, n._out_data),
            None if n.aux is None else tuple(_key(seg, a) for a in n.aux),
            n.shapes, n.dtypes, tuple(edge(e) for e in n.next)))
    for leaf in leaves:
        if leaf._hooks:
            raise _UnsureError
        fingerprint.append((_key(seg, leaf), None if leaf.grad is None
                            else _key(seg, leaf.grad)))
    return _Walk(fingerprint, nodes, leaves)


@dataclass
class _Recorded:
    """One backward as recorded: where, from what, and what it did."""

    fingerprint: list
    n_inputs: int  # graph inputs before it
    entries: list  # the segment's memo entries of the ops it recorded
    new_inputs: list[np.ndarray]  # the constants its rules made (the root's ones...)
    new_lifted: dict[tuple, tuple]  # the Python numbers among them (Segment.lifted)
    grads: list[tuple[int, tuple]]  # (leaf position, its gradient's reference)
    released: list[int]  # the nodes whose saved values it freed


def backward(seg: Segment, outputs: list[Tensor], grad_outputs: list, retain_graph: bool,
             run_rules: Callable[[], None]) -> None:
    """Run a backward pass inside a compiled call: replayed from the last call's
    recording when nothing it depends on differs, else by the rules (and recorded)."""
    try:
        walk = _walk(seg, outputs, grad_outputs)
    except _UnsureError:
        run_rules()
        return
    memo = seg.owner._backward_memo
    key = (seg.slot, len(seg.nodes), retain_graph)
    last = memo.get(key)
    if last is not None and _replay(seg, walk, last):
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
        d = g._data if isinstance(g, Tensor) else None
        if type(d) is not LazyArray or d.segment is not seg or d.value is not None \
                or d.ref[0] != "n":
            return  # a gradient that is not a value recorded here: not replayable
        grads.append((j, d.ref))
    recording = seg.memo if seg.memo is not None else seg._prev
    memo[key] = _Recorded(walk.fingerprint, n_inputs, recording[start:len(seg.nodes)],
                          seg.inputs[n_inputs:],
                          {k: r for k, r in seg.lifted.items() if r[1] >= n_inputs}, grads,
                          [i for i, n in enumerate(walk.nodes) if n._freed])


def _replay(seg: Segment, walk: _Walk, last: _Recorded) -> bool:
    """Append last call's recording of this backward if it applies; whether it did."""
    start = len(seg.nodes)
    end = start + len(last.entries)
    if not seg.matched or len(seg.inputs) != last.n_inputs or len(seg._prev) < end \
            or not all(map(operator.is_, seg._prev[start:end], last.entries)) \
            or walk.fingerprint != last.fingerprint \
            or any(id(a) in seg._input_ids for a in last.new_inputs):
        return False
    for a in last.new_inputs:
        seg._ref(a)
    seg.lifted.update(last.new_lifted)
    seg.nodes.extend(e[2] for e in last.entries)
    for j, ref in last.grads:
        (shape, dtype, estrides, is_view), _ = last.entries[ref[1] - start][1:]
        la = LazyArray(seg, ref, shape, dtype, estrides, is_view)
        seg.lazies.append(weakref.ref(la))
        g = Tensor._make(la)
        seg.track(g)
        walk.leaves[j].grad = g
    for i in last.released:
        walk.nodes[i].release()
    seg.owner.stats.backward_replays += 1
    return True
