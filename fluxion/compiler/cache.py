"""The on-disk kernel cache and the C toolchain: one shared library per graph, keyed by a
hash of its source, the compiler and its flags; safe under concurrent processes."""

from __future__ import annotations

import ctypes
import hashlib
import os

# idle OpenMP threads sleep instead of spinning: on a small, shared machine spinning
# workers starve the BLAS threads and each other (set before the runtime starts)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import subprocess
import tempfile
import warnings
from functools import lru_cache

from fluxion.compiler.config import config

FLAGS = ["-O3", "-march=native", "-fPIC", "-shared", "-fopenmp", "-fno-math-errno",
         "-std=c11"]


@lru_cache(maxsize=8)
def toolchain(cc: str) -> str | None:
    """The compiler's version line, or None when it does not run."""
    try:
        out = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.splitlines()[0] if out.returncode == 0 and out.stdout else None


_warned: set[str] = set()


def c_available() -> bool:
    """Whether the configured C compiler works; warns once when it does not."""
    ok = toolchain(config.cc) is not None
    if not ok and config.cc not in _warned:
        _warned.add(config.cc)
        warnings.warn(
            f"fluxion.compile: no working C compiler at CC={config.cc!r}; using the NumPy "
            "code generator instead (same results, slower)", RuntimeWarning, stacklevel=3)
    return ok


@lru_cache(maxsize=1)
def cpu_signature() -> str:
    """The CPU the code is built for (``-march=native``): machine and feature flags."""
    import platform

    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    flags = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{platform.machine()} {platform.processor()} {flags}"


def key_for(source: str) -> str:
    """Content hash of source + toolchain + flags + CPU (a cache dir shared between
    different machines never hands one the other's instructions)."""
    h = hashlib.sha256()
    for part in (source, config.cc, toolchain(config.cc) or "", " ".join(FLAGS),
                 cpu_signature()):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:24]


def build(source: str) -> tuple[ctypes.CDLL, str, bool]:
    """The loaded library for ``source``: from the cache if present (hit), else compiled
    into it. Returns (library, path, hit)."""
    os.makedirs(config.cache_dir, exist_ok=True)
    key = key_for(source)
    so = os.path.join(config.cache_dir, f"{key}.so")
    hit = os.path.exists(so)
    if not hit:
        src = os.path.join(config.cache_dir, f"{key}.c")
        fd, tmp_src = tempfile.mkstemp(suffix=".c", dir=config.cache_dir)
        with os.fdopen(fd, "w") as f:
            f.write(source)
        tmp_so = tmp_src[:-2] + ".so"
        # vector math (libmvec) when the toolchain has it, else plain libm
        proc = subprocess.run([config.cc, *FLAGS, "-DFLUXION_SIMD_MATH", tmp_src, "-o", tmp_so,
                               "-lm", "-lmvec"], capture_output=True, text=True)
        if proc.returncode != 0:
            proc = subprocess.run([config.cc, *FLAGS, tmp_src, "-o", tmp_so, "-lm"],
                                  capture_output=True, text=True)
        if proc.returncode != 0:
            os.unlink(tmp_src)
            raise RuntimeError(f"fluxion.compile: the C compiler failed:\n{proc.stderr}")
        os.replace(tmp_src, src)
        os.replace(tmp_so, so)  # atomic: another process sees all of it or nothing
    return ctypes.CDLL(so), so, hit
