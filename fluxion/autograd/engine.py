"""The backward engine: walks the recorded graph in dependency order."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from fluxion.autograd.grad_mode import state
from fluxion.autograd.node import Node
from fluxion.tensor import Tensor


def _as_list(x: Any) -> list:
    if x is None:
        return []
    if isinstance(x, Tensor):
        return [x]
    return list(x)


def _root_grads(outputs: list[Tensor], grads: list, create_graph: bool) -> list[Tensor]:
    out = []
    for i, t in enumerate(outputs):
        if not t.requires_grad:
            raise RuntimeError(
                f"element {i} of tensors does not require grad and does not have a grad_fn"
            )
        g = grads[i] if i < len(grads) else None
        if g is None:
            if t._data.size != 1:
                raise RuntimeError(
                    f"grad can be implicitly created only for scalar outputs (got an output "
                    f"of shape {list(t._data.shape)}; pass gradient=...)"
                )
            g = Tensor._make(np.ones(t._data.shape, t._data.dtype))
        else:
            if not isinstance(g, Tensor):
                from fluxion.creation import tensor

                g = tensor(g, dtype=t.dtype)
            if g._data.shape != t._data.shape:
                raise RuntimeError(
                    f"Mismatch in shape: grad_output[{i}] has a shape of {list(g._data.shape)}"
                    f" and output[{i}] has a shape of {list(t._data.shape)}."
                )
            if not create_graph:
                g = g.detach()
        out.append(g)
    return out


def _fix_grad(node: Node, i: int, g: Tensor) -> Tensor:
    """Cast a gradient to its input's dtype; a shape mismatch is a bug in a backward rule."""
    if node.shapes[i] is None:  # the edge into a multi-output Function node
        return g
    if g._data.shape != node.shapes[i]:
        raise RuntimeError(
            f"Function {node.name()} returned an invalid gradient at index {i} - got "
            f"{list(g._data.shape)} but expected shape compatible with {list(node.shapes[i])}"
        )
    if g._data.dtype != node.dtypes[i]:
        from fluxion._dtype import from_numpy_dtype

        g = g.to(from_numpy_dtype(node.dtypes[i]))
    return g


def _check_anomaly(node: Node, grads: Sequence) -> None:
    for i, g in enumerate(grads):
        if isinstance(g, Tensor) and not np.all(np.isfinite(g._data)):
            kind = "nan" if np.isnan(g._data).any() else "inf"
            where = ""
            if node.trace is not None:
                f = node.trace
                where = (
                    f"\nThe forward op was created at {f.filename}:{f.lineno}: {f.line}"
                )
            raise RuntimeError(
                f"Function '{node.name()}' returned {kind} values in its {i}th output.{where}"
            )


def _leaf_hooks(leaf: Tensor, g: Tensor) -> Tensor:
    if leaf._hooks:
        for h in list(leaf._hooks):
            r = h(g)
            if r is not None:
                g = r
    return g


def _node_hooks(node: Node, g: Tensor) -> Tensor:
    """Tensor hooks registered on a non-leaf, then its retain_grad (which sees the result)."""
    hooks = node.pre_hooks
    assert hooks is not None
    for h in sorted(hooks, key=lambda h: getattr(h, "_retain", False)):
        r = h(g)
        if r is not None:
            g = r
    return g


def _accumulate_leaf(leaf: Tensor, g: Tensor, create_graph: bool, handed: set) -> None:
    g = _leaf_hooks(leaf, g)
    from fluxion.ops.registry import OPS, apply, capture

    if capture.segment is not None and not create_graph:  # recording: values are immutable
        if leaf.grad is None:
            fresh = id(g._data) not in handed
            leaf.grad = g.detach() if fresh else apply(OPS["clone"], g.detach())
            handed.add(id(leaf.grad._data))
        else:
            leaf.grad = apply(OPS["add"], leaf.grad, g.detach())
        return
    if leaf.grad is None:
        if create_graph:
            leaf.grad = g
        else:
            d = g._data
            # .grad must own its memory: a gradient may be a broadcast view or shared
            # with another leaf's (add passes one gradient to both inputs)
            if d.base is not None or id(d) in handed or not d.flags.writeable:
                d = d.copy()
            handed.add(id(d))
            leaf.grad = Tensor._make(d)
    elif create_graph:
        leaf.grad = leaf.grad + g
    else:
        leaf.grad = Tensor._make(leaf.grad._data + g._data)


