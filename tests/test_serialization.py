"""``fluxion.save`` / ``fluxion.load``: checkpoints in the safetensors format. Round trips of
nested structures (containers, plain values, every dtype, Parameters), paths and file
objects, model + optimizer state, plain safetensors files from other writers, clear errors
for what cannot be stored, and no pickle anywhere."""

from __future__ import annotations

import io
import json
import math
import os
import pathlib
import pickle
from collections import OrderedDict

import numpy as np
import pytest

import fluxion
from fluxion import nn
from fluxion.nn.parameter import Parameter

pytest.importorskip("safetensors")
from safetensors import safe_open
from safetensors.numpy import save_file

DTYPES = ["bool", "uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64"]


def _dtype(name):
    return fluxion.bool if name == "bool" else getattr(fluxion, name)


def assert_same(got, want, where="obj"):
    """Structural equality: same container types (exactly), same keys in the same order,
    equal plain values (nan equals nan, -0.0 keeps its sign), tensors of the same class,
    dtype, shape, requires_grad and bit-identical values."""
    assert type(got) is type(want), f"{where}: {type(got).__name__} != {type(want).__name__}"
    if isinstance(want, fluxion.Tensor):
        assert got.dtype == want.dtype, where
        assert tuple(got.shape) == tuple(want.shape), where
        assert got.requires_grad == want.requires_grad, where
        np.testing.assert_array_equal(got.detach().numpy(), want.detach().numpy(), err_msg=where)
    elif isinstance(want, dict):
        assert list(got.keys()) == list(want.keys()), where
        for k in want:
            assert_same(got[k], want[k], f"{where}[{k!r}]")
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same(g, w, f"{where}[{i}]")
    elif isinstance(want, float):
        if math.isnan(want):
            assert math.isnan(got), where
        else:
            assert got == want and math.copysign(1, got) == math.copysign(1, want), where
    else:
        assert got == want, where


def roundtrip(obj):
    buf = io.BytesIO()
    fluxion.save(obj, buf)
    return fluxion.load(io.BytesIO(buf.getvalue()))


# --- nested structures and plain values -----------------------------------------------
def test_nested_structure_roundtrip():
    obj = {
        "ints": [0, -7, 2**62, True, False],
        "floats": (1.5, -0.0, float("inf"), float("-inf"), float("nan"), 1e-320, 1 / 3),
        "none": None,
        "text": ["", "héllo wörld ✓", "__tensor__", '{"json": 1}'],
        "nested": {"a": [{"b": (None, [[], (), {}])}], "empty_od": OrderedDict()},
        "od": OrderedDict([("z", 1), ("a", fluxion.tensor([1.0, 2.0]))]),
        "int_keys": {3: "three", -1: [1, 2], 0: fluxion.arange(3)},
        "mixed_keys": {1: "int", "1": "str", 2.5: "float", None: "none"},
        "dunder": {"__tensor__": "t0", "__tuple__": [1], "__float__": "nan"},
        "tensor_in_tuple": (fluxion.ones(2, 2), (fluxion.zeros(1),)),
        "dtype": fluxion.float16,
    }
    got = roundtrip(obj)
    assert_same(got, obj)


@pytest.mark.parametrize("top", [[1, 2], (1, "a"), OrderedDict(x=1), {}, 5, "s", None, 2.5,
                                 float("nan")])
def test_top_level_values(top):
    assert_same(roundtrip(top), top)


@pytest.mark.parametrize("name", DTYPES)
@pytest.mark.parametrize("shape", [(), (0,), (2, 0, 3), (3,), (2, 3)], ids=str)
def test_every_dtype_and_shape(name, shape):
    rng = np.random.default_rng(0)
    a = np.asarray(rng.standard_normal(shape) * 50).astype(name if name != "bool" else "?")
    t = fluxion.from_numpy(a)
    assert t.dtype == _dtype(name)
    got = roundtrip({"t": t, "list": [t], "dtype": t.dtype})
    assert_same(got["t"], t)
    assert_same(got["list"][0], t)
    assert got["dtype"] == _dtype(name)
    assert got["t"].numpy().shape == shape  # a 0-d tensor stays 0-d


def test_float_specials_in_tensors_are_bitwise():
    t = fluxion.tensor([0.0, -0.0, float("inf"), -float("inf"), float("nan"), 1e-45],
                       dtype=fluxion.float32)
    got = roundtrip(t)
    assert got.numpy().tobytes() == t.numpy().tobytes()


def test_parameters_keep_class_and_requires_grad():
    p = Parameter(fluxion.randn(2, 3))
    frozen = Parameter(fluxion.randn(4), requires_grad=False)
    leaf = fluxion.randn(3, requires_grad=True)
    plain = fluxion.randn(3)
    got = roundtrip({"p": p, "frozen": frozen, "leaf": leaf, "plain": plain})
    assert type(got["p"]) is Parameter and got["p"].requires_grad
    assert type(got["frozen"]) is Parameter and not got["frozen"].requires_grad
    assert type(got["leaf"]) is fluxion.Tensor and got["leaf"].requires_grad
    assert got["leaf"].is_leaf
    assert type(got["plain"]) is fluxion.Tensor and not got["plain"].requires_grad
    for k, want in (("p", p), ("frozen", frozen), ("leaf", leaf), ("plain", plain)):
        np.testing.assert_array_equal(got[k].detach().numpy(), want.detach().numpy())


