"""``fluxion.compile`` and ``fluxion.explain``."""

from __future__ import annotations

import functools
import gc
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fluxion.compiler.config import config
from fluxion.compiler.graph import Graph
from fluxion.compiler.lazy import Break, LazyArray, Segment, state, user_location
from fluxion.compiler.runtime import Program, build_program
from fluxion.ops import registry


class GraphBreakError(RuntimeError):
    """Raised with ``fullgraph=True`` when the function needs a value mid-graph."""


@dataclass
class Recompile:
    """A new graph for a function that already had one, and what differed.
    ``sizes_only``: only sizes changed and the kernels read sizes at run time, so the
    compiled functions were reused (such a change does not count toward the limit)."""

    reason: str
    graph_index: int
    sizes_only: bool = False


@dataclass
class CompileStats:
    """What a compiled function has done so far."""

    calls: int = 0
    graphs: int = 0
    cache_hits: int = 0
    breaks: list[Break] = field(default_factory=list)
    recompiles: list[Recompile] = field(default_factory=list)
    # backward passes and optimizer steps appended from last call's recording (replay)
    backward_replays: int = 0
    step_replays: int = 0


def dynamic_ok(dynamic: bool | None) -> bool:
    """``dynamic=False`` pins every value; None (default) adapts after a change."""
    return dynamic is not False


def _strip_literals(key: tuple) -> tuple:
    """A graph key with the Python numbers in op arguments blanked out."""
    inputs, nodes, outputs, consts = key

    def blank(args: tuple) -> tuple:  # args as _freeze gives them: (tag, items)
        if args[0] == "ints":
            return ("#",) * len(args[1])
        return tuple("#" if isinstance(a, tuple) and a and a[0] in ("bool", "int", "float")
                     else a for a in args[1])

    return (inputs, tuple((n[0], blank(n[1]), *n[2:]) for n in nodes), outputs, consts)


def _strip_sizes(key: tuple) -> tuple:
    """A graph key with every size blanked: input and node shapes keep only their rank,
    integers in arguments and attributes (reshape targets, slice bounds) become '#'."""
    inputs, nodes, outputs, consts = key

    def blank(v: Any) -> Any:
        if isinstance(v, tuple):
            if len(v) == 2 and v[0] == "ints":
                return ("ints", len(v[1]))
            if len(v) == 2 and v[0] == "int":
                return "#"
            if v and v[0] == "slice":
                return ("slice", *("#" if isinstance(x, int) else x for x in v[1:]))
            return tuple(blank(x) for x in v)
        return v

    return (tuple((len(shape), d) for shape, d in inputs),
            tuple((n[0], blank(n[1]), blank(n[2]), len(n[3]), n[4]) for n in nodes),
            outputs, consts)


def _thaw(v: Any) -> Any:
    """Undo ``graph._freeze`` for printing."""
    if isinstance(v, tuple) and len(v) == 2 and v[0] == "ints":
        return v[1]
    if isinstance(v, tuple) and len(v) == 2 and v[0] in ("tuple", "list"):
        return tuple(_thaw(x) for x in v[1])
    if isinstance(v, tuple) and len(v) == 2 and v[0] in ("bool", "int", "float"):
        return v[1]
    return v


def _node_text(n: tuple) -> str:
    from fluxion.compiler.graph import ref_str

    args = ", ".join(ref_str(_thaw(a)) for a in _thaw(n[1]))
    attrs = "".join(f", {k}={_thaw(v)!r}" for k, v in n[2])
    return f"{n[0]}({args}{attrs})"