def _owned_buffer(n: Node, e: Any, grads: dict, owned: set, leaf_grads: dict) -> np.ndarray:
    """The gradient accumulator for edge ``e``, allocated (or copied) so it may be written."""
    shape, dtype = n.shapes[0], n.dtypes[0]
    if isinstance(e, Node):
        cur = grads.get(e)
        if cur is None:
            grads[e] = cur = Tensor._make(np.zeros(shape, dtype))
        elif e not in owned:
            grads[e] = cur = Tensor._make(cur._data.copy())
        owned.add(e)
        return cur._data
    slot = leaf_grads.get(id(e))
    if slot is None:
        slot = leaf_grads[id(e)] = [e, Tensor._make(np.zeros(shape, dtype)), True]
    elif len(slot) == 2:
        slot[1] = Tensor._make(slot[1]._data.copy())
        slot.append(True)
    return slot[1]._data


def run(
    outputs: list[Tensor],
    grad_outputs: list,
    retain_graph: bool,
    create_graph: bool,
    capture: list[Tensor] | None = None,
    memo: bool = True,
) -> list[Tensor | None] | None:
    """Propagate gradients from ``outputs``; accumulate into leaves' ``.grad``, or, when
    ``capture`` is given, return the gradients reaching those tensors instead.
    ``memo``: inside a compiled call, replay last call's recording where it applies
    (``compiler.replay``)."""
    from fluxion.ops.registry import capture as recording
    roots = _root_grads(outputs, grad_outputs, create_graph)
    seg = recording.segment
    if seg is not None and memo and capture is None and not create_graph and not state.anomaly:
        # inside a compiled call: last call's recording of this backward, if it applies
        from fluxion.compiler import replay

        replay.backward(seg, outputs, grad_outputs, retain_graph, lambda: run(
            outputs, grad_outputs, retain_graph, create_graph, memo=False))
        return None
    handed: set[int] = set()
    cap_leaf: dict[int, int] = {}
    cap_node: dict[Node, int] = {}
    captured: list[Tensor | None] = []
    if capture is not None:
        for j, t in enumerate(capture):
            if not t.requires_grad:
                raise RuntimeError("One of the differentiated Tensors does not require grad")
            if t.grad_fn is None:
                cap_leaf[id(t)] = j
            else:
                cap_node[t.grad_fn] = j
        captured = [None] * len(capture)

    # a leaf's gradient is summed over its uses first: hooks see the total, once
    leaf_grads: dict[int, list] = {}
    owned: set = set()  # gradient buffers the engine allocated itself (safe to add into)

    def deliver_leaf(leaf: Tensor, g: Tensor) -> None:
        slot = leaf_grads.get(id(leaf))
        if slot is None:
            leaf_grads[id(leaf)] = [leaf, g]
        elif len(slot) == 3 and recording.segment is None:  # an engine-owned buffer
            slot[1]._data += g._data
        else:
            slot[1] = slot[1] + g

    # dependency counts over the part of the graph reachable from the roots
    grads: dict[Node, Tensor] = {}
    deps: dict[Node, int] = {}
    stack: list[Node] = []
    for t, g in zip(outputs, roots):
        if t.grad_fn is None:
            deliver_leaf(t, g)
            continue
        n = t.grad_fn
        grads[n] = grads[n] + g if n in grads else g
        if n not in deps:
            deps[n] = 0
            stack.append(n)
    start = list(stack)
    while stack:
        n = stack.pop()
        for e in n.next:
            if type(e) is Node or isinstance(e, Node):
                if e in deps:
                    deps[e] += 1
                else:
                    deps[e] = 1
                    stack.append(e)

    prev = state.enabled
    state.enabled = create_graph
    try:
        ready = [n for n in start if deps[n] == 0]
        while ready:
            n = ready.pop()
            g = grads.pop(n, None)
            owned.discard(n)
            scatter = n.op.scatter_grad if not create_graph and recording.segment is None \
                else None
            if g is not None and scatter is not None and not n.pre_hooks and n not in cap_node \
                    and not state.anomaly:
                # add straight into the input's accumulator (no zero-padded gradient)
                n.check_saved()
                e = n.next[0]
                if e is not None:
                    acc = _owned_buffer(n, e, grads, owned, leaf_grads)
                    scatter(n, g._data, acc)
                if not retain_graph:
                    n.release()
                if isinstance(e, Node):
                    deps[e] -= 1
                    if deps[e] == 0:
                        ready.append(e)
                continue
            if g is not None:
                if n.pre_hooks:
                    g = _node_hooks(n, g)
                if n in cap_node:
                    j = cap_node[n]
                    captured[j] = g
                n.check_saved()
                in_grads = n.op.backward(n, g)
                if not isinstance(in_grads, tuple):
                    in_grads = (in_grads,)
                if state.anomaly and state.anomaly_check_nan and recording.segment is None:
                    _check_anomaly(n, in_grads)
                if not retain_graph:
                    n.release()
            else:
                in_grads = (None,) * len(n.next)
            for i, e in enumerate(n.next):
                if e is None:
                    continue
                ig = in_grads[i]
                if ig is not None:
                    ig = _fix_grad(n, i, ig)
                if isinstance(e, Node):
                    if ig is not None:
                        prev_g = grads.get(e)
                        if prev_g is None:
                            grads[e] = ig
                        elif e in owned and recording.segment is None:
                            prev_g._data += ig._data  # our own buffer: add in place
                        else:
                            grads[e] = prev_g + ig
                            if not create_graph:
                                owned.add(e)
                    deps[e] -= 1
                    if deps[e] == 0:
                        ready.append(e)
                elif ig is not None:
                    deliver_leaf(e, ig)
        for leaf, g, *_ in leaf_grads.values():
            if capture is None:
                _accumulate_leaf(leaf, g, create_graph, handed)
            else:
                j = cap_leaf.get(id(leaf))
                if j is not None:
                    captured[j] = _leaf_hooks(leaf, g)
    finally:
        state.enabled = prev
    return captured if capture is not None else None


