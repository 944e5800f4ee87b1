"""Errors speak PyTorch: the same exception type as torch (RuntimeError, IndexError,
TypeError or ValueError — never a NumPy exception or another library's type), raised from
the user's call, with the op or the offending shapes/sizes in the message."""

from __future__ import annotations

import re
import traceback
import warnings

import numpy as np
import pytest

import fluxion

torch = pytest.importorskip("torch")

ALLOWED = (RuntimeError, IndexError, TypeError, ValueError)


def shape_forms(*shape, also=()):
    """Ways a message may spell a shape: [2, 3], (2, 3), 2x3 (plus ``also``)."""
    s = list(shape)
    return [str(s), str(tuple(s)).replace(",)", ")"), "x".join(map(str, s)), *also]


def _num(n):
    """The number ``n`` as a whole token."""
    return re.compile(rf"(?<![\d.]){n}(?![\d])")


def _contains(msg, want):
    if isinstance(want, re.Pattern):
        return want.search(msg) is not None
    return want.lower() in msg.lower()


# (id, fn(lib), groups): each group is a list of alternatives, one of which must appear
CASES = [
    # shapes in products
    ("matmul_2d", lambda lib: lib.ones(2, 3) @ lib.ones(4, 5),
     [shape_forms(2, 3), shape_forms(4, 5)]),
    ("matmul_fn", lambda lib: lib.matmul(lib.ones(2, 3), lib.ones(2, 3)),
     [shape_forms(2, 3)]),
    ("matmul_batched", lambda lib: lib.ones(2, 2, 3) @ lib.ones(2, 4, 5),
     [shape_forms(2, 2, 3, also=[_num(3)]), shape_forms(2, 4, 5, also=[_num(4)])]),
    ("matmul_vec", lambda lib: lib.ones(3) @ lib.ones(4), [[_num(3)], [_num(4)]]),
    ("mm_1d", lambda lib: lib.mm(lib.ones(3), lib.ones(3)), [["mm", "2d", "2-d", "matri"]]),
    ("mm_shapes", lambda lib: lib.mm(lib.ones(2, 3), lib.ones(2, 3)),
     [shape_forms(2, 3)]),
    ("bmm_2d", lambda lib: lib.bmm(lib.ones(2, 3), lib.ones(3, 2)),
     [["bmm", "3d", "3-d", "batch"]]),
    ("dot_sizes", lambda lib: lib.dot(lib.ones(3), lib.ones(4)), [[_num(3)], [_num(4)]]),
    # convolution and pooling
    ("conv2d_channels",
     lambda lib: lib.nn.functional.conv2d(lib.ones(1, 3, 5, 5), lib.ones(4, 2, 3, 3)),
     [["channel"], [_num(2)], [_num(3)]]),
    ("conv2d_input_dims",
     lambda lib: lib.nn.functional.conv2d(lib.ones(3, 5), lib.ones(4, 3, 3, 3)),
     [["conv2d", "3d", "4d", "3-d", "4-d", "dim"]]),
    ("conv2d_kernel_too_big",
     lambda lib: lib.nn.functional.conv2d(lib.ones(1, 1, 2, 2), lib.ones(1, 1, 3, 3)),
     [["kernel", "size", "conv"]]),
    ("max_pool2d_too_big", lambda lib: lib.nn.functional.max_pool2d(lib.ones(1, 1, 2, 2), 3),
     [["size", "pool", "small"]]),
    # views and reshapes
    ("view_size", lambda lib: lib.arange(6).view(4, 2), [shape_forms(4, 2), [_num(6)]]),
    ("view_infer", lambda lib: lib.ones(7).view(-1, 2), [shape_forms(-1, 2), [_num(7)]]),
    ("view_non_contiguous", lambda lib: lib.arange(6).reshape(2, 3).t().view(6),
     [["view"], ["contiguous", "reshape", "stride"]]),
    ("reshape_size", lambda lib: lib.arange(6).reshape(4, 2), [shape_forms(4, 2), [_num(6)]]),
    ("reshape_two_inferred", lambda lib: lib.arange(6).reshape(-1, -1), [["infer", "-1"]]),
    ("expand", lambda lib: lib.ones(3).expand(2, 4), [[_num(3)], [_num(4)]]),
    ("permute_count", lambda lib: lib.ones(2, 3).permute(0), [["permute", "dims", "dimensions"]]),
    ("permute_repeat", lambda lib: lib.ones(2, 3).permute(0, 0), [["permute", "repeat", "dim"]]),
    ("repeat_fewer", lambda lib: lib.ones(2, 3).repeat(2), [["repeat", "dimensions"]]),
    ("split_sizes", lambda lib: lib.ones(5).split([2, 2]), [["split"], [_num(5)]]),
    ("chunk_zero", lambda lib: lib.ones(5).chunk(0), [["chunk"]]),
    ("cat_sizes", lambda lib: lib.cat([lib.ones(2, 3), lib.ones(2, 4)]), [[_num(3)], [_num(4)]]),
    ("cat_ndim", lambda lib: lib.cat([lib.ones(2, 3), lib.ones(3)]), [["dim", "cat", "shape"]]),
    ("cat_empty_list", lambda lib: lib.cat([]), [["cat", "non-empty", "empty"]]),
    ("stack_shapes", lambda lib: lib.stack([lib.ones(2), lib.ones(3)]),
     [["stack", "size", "shape"]]),
    # indexing
    ("index_int", lambda lib: lib.ones(3)[5], [[_num(5)], [_num(3)]]),
    ("index_negative", lambda lib: lib.ones(3)[-4], [[_num(-4)]]),
    ("index_second_dim", lambda lib: lib.ones(2, 3)[0, 5], [[_num(5)]]),
    ("index_list", lambda lib: lib.ones(3)[[0, 7]], [[_num(7), "index"]]),
    ("index_tensor", lambda lib: lib.ones(3)[lib.tensor([1, 9])], [[_num(9), "index"]]),
    ("index_too_many", lambda lib: lib.ones(3)[0, 0], [["too many", "indices", "dimension"]]),
    ("index_float", lambda lib: lib.ones(3)[1.5], [["integer", "index", "indices"]]),
    ("index_str", lambda lib: lib.ones(3)["a"], [["integer", "index", "indices"]]),
    ("index_float_tensor", lambda lib: lib.ones(3)[lib.tensor([0.0])],
     [["long", "int", "index"]]),
    ("setitem_out_of_range", lambda lib: lib.ones(3).__setitem__(5, 1.0), [[_num(5)]]),
    ("index_select_range", lambda lib: lib.index_select(lib.ones(3), 0, lib.tensor([5])),
     [["index"]]),
    ("gather_range", lambda lib: lib.gather(lib.ones(3), 0, lib.tensor([5])),
     [[_num(5)], ["gather", "index", "bound"]]),
    ("gather_float_index", lambda lib: lib.gather(lib.ones(3), 0, lib.tensor([0.0])),
     [["gather", "index", "int64", "long"]]),
    ("embedding_range",
     lambda lib: lib.nn.functional.embedding(lib.tensor([0, 10]), lib.ones(5, 2)),
     [["index", "range", "embedding"]]),
    ("masked_fill_float_mask", lambda lib: lib.ones(3).masked_fill(lib.ones(3), 0.0),
     [["mask", "bool"]]),
    # dims
    ("sum_dim", lambda lib: lib.ones(2, 3).sum(dim=2), [["dimension out of range", "dim"]]),
    ("mean_dim", lambda lib: lib.ones(2, 3).mean(-3), [["dimension out of range", "dim"]]),
    ("transpose_dim", lambda lib: lib.ones(2, 3).transpose(0, 3), [["dimension out of range"]]),
    ("unsqueeze_dim", lambda lib: lib.ones(2, 3).unsqueeze(4), [["dimension out of range"]]),
    ("squeeze_dim", lambda lib: lib.ones(2, 3).squeeze(3), [["dimension out of range"]]),
    ("softmax_dim", lambda lib: lib.nn.functional.softmax(lib.ones(2, 3), dim=2),
     [["dimension out of range"]]),
    ("argmax_dim", lambda lib: lib.ones(2, 3).argmax(5), [["dimension out of range"]]),
    ("cumsum_dim", lambda lib: lib.ones(2, 3).cumsum(2), [["dimension out of range"]]),
    ("narrow_dim", lambda lib: lib.ones(2, 3).narrow(2, 0, 1), [["dimension out of range"]]),
    ("narrow_length", lambda lib: lib.ones(2, 3).narrow(1, 2, 3),
     [["narrow", "length", "exceed"]]),
    ("cat_dim", lambda lib: lib.cat([lib.ones(2), lib.ones(2)], dim=1),
     [["dimension out of range"]]),
    ("size_dim", lambda lib: lib.ones(2, 3).size(2), [["dimension out of range"]]),
    # broadcasting
    ("broadcast_add", lambda lib: lib.ones(2, 3) + lib.ones(4),
     [shape_forms(2, 3, also=["(3)"]), shape_forms(4, also=["(4)"])]),
    ("broadcast_mul_fn", lambda lib: lib.mul(lib.ones(5, 2), lib.ones(3, 1)),
     [shape_forms(5, 2, also=["(5)"]), shape_forms(3, 1, also=["(3)"])]),
    ("broadcast_compare", lambda lib: lib.ones(2, 3) < lib.ones(2),
     [shape_forms(2, 3, also=["(3)"]), shape_forms(2, also=["(2)"])]),
    ("broadcast_where", lambda lib: lib.where(lib.ones(2, 3) > 0, lib.ones(2, 3), lib.ones(4)),
     [shape_forms(2, 3, also=["(3)"]), shape_forms(4, also=["(4)"])]),
    ("inplace_grow", lambda lib: lib.ones(3).add_(lib.ones(2, 3)),
     [shape_forms(3), shape_forms(2, 3)]),
    ("copy_broadcast", lambda lib: lib.ones(3).copy_(lib.ones(4)), [[_num(3)], [_num(4)]]),
    # wrong types
    ("add_str", lambda lib: lib.add(lib.ones(2), "a"), [["add", "str"]]),
    ("mul_none", lambda lib: lib.ones(2) * None, [["mul", "none", "unsupported"]]),
    ("exp_list", lambda lib: lib.exp([1.0, 2.0]), [["exp", "list", "tensor"]]),
    ("matmul_list", lambda lib: lib.matmul(lib.ones(2), [1.0, 2.0]),
     [["matmul", "list", "tensor"]]),
    ("zeros_float_size", lambda lib: lib.zeros(2.5), [["size", "float", "int"]]),
    ("zeros_str", lambda lib: lib.zeros("a"), [["size", "str", "int"]]),
    ("view_str", lambda lib: lib.ones(2).view("a"), [["view", "str", "int", "size"]]),
    ("reshape_float", lambda lib: lib.ones(4).reshape(2.0, 2), [["reshape", "float", "int"]]),
    ("cat_tensor", lambda lib: lib.cat(lib.ones(2)), [["cat", "sequence", "tuple", "tensor"]]),
    ("tensor_dtype_str", lambda lib: lib.tensor([1.0], dtype="float32"), [["dtype"]]),
    ("copy_from_list", lambda lib: lib.ones(2).copy_([1.0, 2.0]), [["copy", "tensor", "list"]]),
    # values
    ("item_many", lambda lib: lib.ones(3).item(), [[_num(3)], ["element", "scalar"]]),
    ("bool_many", lambda lib: bool(lib.ones(3)), [["ambiguous"]]),
    ("numpy_requires_grad", lambda lib: lib.ones(2, requires_grad=True).numpy(),
     [["numpy"], ["detach"]]),
    ("int_requires_grad", lambda lib: lib.ones(2, dtype=lib.int64, requires_grad=True),
     [["floating point", "float"]]),
    ("backward_non_scalar", lambda lib: (lib.ones(2, requires_grad=True) * 2).backward(),
     [["scalar"]]),
    ("backward_no_grad", lambda lib: lib.ones(2).sum().backward(), [["require", "grad"]]),
    ("int_negative_power", lambda lib: lib.tensor([2, 3]) ** -1, [["negative", "power"]]),
    ("arange_zero_step", lambda lib: lib.arange(0, 5, 0), [["step", "arange"]]),
    ("arange_bad_sign", lambda lib: lib.arange(0, 5, -1), [["bound", "step", "sign", "arange"]]),
    ("zeros_negative", lambda lib: lib.zeros(2, -1), [[_num(-1), "negative"]]),
    ("randint_bad_range", lambda lib: lib.randint(5, 2, (3,)), [["randint", "low", "high",
                                                             "from", "to", "range"]]),
    ("linspace_negative", lambda lib: lib.linspace(0, 1, -1), [["linspace", "steps", "negative"]]),
    ("normal_negative_std", lambda lib: lib.normal(0.0, -1.0, size=(2,)), [["std"]]),
    ("multinomial_too_many", lambda lib: lib.multinomial(lib.ones(3), 4), [["multinomial",
                                                                      "sample", "n_sample"]]),
    ("set_default_int", lambda lib: lib.set_default_dtype(lib.int64), [["float", "dtype"]]),
    ("sub_bool", lambda lib: lib.tensor([True]) - lib.tensor([False]), [["subtract"]]),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_error_type_and_message(case):
    name, fn, groups = case
    with pytest.raises(Exception) as tinfo, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's deprecation notes are not the point
        fn(torch)
    ttype = type(tinfo.value)
    assert issubclass(ttype, ALLOWED), f"oracle raised {ttype}"
    with pytest.raises(Exception) as finfo:
        fn(fluxion)
    err = finfo.value
    msg = str(err)
    assert type(err).__module__ == "builtins" and type(err) in ALLOWED, (
        f"{name}: fluxion raised {type(err).__module__}.{type(err).__name__}: {msg}")
    assert isinstance(err, ttype) or ttype is type(err), (
        f"{name}: fluxion raised {type(err).__name__}, torch raises {ttype.__name__}: {msg}")
    for alternatives in groups:
        assert any(_contains(msg, a) for a in alternatives), (
            f"{name}: message {msg!r} mentions none of {alternatives}")


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_error_is_not_chained_from_numpy(case):
    """The message stands on its own: no NumPy exception shown as the cause, no
    '... occurred while handling ...' context from an internal NumPy error."""
    name, fn, _ = case
    try:
        fn(fluxion)
    except Exception as e:
        err = e
    else:
        return  # not raising at all is test_error_type_and_message's failure to report
    for linked in (err.__cause__, None if err.__suppress_context__ else err.__context__):
        if linked is not None:
            assert not type(linked).__module__.startswith("numpy"), (
                f"{name}: chained from {type(linked).__module__}.{type(linked).__name__}")


def test_error_is_raised_at_the_users_call():
    """The traceback's last frame outside fluxion is the line that made the bad call."""
    import os

    pkg = os.path.dirname(fluxion.__file__)
    try:
        fluxion.ones(2, 3) @ fluxion.ones(4, 5)
    except RuntimeError as e:
        frames = traceback.extract_tb(e.__traceback__)
        user = [f for f in frames if not f.filename.startswith(pkg)]
        assert user[-1].filename == __file__
        assert "fluxion.ones(2, 3) @ fluxion.ones(4, 5)" in user[-1].line
    else:
        pytest.fail("no error")


def test_in_place_modified_message_names_op_and_versions():
    x = fluxion.ones(3, requires_grad=True)
    y = x.exp()
    y.add_(1)
    with pytest.raises(RuntimeError) as info:
        y.sum().backward()
    msg = str(info.value)
    assert "ExpBackward0" in msg and "modified by an inplace operation" in msg
    assert "version 1" in msg and "version 0" in msg


def test_leaf_inplace_message():
    w = fluxion.ones(3, requires_grad=True)
    with pytest.raises(RuntimeError) as info:
        w.add_(1)
    assert "leaf Variable that requires grad" in str(info.value)
    assert "add_" in str(info.value)


def test_unsupported_numpy_dtype_names_it():
    with pytest.raises(TypeError, match="complex"):
        fluxion.tensor(np.ones(2, dtype=np.complex64))
    with pytest.raises(TypeError, match=r"uint32|supported"):
        fluxion.from_numpy(np.ones(2, dtype=np.uint32))


def test_cuda_request_fails_clearly():
    if fluxion.cuda.is_available():
        pytest.skip("a CUDA backend is available here")
    with pytest.raises((RuntimeError, AssertionError)) as info:
        fluxion.ones(2, device="cuda")
    assert "cuda" in str(info.value).lower() or "CUDA" in str(info.value)
    with pytest.raises((RuntimeError, AssertionError)):
        fluxion.ones(2).cuda()
