"""Type promotion: every result dtype matches PyTorch's (tensor-tensor for all pairs of the
nine dtypes, 0-dim vs dimensioned tensors, tensors vs Python scalars, in-place casting
rules, ``result_type`` and ``promote_types``)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import fluxion

torch = pytest.importorskip("torch")

NAMES = ["bool", "uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64"]
PAIRS = list(itertools.product(NAMES, NAMES))

# operator -> how to apply it (the same Python syntax works for both libraries)
BINARY = {
    "rpow": lambda a, b: a ** b,
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "lt": lambda a, b: a < b,
    "ge": lambda a, b: a >= b,
    "maximum": None,  # filled in below: a function, not an operator
}


def _fn(lib, name):
    if name == "maximum":
        return lambda a, b: lib.maximum(a, b)
    return BINARY[name]


def fdt(name):
    return getattr(fluxion, name)


def tdt(name):
    return getattr(torch, name)


def _values(name, shape):
    """Small positive values representable in every dtype (so results agree exactly)."""
    n = int(np.prod(shape)) if shape else 1
    if name == "bool":
        arr = (np.arange(n) % 2 == 0)
    else:
        arr = (np.arange(n) % 3 + 1).astype(name)
    return arr.reshape(shape)


def pair(name, shape):
    arr = _values(name, shape)
    return fluxion.tensor(arr, dtype=fdt(name)), torch.tensor(arr, dtype=tdt(name))


def _run(lib_fn, a, b):
    try:
        return lib_fn(a, b), None
    except Exception as e:
        return None, e


def _is_bool(x):
    return isinstance(x, bool) or getattr(x, "dtype", None) in (fluxion.bool, torch.bool)


def _check(op, fa, fb, ta, tb, where):
    """Compare one op between the libraries; returns a description of a mismatch or None."""
    if op == "sub" and (_is_bool(fa) or _is_bool(fb)):
        return None  # refused by torch; checked on its own in test_sub_with_bool_is_refused
    fres, ferr = _run(_fn(fluxion, op), fa, fb)
    tres, terr = _run(_fn(torch, op), ta, tb)
    if isinstance(terr, NotImplementedError):
        return None  # a kernel torch lacks for this dtype (e.g. abs of bool): no oracle
    if terr is not None:
        if ferr is None:
            return f"{op}{where}: torch raised {type(terr).__name__} but fluxion returned " \
                   f"{fres.dtype}"
        if type(ferr) not in (RuntimeError, TypeError, ValueError):
            return f"{op}{where}: fluxion raised {type(ferr).__name__}: {ferr}"
        return None
    if ferr is not None:
        return f"{op}{where}: fluxion raised {type(ferr).__name__}: {ferr}; torch gave {tres.dtype}"
    if fres.dtype.name != str(tres.dtype).removeprefix("torch."):
        return f"{op}{where}: dtype fluxion {fres.dtype} vs {tres.dtype}"
    if tuple(fres.shape) != tuple(tres.shape):
        return f"{op}{where}: shape fluxion {tuple(fres.shape)} vs {tuple(tres.shape)}"
    if op in ("eq", "ne", "lt", "ge") and any(
            isinstance(x, int) and not isinstance(x, bool) and x < 0 for x in (fa, fb)) and \
            "uint8" in where:
        return None  # torch wraps the negative scalar into uint8 first: a quirk, not a rule
    fv = fres.numpy().astype(np.float64)
    tv = tres.numpy().astype(np.float64)
    if not np.allclose(fv, tv, rtol=1e-3, atol=1e-3, equal_nan=True):
        return f"{op}{where}: values fluxion {fv} vs torch {tv}"
    return None


def _assert_all(problems):
    problems = [p for p in problems if p]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("a,b", PAIRS, ids=[f"{a}-{b}" for a, b in PAIRS])
def test_tensor_tensor_all_pairs(a, b):
    fa, ta = pair(a, (2, 3))
    fb, tb = pair(b, (3,))
    _assert_all(_check(op, fa, fb, ta, tb, f"({a},{b})") for op in BINARY if op != "rpow")


@pytest.mark.parametrize("a,b", PAIRS, ids=[f"{a}-{b}" for a, b in PAIRS])
def test_zero_dim_vs_dimensioned(a, b):
    """A 0-dim tensor only decides the dtype when it brings a higher category."""
    f0, t0 = pair(a, ())
    f1, t1 = pair(b, (4,))
    problems = []
    for op in ("add", "mul", "div", "lt", "maximum"):
        problems.append(_check(op, f0, f1, t0, t1, f"(0-dim {a}, {b})"))
        problems.append(_check(op, f1, f0, t1, t0, f"({b}, 0-dim {a})"))
    _assert_all(problems)


@pytest.mark.parametrize("a,b", PAIRS, ids=[f"{a}-{b}" for a, b in PAIRS])
def test_zero_dim_vs_zero_dim(a, b):
    fa, ta = pair(a, ())
    fb, tb = pair(b, ())
    _assert_all(_check(op, fa, fb, ta, tb, f"({a},{b})") for op in ("add", "mul", "div", "eq"))


SCALARS = [True, False, 2, -3, 2.5, 0.5]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", [(3,), ()], ids=["1d", "0d"])
def test_tensor_vs_python_scalar(name, shape):
    ft, tt = pair(name, shape)
    problems = []
    for s in SCALARS:
        if name == "uint8" and s == -3:
            continue  # see test_uint8_wraps_negative_python_ints
        for op in ("add", "sub", "mul", "div", "eq", "lt", "ge"):
            if op == "div" and s in (0, False):
                continue
            problems.append(_check(op, ft, s, tt, s, f"({name}{list(shape)}, {s!r})"))
            problems.append(_check(op, s, ft, s, tt, f"({s!r}, {name}{list(shape)})"))
    _assert_all(problems)


def _describe(x):
    return f"{x.dtype.name} tensor" if isinstance(x, fluxion.Tensor) else repr(x)


def _outcome(err):
    return f"raised {err!r}" if err is not None else "did not raise"


def test_sub_with_bool_is_refused():
    """torch refuses ``-`` whenever one side is bool (use ``~`` / logical_not)."""
    problems = []
    for other in [*NAMES, "py_bool", "py_int", "py_float"]:
        fb = fluxion.tensor([True, False])
        tb = torch.tensor([True, False])
        if other.startswith("py_"):
            fo = to = {"py_bool": True, "py_int": 2, "py_float": 2.5}[other]
        else:
            fo, to = pair(other, (2,))
        calls = [("sub", lambda a, b: fluxion.sub(a, b), lambda a, b: torch.sub(a, b)),
                 ("-", lambda a, b: a - b, lambda a, b: a - b)]
        for f_args, t_args in [((fb, fo), (tb, to)), ((fo, fb), (to, tb))]:
            for label, f_call, t_call in calls:
                if not isinstance(f_args[0], fluxion.Tensor) and label == "sub":
                    continue
                _, terr = _run(t_call, *t_args)
                _, ferr = _run(f_call, *f_args)
                assert isinstance(terr, RuntimeError)
                tag = f"{label}({_describe(f_args[0])}, {_describe(f_args[1])})"
                if not isinstance(ferr, RuntimeError) or "ubtract" not in str(ferr):
                    problems.append(f"{tag}: fluxion {_outcome(ferr)}")
        if not other.startswith("py_"):
            _, ferr = _run(lambda a, b: a.clone().sub_(b), fo, fb)
            if not isinstance(ferr, RuntimeError):
                problems.append(f"{other}.sub_(bool): fluxion {_outcome(ferr)}")
    _assert_all(problems)


@pytest.mark.parametrize("a,b", PAIRS, ids=[f"{a}-{b}" for a, b in PAIRS])
def test_promote_types_all_pairs(a, b):
    got = fluxion.promote_types(fdt(a), fdt(b))
    assert got is fdt(str(torch.promote_types(tdt(a), tdt(b))).removeprefix("torch."))


@pytest.mark.parametrize("a,b", PAIRS, ids=[f"{a}-{b}" for a, b in PAIRS])
def test_result_type_tensors(a, b):
    for sa, sb in [((2,), (2,)), ((), (2,)), ((2,), ()), ((), ())]:
        fa, ta = pair(a, sa)
        fb, tb = pair(b, sb)
        want = str(torch.result_type(ta, tb)).removeprefix("torch.")
        assert fluxion.result_type(fa, fb) is fdt(want), (sa, sb)


@pytest.mark.parametrize("name", NAMES)
def test_result_type_scalars(name):
    for shape in [(2,), ()]:
        ft, tt = pair(name, shape)
        for s in SCALARS:
            want = str(torch.result_type(tt, s)).removeprefix("torch.")
            assert fluxion.result_type(ft, s) is fdt(want), (shape, s)
            want = str(torch.result_type(s, tt)).removeprefix("torch.")
            assert fluxion.result_type(s, ft) is fdt(want), (s, shape)


@pytest.mark.parametrize("a,b", PAIRS, ids=[f"{a}-{b}" for a, b in PAIRS])
def test_inplace_casting_rules(a, b):
    """``a.add_(b)`` keeps a's dtype and is refused exactly when torch refuses it."""
    problems = []
    for method in ("add_", "mul_", "div_"):
        fa, ta = pair(a, (2, 3))
        fb, tb = pair(b, (3,))
        fres, ferr = _run(lambda x, y, m=method: getattr(x, m)(y), fa, fb)
        _, terr = _run(lambda x, y, m=method: getattr(x, m)(y), ta, tb)
        if terr is not None:
            if ferr is None:
                problems.append(f"{a}.{method}({b}): torch raised {terr!r}, fluxion did not")
            elif type(ferr) is not RuntimeError:
                problems.append(f"{a}.{method}({b}): fluxion raised {ferr!r}")
            continue
        if ferr is not None:
            problems.append(f"{a}.{method}({b}): fluxion raised {ferr!r}")
            continue
        if fres is not fa or fa.dtype is not fdt(a):
            problems.append(f"{a}.{method}({b}): did not return self with dtype {a}")
        if not np.allclose(fa.numpy().astype(float), ta.numpy().astype(float), atol=1e-3):
            problems.append(f"{a}.{method}({b}): values {fa.numpy()} vs {ta.numpy()}")
    _assert_all(problems)