def compiled_owner(roots: list[Tensor], limit: int = 100_000) -> Any:
    """The compiled function whose call recorded part of this graph, if any: its
    backward then runs as a compiled graph as well."""
    seen: set[int] = set()
    stack = [t.grad_fn for t in roots if t.grad_fn is not None]
    while stack and len(seen) < limit:
        n = stack.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        owner = getattr(n, "owner", None)
        if owner is not None:
            return owner
        stack.extend(e for e in n.next if isinstance(e, Node))
    return None


def backward(
    tensors: Any,
    grad_tensors: Any = None,
    retain_graph: bool | None = None,
    create_graph: bool = False,
    inputs: Any = None,
) -> None:
    """Accumulate gradients of ``tensors`` into the leaves' ``.grad`` (or only into
    ``inputs``), as ``torch.autograd.backward``.

    >>> import fluxion
    >>> x = fluxion.tensor([1.0, 2.0], requires_grad=True)
    >>> fluxion.autograd.backward((x * 3).sum()); x.grad
    tensor([3., 3.])
    """
    outs = _as_list(tensors)
    if retain_graph is None:
        retain_graph = create_graph
    if inputs is None:
        run(outs, _as_list(grad_tensors), retain_graph, create_graph)
        return
    ins = _as_list(inputs)
    got = run(outs, _as_list(grad_tensors), retain_graph, create_graph, capture=ins)
    assert got is not None
    handed: set[int] = set()
    for t, g in zip(ins, got):
        if g is None:
            continue
        if t.grad_fn is None:
            _accumulate_leaf(t, g, create_graph, handed)
        else:  # PyTorch accumulates into a non-leaf named in inputs= as well
            t.grad = g if t.grad is None else t.grad + g


def grad(
    outputs: Any,
    inputs: Any,
    grad_outputs: Any = None,
    retain_graph: bool | None = None,
    create_graph: bool = False,
    allow_unused: bool | None = None,
    materialize_grads: bool = False,
) -> tuple[Tensor | None, ...]:
    """Gradients of ``outputs`` with respect to ``inputs``, returned (not accumulated).

    >>> import fluxion
    >>> x = fluxion.tensor(2.0, requires_grad=True)
    >>> (dy,) = fluxion.autograd.grad(x ** 3, x, create_graph=True)
    >>> (d2y,) = fluxion.autograd.grad(dy, x); dy, d2y
    (tensor(12., grad_fn=<MulBackward0>), tensor(12.))
    """
    outs = _as_list(outputs)
    ins = _as_list(inputs)
    if retain_graph is None:
        retain_graph = create_graph
    got = run(outs, _as_list(grad_outputs), retain_graph, create_graph, capture=ins)
    assert got is not None
    result = []
    for t, g in zip(ins, got):
        if g is None:
            if materialize_grads:
                g = Tensor._make(np.zeros_like(t._data))
            elif not allow_unused:
                raise RuntimeError(
                    "One of the differentiated Tensors appears to not have been used in the "
                    "graph. Set allow_unused=True if this is the desired behavior."
                )
        elif not create_graph:
            g = g.detach()
        result.append(g)
    return tuple(result)