def test_non_contiguous_and_view_tensors():
    base = fluxion.arange(24, dtype=fluxion.float32).reshape(4, 6)
    views = {"t": base.t(), "step": base[:, ::2], "row": base[1:3], "rev": base.flip(0)}
    got = roundtrip(views)
    for k, v in views.items():
        np.testing.assert_array_equal(got[k].numpy(), v.numpy())
        assert tuple(got[k].shape) == tuple(v.shape)


def test_loaded_tensors_are_independent_and_writable():
    t = fluxion.ones(3)
    got = roundtrip({"a": t, "b": t})
    got["a"].add_(1)  # in-place on a loaded tensor works and touches nothing else
    assert got["a"].tolist() == [2.0, 2.0, 2.0]
    assert got["b"].tolist() == [1.0, 1.0, 1.0]
    assert t.tolist() == [1.0, 1.0, 1.0]


def test_numpy_scalars_become_python_numbers():
    got = roundtrip({"i": np.int64(3), "f": np.float32(0.5), "b": np.bool_(True)})
    assert got == {"i": 3, "f": 0.5, "b": True}
    assert type(got["i"]) is int and type(got["f"]) is float and type(got["b"]) is bool
    # np.float64 is a float subclass: its non-finite values must load back too
    got = roundtrip([np.float64("nan"), np.float64("-inf"), np.float64(2.5), np.float32("inf")])
    assert math.isnan(got[0]) and got[1:] == [-math.inf, 2.5, math.inf]
    assert all(type(v) is float for v in got)


# --- files ------------------------------------------------------------------------------
def test_str_and_pathlib_paths(tmp_path):
    obj = {"w": fluxion.randn(3, 2), "step": 7}
    for path in (str(tmp_path / "a.safetensors"), tmp_path / "b.safetensors"):
        fluxion.save(obj, path)
        assert_same(fluxion.load(path), obj)
        assert_same(fluxion.load(os.fspath(path)), obj)
    # written atomically: no temporary file is left beside the checkpoint
    assert sorted(os.listdir(tmp_path)) == ["a.safetensors", "b.safetensors"]


def test_overwrite_existing_checkpoint(tmp_path):
    path = tmp_path / "c.safetensors"
    fluxion.save({"v": 1}, path)
    fluxion.save({"v": 2, "t": fluxion.zeros(2)}, path)
    assert_same(fluxion.load(path), {"v": 2, "t": fluxion.zeros(2)})


def test_real_file_objects(tmp_path):
    path = tmp_path / "f.safetensors"
    obj = [fluxion.tensor([1, 2, 3]), {"x": (1.0, None)}]
    with open(path, "wb") as f:
        fluxion.save(obj, f)
    with open(path, "rb") as f:
        assert_same(fluxion.load(f), obj)
    assert_same(fluxion.load(path), obj)  # the same bytes as a path


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.safetensors"):
        fluxion.load(tmp_path / "nope.safetensors")


# --- model and optimizer state ------------------------------------------------------------
def _net():
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))


def _train(model, opt, steps, seed):
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        x = fluxion.tensor(rng.standard_normal((16, 4)).astype(np.float32))
        y = fluxion.tensor(rng.standard_normal((16, 2)).astype(np.float32))
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        opt.step()


@pytest.mark.parametrize("opt_name", ["SGD", "Adam"])
def test_model_and_optimizer_state_dict_roundtrip(tmp_path, opt_name):
    kwargs = {"lr": 0.05, "momentum": 0.9} if opt_name == "SGD" else {"lr": 0.01}
    fluxion.manual_seed(0)
    model = _net()
    opt = getattr(fluxion.optim, opt_name)(model.parameters(), **kwargs)
    _train(model, opt, 3, seed=1)
    path = tmp_path / "ckpt.safetensors"
    fluxion.save({"model": model.state_dict(), "optim": opt.state_dict(), "epoch": 3}, path)

    fluxion.manual_seed(123)  # a different initialisation, then load
    model2 = _net()
    opt2 = getattr(fluxion.optim, opt_name)(model2.parameters(), **kwargs)
    state = fluxion.load(path)
    assert state["epoch"] == 3
    assert list(state["model"].keys()) == list(model.state_dict().keys())
    assert_same(state["model"], model.state_dict())
    model2.load_state_dict(state["model"])
    opt2.load_state_dict(state["optim"])
    assert_same(opt2.state_dict()["param_groups"], opt.state_dict()["param_groups"])
    for (k, a), b in zip(model.state_dict().items(), model2.state_dict().values()):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=k)
    # the buffers came back with their dtypes (num_batches_tracked is int64)
    assert model2[1].num_batches_tracked.dtype == fluxion.int64
    assert int(model2[1].num_batches_tracked) == 3

    # both continue identically
    _train(model, opt, 2, seed=2)
    _train(model2, opt2, 2, seed=2)
    for (k, a), b in zip(model.state_dict().items(), model2.state_dict().values()):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=k)