@pytest.mark.parametrize("name", NAMES)
def test_inplace_with_python_scalars(name):
    problems = []
    for s in SCALARS:
        if name == "uint8" and s == -3:
            continue  # see test_uint8_wraps_negative_python_ints
        for method in ("add_", "mul_", "sub_"):
            if method == "sub_" and (name == "bool" or isinstance(s, bool)):
                continue  # refused by torch; see test_sub_with_bool_is_refused
            fa, ta = pair(name, (3,))
            _, ferr = _run(lambda x, y, m=method: getattr(x, m)(y), fa, s)
            _, terr = _run(lambda x, y, m=method: getattr(x, m)(y), ta, s)
            tag = f"{name}.{method}({s!r})"
            if (terr is None) != (ferr is None):
                problems.append(f"{tag}: torch {terr!r} vs fluxion {ferr!r}")
            elif terr is None and not np.allclose(
                    fa.numpy().astype(float), ta.numpy().astype(float), atol=1e-3):
                problems.append(f"{tag}: values {fa.numpy()} vs {ta.numpy()}")
            elif terr is None and fa.dtype is not fdt(name):
                problems.append(f"{tag}: dtype changed to {fa.dtype}")
    _assert_all(problems)


UNARY_REDUCTIONS = {
    "exp": lambda x: x.exp(),
    "sqrt": lambda x: x.sqrt(),
    "sigmoid": lambda x: x.sigmoid(),
    "abs": lambda x: x.abs(),
    "neg": lambda x: -x,
    "sum": lambda x: x.sum(),
    "sum_dim": lambda x: x.sum(0),
    "prod": lambda x: x.prod(),
    "cumsum": lambda x: x.cumsum(0),
    "mean": lambda x: x.mean(),
    "max": lambda x: x.max(),
    "argmax": lambda x: x.argmax(),
    "floor_divide": lambda x: x // 2,
    "remainder": lambda x: x % 2,
    "pow_int": lambda x: x ** 2,
    "pow_float": lambda x: x ** 0.5,
    "clamp_float": lambda x: x.clamp(min=0.5),
    "where_scalar": None,  # filled below: needs the library
}