def _describe_change(old: tuple, new: tuple) -> str:
    (oin, onodes, _oout, _), (nin, nnodes, _nout, _) = old, new
    if oin != nin:
        for k, (a, b) in enumerate(zip(oin, nin)):
            if a != b:
                return f"input {k} changed from {a[1]}{list(a[0])} to {b[1]}{list(b[0])}"
        return f"the number of inputs changed ({len(oin)} -> {len(nin)})"
    if len(onodes) != len(nnodes):
        return f"the traced ops changed ({len(onodes)} -> {len(nnodes)} ops)"
    for i, (a, b) in enumerate(zip(onodes, nnodes)):
        if a != b:
            return f"op %{i} changed: {_node_text(a)} -> {_node_text(b)}"
    return "the outputs changed"


class CompiledFunction:
    """A function whose tensor ops run as compiled, fused graphs.

    Python runs on every call (so control flow and Python values are never stale); the ops
    are captured, and each distinct graph is optimised and compiled once."""

    def __init__(self, fn: Callable[..., Any], fullgraph: bool = False,
                 dynamic: bool | None = None, backend: str = "auto",
                 mode: str | None = None) -> None:
        if backend not in ("auto", "c", "numpy"):
            raise ValueError(f"fluxion.compile: backend must be 'auto', 'c' or 'numpy', got "
                             f"{backend!r}")
        self.fn, self.fullgraph, self.dynamic = fn, fullgraph, dynamic
        self.backend, self.mode = backend, mode
        self.programs: dict[tuple, Program] = {}
        self.order: list[tuple] = []
        self.slot_keys: dict[int, list[tuple]] = {}  # graph position in a call -> its keys
        # position -> last (nodes, inputs, outputs, key, program)
        self._last_graph: dict[int, tuple] = {}
        self._slot = 0
        self._memo: dict[int, tuple[list, list]] = {}  # slot -> last recording there
        # (what, slot, position, ...) -> the backward or optimizer step recorded there
        # (compiler.replay)
        self._replays: dict[tuple, Any] = {}
        self.stats = CompileStats()
        self.timings: dict[str, float] = {"run_s": 0.0}
        self.last_programs: list[Program] = []
        self._warned_limit = False
        self.lift_scalars = dynamic is True  # Python scalars as inputs, not constants
        self.dynamic_sizes = dynamic is True  # kernels read sizes at run time
        self._structural: dict[int, int] = {}  # slot -> recompiles that were not sizes
        functools.update_wrapper(self, fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if state.segment is not None:  # already recording (nested compiled call): inline
            return self.fn(*args, **kwargs)
        self.stats.calls += 1
        self.last_programs = []
        self._slot = 0
        return self._record(lambda: self.fn(*args, **kwargs))

    def run_backward(self, thunk: Callable[[], None]) -> None:
        """Run a backward pass as a captured graph (compiled gradient code); what
        ``.backward()`` does on a tensor a compiled call returned."""
        if state.segment is not None:
            thunk()
            return
        self._slot = 0
        self._record(thunk)

    def _record(self, thunk: Callable[[], Any]) -> Any:
        """Run ``thunk`` with capture on; compile and run what is left at the end.

        The cycle collector waits until the call is over: capture makes thousands of
        short-lived nodes that would otherwise trigger full collections of the whole heap
        (80 ms each on the GPT, every fourth step); they are freed by reference counting,
        and any cyclic garbage is collected as usual after the call."""
        registry.recording += 1
        collecting = gc.isenabled()
        gc.disable()
        try:
            return self._record_segments(thunk)
        finally:
            registry.recording -= 1
            if collecting:
                gc.enable()

    def _record_segments(self, thunk: Callable[[], Any]) -> Any:
        state.segment = Segment(self)
        try:
            out = thunk()
        except BaseException:
            # eager would have run the ops before the error: run them (in-place writes
            # and escaped values stay valid), then let the error through
            seg = state.segment
            state.segment = None
            if seg is not None:
                try:
                    seg.flush("return")
                except Exception:
                    seg.done = True
            raise
        seg = state.segment
        if seg is not None:
            seg.flush("return")
        state.segment = None
        return out

    # --- called by segments ----------------------------------------------------------
    def _segment_finished(self, seg: Segment, reason: str) -> None:
        if reason == "return":
            return
        where = user_location()
        self.stats.breaks.append(Break(reason, where))
        if self.fullgraph:
            raise GraphBreakError(
                f"fluxion.compile(fullgraph=True): graph break at {where}: {reason}. Move "
                "the data-dependent step out of the compiled function, or drop fullgraph=True."
            )
        state.segment = Segment(self)  # recording resumes after the value is produced

    def _program_for(self, graph: Graph, reason: str, same_nodes: bool = False) -> Program:
        """The compiled program for a captured graph; ``same_nodes``: capture found every
        node equal to the last graph's at this place."""
        slot = self._slot
        # the same ops as last time at this place (node equality, cheap) -> the same key;
        # equal-valued numbers of another type (2 and 2.0) leave every node's dtype, and
        # so the result, the same
        last = self._last_graph.get(slot)
        self._slot += 1
        if last is not None and (same_nodes or last[0] == graph.nodes) \
                and last[1] == graph.inputs and last[2] == graph.outputs:
            # last call's graph again (the steady state of a loop): its program, without
            # hashing the key
            prog = last[4]
            self._last_graph[slot] = (graph.nodes, graph.inputs, graph.outputs, last[3], prog)
            prog.captured = graph  # type: ignore[attr-defined]
            self.last_programs.append(prog)
            return prog
        key = graph.key()
        seen = self.slot_keys.setdefault(slot, [])
        sizes_only = bool(seen) and key not in seen and \
            _strip_sizes(seen[-1]) == _strip_sizes(key)
        if sizes_only and dynamic_ok(self.dynamic):
            # shapes changed: from now on kernels take their sizes at run time, so the
            # next batch size reuses them (torch.compile's automatic dynamic shapes)
            self.dynamic_sizes = True
        prog = self.programs.get(key)
        if prog is None:
            t = time.perf_counter()
            prog = build_program(graph, self.backend, dynamic=self.dynamic_sizes)
            prog.times["total"] = time.perf_counter() - t
            self.programs[key] = prog
        if key not in seen:
            if seen and not self.lift_scalars and dynamic_ok(self.dynamic) \
                    and _strip_literals(seen[-1]) == _strip_literals(key):
                # only Python numbers changed: from the next call they are inputs (one
                # more graph instead of one per value), as torch.compile's automatic dynamic
                self.lift_scalars = True
            if seen:
                why = _describe_change(seen[-1], key)
                # sizes alone, with kernels that already read sizes at run time: nothing
                # compiled (a kernel-cache hit), so not a step toward the limit
                reused = sizes_only and prog.cache_hit
                self.stats.recompiles.append(Recompile(why, slot, reused))
                if not reused:
                    self._structural[slot] = self._structural.get(slot, 0) + 1
                if self._structural.get(slot, 0) >= config.recompile_limit \
                        and not self._warned_limit:
                    self._warned_limit = True
                    where = user_location()
                    file, _, line = where.rpartition(":")
                    warnings.warn_explicit(
                        f"fluxion.compile: {getattr(self.fn, '__name__', repr(self.fn))} has "
                        "been compiled for "
                        f"{len(seen) + 1} different graphs at one place (limit "
                        f"{config.recompile_limit}); the last change: {why}. Pass "
                        "dynamic=True, keep shapes fixed, or raise "
                        "fluxion.compiler.config.recompile_limit.", RuntimeWarning, file,
                        int(line) if line.isdigit() else 0)
            seen.append(key)
            self.order.append(key)
            self.stats.graphs += 1
            if prog.cache_hit:
                self.stats.cache_hits += 1
        self._last_graph[slot] = (graph.nodes, graph.inputs, graph.outputs, key, prog)
        prog.captured = graph  # type: ignore[attr-defined]
        self.last_programs.append(prog)
        return prog

    def show_source(self) -> str:
        """The generated source of every graph compiled so far."""
        return "\n\n".join(f"# graph {i} ({p.backend})\n{p.source}"
                           for i, p in enumerate(self.programs.values()))

    def __repr__(self) -> str:
        return f"<compiled {getattr(self.fn, '__name__', self.fn)!s}: {self.stats.graphs} graphs>"


def _optimized_module_class() -> type:
    from fluxion.nn.module import Module

    class OptimizedModule(Module):
        """What ``fluxion.compile(module)`` returns: a Module whose calls run compiled;
        its parameters are the original's (held as ``_orig_mod``, as in PyTorch)."""

        def __init__(self, module: Module, compiled: CompiledFunction) -> None:
            super().__init__()
            d = self.__dict__
            d["_orig_mod"], d["_compiled"] = module, compiled
            # the same parameters, buffers and children (and so the same state_dict keys)
            for key in ("_parameters", "_buffers", "_modules", "_non_persistent_buffers_set"):
                d[key] = module.__dict__[key]
            d["training"] = module.training

        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            return self._compiled(*args, **kwargs)

        def forward(self, *args: Any, **kwargs: Any) -> Any:
            return self._compiled(*args, **kwargs)

        def train(self, mode: bool = True) -> Module:
            self._orig_mod.train(mode)
            self.__dict__["training"] = mode
            return self

        def __getattr__(self, name: str) -> Any:
            return getattr(self.__dict__["_orig_mod"], name)

        def __setattr__(self, name: str, value: Any) -> None:
            setattr(self.__dict__["_orig_mod"], name, value)

        def __repr__(self) -> str:
            return f"OptimizedModule({self._orig_mod!r})"

    return OptimizedModule


OptimizedModule = _optimized_module_class()


def compile(fn: Any = None, *, fullgraph: bool = False, dynamic: bool | None = None,
            backend: str = "auto", mode: str | None = None) -> Any:
    """Compile a function or module: ops are captured and run as fused, generated code
    (C, or NumPy without a compiler). Also a decorator, with or without arguments.

    >>> import fluxion
    >>> @fluxion.compile
    ... def f(x):
    ...     return (x * 2 + 1).relu()
    >>> f(fluxion.tensor([-1.0, 0.5]))
    tensor([0., 2.])
    """
    if fn is None:
        return lambda f: compile(f, fullgraph=fullgraph, dynamic=dynamic, backend=backend,
                                 mode=mode)
    from fluxion.nn.module import Module

    if isinstance(fn, Module):
        return OptimizedModule(fn, CompiledFunction(fn.__call__, fullgraph, dynamic, backend,
                                                    mode))
    return CompiledFunction(fn, fullgraph, dynamic, backend, mode)


@dataclass
class ExplainReport:
    """What compiling a function did: graphs, breaks, guards, recompiles, kernels, source
    and the time each stage took."""

    graph_count: int
    graph_break_count: int
    break_reasons: list[Break]
    guards: list[str]
    recompiles: list[Recompile]
    graphs: list[str]
    optimized_graphs: list[str]
    kernels: list[list[str]]
    sources: list[str]
    timings: dict[str, float]
    # per graph, the copies and views the memory plan removed (``Program.memory_plan``)
    memory: list[list[str]] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"Fluxion compile report: {self.graph_count} graph(s), "
                 f"{self.graph_break_count} graph break(s)"]
        for b in self.break_reasons:
            lines.append(f"  break at {b.location}: {b.reason}")
        lines.append("Guards (a new value recompiles):")
        lines += [f"  {g}" for g in self.guards]
        if self.recompiles:
            lines.append("Recompiles:")
            lines += [f"  graph {r.graph_index}: {r.reason}"
                      + (" (sizes only: the compiled kernels were reused)" if r.sizes_only
                         else "") for r in self.recompiles]
        memory = self.memory or [[] for _ in self.graphs]
        for i, (g, og, ks, mem, src) in enumerate(zip(self.graphs, self.optimized_graphs,
                                                      self.kernels, memory, self.sources)):
            lines += [f"--- graph {i} as captured ---", g, f"--- graph {i} optimised ---", og,
                      f"--- graph {i} fused kernels ---"]
            lines += [f"  {k}" for k in ks] or ["  (none)"]
            if mem:
                lines += [f"--- graph {i} copies and views removed ---",
                          *(f"  {m}" for m in mem)]
            lines += [f"--- graph {i} generated source ---", src or "(no kernels)"]
        lines.append("Time per stage (s): " + ", ".join(
            f"{k} {v:.4f}" for k, v in self.timings.items()))
        return "\n".join(lines)


