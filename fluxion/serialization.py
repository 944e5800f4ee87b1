"""``fluxion.save`` / ``fluxion.load``: checkpoints in the safetensors format.

Tensors go into the safetensors file as they are; the structure around them (nested dicts,
lists, tuples, numbers, strings, None) is JSON in the file's metadata. There is no pickle,
so loading a checkpoint never runs code, and ``safetensors`` itself reads the tensors."""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from typing import IO, Any

import numpy as np

from fluxion.tensor import Tensor

_META_KEY = "fluxion"
_FORMAT = 1


def _safetensors() -> Any:
    try:
        import safetensors.numpy as st
    except ImportError:
        raise ImportError(
            "fluxion.save/load need the 'safetensors' package: pip install safetensors "
            "(or pip install 'fluxion[train]')"
        ) from None
    return st


def _encode(obj: Any, tensors: dict[str, np.ndarray], path: str) -> Any:
    from fluxion._dtype import dtype as DType
    from fluxion.nn.parameter import Parameter

    if isinstance(obj, Tensor):
        key = f"t{len(tensors)}"
        d = obj._data
        tensors[key] = d if d.flags.c_contiguous else d.copy()  # (keeps 0-d shapes)
        node: dict[str, Any] = {"__tensor__": key}
        if obj.requires_grad:
            node["requires_grad"] = True
        if isinstance(obj, Parameter):
            node["parameter"] = True
        return node
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else {"__float__": repr(float(obj))}  # (np.float64)
    if isinstance(obj, np.generic):
        return _encode(obj.item(), tensors, path)
    if isinstance(obj, DType):
        return {"__dtype__": obj.name}
    if isinstance(obj, (list, tuple)):
        items = [_encode(v, tensors, f"{path}[{i}]") for i, v in enumerate(obj)]
        return items if isinstance(obj, list) else {"__tuple__": items}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj) and not any(k.startswith("__") for k in obj) \
                and type(obj) is dict:
            return {k: _encode(v, tensors, f"{path}[{k!r}]") for k, v in obj.items()}
        for k in obj:
            if not isinstance(k, (str, int, float, bool)) and k is not None:
                raise TypeError(f"fluxion.save: dict key {k!r} at {path} is not a str, int, float "
                                "or bool")
        kind = "__odict__" if isinstance(obj, OrderedDict) else "__dict__"
        return {kind: [[k, _encode(v, tensors, f"{path}[{k!r}]")] for k, v in obj.items()]}
    raise TypeError(
        f"fluxion.save: cannot store a {type(obj).__name__} at {path}; Fluxion checkpoints hold "
        "tensors, numbers, strings, None and (nested) dicts, lists and tuples — no pickle"
    )


def _decode(node: Any, tensors: dict[str, np.ndarray]) -> Any:
    from fluxion import _dtype
    from fluxion.nn.parameter import Parameter

    if isinstance(node, list):
        return [_decode(v, tensors) for v in node]
    if not isinstance(node, dict):
        return node
    if "__tensor__" in node:
        data = tensors[node["__tensor__"]]
        if node.get("parameter"):
            return Parameter(Tensor._make(data), requires_grad=node.get("requires_grad", False))
        t = Tensor._make(data)
        if node.get("requires_grad"):
            t.requires_grad_(True)
        return t
    if "__tuple__" in node:
        return tuple(_decode(v, tensors) for v in node["__tuple__"])
    if "__dict__" in node:
        return {k: _decode(v, tensors) for k, v in node["__dict__"]}
    if "__odict__" in node:
        return OrderedDict((k, _decode(v, tensors)) for k, v in node["__odict__"])
    if "__float__" in node:
        return float(node["__float__"])
    if "__dtype__" in node:
        return getattr(_dtype, node["__dtype__"] if node["__dtype__"] != "bool" else "bool_")
    return {k: _decode(v, tensors) for k, v in node.items()}


def save(obj: Any, f: str | os.PathLike | IO[bytes], **_: Any) -> None:
    """Write ``obj`` (tensors and plain values, nested in dicts/lists/tuples) to ``f``.

    >>> import fluxion, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "ckpt.safetensors")
    >>> fluxion.save({"w": fluxion.ones(2), "epoch": 3}, path)
    >>> fluxion.load(path)
    {'w': tensor([1., 1.]), 'epoch': 3}
    """
    st = _safetensors()
    tensors: dict[str, np.ndarray] = {}
    tree = _encode(obj, tensors, "obj")
    meta = {_META_KEY: json.dumps({"format": _FORMAT, "tree": tree})}
    data = st.save(tensors, metadata=meta)
    if hasattr(f, "write"):
        f.write(data)  # type: ignore[union-attr]
        return
    tmp = f"{os.fspath(f)}.tmp{os.getpid()}"
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, f)  # a crash mid-write never leaves a torn checkpoint


def load(f: str | os.PathLike | IO[bytes], map_location: Any = None,
         weights_only: bool | None = None, **_: Any) -> Any:
    """Read what ``save`` wrote. Never executes code from the file.

    >>> import fluxion, io
    >>> buf = io.BytesIO(); fluxion.save([fluxion.tensor([1, 2])], buf)
    >>> fluxion.load(io.BytesIO(buf.getvalue()))
    [tensor([1, 2])]
    """
    st = _safetensors()
    from safetensors import safe_open

    if hasattr(f, "read"):
        raw = f.read()  # type: ignore[union-attr]
        tensors = st.load(raw)
        import struct

        (n,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8:8 + n])
        meta = header.get("__metadata__", {})
    else:
        path = os.fspath(f)
        if not os.path.exists(path):
            raise FileNotFoundError(f"fluxion.load: no such file: {path}")
        with safe_open(path, framework="numpy") as fh:
            meta = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
    if _META_KEY not in meta:
        # a plain safetensors file (e.g. from another library): its tensors by name
        return {k: Tensor._make(v) for k, v in tensors.items()}
    info = json.loads(meta[_META_KEY])
    return _decode(info["tree"], {k: np.array(v) for k, v in tensors.items()})