@pytest.mark.parametrize("name", NAMES)
def test_unary_and_reduction_dtypes(name):
    ft, tt = pair(name, (4,))
    problems = []
    for op, fn in UNARY_REDUCTIONS.items():
        if fn is None:
            f_fn = lambda x: fluxion.where(x > 1, x, 0.5)
            t_fn = lambda x: torch.where(x > 1, x, 0.5)
        else:
            f_fn = t_fn = fn
        fres, ferr = _run(lambda x, _: f_fn(x), ft, None)
        tres, terr = _run(lambda x, _: t_fn(x), tt, None)
        if isinstance(terr, NotImplementedError):
            continue  # a kernel torch lacks for this dtype: no oracle
        if terr is not None:
            if ferr is None:
                problems.append(f"{op}({name}): torch raised {terr!r}; fluxion gave {fres!r}")
            continue
        if ferr is not None:
            problems.append(f"{op}({name}): fluxion raised {ferr!r}; torch gave {tres.dtype}")
            continue
        if fres.dtype.name != str(tres.dtype).removeprefix("torch."):
            problems.append(f"{op}({name}): dtype {fres.dtype} vs {tres.dtype}")
        elif not np.allclose(fres.numpy().astype(float), tres.numpy().astype(float),
                             rtol=1e-3, atol=1e-3):
            problems.append(f"{op}({name}): values {fres.numpy()} vs {tres.numpy()}")
    _assert_all(problems)