def explain(fn: Any, *args: Any, **kwargs: Any) -> ExplainReport:
    """Compile ``fn`` (a function, module or compiled function), call it once on the
    arguments and report every step; also prints the report.

    >>> import fluxion
    >>> def f(x):
    ...     y = x.exp()
    ...     if y.sum() > 3:        # data-dependent: a graph break
    ...         return y * 2
    ...     return y
    >>> r = fluxion.explain(f, fluxion.ones(2))  # doctest: +ELLIPSIS
    Fluxion compile report: 2 graph(s), 1 graph break(s)
    ...
    >>> r.graph_break_count
    1
    """
    from fluxion.nn.module import Module

    if isinstance(fn, OptimizedModule):
        cf = fn._compiled
    elif isinstance(fn, CompiledFunction):
        cf = fn
    elif isinstance(fn, Module):
        cf = CompiledFunction(fn.__call__)
    else:
        cf = CompiledFunction(fn)
    before_breaks = len(cf.stats.breaks)
    before_recompiles = len(cf.stats.recompiles)
    t = time.perf_counter()
    cf(*args, **kwargs)
    total = time.perf_counter() - t
    progs = cf.last_programs
    timings: dict[str, float] = {}
    for p in progs:
        for k, v in p.times.items():
            timings[k] = timings.get(k, 0.0) + v
    timings["call_total"] = total
    guards = []
    for i, p in enumerate(progs):
        g = p.captured  # type: ignore[attr-defined]
        specs = ", ".join(f"{d}{list(s)}" for s, d in g.inputs)
        sizes = "sizes read at run time (dynamic)" if p._params else "sizes written in"
        guards.append(f"graph {i}: inputs ({specs}); {len(g.nodes)} ops with their Python "
                      f"constants; kernels with {sizes}; control flow and "
                      "requires_grad/training are re-decided by running the Python each call")
    if any(k[0] == "backward" for k in cf._replays):
        guards.append(f"backward: recorded once, replayed while the autograd graph's "
                      "fingerprint (ops, attributes, saved values, edges, leaves' gradients) "
                      f"and the recording before it are unchanged "
                      f"(replayed {cf.stats.backward_replays} time(s) so far)")
    report = ExplainReport(
        graph_count=len(progs),
        graph_break_count=len(cf.stats.breaks) - before_breaks,
        break_reasons=cf.stats.breaks[before_breaks:],
        guards=guards,
        recompiles=cf.stats.recompiles[before_recompiles:],
        graphs=[str(p.captured) for p in progs],  # type: ignore[attr-defined]
        optimized_graphs=[str(p.graph) for p in progs],
        kernels=[[f"{k.name}: " + " -> ".join(p.graph.nodes[m].op for m in k.nodes)
                  + (" (C template)" if k.template else "")
                  + (f" (also stores {', '.join(f'%{e}' for e in k.extra)})" if k.extra
                     else "") for k in p.kernels]
                 for p in progs],
        sources=[p.source for p in progs],
        timings=timings,
        memory=[p.memory_plan() for p in progs],
    )
    print(report)
    return report


__all__ = ["CompiledFunction", "ExplainReport", "GraphBreakError", "LazyArray",
           "OptimizedModule", "compile", "explain"]
