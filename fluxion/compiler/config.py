"""Compiler settings, in one place.

- ``cc``: the C compiler (environment ``CC``, default ``cc``).
- ``cache_dir``: where compiled kernels live (``FLUXION_CACHE_DIR``, default
  ``~/.cache/fluxion``).
- ``recompile_limit``: distinct graphs per compiled function before a warning (8).
- ``verify``: run eager beside compiled and name the first value that differs
  (``FLUXION_VERIFY=1``).
- ``autotune``: time the alternatives of a library call once per shape and keep the
  faster (``autotune.py``; ``FLUXION_AUTOTUNE=0`` turns it off).
- ``print_source``: print generated source as it is made (``FLUXION_PRINT_SOURCE=1``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field


def _default_cache() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "fluxion")


@dataclass
class Config:
    """The compiler's settings (read from the environment at import; assign to change)."""

    cc: str = field(default_factory=lambda: os.environ.get("CC", "cc"))
    cache_dir: str = field(
        default_factory=lambda: os.environ.get("FLUXION_CACHE_DIR") or _default_cache())
    recompile_limit: int = 8
    verify: bool = field(default_factory=lambda: os.environ.get("FLUXION_VERIFY") == "1")
    verify_rtol: float = 1e-4
    verify_atol: float = 1e-5
    autotune: bool = field(default_factory=lambda: os.environ.get("FLUXION_AUTOTUNE") != "0")
    print_source: bool = field(
        default_factory=lambda: os.environ.get("FLUXION_PRINT_SOURCE") == "1")


config = Config()
