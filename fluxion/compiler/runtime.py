"""Running a compiled graph: library calls (the op table's NumPy kernels, BLAS for
products) and generated kernels, with each intermediate freed after its last use."""

from __future__ import annotations

import ctypes
import math
import operator
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fluxion.compiler import cache, layout
from fluxion.compiler.codegen import c as c_codegen
from fluxion.compiler.codegen import numpy as np_codegen
from fluxion.compiler.codegen import templates
from fluxion.compiler.config import config
from fluxion.compiler.fusion import Kernel, fuse, fuse_into_rows
from fluxion.compiler.graph import Graph, ref_str
from fluxion.compiler.layout import normalized
from fluxion.compiler.passes import optimize
from fluxion.compiler.passes.rewrite import is_ref, map_refs, node_refs
from fluxion.ops.registry import OPS, run_kernel, run_op


@dataclass
class Program:
    """An optimised graph ready to run, with what it took to make it."""

    graph: Graph
    kernels: list[Kernel]
    schedule: list[int]
    backend: str  # "c" or "numpy"
    source: str
    passes: list[tuple[str, Graph]] = field(default_factory=list)
    times: dict[str, float] = field(default_factory=dict)
    cache_hit: bool = False
    library: str = ""
    _fns: dict[str, Any] = field(default_factory=dict)
    _last_use: dict[tuple, int] = field(default_factory=dict)
    _free_at: dict[int, list[tuple]] = field(default_factory=dict)
    _in_last_use: dict[int, int] = field(default_factory=dict)
    _in_last: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # -1: unread
    _step_of: dict[int, int] = field(default_factory=dict)  # node -> the step running it
    # kernel -> per input: (the value passed, or the array an elided view views; its dtype,
    # byte strides, normalised strides, whether contiguous, whether read through a view)
    _expect: dict[str, list[tuple]] = field(default_factory=dict)
    _np_fns: dict[str, Any] = field(default_factory=dict)
    # each C kernel's leading arguments: n, then (dynamic kernels) the address of _params
    _head: dict[str, list[int]] = field(default_factory=dict)
    _params: dict[str, np.ndarray] = field(default_factory=dict)
    _scratch_ok: set[str] = field(default_factory=set)
    _scratch: dict[str, np.ndarray] = field(default_factory=dict)
    # freed intermediates nobody else holds, by (shape, dtype), for later kernel outputs
    # (this call's or the next's): no fresh pages to fault in on every call
    _pool: dict[tuple, list[np.ndarray]] = field(default_factory=dict)
    _recycle: dict[int, np.ndarray | None] = field(default_factory=dict)  # large outputs
    # array id -> (the array, its first byte, one past its last): see _extents
    _extent_of: dict[int, tuple] = field(default_factory=dict)
    # per in-place target: whether an input read after its kernel overlaps its memory
    _blocked: dict[tuple, bool] = field(default_factory=dict)
    # the targets and arrays _blocked is for (see _check_targets)
    _checked: tuple[list, tuple] = field(default_factory=lambda: ([], ()))
    _inputs_apart: bool = False  # see _check_targets
    _targets: dict[tuple, np.ndarray] = field(default_factory=dict)
    _inputs: list[np.ndarray] = field(default_factory=list)
    # the schedule as run: (node, its kernel or None, the values to free after it)
    _steps: list[tuple[int, Kernel | None, list[tuple]]] = field(default_factory=list)
    _in_refs: list[tuple] = field(default_factory=list)  # ("in", k) for every input
    _out_plan: list[tuple[Any, int]] = field(default_factory=list)  # output, how it's handed
    _library_args: dict[int, tuple[list[bool], bool]] = field(default_factory=dict)
    _pooled: set[int] = field(default_factory=set)  # library ops written into pooled arrays
    # matrix product -> where it writes instead: (the node owning the memory, then the
    # product's shape, element strides and offset in it); see _direct_writes
    _direct: dict[int, tuple[int, tuple, tuple, int]] = field(default_factory=dict)
    # a join's planned memory, taken when its first part is written (this call's)
    _claimed: dict[int, np.ndarray] = field(default_factory=dict)
    _joins: dict[int, list[tuple[int, tuple, tuple]]] = field(default_factory=dict)
    # views only C kernels, templates and matrix products read: no step of their own, the
    # kernels get the address of the array they view (the same first element) and index
    # it the view's way; a product makes the view in its call
    _elided: dict[tuple, tuple] = field(default_factory=dict)  # view -> the array it views
    _viewing: set[int] = field(default_factory=set)  # matrix products reading such views

    def run(self, inputs: list[np.ndarray],
            targets: dict[int, np.ndarray] | None = None) -> list[np.ndarray]:
        """Execute on ``inputs``; returns the output arrays. ``targets`` maps output
        positions to the memory they must end up in (in-place writes of the captured
        code): a kernel writes straight there when nothing later reads the old contents."""
        # verify mode recomputes each kernel from its inputs afterwards: none may have been
        # overwritten in place (the values go to fresh memory and are copied back instead)
        verify = config.verify
        outputs = self.graph.outputs
        self._targets = {outputs[j]: m for j, m in targets.items() if is_ref(outputs[j])} \
            if targets and not verify else {}
        self._inputs = inputs
        self._claimed = {}
        if self._targets:
            self._check_targets(inputs)
        env: dict[tuple, Any] = dict(zip(self._in_refs, inputs)) \
            if len(inputs) == len(self._in_refs) else \
            {("in", k): a for k, a in enumerate(inputs)}
        for k, c in enumerate(self.graph.consts):
            env[("const", k)] = c
        for step, (i, k, free) in enumerate(self._steps):
            if k is not None:
                env[("n", i)] = self._run_kernel(k, env, step)
            elif ("n", i) not in self._elided:
                self._run_library(i, env)
            if verify and (k is not None or ("n", i) not in self._elided):
                self._verify(i, k, env)
            for r in free:
                self._release(env.pop(r, None))
        # (never hand out an input's memory as a new value: those are copied)
        return [env[r] if how == _VALUE else np.array(env[r], copy=True) if how == _COPY
                else np.asarray(r) for r, how in self._out_plan]

    def _run_library(self, i: int, env: dict) -> None:
        n = self.graph.nodes[i]
        op = OPS[n.op]
        refs, plain = self._library_args[i]
        if plain:  # operands are values or literals, attributes hold no values
            args = [env[a] if r else a for a, r in zip(n.args, refs)] \
                if i not in self._viewing else \
                [self._value(a, env) if r else a for a, r in zip(n.args, refs)]
            if i in self._joins and self._joined(i, args):
                env[("n", i)] = self._claimed.pop(i)
                return
            if i in self._pooled:
                env[("n", i)] = self._into_pool(i, op, args, n.attrs)
                return
            out = run_op(op, *args, **n.attrs)
        else:  # errors as eager words them (the op, its inputs' shapes)
            args = map_refs(n.args, lambda r: env[r])
            attrs = {key: map_refs(v, lambda r: env[r]) for key, v in n.attrs.items()}
            out = run_op(op, *args, **attrs)
        if op.n_aux:
            env[("n", i)] = np.asarray(out[0])
            for j, a in enumerate(out[1:]):
                env[("aux", i, j)] = np.asarray(a)
        else:
            env[("n", i)] = out if type(out) is np.ndarray else np.asarray(out)

    def _into_pool(self, i: int, op: Any, args: list, attrs: dict) -> np.ndarray:
        """Library node ``i`` (a matrix product, a copy, a join: ops that take ``out=``)
        written into a pooled (or, for a graph output, last call's) array: memory already
        mapped, where NumPy's own result would be a fresh allocation whose pages fault in
        (several microseconds a page on a virtual machine). The op's own call (and its
        errors) when the operands are not what the node recorded."""
        n = self.graph.nodes[i]
        if any(type(a) is not np.ndarray or a.dtype != n.dtype for a in args):
            return run_op(op, *args, **attrs)
        recycle = i in self._recycle
        direct = i in self._direct
        out = self._recycled(i) if recycle else self._direct_view(i) if direct else \
            self._fresh(n.shape, n.dtype)
        try:
            got = run_kernel(op.forward, np, *args, **attrs, out=out)
        except (ValueError, TypeError):  # not the shapes recorded: the op's own error
            return run_op(op, *args, **attrs)
        if got is not out and not recycle and not direct:  # a view after all (a reshape)
            self._to_pool(out)
        return got

    def _direct_view(self, i: int) -> np.ndarray:
        """Where matrix product ``i`` writes: its place in the memory of the reshape (or
        join) that reads it, so that reshape is a view and the join has nothing to copy."""
        owner, shape, strides, offset = self._direct[i]
        buf = self._claimed.get(owner)
        if buf is None:
            node = self.graph.nodes[owner]
            buf = self._fresh(node.shape, node.dtype)
            if owner in self._joins:  # its other parts write into it too
                self._claimed[owner] = buf
        size = buf.itemsize
        return np.ndarray(shape, buf.dtype, buf, offset * size, tuple(s * size for s in strides))

    def _joined(self, i: int, args: list) -> bool:
        """Whether every part of join ``i`` already lies where the join puts it (written
        there by ``_direct_view``); else the join copies as usual."""
        buf = self._claimed.get(i)
        if buf is None:
            return False
        base, size = _address(buf), buf.itemsize
        for a, (offset, shape, strides) in zip(args, self._joins[i]):
            if type(a) is not np.ndarray or a.shape != shape or a.dtype != buf.dtype \
                    or a.strides != tuple(s * size for s in strides) \
                    or _address(a) != base + offset * size:
                self._claimed.pop(i)
                return False
        return True

    def _out_buffer(self, k: Kernel, step: int, reads: list[np.ndarray],
                    viewed: list[np.ndarray]) -> np.ndarray:
        """Where kernel k writes: the in-place target when safe, a reused scratch buffer
        for a value that never leaves the graph, else fresh memory."""
        root = self.graph.nodes[k.root]
        # a template reads each input many times over: never into an input's memory
        target = None if k.template else self._safe_target(k.root, reads, viewed)
        if target is not None:
            return target
        if k.name in self._scratch_ok:
            buf = self._scratch.get(k.name)
            if buf is None:
                buf = self._scratch[k.name] = np.empty(root.shape, root.dtype)
            return buf
        if k.root in self._recycle:
            return self._recycled(k.root)
        return self._fresh(root.shape, root.dtype)

    def _recycled(self, i: int) -> np.ndarray:
        """Graph output ``i``'s array: last call's again once nothing holds it any more
        (the caller dropped the tensor: a gradient set to None by ``zero_grad``), so a
        loop neither frees nor faults in memory each call."""
        prev = self._recycle[i]
        if prev is not None and sys.getrefcount(prev) == 3:  # the dict, prev, the call
            return prev
        node = self.graph.nodes[i]
        out = self._recycle[i] = np.empty(node.shape, node.dtype)
        return out

    def _release(self, v: Any) -> None:
        """Pool an intermediate after its last read when nothing else refers to it (no
        view, no tensor, no output): reusing it can then change nothing anyone sees. The
        last view of an array that nothing else holds any more hands back the array."""
        if type(v) is not np.ndarray or v.nbytes < _POOL_MIN or sys.getrefcount(v) != 2:
            return  # (``v`` and getrefcount's own argument)
        base = v.base
        if base is not None:
            # the view's reference, ``base`` and the argument: nobody else holds it
            if type(base) is not np.ndarray or base.base is not None \
                    or sys.getrefcount(base) != 3:
                return
            v = base
        self._to_pool(v)

    def _to_pool(self, v: np.ndarray) -> None:
        free = self._pool.setdefault((v.shape, v.dtype), [])
        if len(free) < _POOL_DEPTH:
            free.append(v)

    def _check_targets(self, inputs: list[np.ndarray]) -> None:
        """For every in-place target at once: does its memory overlap a graph input that a
        step after its kernel still reads? (Then writing it in place would change what that
        step sees.) Extents overlapping is what ``np.may_share_memory`` decides. The answer
        depends only on which arrays these are (an array's memory never moves while this
        holds it), so a call with last call's arrays, a training loop's, keeps last call's."""
        refs = list(self._targets)
        arrays = (*inputs, *self._targets.values())
        last = self._checked
        if last[0] == refs and len(last[1]) == len(arrays) \
                and all(map(operator.is_, last[1], arrays)):
            return
        self._checked = (refs, arrays)
        lo, hi = self._extents(inputs)
        t_lo, t_hi = self._extents([self._targets[r] for r in refs])
        steps = np.array([self._step_of.get(r[1], -1) if r[0] == "n" else -1 for r in refs],
                         np.int64)
        overlap = (lo[None, :] < t_hi[:, None]) & (t_lo[:, None] < hi[None, :])
        later = self._in_last[None, :] > steps[:, None]
        self._blocked = dict(zip(refs, (overlap & later).any(axis=1).tolist()))
        # a kernel's reads of graph inputs need no check of their own when every input is
        # a target itself (read in place: element i before it is written) or lies apart
        # from all of them (a training step's parameters and optimizer states)
        targets = [self._targets[r] for r in refs]
        self._inputs_apart = all(inputs[j] is targets[t] for t, j in zip(*np.nonzero(overlap)))

    def _extents(self, arrays: list[Any]) -> tuple[np.ndarray, np.ndarray]:
        """``_byte_bounds`` of the arrays, remembered per array object: the parameters and
        optimizer states a training step reads are the same arrays every call (and an
        array's memory does not move while this holds it)."""
        known, seen = self._extent_of, {}
        lo, hi = [], []
        for a in arrays:
            e = known.get(id(a))
            if e is None or e[0] is not a:
                if type(a) is np.ndarray and a.size and a.flags.c_contiguous:
                    start = _address(a)
                    e = (a, start, start + a.nbytes)
                else:
                    e = (a, *(int(b[0]) for b in _byte_bounds([a])))
            seen[id(a)] = e
            lo.append(e[1])
            hi.append(e[2])
        known.update(seen)
        if len(known) > 4 * len(seen) + 64:  # forget arrays no longer read
            self._extent_of = seen
        return np.array(lo, np.int64), np.array(hi, np.int64)

    def _run_kernel(self, k: Kernel, env: dict, step: int) -> np.ndarray:
        fn = self._fns[k.name]
        if self.backend == "numpy":
            return self._store_extra(k, env, fn(*[env[r] for r in k.inputs]))
        args: list[Any] = list(self._head[k.name])
        # what an in-place output must not clobber: the arrays read through the strides of
        # an elided view of them, and the others unless they are graph inputs known apart
        keep = []
        viewed = []
        apart = self._inputs_apart
        for r, d, raw, norm, contiguous, through in self._expect[k.name]:
            a = env[r]
            if a.strides != raw or a.dtype != d:
                # not the layout the C was written for: same elements under other strides
                # of length-1 dims, a copy to contiguous, or the kernel's NumPy version
                if a.dtype == d and normalized(a.shape, a.strides) == norm:
                    pass
                elif contiguous:
                    a = np.ascontiguousarray(a, dtype=d)
                elif k.template and len(k.nodes) == 1:
                    return self._library_value(k.root, env)
                else:
                    return self._store_extra(
                        k, env, self._numpy_kernel(k)(*[self._value(r, env) for r in k.inputs]))
            if through:
                viewed.append(a)
            elif not apart or r[0] != "in":
                keep.append(a)
            args.append(_address(a))
        out = self._out_buffer(k, step, keep, viewed)
        args.append(_address(out))
        if k.extra:
            taken = [out]
            for e in k.extra:
                buf = self._extra_buffer(e, keep, taken, viewed)
                taken.append(buf)
                args.append(_address(buf))
                env[("n", e)] = buf
        if not k.template:
            fn(*args)
            return out
        aux = [self._fresh(s, d) for s, d in self.graph.nodes[k.root].aux]
        if fn(*args, *map(_address, aux)):  # an input the C leaves to NumPy (its error)
            return self._library_value(k.root, env)
        for j, a in enumerate(aux):
            env[("aux", k.root, j)] = a
        return out

    def _store_extra(self, k: Kernel, env: dict, got: Any) -> np.ndarray:
        """A NumPy kernel's result: the root's value, its extra outputs into ``env``."""
        if not k.extra:
            return got
        for e, v in zip(k.extra, got[1:]):
            env[("n", e)] = v
        return got[0]

    def _extra_buffer(self, e: int, reads: list[np.ndarray], taken: list[np.ndarray],
                      viewed: list[np.ndarray]) -> np.ndarray:
        """Where a kernel stores its extra output ``e``: its in-place target under the
        root's conditions and apart from the kernel's other outputs, else last call's
        array or pooled memory (never a scratch buffer: it leaves the graph)."""
        target = self._safe_target(e, reads, viewed)
        if target is not None and not any(np.may_share_memory(target, t) for t in taken):
            return target
        if e in self._recycle:
            return self._recycled(e)
        node = self.graph.nodes[e]
        return self._fresh(node.shape, node.dtype)

    def _safe_target(self, i: int, reads: list[np.ndarray],
                     viewed: list[np.ndarray]) -> np.ndarray | None:
        """Node ``i``'s in-place target if a kernel may write it directly: the same shape
        and dtype, contiguous and writable, not read later (``_check_targets``), and each
        element of every input read before that element is written (``viewed``: arrays
        read through an elided view's strides, which must not share its memory at all)."""
        target = self._targets.get(("n", i)) if self._targets else None
        if target is None:
            return None
        node = self.graph.nodes[i]
        flags = target.flags
        if target.shape != node.shape or target.dtype != node.dtype \
                or not (flags.c_contiguous and flags.writeable) \
                or self._blocked.get(("n", i), True):
            return None
        for a in reads:  # (the target's own array, read in place: aligned)
            if a is not target and not _aligned_or_apart(target, a):
                return None
        for a in viewed:
            if np.may_share_memory(target, a):
                return None
        return target

    def memory_plan(self) -> list[str]:
        """The copies and views this program's memory plan removed, a line each (what
        ``fluxion.explain`` shows).

        >>> import numpy as np
        >>> from fluxion.compiler.graph import GNode, Graph
        >>> f32 = np.dtype("float32")
        >>> g = Graph([((2, 3, 4, 5), f32), ((2, 3, 5, 6), f32)], [
        ...     GNode("matmul", (("in", 0), ("in", 1)), {}, (2, 3, 4, 6), f32),
        ...     GNode("permute", (("n", 0),), {"dims": (0, 2, 1, 3)}, (2, 4, 3, 6), f32),
        ...     GNode("reshape", (("n", 1),), {"shape": (2, 4, 18)}, (2, 4, 18), f32),
        ...     GNode("exp", (("n", 2),), {}, (2, 4, 18), f32)], [("n", 3)])
        >>> build_program(g, "numpy").memory_plan()
        ["%0 (matmul): written straight into %2's layout (that reshape: a view)"]
        """
        lines = []
        for m, (owner, *_) in sorted(self._direct.items()):
            where = f"its part of %{owner} (cat: nothing to copy)" if owner in self._joins \
                else f"%{owner}'s layout (that reshape: a view)"
            lines.append(f"%{m} (matmul): written straight into {where}")
        made_in = {r for i in self._viewing for r in node_refs(self.graph.nodes[i])}
        for r, src in sorted(self._elided.items()):
            n = self.graph.nodes[r[1]]
            how = "made by the matrix product that reads it, in its call" if r in made_in \
                else f"never made, its kernels read {ref_str(src)} through its strides"
            lines.append(f"%{r[1]} ({n.op} of {ref_str(n.args[0])}): no step of its own, {how}")
        return lines

    def _value(self, r: tuple, env: dict) -> Any:
        """``env[r]``, making an elided view from its source when something needs it as
        an array after all (a kernel's NumPy fallback, verify mode)."""
        if r in env or r not in self._elided:
            return env[r]
        n = self.graph.nodes[r[1]]
        return run_op(OPS[n.op], self._value(n.args[0], env), **n.attrs)

    def _library_value(self, i: int, env: dict) -> np.ndarray:
        """Node ``i`` by its library call: a template's fallback (elided views made)."""
        for r in node_refs(self.graph.nodes[i]):
            if r in self._elided and r not in env:
                env[r] = self._value(r, env)
        self._run_library(i, env)
        return env[("n", i)]

    def _fresh(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        free = self._pool.get((shape, dtype))
        return free.pop() if free else np.empty(shape, dtype)

    def _numpy_kernel(self, k: Kernel) -> Any:
        fn = self._np_fns.get(k.name)
        if fn is None:
            fn = self._np_fns[k.name] = np_codegen.load(
                np_codegen.render_kernel(self.graph, k))[k.name]
        return fn

    def _verify(self, i: int, k: Kernel | None, env: dict) -> None:
        """Recompute node i (or kernel k) with eager kernels and compare."""
        nodes = k.nodes if k is not None else [i]
        local = dict(env)
        for m in nodes:  # the elided views they read, as arrays
            for r in node_refs(self.graph.nodes[m]):
                if r in self._elided and r not in local:
                    local[r] = self._value(r, env)
        for m in nodes:
            n = self.graph.nodes[m]
            op = OPS[n.op]
            args = map_refs(n.args, lambda r: local[r])
            attrs = {key: map_refs(v, lambda r: local[r]) for key, v in n.attrs.items()}
            out = run_kernel(op.forward, np, *args, **attrs)
            local[("n", m)] = np.asarray(out[0] if op.n_aux else out)
        for m in (i, *(k.extra if k is not None else ())):
            self._compare(m, local[("n", m)], env[("n", m)])

    def _compare(self, i: int, want: np.ndarray, got: np.ndarray) -> None:
        if want.dtype.kind in "fc":
            ok = np.allclose(got, want, rtol=config.verify_rtol, atol=config.verify_atol,
                             equal_nan=True)
        else:
            ok = np.array_equal(got, want)
        if not ok:
            n = self.graph.nodes[i]
            diff = np.max(np.abs(got.astype(np.float64) - want.astype(np.float64)))
            raise RuntimeError(
                f"fluxion.compile verify: node %{i} ({n.op}, {n.dtype}{list(n.shape)}) differs "
                f"from eager by up to {diff:.3g} (rtol {config.verify_rtol}, atol "
                f"{config.verify_atol})\n{self.graph}"
            )


_VALUE, _COPY, _LITERAL = range(3)  # how run() hands out an output (_out_plan)
_POOL_MIN = 1 << 16  # bytes; smaller arrays come from malloc's free lists anyway
_POOL_DEPTH = 8  # arrays kept per (shape, dtype)
_from_buffer, _addressof = ctypes.c_char.from_buffer, ctypes.addressof


def _address(a: np.ndarray) -> int:
    """The address of an array's first element: through the buffer protocol (4x faster
    than ``a.ctypes.data``) where it applies, a writable contiguous array."""
    try:
        return _addressof(_from_buffer(a))
    except (TypeError, ValueError, BufferError):
        return a.ctypes.data


def _byte_bounds(arrays: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Each array's memory extent as (first byte, one past the last byte); empty for
    non-arrays and empty arrays (they overlap nothing)."""
    lo = np.zeros(len(arrays), np.int64)
    hi = np.zeros(len(arrays), np.int64)
    for j, a in enumerate(arrays):
        if type(a) is np.ndarray and a.size:
            start = end = _address(a)
            for n, st in zip(a.shape, a.strides):
                if st < 0:
                    start += st * (n - 1)
                else:
                    end += st * (n - 1)
            lo[j], hi[j] = start, end + a.itemsize
    return lo, hi


def _aligned_or_apart(target: np.ndarray, a: np.ndarray) -> bool:
    """Whether writing element i of ``target`` can never change what the kernel still reads
    from ``a``: no shared memory, or exactly the same elements in the same order (element i
    is read before it is written)."""
    if not np.may_share_memory(target, a):
        return True
    return (_address(a) == _address(target) and a.shape == target.shape
            and a.strides == target.strides)


# library ops whose results are always fresh memory (never a view of an input)
_FRESH = frozenset({
    "matmul", "sum", "prod", "amax", "amin", "max_dim", "min_dim", "argmax", "argmin", "all",
    "any", "cumsum", "norm2", "softmax", "log_softmax", "gelu", "cat", "pad", "unfold", "fold",
    "gather", "scatter", "scatter_add", "index_put", "index", "where", "cast", "clone", "flip",
    "roll", "tril", "triu", "sort", "topk", "slice_backward", "view_scatter",
})


def _reshape_copies(graph: Graph, n: Any, planned: dict) -> bool:
    """Whether reshape node ``n`` copies (no view expresses it) in the planned layouts:
    only then is it given pooled memory to copy into."""
    shape = graph.spec(n.args[0])[0]
    strides = planned.get(n.args[0], layout.c_strides(shape))
    return not layout.view_layout("reshape", shape, strides, n.attrs)[1]


def _kernel_only_views(graph: Graph, kernels: list[Kernel], planned: dict, outputs: set
                       ) -> dict[tuple, tuple]:
    """Views (reshape, permute, expand) that only C kernels, templates, matrix products
    and other such views read, each mapped to the array it views through its chain of
    views: their first element is that array's, and the kernels index them with the view's
    strides, planned from the array's layout; so the view is not a step at run time (a
    step of Python each, several microseconds on a cache gone cold from the previous
    kernel); a product makes the view it reads in its own call (``Program._viewing``)."""
    kernel_reads: dict[tuple, int] = {}  # times each value is read, by kernels (and products)
    for k in kernels:
        inputs = set(k.inputs)
        for m in k.nodes:
            for r in node_refs(graph.nodes[m]):
                if r in inputs:
                    kernel_reads[r] = kernel_reads.get(r, 0) + 1
    # matrix products (library calls) make the views they read inside their own call
    in_kernel = {m for k in kernels for m in k.nodes}
    for i, n in enumerate(graph.nodes):
        if n.op == "matmul" and i not in in_kernel:
            for r in node_refs(n):
                kernel_reads[r] = kernel_reads.get(r, 0) + 1
    reads: dict[tuple, int] = {}  # by anything, attributes included
    for n in graph.nodes:
        for r in node_refs(n):
            reads[r] = reads.get(r, 0) + 1
    source: dict[tuple, tuple] = {}  # view -> the array under its chain of views
    for i, n in enumerate(graph.nodes):
        if n.op in ("reshape", "permute", "expand") and is_ref(n.args[0]) \
                and len(node_refs(n)) == 1 \
                and not (n.op == "reshape" and _reshape_copies(graph, n, planned)):
            source[("n", i)] = source.get(n.args[0], n.args[0])
    elided: dict[tuple, tuple] = {}
    by_views: dict[tuple, int] = {}  # times each value is read by an elided view
    for r in sorted(source, reverse=True):  # a view's readers first
        if r not in outputs and reads.get(r, 0) > 0 \
                and reads[r] == kernel_reads.get(r, 0) + by_views.get(r, 0):
            elided[r] = source[r]
            src = graph.nodes[r[1]].args[0]
            by_views[src] = by_views.get(src, 0) + 1
    return elided


def _direct_writes(graph: Graph, pooled: set[int], outputs: set
                   ) -> tuple[dict[int, tuple], dict[int, list[tuple]]]:
    """Copies the memory plan removes: a matrix product read only by a permute read only
    by a reshape that copies (attention's heads merged back: ``(b, h, t, d) -> (b, t,
    h*d)``) is written straight in the reshape's layout, which makes the reshape a view;
    when every part of a join (``cat``) is such a reshape, all of them are written into
    the join's memory and the join copies nothing (attention's backward joins dq, dk and
    dv). Returns, per product, (the node whose memory it writes, its shape, element
    strides and offset there); and per join, each part's (offset, shape, strides)."""
    users = graph.users()

    def only_reader(i: int, op: str) -> int | None:
        u = users[i]
        if len(u) == 1 and ("n", i) not in outputs and graph.nodes[u[0]].op == op \
                and graph.nodes[u[0]].args[0] == ("n", i):
            return u[0]
        return None

    chains: dict[int, tuple[int, int]] = {}  # reshape -> (its product, the permute)
    for m in pooled:
        if graph.nodes[m].op != "matmul":
            continue
        p = only_reader(m, "permute")
        if p is None or ("n", p) in outputs:
            continue
        # reshapes of it only (view folding may leave two: (b, t, c) and (b*t, c)); once
        # the product is written in one's layout, every reshape of the permute is a view
        readers = [graph.nodes[u] for u in users[p]]
        r = users[p][0] if users[p] else None
        if r is not None and r in pooled and all(
                n.op == "reshape" and n.args[0] == ("n", p) for n in readers) \
                and not any(("n", u) in outputs for u in users[p]):
            chains[r] = (m, p)
    direct: dict[int, tuple] = {}
    joins: dict[int, list[tuple]] = {}
    for r, (m, p) in chains.items():
        # the reshape's own memory, or its slice of a join all of whose parts are chains
        owner, offset, strides = r, 0, layout.c_strides(graph.nodes[r].shape)
        (c,) = users[r] if len(users[r]) == 1 else (None,)
        join = graph.nodes[c] if c is not None else None
        if join is not None and join.op == "cat" and c in pooled and ("n", c) not in outputs \
                and all(is_ref(a) and a[0] == "n" and a[1] in chains for a in join.args) \
                and len(set(join.args)) == len(join.args):
            dim = join.attrs.get("dim", 0) % len(join.shape)
            strides = layout.c_strides(join.shape)
            before = 0
            for a in join.args:
                if a == ("n", r):
                    break
                before += graph.nodes[a[1]].shape[dim]
            owner, offset = c, before * strides[dim]
        permuted = graph.nodes[p].shape
        shaped, is_view = layout.view_layout("reshape", graph.nodes[r].shape, strides,
                                             {"shape": permuted})
        if not is_view:
            continue
        dims = graph.nodes[p].attrs["dims"]
        m_strides = [0] * len(dims)
        for axis, d in enumerate(dims):  # the permute's axis ``axis`` is the product's d
            m_strides[d] = shaped[axis]
        direct[m] = (owner, graph.nodes[m].shape, tuple(m_strides), offset)
        if owner != r:
            joins.setdefault(owner, []).append((r, offset, graph.nodes[r].shape, strides))
    for c, parts in list(joins.items()):
        order = [a[1] for a in graph.nodes[c].args]
        if len(parts) != len(order):  # a part whose layout no view expresses: copy them all
            for r, *_ in parts:
                direct.pop(chains[r][0], None)
            del joins[c]
            continue
        by_node = {r: rest for r, *rest in parts}
        joins[c] = [tuple(by_node[r]) for r in order]
    return direct, joins


