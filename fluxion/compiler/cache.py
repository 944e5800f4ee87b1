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

FLAGS = ["-O2", "-march=native", "-fPIC", "-shared", "-fopenmp", "-fno-math-errno",
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


_LIBS: dict[str, ctypes.CDLL] = {}


def function_name(body: str) -> str:
    """A kernel function's name: the hash of its code, toolchain, flags and CPU."""
    from fluxion.compiler.codegen.c import HEADER

    return "k_" + key_for(HEADER + body)[:20]  # the helpers it may call are part of it


def _compile(source: str, so_path: str) -> subprocess.Popen:
    fd, src = tempfile.mkstemp(suffix=".c", dir=config.cache_dir)
    with os.fdopen(fd, "w") as f:
        f.write(source)
    tmp_so = src[:-2] + ".so"
    # vector math (libmvec) when the toolchain has it; _finish retries with plain libm
    proc = subprocess.Popen([config.cc, *FLAGS, "-DFLUXION_SIMD_MATH", src, "-o", tmp_so,
                             "-lm", "-lmvec"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    proc.fluxion = (src, tmp_so, so_path)  # type: ignore[attr-defined]
    return proc


def _finish(proc: subprocess.Popen) -> None:
    src, tmp_so, so_path = proc.fluxion  # type: ignore[attr-defined]
    proc.communicate()
    if proc.returncode != 0:
        retry = subprocess.run([config.cc, *FLAGS, src, "-o", tmp_so, "-lm"],
                               capture_output=True, text=True)
        if retry.returncode != 0:
            os.unlink(src)
            raise RuntimeError(f"fluxion.compile: the C compiler failed:\n{retry.stderr}")
    os.replace(src, so_path[:-3] + ".c")
    os.replace(tmp_so, so_path)  # atomic: another process sees all of it or nothing


def _atomic_write(path: str, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path))
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def build_functions(functions: dict[str, str]) -> tuple[dict[str, ctypes.CDLL], bool]:
    """Load (or compile) kernel functions: ``name -> C source`` with content-hash names.

    Each function is cached on its own (an index file names the library that holds it), so
    a graph that differs from an earlier one compiles only its new kernels; the missing
    ones are compiled in parallel, one library per core. Returns each function's library
    and whether all came from the cache."""
    from fluxion.compiler.codegen.c import HEADER

    os.makedirs(config.cache_dir, exist_ok=True)
    where: dict[str, str] = {}
    missing: list[str] = []
    for name in functions:
        try:
            with open(os.path.join(config.cache_dir, f"{name}.idx")) as f:
                so = os.path.join(config.cache_dir, f.read().strip())
            if os.path.exists(so):
                where[name] = so
                continue
        except OSError:
            pass
        missing.append(name)
    if missing:
        parts = max(1, min(os.cpu_count() or 1, len(missing) // 16))
        chunks = [missing[i::parts] for i in range(parts)]
        procs = []
        for chunk in chunks:
            source = HEADER + "\n".join(functions[n] for n in chunk)
            so = os.path.join(config.cache_dir, f"{key_for(source)}.so")
            procs.append((chunk, so, None if os.path.exists(so) else _compile(source, so)))
        for chunk, so, proc in procs:
            if proc is not None:
                _finish(proc)
            for name in chunk:
                _atomic_write(os.path.join(config.cache_dir, f"{name}.idx"),
                              os.path.basename(so))
                where[name] = so
    libs = {}
    for name, so in where.items():
        lib = _LIBS.get(so)
        if lib is None:
            lib = _LIBS[so] = ctypes.CDLL(so)
        libs[name] = lib
    return libs, not missing