def test_scalar_to_the_power_of_tensor():
    """``2 ** t`` and ``2.5 ** t`` (``__rpow__``) follow the same promotion as ``t ** 2``."""
    problems = []
    for name in NAMES:
        ft, tt = pair(name, (4,))
        problems += [
            _check("rpow", 2, ft, 2, tt, f"(2, {name})"),
            _check("rpow", 2.5, ft, 2.5, tt, f"(2.5, {name})"),
            _check("rpow", ft, 2, tt, 2, f"({name}, 2)"),
        ]
    _assert_all(problems)


def test_uint8_wraps_negative_python_ints():
    """torch casts an out-of-range Python int into the tensor's dtype (wrapping); it never
    raises NumPy's OverflowError."""
    ft, tt = pair("uint8", (3,))
    problems = []
    for op in ("add", "sub", "mul"):
        problems.append(_check(op, ft, -3, tt, -3, "(uint8, -3)"))
        problems.append(_check(op, -3, ft, -3, tt, "(-3, uint8)"))
    _assert_all(problems)
    ft.add_(-3)
    tt.add_(-3)
    assert ft.tolist() == tt.tolist()


def test_no_numpy_warnings_leak():
    """Division by zero and log of zero give inf/nan silently, as in torch."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x = fluxion.tensor([1.0, 0.0, -1.0])
        assert (x / 0).isinf().tolist() == [True, False, True]
        assert (x / 0).isnan().tolist() == [False, True, False]
        assert x.log().isnan().tolist() == [False, False, True]
        x.clone().div_(0)


def test_default_dtype_changes_float_results():
    assert fluxion.get_default_dtype() is fluxion.float32
    fluxion.set_default_dtype(fluxion.float64)
    try:
        assert fluxion.tensor([1.5]).dtype is fluxion.float64
        assert (fluxion.tensor([1, 2]) * 0.5).dtype is fluxion.float64
        assert (fluxion.tensor([1, 2]) / 2).dtype is fluxion.float64
        assert fluxion.ones(2).dtype is fluxion.float64
        assert fluxion.arange(0.0, 1.0, 0.5).dtype is fluxion.float64
        assert fluxion.tensor([1, 2], dtype=fluxion.float32).add(1.0).dtype is fluxion.float32
    finally:
        fluxion.set_default_dtype(fluxion.float32)
    assert fluxion.tensor([1.5]).dtype is fluxion.float32
    with pytest.raises(TypeError):
        fluxion.set_default_dtype(fluxion.int64)


def test_dtype_objects():
    for name in NAMES:
        d = fdt(name)
        assert repr(d) == repr(tdt(name)).replace("torch", "fluxion")
        assert d.is_floating_point == tdt(name).is_floating_point
        assert d.itemsize == tdt(name).itemsize
        assert d.is_signed == tdt(name).is_signed
    # PyTorch's aliases
    assert fluxion.float is fluxion.float32
    assert fluxion.double is fluxion.float64
    assert fluxion.half is fluxion.float16
    assert fluxion.long is fluxion.int64
    assert fluxion.int is fluxion.int32
    assert fluxion.short is fluxion.int16
    assert fluxion.bool is not bool and fluxion.bool.name == "bool"


def test_float16_scalar_stays_half():
    x = fluxion.tensor([1.0, 2.0], dtype=fluxion.float16)
    assert (x * 2.5).dtype is fluxion.float16
    assert (x + fluxion.tensor(1.0, dtype=fluxion.float64)).dtype is fluxion.float16
    assert (x + fluxion.tensor([1.0, 2.0], dtype=fluxion.float64)).dtype is fluxion.float64
    i = fluxion.tensor([1, 2], dtype=fluxion.int8)
    assert (i + fluxion.tensor(1.0, dtype=fluxion.float64)).dtype is fluxion.float64
    wrapped = i + fluxion.tensor(1000)
    assert wrapped.dtype is fluxion.int8
    assert wrapped.tolist() == [-23, -22]  # wraps around like torch
    assert (i * True).dtype is fluxion.int8
