"""``fluxion.compiler``: capture the dynamic graph, optimise it, fuse it into generated
C (or NumPy) kernels, cache them on disk, and explain every step.

capture (lazy.py) -> graph IR (graph.py) -> passes/ -> fusion.py -> codegen/{c,numpy}.py
-> runtime.py (+ cache.py); ``api.py`` holds ``compile`` and ``explain``; ``config.py``
the settings."""

from fluxion.compiler.api import (
    CompiledFunction,
    ExplainReport,
    GraphBreakError,
    OptimizedModule,
    compile,
    explain,
)
from fluxion.compiler.config import config

__all__ = ["CompiledFunction", "ExplainReport", "GraphBreakError", "OptimizedModule", "compile",
           "config", "explain"]