def test_state_dict_keeps_ordered_dict_type():
    sd = nn.Linear(2, 3).state_dict()
    got = roundtrip(sd)
    assert type(got) is type(sd)
    assert list(got) == ["weight", "bias"]


# --- other writers' files and the file format ----------------------------------------------
def test_load_plain_safetensors_file(tmp_path):
    arrays = {
        "embed.weight": np.arange(12, dtype=np.float32).reshape(3, 4),
        "scale": np.array(2.5, dtype=np.float64),
        "ids": np.array([1, 2, 3], dtype=np.int32),
        "mask": np.array([True, False]),
        "empty": np.zeros((0, 2), dtype=np.float16),
    }
    path = tmp_path / "plain.safetensors"
    save_file(arrays, str(path), metadata={"format": "np"})
    for got in (fluxion.load(path), fluxion.load(io.BytesIO(path.read_bytes()))):
        assert sorted(got) == sorted(arrays)
        for k, a in arrays.items():
            assert isinstance(got[k], fluxion.Tensor)
            assert got[k].numpy().dtype == a.dtype
            np.testing.assert_array_equal(got[k].numpy(), a)
        got["embed.weight"].mul_(2)  # writable
    model = nn.Linear(4, 3, bias=False)
    save_file({"weight": np.ones((3, 4), np.float32)}, str(tmp_path / "w.safetensors"))
    model.load_state_dict(fluxion.load(tmp_path / "w.safetensors"))
    assert model.weight.sum().item() == 12.0


def test_file_is_valid_safetensors(tmp_path):
    t = fluxion.arange(6, dtype=fluxion.float32).reshape(2, 3)
    path = tmp_path / "ckpt.safetensors"
    fluxion.save({"w": t, "nested": [fluxion.tensor(4, dtype=fluxion.int16)], "note": "hi"},
                 path)
    with safe_open(str(path), framework="numpy") as f:
        meta = f.metadata()
        arrays = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    assert len(arrays) == 2
    shapes = sorted((a.shape, a.dtype.name) for a in arrays.values())
    assert shapes == [((), "int16"), ((2, 3), "float32")]
    info = json.loads(meta["fluxion"])  # the structure is plain JSON
    assert "note" in json.dumps(info)
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    json.loads(raw[8:8 + n])  # the header is JSON: a safetensors file, not a pickle
    assert not raw.startswith(b"PK") and b"\x80\x04\x95" not in raw[: 8 + n]


def test_no_pickle_is_used(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("pickle was used")

    for name in ("dump", "dumps", "load", "loads", "Pickler", "Unpickler"):
        monkeypatch.setattr(pickle, name, boom)
    fluxion.manual_seed(0)
    model = _net()
    opt = fluxion.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    _train(model, opt, 1, seed=0)
    obj = {"model": model.state_dict(), "optim": opt.state_dict(),
           "rng": fluxion.get_rng_state(), "x": (1, None, OrderedDict(a=2.0))}
    path = tmp_path / "c.safetensors"
    fluxion.save(obj, path)
    buf = io.BytesIO()
    fluxion.save(obj, buf)
    got = fluxion.load(path)
    fluxion.load(io.BytesIO(buf.getvalue()))
    fluxion.set_rng_state(got["rng"])


# --- what cannot be stored -------------------------------------------------------------
class Custom:
    pass


@pytest.mark.parametrize(("obj", "kind", "where"), [
    ({"cfg": {"fn": lambda x: x}}, "function", "obj['cfg']['fn']"),
    ([1, Custom()], "Custom", "obj[1]"),
    ({"a": (0, {1, 2})}, "set", "obj['a'][1]"),
    ({"arr": np.zeros(3)}, "ndarray", "obj['arr']"),
    ({"k": {(1, 2): 3}}, "(1, 2)", "obj['k']"),
    (b"bytes", "bytes", "obj"),
])
def test_unsupported_objects_raise_type_error(tmp_path, obj, kind, where):
    path = tmp_path / "bad.safetensors"
    with pytest.raises(TypeError) as info:
        fluxion.save(obj, path)
    msg = str(info.value)
    assert kind in msg and where in msg, msg
    assert not os.path.exists(path)  # nothing (not even a torn file) is written
    assert os.listdir(tmp_path) == []


def test_roundtrip_via_pathlike_object(tmp_path):
    class P(os.PathLike):
        def __fspath__(self):
            return str(tmp_path / "p.safetensors")

    fluxion.save({"x": fluxion.ones(1)}, P())
    assert_same(fluxion.load(P()), {"x": fluxion.ones(1)})
    assert isinstance(pathlib.Path(P()), pathlib.Path)