def build_program(graph: Graph, backend: str = "auto", dynamic: bool = False) -> Program:
    """Optimise, fuse, generate code and load it: the whole pipeline for one graph.
    ``dynamic``: kernels read their sizes at run time (``codegen.c.Sizes``), so the same
    graph at another batch size reuses the compiled functions."""
    times: dict[str, float] = {}
    t = time.perf_counter()
    trace: list[tuple[str, Graph]] = []
    opt = optimize(graph, trace)
    times["passes"] = time.perf_counter() - t
    t = time.perf_counter()
    kernels, schedule = fuse(opt)
    use_c = backend in ("auto", "c") and cache.c_available()
    if use_c:  # library ops with a C template become kernels of their own
        roots = {k.root for k in kernels}
        for i in schedule:
            refs = None if i in roots else templates.template_for(opt, i)
            if refs is not None:
                kernels.append(Kernel(f"lib_{i}", [i], refs, template=True))
        schedule = fuse_into_rows(opt, kernels, schedule)
        use_c = bool(kernels)
    times["fusion"] = time.perf_counter() - t
    t = time.perf_counter()
    prog = Program(opt, kernels, schedule, "c" if use_c else "numpy", "", trace, times)
    planned = layout.plan(opt)
    if use_c:
        views = {r: planned[r] for k in kernels for r in k.inputs
                 if r in planned and planned[r] != layout.c_strides(opt.spec(r)[0])}
        prog._elided = _kernel_only_views(opt, kernels, planned,
                                          {r for r in opt.outputs if is_ref(r)})
        prog._viewing = {i for i in schedule if opt.nodes[i].op == "matmul" and any(
            r in prog._elided for r in node_refs(opt.nodes[i]))}
        for k in kernels:
            expect = []
            for r in k.inputs:
                src = prog._elided.get(r, r)  # an elided view: the array it views
                shape, d = opt.spec(src)
                est = planned.get(src) or layout.c_strides(shape)
                raw = tuple(e * d.itemsize for e in est)
                expect.append((src, d, raw, normalized(shape, raw),
                               est == layout.c_strides(shape), src != r))
            prog._expect[k.name] = expect
        rendered = c_codegen.render_bodies(opt, kernels, views, dynamic)
        bodies = {k: b for k, (b, _) in rendered.items()}
        for k in kernels:
            values = rendered[k.name][1]
            head: list[int] = [int(np.prod(opt.nodes[k.root].shape))]  # n
            if values:  # a dynamic kernel's sizes, read through a pointer
                prog._params[k.name] = arr = np.array(values, np.int64)
                head.append(arr.ctypes.data)
            prog._head[k.name] = head
        names = {k: cache.function_name(b) for k, b in bodies.items()}
        functions = {names[k]: b.replace(" @(", f" {names[k]}(", 1)
                     for k, b in bodies.items()}
        index = "".join(f"/* {k.name}: {names[k.name]} */\n" for k in kernels)
        prog.source = c_codegen.HEADER + index + "\n".join(functions.values())
        times["codegen"] = time.perf_counter() - t
        t = time.perf_counter()
        libs, hit = cache.build_functions(functions)
        times["compile" if not hit else "load"] = time.perf_counter() - t
        prog.cache_hit = hit
        prog.library = ", ".join(sorted({lib._name for lib in libs.values()}))
        for k in kernels:
            fn = getattr(libs[names[k.name]], names[k.name])
            n_out = 1 + len(opt.nodes[k.root].aux) + len(k.extra)
            fn.argtypes = [ctypes.c_int64] + [ctypes.c_void_p] * (
                len(prog._head[k.name]) - 1 + len(k.inputs) + n_out)
            fn.restype = ctypes.c_int64 if k.template else None
            prog._fns[k.name] = fn
    else:
        prog.source = np_codegen.render(opt, kernels)
        times["codegen"] = time.perf_counter() - t
        scope = np_codegen.load(prog.source)
        prog._fns = {k.name: scope[k.name] for k in kernels}
    if config.print_source and prog.source:
        print(f"# fluxion.compile: generated {prog.backend} source\n{prog.source}")
    # liveness: free each intermediate after the step that reads it last
    outputs = {r for r in opt.outputs if is_ref(r)}
    roots = {k.root: k for k in kernels}

    def reads_of(i: int) -> list:  # what step i reads (a kernel: through elided views)
        refs = roots[i].inputs if i in roots else node_refs(opt.nodes[i])
        return [prog._elided.get(r, r) for r in refs]

    for step, i in enumerate(schedule):
        for r in reads_of(i):
            if r[0] in ("n", "aux") and r not in outputs:
                prog._last_use[r] = step
    for r, step in prog._last_use.items():
        prog._free_at.setdefault(step, []).append(r)
    prog._steps = [(i, roots.get(i), prog._free_at.get(step, []))
                   for step, i in enumerate(schedule)]
    prog._in_refs = [("in", k) for k in range(len(opt.inputs))]
    prog._out_plan = [(r, (_COPY if r[0] in ("in", "const") else _VALUE) if is_ref(r)
                       else _LITERAL) for r in opt.outputs]
    for i in schedule:
        if i not in roots or roots[i].template:  # templates fall back to the library call
            n = opt.nodes[i]
            refs = [is_ref(a) for a in n.args]
            # nested operands (cat's list) or values inside attributes: the general path
            plain = len(node_refs(n)) == sum(refs) and not any(
                isinstance(a, (tuple, list)) and not r for a, r in zip(n.args, refs))
            prog._library_args[i] = (refs, plain)
            if plain and all(refs) and n.dtype.kind == "f" and OPS[n.op].takes_out and (
                    n.op != "matmul" or all(len(opt.spec(a)[0]) >= 2 for a in n.args)) \
                    and (n.op != "reshape" or _reshape_copies(opt, n, planned)):
                prog._pooled.add(i)
                if ("n", i) in outputs and math.prod(n.shape) * n.dtype.itemsize >= _POOL_MIN:
                    prog._recycle[i] = None
    prog._direct, prog._joins = _direct_writes(opt, prog._pooled, outputs)
    for step, i in enumerate(schedule):
        for r in reads_of(i):
            if r[0] == "in":
                prog._in_last_use[r[1]] = step
    prog._in_last = np.full(len(opt.inputs), -1, np.int64)
    for j, step in prog._in_last_use.items():
        prog._in_last[j] = step
    prog._step_of = {i: step for step, i in enumerate(schedule)}
    for k in kernels:
        for e in k.extra:  # stored by their kernel's step
            prog._step_of[e] = prog._step_of[k.root]
        for m in (k.root, *k.extra):
            node = opt.nodes[m]
            if ("n", m) in outputs and math.prod(node.shape) * node.dtype.itemsize \
                    >= _POOL_MIN:
                prog._recycle[m] = None
    # memory planning: a kernel result that only compute ops read (no views, not an
    # output) gets one buffer, reused on every call
    users = opt.users()
    in_kernel = {m for k in kernels for m in k.nodes}
    for k in kernels:
        if ("n", k.root) in outputs:
            continue
        # every reader copies (a kernel, or an op whose result is fresh): nothing that
        # leaves the graph can alias the reused buffer
        if all(u in in_kernel or opt.nodes[u].op in _FRESH for u in users[k.root]):
            prog._scratch_ok.add(k.name)
    return prog
