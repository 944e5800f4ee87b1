"""``fluxion.nn.functional``: network ops built from the op table's primitives.

Convolutions and pooling are ``pad`` + ``unfold`` (im2col) + a BLAS product or a
reduction; softmax and friends are composites the compiler can fuse."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from fluxion import _dtype
from fluxion import functional as F
from fluxion.autograd.function import Function
from fluxion.ops import OPS, apply
from fluxion.ops.registry import label
from fluxion.tensor import Tensor

IntOrPair = int | Sequence[int]


def _tuple(x: IntOrPair, n: int, name: str) -> tuple[int, ...]:
    if isinstance(x, int):
        return (x,) * n
    t = tuple(int(v) for v in x)
    if len(t) == 1:
        return t * n
    if len(t) != n:
        raise ValueError(f"{name} must be an int or a sequence of {n} ints, got {x}")
    return t


# --- activations and normalised exponentials ----------------------------------------
def relu(input: Tensor, inplace: bool = False) -> Tensor:
    """max(x, 0).

    >>> import fluxion
    >>> fluxion.nn.functional.relu(fluxion.tensor([-1.0, 1.0]))
    tensor([0., 1.])
    """
    return input.relu_() if inplace else F.relu(input)


def sigmoid(input: Tensor) -> Tensor:
    """The logistic function."""
    return F.sigmoid(input)


def tanh(input: Tensor) -> Tensor:
    """Hyperbolic tangent."""
    return F.tanh(input)


def _softmax_dim(input: Tensor, dim: int | None) -> int:
    if dim is None:  # PyTorch's legacy implicit choice
        dim = 0 if input.ndim in (0, 1, 3) else 1
    return input._dim(dim) if input.ndim else 0


def softmax(input: Tensor, dim: int | None = None, _stacklevel: int = 3,
            dtype: _dtype.dtype | None = None) -> Tensor:
    """exp(x) / sum(exp(x)) along ``dim``, shifted by the max for stability.

    >>> import fluxion
    >>> fluxion.nn.functional.softmax(fluxion.tensor([0.0, 0.0]), dim=0)
    tensor([0.5000, 0.5000])
    """
    if dtype is not None:
        input = input.to(dtype)
    d = _softmax_dim(input, dim)
    if input.ndim == 0:  # softmax of one value is 1, with gradient 0
        return (input - input).exp()
    if input.shape[d] == 0:
        return input.clone()
    return label(apply(OPS["softmax"], input, dim=d), "SoftmaxBackward0")


def softmax_reference(input: Tensor, dim: int) -> Tensor:
    """``softmax`` as a composite of primitives: the reference the primitive is tested
    against.

    >>> import fluxion
    >>> fluxion.nn.functional.softmax_reference(fluxion.zeros(2), 0)
    tensor([0.5000, 0.5000])
    """
    e = _shift_by_max(input, dim).exp()
    return e / e.sum(dim, keepdim=True)


def _shift_by_max(input: Tensor, d: int) -> Tensor:
    """``input`` minus its (detached, finite) max along ``d``."""
    m = input.detach().amax(d, keepdim=True)
    return input - m.where(m.isfinite(), 0)


def log_softmax(input: Tensor, dim: int | None = None, _stacklevel: int = 3,
                dtype: _dtype.dtype | None = None) -> Tensor:
    """log(softmax(x)) computed stably.

    >>> import fluxion
    >>> fluxion.nn.functional.log_softmax(fluxion.tensor([0.0, 0.0]), dim=0)
    tensor([-0.6931, -0.6931])
    """
    if dtype is not None:
        input = input.to(dtype)
    d = _softmax_dim(input, dim)
    if input.ndim == 0:
        return input - input
    if input.shape[d] == 0:
        return input.clone()
    return label(apply(OPS["log_softmax"], input, dim=d), "LogSoftmaxBackward0")


def log_softmax_reference(input: Tensor, dim: int) -> Tensor:
    """``log_softmax`` as a composite of primitives: the reference for the primitive.

    >>> import fluxion
    >>> fluxion.nn.functional.log_softmax_reference(fluxion.zeros(2), 0)
    tensor([-0.6931, -0.6931])
    """
    # (x - max) - log(sum(exp(x - max))): subtracting the max first keeps the result exact
    # for large logits (x - logsumexp(x) would round logsumexp to x's magnitude)
    shifted = _shift_by_max(input, dim)
    return shifted - shifted.exp().sum(dim, keepdim=True).log()


# --- padding, unfold/fold ------------------------------------------------------------
def pad(input: Tensor, pad: Sequence[int], mode: str = "constant",
        value: float | None = None) -> Tensor:
    """Pad the last dimensions; ``pad`` lists (left, right) pairs from the last dimension
    backward, as in PyTorch. Negative amounts crop. Modes ``'constant'`` (with ``value``),
    ``'reflect'``, ``'replicate'`` and ``'circular'`` (the last three gather rows with
    ``index_select``, so gradients accumulate into the sources).

    >>> import fluxion
    >>> fluxion.nn.functional.pad(fluxion.ones(1, 2), (1, 1))
    tensor([[0., 1., 1., 0.]])
    >>> fluxion.nn.functional.pad(fluxion.tensor([[[1.0, 2.0, 3.0]]]), (2, 1), mode="reflect")
    tensor([[[3., 2., 1., 2., 3., 2.]]])
    """
    if mode != "constant":
        return _pad_indexed(input, pad, mode, value)
    if len(pad) % 2:
        raise ValueError(f"Padding length must be divisible by 2, got {len(pad)}")
    if len(pad) // 2 > input.ndim:
        raise ValueError(f"Padding length should be less than or equal to two times the input "
                         f"dimension but got padding length {len(pad)} and input of dimension "
                         f"{input.ndim}")
    widths = [(0, 0)] * input.ndim
    for i in range(len(pad) // 2):
        widths[input.ndim - 1 - i] = (int(pad[2 * i]), int(pad[2 * i + 1]))
    for (b, e), s in zip(widths, input.shape):
        if s + b + e < 0:
            raise RuntimeError(f"pad: the padded size of a dimension of size {s} would be "
                               f"negative ({s + b + e})")
    if all(w == (0, 0) for w in widths):
        return input.clone()
    return apply(OPS["pad"], input, widths=tuple(widths), value=0.0 if value is None else value)


def _pad_indexed(input: Tensor, pad: Sequence[int], mode: str, value: float | None) -> Tensor:
    if mode not in ("reflect", "replicate", "circular"):
        raise NotImplementedError(f"Unrecognised padding mode {mode}")
    if value is not None and value != 0:
        raise ValueError(f"Padding mode \"{mode}\" doesn't take in value argument")
    if len(pad) % 2:
        raise ValueError(f"Padding length must be divisible by 2, got {len(pad)}")
    k = len(pad) // 2
    if not 1 <= k <= 3 or input.ndim not in (k + 1, k + 2):
        raise NotImplementedError(
            f"Padding size {len(pad)} is not supported for {input.ndim}D input tensor.\n"
            "Supported combinations for non-constant padding:\n  - 2D or 3D input: padding "
            "size = 2 (pads last dimension)\n  - 3D or 4D input: padding size = 4 (pads last "
            "2 dimensions)\n  - 4D or 5D input: padding size = 6 (pads last 3 dimensions)")
    x = input
    for i in range(k):
        dim = input.ndim - 1 - i
        left, right = int(pad[2 * i]), int(pad[2 * i + 1])
        if left == 0 and right == 0:
            continue
        n = input.shape[dim]
        if mode == "reflect" and (left >= n or right >= n):
            raise RuntimeError(f"Argument #4: Padding size should be less than the "
                               f"corresponding input dimension, but got: padding ({left}, "
                               f"{right}) at dimension {dim} of input {list(input.shape)}")
        if mode == "circular" and (left > n or right > n):
            raise RuntimeError("Padding value causes wrapping around more than once.")
        if n + left + right < 0:
            raise RuntimeError(f"pad: the padded size of a dimension of size {n} would be "
                               f"negative ({n + left + right})")
        if mode == "circular":  # as PyTorch: negative amounts crop, then the rest wraps
            lo, m = max(-left, 0), n - max(-left, 0) - max(-right, 0)
            if m <= 0:
                raise RuntimeError(f"pad: circular padding of dimension {dim} cropped to "
                                   f"nothing (size {n}, padding ({left}, {right}))")
            idx = np.arange(-max(left, 0), m + max(right, 0)) % m + lo
        elif mode == "reflect":  # reflect about the ends of the original rows
            idx = np.abs(np.arange(-left, n + right))
            idx = np.where(idx > n - 1, 2 * (n - 1) - idx, idx)
        else:
            idx = np.clip(np.arange(-left, n + right), 0, n - 1)
        x = x.index_select(dim, Tensor._make(idx.astype(np.int64)))
    return x if x is not input else input.clone()


def unfold(input: Tensor, kernel_size: IntOrPair, dilation: IntOrPair = 1,
           padding: IntOrPair = 0, stride: IntOrPair = 1) -> Tensor:
    """Sliding local blocks of an (N, C, H, W) batch as columns (N, C*kh*kw, L).

    >>> import fluxion
    >>> fluxion.nn.functional.unfold(fluxion.ones(1, 2, 4, 4), 3).shape
    fluxion.Size([1, 18, 4])
    """
    if input.ndim == 3:  # unbatched (C, H, W) -> (C*kh*kw, L)
        return unfold(input.unsqueeze(0), kernel_size, dilation, padding, stride).squeeze(0)
    if input.ndim != 4:
        raise RuntimeError(f"unfold: expected a 3-D (unbatched) or 4-D input (N, C, H, W), got "
                           f"shape {list(input.shape)}")
    k, d = _tuple(kernel_size, 2, "kernel_size"), _tuple(dilation, 2, "dilation")
    p, s = _tuple(padding, 2, "padding"), _tuple(stride, 2, "stride")
    x = pad(input, (p[1], p[1], p[0], p[0])) if any(p) else input
    for i in range(2):
        if x.shape[2 + i] < d[i] * (k[i] - 1) + 1:
            raise RuntimeError(f"unfold: kernel {k} with dilation {d} does not fit the padded "
                               f"input of spatial size {tuple(x.shape[2:])}")
    return apply(OPS["unfold"], x, kernel=k, stride=s, dilation=d)


def fold(input: Tensor, output_size: IntOrPair, kernel_size: IntOrPair,
         dilation: IntOrPair = 1, padding: IntOrPair = 0, stride: IntOrPair = 1) -> Tensor:
    """Sum columns (N, C*kh*kw, L) back into an (N, C, H, W) image (unfold's adjoint).

    >>> import fluxion
    >>> fluxion.nn.functional.fold(fluxion.ones(1, 9, 4), (4, 4), 3).shape
    fluxion.Size([1, 1, 4, 4])
    """
    if input.ndim == 2:  # unbatched (C*kh*kw, L) -> (C, H, W)
        return fold(input.unsqueeze(0), output_size, kernel_size, dilation, padding,
                    stride).squeeze(0)
    if input.ndim != 3:
        raise RuntimeError(f"fold: expected a 2-D (unbatched) or 3-D input (N, C*kh*kw, L), got "
                           f"shape {list(input.shape)}")
    k, d = _tuple(kernel_size, 2, "kernel_size"), _tuple(dilation, 2, "dilation")
    p, s = _tuple(padding, 2, "padding"), _tuple(stride, 2, "stride")
    size = _tuple(output_size, 2, "output_size")
    blocks = [(size[i] + 2 * p[i] - d[i] * (k[i] - 1) - 1) // s[i] + 1 for i in range(2)]
    if input.shape[1] % (k[0] * k[1]) or input.shape[2] != blocks[0] * blocks[1]:
        raise RuntimeError(f"fold: input of shape {list(input.shape)} does not match "
                           f"kernel_size={k} (dim 1 must be divisible by {k[0] * k[1]}) and "
                           f"output_size={size} ({blocks[0] * blocks[1]} blocks expected in "
                           "dim 2)")
    padded = (size[0] + 2 * p[0], size[1] + 2 * p[1])
    out = apply(OPS["fold"], input, size=padded, kernel=k, stride=s, dilation=d)
    if any(p):
        out = out[:, :, p[0]:p[0] + size[0], p[1]:p[1] + size[1]]
    return out


# --- convolution -------------------------------------------------------------------
def _same_padding(k: tuple[int, ...], d: tuple[int, ...]) -> list[tuple[int, int]]:
    out = []
    for ki, di in zip(k, d):
        total = di * (ki - 1)
        out.append((total // 2, total - total // 2))
    return out


def conv2d(input: Tensor, weight: Tensor, bias: Tensor | None = None,
           stride: IntOrPair = 1, padding: IntOrPair | str = 0, dilation: IntOrPair = 1,
           groups: int = 1) -> Tensor:
    """2-D convolution (cross-correlation) of (N, C, H, W) by (O, C/groups, kh, kw).

    >>> import fluxion
    >>> F = fluxion.nn.functional
    >>> F.conv2d(fluxion.ones(1, 1, 5, 5), fluxion.ones(2, 1, 3, 3), padding="same").shape
    fluxion.Size([1, 2, 5, 5])
    """
    unbatched = input.ndim == 3
    if unbatched:
        input = input.unsqueeze(0)
    if input.ndim != 4:
        raise RuntimeError(f"conv2d: expected a 3-D or 4-D input (N, C, H, W), got shape "
                           f"{list(input.shape)}")
    if weight.ndim != 4:
        raise RuntimeError(f"conv2d: expected a 4-D weight (out, in/groups, kh, kw), got shape "
                           f"{list(weight.shape)}")
    n, c, _, _ = input.shape
    o, cg, kh, kw = weight.shape
    if c != cg * groups:
        raise RuntimeError(
            f"Given groups={groups}, weight of size {list(weight.shape)}, expected input"
            f"{list(input.shape)} to have {cg * groups} channels, but got {c} channels instead"
        )
    if o % groups:
        raise RuntimeError(f"conv2d: out_channels ({o}) must be divisible by groups ({groups})")
    if input.dtype is not weight.dtype:
        raise RuntimeError(f"conv2d: Input type ({input.dtype}) and weight type "
                           f"({weight.dtype}) should be the same")
    s, d = _tuple(stride, 2, "stride"), _tuple(dilation, 2, "dilation")
    if isinstance(padding, str):
        if padding == "valid":
            widths = [(0, 0), (0, 0)]
        elif padding == "same":
            if any(v != 1 for v in s):
                raise ValueError("padding='same' is not supported for strided convolutions")
            widths = _same_padding((kh, kw), d)
        else:
            raise ValueError(f"Invalid padding string {padding!r}, should be one of 'valid', "
                             "'same'")
    else:
        p = _tuple(padding, 2, "padding")
        widths = [(p[0], p[0]), (p[1], p[1])]
    x = input
    if any(a or b for a, b in widths):
        x = pad(input, (widths[1][0], widths[1][1], widths[0][0], widths[0][1]))
    hp, wp = x.shape[2:]
    if hp < d[0] * (kh - 1) + 1 or wp < d[1] * (kw - 1) + 1:
        raise RuntimeError(
            f"Calculated padded input size per channel: ({hp} x {wp}). Kernel size: "
            f"({(kh - 1) * d[0] + 1} x {(kw - 1) * d[1] + 1}). Kernel size can't be greater "
            "than actual input size"
        )
    cols = apply(OPS["unfold"], x, kernel=(kh, kw), stride=s, dilation=d)  # N, C*kh*kw, L
    oh = (hp - d[0] * (kh - 1) - 1) // s[0] + 1
    ow = (wp - d[1] * (kw - 1) - 1) // s[1] + 1
    if groups == 1:
        out = weight.reshape(o, c * kh * kw) @ cols  # N, O, L
    else:
        cols = cols.reshape(n, groups, cg * kh * kw, oh * ow)
        out = weight.reshape(groups, o // groups, cg * kh * kw) @ cols  # N, G, O/G, L
    out = out.reshape(n, o, oh, ow)
    if bias is not None:
        if bias.shape != (o,):
            raise RuntimeError(f"conv2d: bias must have shape [{o}], got {list(bias.shape)}")
        out = out + bias.reshape(1, o, 1, 1)
    return out.squeeze(0) if unbatched else out


def conv1d(input: Tensor, weight: Tensor, bias: Tensor | None = None,
           stride: IntOrPair = 1, padding: IntOrPair | str = 0, dilation: IntOrPair = 1,
           groups: int = 1) -> Tensor:
    """1-D convolution of (N, C, L) by (O, C/groups, k): conv2d with a height of 1.

    >>> import fluxion
    >>> fluxion.nn.functional.conv1d(fluxion.ones(1, 2, 8), fluxion.ones(4, 2, 3)).shape
    fluxion.Size([1, 4, 6])
    """
    if input.ndim not in (2, 3):
        raise RuntimeError(f"conv1d: expected a 2-D or 3-D input (N, C, L), got shape "
                           f"{list(input.shape)}")
    if weight.ndim != 3:
        raise RuntimeError(f"conv1d: expected a 3-D weight (out, in/groups, k), got shape "
                           f"{list(weight.shape)}")
    pd = padding if isinstance(padding, str) else (0, _tuple(padding, 1, "padding")[0])
    out = conv2d(input.unsqueeze(-2), weight.unsqueeze(-2), bias,
                 (1, _tuple(stride, 1, "stride")[0]), pd, (1, _tuple(dilation, 1, "dilation")[0]),
                 groups)
    return out.squeeze(-2)


# --- pooling -------------------------------------------------------------------------
def _pool_geometry(size: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> tuple[int, int]:
    """Output size and extra right padding, with PyTorch's ceil_mode rule (the last
    window must start inside the input or the left padding)."""
    span = d * (k - 1) + 1
    num = size + 2 * p - span
    out = (-(-num // s) if ceil_mode else num // s) + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    extra = max(0, (out - 1) * s + span - (size + 2 * p))
    return out, extra


def _pool_cols(name: str, x: Tensor, k: tuple, s: tuple, p: tuple, d: tuple,
               ceil_mode: bool, fill: float) -> tuple[Tensor, int, int]:
    n, c, h, w = x.shape
    for i in range(2):
        if p[i] * 2 > k[i]:
            raise RuntimeError(f"{name}: pad should be at most half of effective kernel size, "
                               f"but got pad={p[i]}, kernel_size={k[i]}")
    oh, eh = _pool_geometry(h, k[0], s[0], p[0], d[0], ceil_mode)
    ow, ew = _pool_geometry(w, k[1], s[1], p[1], d[1], ceil_mode)
    if oh <= 0 or ow <= 0:
        raise RuntimeError(f"{name}: Given input size: ({c}x{h}x{w}). Calculated output size: "
                           f"({c}x{oh}x{ow}). Output size is too small")
    if any(p) or eh or ew:
        x = apply(OPS["pad"], x, widths=((0, 0), (0, 0), (p[0], p[0] + eh), (p[1], p[1] + ew)),
                  value=fill)
    cols = apply(OPS["unfold"], x, kernel=k, stride=s, dilation=d)
    return cols.reshape(n, c, k[0] * k[1], oh * ow), oh, ow


def _pool_args(kernel_size: IntOrPair, stride: IntOrPair | None, padding: IntOrPair,
               dilation: IntOrPair) -> tuple:
    k = _tuple(kernel_size, 2, "kernel_size")
    s = _tuple(stride, 2, "stride") if stride not in (None, ()) else k  # type: ignore[arg-type]
    return k, s, _tuple(padding, 2, "padding"), _tuple(dilation, 2, "dilation")


def max_pool2d(input: Tensor, kernel_size: IntOrPair, stride: IntOrPair | None = None,
               padding: IntOrPair = 0, dilation: IntOrPair = 1, ceil_mode: bool = False,
               return_indices: bool = False) -> Any:
    """Max over sliding windows of (N, C, H, W); the gradient goes to the first maximum.

    >>> import fluxion
    >>> fluxion.nn.functional.max_pool2d(fluxion.arange(16.0).view(1, 1, 4, 4), 2)
    tensor([[[[ 5.,  7.],
              [13., 15.]]]])
    """
    unbatched = input.ndim == 3
    x = input.unsqueeze(0) if unbatched else input
    if x.ndim != 4:
        raise RuntimeError(f"max_pool2d: expected a 3-D or 4-D input, got shape "
                           f"{list(input.shape)}")
    k, s, p, d = _pool_args(kernel_size, stride, padding, dilation)
    n, c, _, w = x.shape
    cols, oh, ow = _pool_cols("max_pool2d", x, k, s, p, d, ceil_mode, -math.inf)
    vals, arg = F.max(cols, dim=2)
    out = vals.reshape(n, c, oh, ow)
    if unbatched:
        out = out.squeeze(0)
    if not return_indices:
        return out
    # flat index into the (unpadded) H*W plane, as PyTorch returns
    ki, kj = np.divmod(arg._data, k[1])
    r = np.arange(oh).repeat(ow) * s[0] - p[0] + ki * d[0]
    q = np.tile(np.arange(ow), oh) * s[1] - p[1] + kj * d[1]
    idx = Tensor._make((r * w + q).reshape(out.shape).astype(np.int64))
    return out, idx


def avg_pool2d(input: Tensor, kernel_size: IntOrPair, stride: IntOrPair | None = None,
               padding: IntOrPair = 0, ceil_mode: bool = False,
               count_include_pad: bool = True, divisor_override: int | None = None) -> Tensor:
    """Mean over sliding windows of (N, C, H, W).

    >>> import fluxion
    >>> fluxion.nn.functional.avg_pool2d(fluxion.ones(1, 1, 4, 4), 2).shape
    fluxion.Size([1, 1, 2, 2])
    """
    unbatched = input.ndim == 3
    x = input.unsqueeze(0) if unbatched else input
    if x.ndim != 4:
        raise RuntimeError(f"avg_pool2d: expected a 3-D or 4-D input, got shape "
                           f"{list(input.shape)}")
    k, s, p, d = _pool_args(kernel_size, stride, padding, 1)
    n, c, h, w = x.shape
    cols, oh, ow = _pool_cols("avg_pool2d", x, k, s, p, d, ceil_mode, 0.0)
    total = cols.sum(2)
    if divisor_override:
        out = total / divisor_override
    else:
        # windows count padding cells (when asked) but never the ceil_mode overhang
        ones = Tensor._make(np.ones((1, 1, h, w), dtype=x._data.dtype))
        inside = apply(OPS["pad"], ones, widths=((0, 0), (0, 0), (p[0], p[0]), (p[1], p[1])),
                       value=1.0 if count_include_pad else 0.0)
        _, eh = _pool_geometry(h, k[0], s[0], p[0], 1, ceil_mode)
        _, ew = _pool_geometry(w, k[1], s[1], p[1], 1, ceil_mode)
        inside = apply(OPS["pad"], inside, widths=((0, 0), (0, 0), (0, eh), (0, ew)), value=0.0)
        count = apply(OPS["unfold"], inside, kernel=k, stride=s, dilation=d).sum(1)
        out = total / count.reshape(1, 1, oh * ow)
    out = out.reshape(n, c, oh, ow)
    return out.squeeze(0) if unbatched else out


def max_pool1d(input: Tensor, kernel_size: IntOrPair, stride: IntOrPair | None = None,
               padding: IntOrPair = 0, dilation: IntOrPair = 1, ceil_mode: bool = False,
               return_indices: bool = False) -> Any:
    """Max over sliding windows of (N, C, L).

    >>> import fluxion
    >>> fluxion.nn.functional.max_pool1d(fluxion.tensor([[[1.0, 3.0, 2.0, 0.0]]]), 2)
    tensor([[[3., 2.]]])
    """
    st = None if stride in (None, ()) else (1, _tuple(stride, 1, "stride")[0])
    out = max_pool2d(input.unsqueeze(-2), (1, _tuple(kernel_size, 1, "kernel_size")[0]), st,
                     (0, _tuple(padding, 1, "padding")[0]), (1, _tuple(dilation, 1, "dilation")[0]),
                     ceil_mode, return_indices)
    if return_indices:
        return out[0].squeeze(-2), out[1].squeeze(-2)
    return out.squeeze(-2)


def avg_pool1d(input: Tensor, kernel_size: IntOrPair, stride: IntOrPair | None = None,
               padding: IntOrPair = 0, ceil_mode: bool = False,
               count_include_pad: bool = True) -> Tensor:
    """Mean over sliding windows of (N, C, L).

    >>> import fluxion
    >>> fluxion.nn.functional.avg_pool1d(fluxion.tensor([[[1.0, 3.0, 2.0, 0.0]]]), 2)
    tensor([[[2., 1.]]])
    """
    st = None if stride in (None, ()) else (1, _tuple(stride, 1, "stride")[0])
    return avg_pool2d(input.unsqueeze(-2), (1, _tuple(kernel_size, 1, "kernel_size")[0]), st,
                      (0, _tuple(padding, 1, "padding")[0]), ceil_mode,
                      count_include_pad).squeeze(-2)


# --- embedding ---------------------------------------------------------------------
def embedding(input: Tensor, weight: Tensor, padding_idx: int | None = None,
              max_norm: float | None = None, norm_type: float = 2.0,
              scale_grad_by_freq: bool = False, sparse: bool = False) -> Tensor:
    """Rows of ``weight`` picked by the integer ``input``; ``padding_idx`` rows get no
    gradient.

    >>> import fluxion
    >>> fluxion.nn.functional.embedding(fluxion.tensor([1, 0]), fluxion.eye(2))
    tensor([[0., 1.],
            [1., 0.]])
    """
    if input.dtype.is_floating_point:
        raise RuntimeError(f"Expected tensor for argument #1 'indices' to have one of the "
                           f"following scalar types: Long, Int; but got {input.dtype} instead "
                           "(while checking arguments for embedding)")
    if sparse:
        raise NotImplementedError("embedding: sparse gradients are not supported (use "
                                  "sparse=False; the dense gradient has the same values)")
    idx = input._data.astype(np.int64, copy=False)
    rows = weight.shape[0]
    if idx.size and (idx.min() < 0 or idx.max() >= rows):
        raise IndexError(f"index out of range in self (indices span {idx.min()}..{idx.max()}, "
                         f"weight has {rows} rows)")
    if max_norm is not None:  # PyTorch's embedding_renorm_: rescale the looked-up rows in place
        from fluxion.autograd.grad_mode import no_grad

        uniq = np.unique(idx)
        if uniq.size:
            sel = Tensor._make(uniq)
            with no_grad():
                picked = weight.index_select(0, sel)
                norms = picked.norm(norm_type, 1, keepdim=True)
                scale = F.where(norms > max_norm, max_norm / (norms + 1e-7), 1.0)
                weight[sel] = picked * scale
    w = weight
    if padding_idx is not None and weight.requires_grad:
        keep = np.ones((rows, 1), dtype=bool)
        keep[padding_idx] = False
        w = F.where(Tensor._make(keep), weight, weight.detach())
    out = apply(OPS["index"], w, key=(idx,))
    if scale_grad_by_freq and out.requires_grad:
        counts = np.bincount(idx.reshape(-1), minlength=rows).astype(out._data.dtype)
        factor = (1.0 / np.maximum(counts, 1))[idx][..., None]
        out = _ScaleGrad.apply(out, Tensor._make(factor.astype(out._data.dtype)))
    return out


class _ScaleGrad(Function):
    """Identity forward; the gradient is multiplied by a fixed factor (``factor`` holds no
    gradient of its own)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, factor: Tensor) -> Tensor:
        ctx.factor = factor
        return x.clone()

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor, None]:
        return g * ctx.factor, None


# --- more activations ------------------------------------------------------------------
def _maybe_inplace(input: Tensor, fn: Any, inplace: bool) -> Tensor:
    """``fn(input)``, written back into ``input`` when ``inplace``. The composite reads a
    clone when autograd records, so the write does not invalidate the tensors its backward
    saved (PyTorch's in-place activations keep working in training graphs)."""
    if not inplace:
        return fn(input)
    from fluxion.autograd.grad_mode import is_grad_enabled

    src = input.clone() if is_grad_enabled() and input.requires_grad else input
    return input.copy_(fn(src))


def leaky_relu(input: Tensor, negative_slope: float = 0.01, inplace: bool = False) -> Tensor:
    """x if x > 0 else negative_slope * x.

    >>> import fluxion
    >>> fluxion.nn.functional.leaky_relu(fluxion.tensor([-1.0, 2.0]), 0.1)
    tensor([-0.1000,  2.0000])
    """
    return _maybe_inplace(input, lambda x: F.where(x > 0, x, x * negative_slope), inplace)


def elu(input: Tensor, alpha: float = 1.0, inplace: bool = False) -> Tensor:
    """x if x > 0 else alpha * (exp(x) - 1).

    >>> import fluxion
    >>> fluxion.nn.functional.elu(fluxion.tensor([0.0, 1.0]))
    tensor([0., 1.])
    """
    return _maybe_inplace(input, lambda x: F.where(x > 0, x, x.clamp(max=0).expm1() * alpha),
                          inplace)


def gelu(input: Tensor, approximate: str = "none") -> Tensor:
    """Gaussian error linear unit: x * Phi(x), or its tanh approximation.

    >>> import fluxion
    >>> fluxion.nn.functional.gelu(fluxion.tensor([0.0, 1.0]))
    tensor([0.0000, 0.8413])
    """
    if approximate not in ("none", "tanh"):
        raise ValueError(f"approximate argument must be either none or tanh, got {approximate!r}")
    if not input.is_floating_point():
        raise RuntimeError(f"gelu: expected a floating point input, got {input.dtype}")
    return label(apply(OPS["gelu"], input, approximate=approximate), "GeluBackward0")


def gelu_reference(input: Tensor, approximate: str = "none") -> Tensor:
    """``gelu`` as a composite of primitives: the reference for the primitive.

    >>> import fluxion
    >>> fluxion.nn.functional.gelu_reference(fluxion.tensor([0.0, 1.0]))
    tensor([0.0000, 0.8413])
    """
    if approximate == "tanh":
        # 0.5 * (1 + tanh(u)) == sigmoid(2u): the same function without the cancellation
        # of 1 + tanh(u) for negative u, so values and gradients stay accurate in the tail
        inner = (input + input * input * input * 0.044715) * math.sqrt(2 / math.pi)
        return input * (inner * 2).sigmoid()
    return input * 0.5 * ((input * (1 / math.sqrt(2))).erf() + 1)


def silu(input: Tensor, inplace: bool = False) -> Tensor:
    """x * sigmoid(x).

    >>> import fluxion
    >>> fluxion.nn.functional.silu(fluxion.tensor([0.0]))
    tensor([0.])
    """
    return _maybe_inplace(input, lambda x: x * x.sigmoid(), inplace)


def softplus(input: Tensor, beta: float = 1.0, threshold: float = 20.0) -> Tensor:
    """log(1 + exp(beta x)) / beta, linear above ``threshold``.

    >>> import fluxion
    >>> fluxion.nn.functional.softplus(fluxion.tensor([0.0]))
    tensor([0.6931])
    """
    bx = input * beta
    soft = (bx.clamp(max=threshold)).exp().log1p() / beta
    return F.where(bx > threshold, input, soft)


def hardtanh(input: Tensor, min_val: float = -1.0, max_val: float = 1.0,
             inplace: bool = False) -> Tensor:
    """Clamp to [min_val, max_val]; as PyTorch, the gradient is zero outside and at the
    bounds."""
    return _maybe_inplace(input, lambda x: _hardtanh(x, min_val, max_val), inplace)


def _hardtanh(input: Tensor, lo: float, hi: float) -> Tensor:
    inside = (input > lo) & (input < hi)
    return F.where(inside, input, input.detach().clamp(lo, hi))


def relu6(input: Tensor, inplace: bool = False) -> Tensor:
    """min(max(x, 0), 6)."""
    return _maybe_inplace(input, lambda x: _hardtanh(x, 0.0, 6.0), inplace)


# --- linear, dropout, normalisation -----------------------------------------------------
def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``input @ weight.T + bias``.

    >>> import fluxion
    >>> fluxion.nn.functional.linear(fluxion.ones(2, 3), fluxion.ones(4, 3)).shape
    fluxion.Size([2, 4])
    """
    x, w = input._data, weight._data  # (the arrays' own shapes and dtypes: a hot path)
    if x.shape[-1:] != w.shape[-1:]:
        raise RuntimeError(
            f"linear: mat1 and mat2 shapes cannot be multiplied "
            f"({'x'.join(map(str, (math.prod(input.shape[:-1]), input.shape[-1])))} and "
            f"{weight.shape[1]}x{weight.shape[0]}); input {list(input.shape)}, weight "
            f"{list(weight.shape)}"
        )
    dt = x.dtype
    if len(x.shape) >= 2 and len(w.shape) == 2 and w.dtype == dt and dt.kind == "f" \
            and (bias is None or (bias._data.dtype == dt and bias._data.shape == w.shape[:1])):
        out = apply(OPS["linear"], input, weight, bias)  # one op: one node to record
        two = input.ndim == 2
        return label(out, ("AddmmBackward0" if two else "ViewBackward0") if bias is not None
                     else "MmBackward0" if two else "UnsafeViewBackward0")
    out = input @ weight.t()  # PyTorch's rules for vectors, integers, mixed dtypes
    return out + bias if bias is not None else out


def _dropout_mask(shape: tuple, p: float, dtype: np.dtype) -> Tensor:
    from fluxion.random import _rng

    keep = _rng(None).random(shape) >= p
    return Tensor._make((keep / (1.0 - p)).astype(dtype))


def dropout(input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:
    """Zero elements with probability ``p`` in training, scaling the rest by 1/(1-p).

    >>> import fluxion
    >>> fluxion.nn.functional.dropout(fluxion.ones(4), 0.5, training=False)
    tensor([1., 1., 1., 1.])
    """
    if not 0 <= p <= 1:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0:
        return input
    if p == 1:
        return _maybe_inplace(input, lambda x: x * 0, inplace)
    mask = _dropout_mask(input.shape, p, input._data.dtype)
    return _maybe_inplace(input, lambda x: x * mask, inplace)


def dropout2d(input: Tensor, p: float = 0.5, training: bool = True,
              inplace: bool = False) -> Tensor:
    """Zero whole channels of (N, C, H, W) with probability ``p``. As PyTorch (with its
    warnings), other inputs drop entries of their first two dimensions: a 3-D input is read
    as (N, C, L).

    >>> import fluxion
    >>> fluxion.nn.functional.dropout2d(fluxion.ones(1, 2, 2, 2), training=False).shape
    fluxion.Size([1, 2, 2, 2])
    """
    if not 0 <= p <= 1:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0:
        return input
    if input.ndim not in (3, 4):
        warnings.warn(f"dropout2d: Received a {input.ndim}-D input to dropout2d, which is "
                      "deprecated and will result in an error in a future release. To retain "
                      "the behavior and silence this warning, please use dropout instead. Note "
                      "that dropout2d exists to provide channel-wise dropout on inputs with 2 "
                      "spatial dimensions, a channel dimension, and an optional batch dimension "
                      "(i.e. 3D or 4D inputs).", stacklevel=2)
    if input.ndim == 3:
        warnings.warn("dropout2d: Received a 3D input to dropout2d and assuming that "
                      "channel-wise 1D dropout behavior is desired - input is interpreted as "
                      "shape (N, C, L), where C is the channel dim. This behavior will change in "
                      "a future release to interpret the input as one without a batch "
                      "dimension, i.e. shape (C, H, W). To maintain the 1D channel-wise dropout "
                      "behavior, please switch to using dropout1d instead.", stacklevel=2)
    if input.ndim < 2:
        raise RuntimeError("Feature dropout requires at least 2 dimensions in the input")
    # PyTorch's feature dropout: one draw per entry of the first two dimensions, broadcast
    # over the rest (so a 3-D input is read as (N, C, L), as PyTorch does today)
    shape = (*input.shape[:2], *([1] * (input.ndim - 2)))
    mask = _dropout_mask(shape, p, input._data.dtype) if p < 1 else None
    return _maybe_inplace(input, lambda x: x * mask if mask is not None else x * 0, inplace)


def batch_norm(input: Tensor, running_mean: Tensor | None, running_var: Tensor | None,
               weight: Tensor | None = None, bias: Tensor | None = None,
               training: bool = False, momentum: float | None = 0.1,
               eps: float = 1e-5) -> Tensor:
    """Normalise over the batch (and spatial) dimensions per channel (dim 1); in training
    updates the running statistics in place (unbiased variance), as PyTorch.

    >>> import fluxion
    >>> x = fluxion.randn(8, 3)
    >>> y = fluxion.nn.functional.batch_norm(x, None, None, training=True)
    >>> bool(y.mean(0).abs().max() < 1e-5)
    True
    """
    if input.ndim < 2:
        raise ValueError(f"batch_norm: expected 2D or more input (got {input.ndim}D input)")
    c = input.shape[1]
    dims = (0, *range(2, input.ndim))
    shape = (1, c) + (1,) * (input.ndim - 2)
    if training:
        n = input.numel() // c
        if n <= 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got input "
                             f"size {list(input.shape)}")
        mean = input.mean(dims)
        var = input.var(dims, correction=0)
        if running_mean is not None and running_var is not None:
            from fluxion.autograd.grad_mode import no_grad

            with no_grad():
                m = 0.1 if momentum is None else momentum
                running_mean.mul_(1 - m).add_(mean.detach() * m)
                running_var.mul_(1 - m).add_(var.detach() * (m * n / (n - 1)))
    else:
        if running_mean is None or running_var is None:
            raise RuntimeError("batch_norm: running_mean and running_var are needed in eval mode")
        mean, var = running_mean, running_var
    out = (input - mean.reshape(shape)) * (var.reshape(shape) + eps).rsqrt()
    if weight is not None:
        out = out * weight.reshape(shape)
    if bias is not None:
        out = out + bias.reshape(shape)
    return out


def layer_norm(input: Tensor, normalized_shape: Sequence[int], weight: Tensor | None = None,
               bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """Normalise over the last ``len(normalized_shape)`` dimensions.

    >>> import fluxion
    >>> y = fluxion.nn.functional.layer_norm(fluxion.randn(2, 5), (5,))
    >>> bool(y.mean(-1).abs().max() < 1e-5)
    True
    """
    ns = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if tuple(input.shape[-len(ns):]) != ns:
        raise RuntimeError(f"Given normalized_shape={list(ns)}, expected input with shape "
                           f"[*, {', '.join(map(str, ns))}], but got input of size "
                           f"{list(input.shape)}")
    if not input.is_floating_point():
        raise RuntimeError(f"layer_norm: expected a floating point input, got {input.dtype}")
    out = apply(OPS["layer_norm"], input, nd=len(ns), eps=float(eps))
    if weight is not None:
        out = out * weight
    if bias is not None:
        out = out + bias
    return label(out, "NativeLayerNormBackward0")


def group_norm(input: Tensor, num_groups: int, weight: Tensor | None = None,
               bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """Normalise over groups of channels (and spatial dimensions).

    >>> import fluxion
    >>> fluxion.nn.functional.group_norm(fluxion.randn(2, 4, 3), 2).shape
    fluxion.Size([2, 4, 3])
    """
    n, c = input.shape[:2]
    if c % num_groups:
        raise RuntimeError(f"Expected number of channels in input to be divisible by "
                           f"num_groups, but got input of shape {list(input.shape)} and "
                           f"num_groups={num_groups}")
    x = input.reshape(n, num_groups, -1)
    mean = x.mean(-1, keepdim=True)
    d = x - mean
    var = (d * d).mean(-1, keepdim=True)
    out = (d * (var + eps).rsqrt()).reshape(input.shape)
    shape = (1, c) + (1,) * (input.ndim - 2)
    if weight is not None:
        out = out * weight.reshape(shape)
    if bias is not None:
        out = out + bias.reshape(shape)
    return out


# --- losses ------------------------------------------------------------------------------
def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"{reduction} is not a valid value for reduction")


def _legacy(size_average: Any, reduce: Any, reduction: str) -> str:
    if size_average is None and reduce is None:
        return reduction
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    return ("mean" if size_average else "sum") if reduce else "none"


def nll_loss(input: Tensor, target: Tensor, weight: Tensor | None = None,
             size_average: Any = None, ignore_index: int = -100, reduce: Any = None,
             reduction: str = "mean") -> Tensor:
    """Negative log-likelihood of class indices given log-probabilities (N, C, ...).

    >>> import fluxion
    >>> logp = fluxion.tensor([[-0.1, -2.3], [-1.2, -0.4]])
    >>> fluxion.nn.functional.nll_loss(logp, fluxion.tensor([0, 1]))
    tensor(0.2500)
    """
    reduction = _legacy(size_average, reduce, reduction)
    if target.dtype.is_floating_point:
        raise RuntimeError(f"nll_loss: expected target of integer (class index) dtype, got "
                           f"{target.dtype}")
    unbatched = input.ndim == 1
    if unbatched:
        if target.ndim != 0:
            raise ValueError(f"Expected a 0-D target for a 1-D input, got target of shape "
                             f"{list(target.shape)}")
        input, target = input.unsqueeze(0), target.unsqueeze(0)
    if input.shape[0] != target.shape[0] or tuple(input.shape[2:]) != tuple(target.shape[1:]):
        raise ValueError(f"Expected input batch_size ({input.shape[0]}) to match target "
                         f"batch_size ({target.shape[0]}); input {list(input.shape)}, target "
                         f"{list(target.shape)}")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"{reduction} is not a valid value for reduction")
    c = input.shape[1]
    if weight is not None and tuple(weight.shape) != (c,):
        raise RuntimeError(f"nll_loss: weight tensor should be defined either for all {c} "
                           f"classes or no classes but got weight tensor of shape: "
                           f"{list(weight.shape)}")
    t = target._data
    if F.has_data(t) and t.size:  # eager: the indices are known now
        t = t[t != ignore_index]
        if t.size and (t.min() < 0 or t.max() >= c):
            raise IndexError(f"nll_loss: Target {int(t.max() if t.max() >= c else t.min())} "
                             f"is out of bounds for {c} classes")
    if weight is not None and weight.requires_grad:  # composed, so the weight gets one too
        return _nll_composed(input, target, weight, ignore_index, reduction, unbatched)
    loss = apply(OPS["nll_loss"], input, target, weight, ignore_index=ignore_index,
                 reduction=reduction)
    return loss.squeeze(0) if unbatched and reduction == "none" else loss


def _nll_composed(input: Tensor, target: Tensor, weight: Tensor, ignore_index: int,
                  reduction: str, unbatched: bool) -> Tensor:
    """``nll_loss`` of differentiable ops: the reference the primitive is tested against,
    and the way when the class weights need a gradient (PyTorch has none for them)."""
    valid = target != ignore_index
    safe = F.where(valid, target, 0)
    picked = -input.gather(1, safe.unsqueeze(1)).squeeze(1)
    w = F.where(valid, weight[safe], 0)
    # ignored entries are selected away (not multiplied by 0), so they get an exact zero
    # gradient even when a mean over no valid entries is nan, as in PyTorch
    loss = F.where(valid, picked, 0) * w
    if reduction == "mean":
        return loss.sum() / w.sum()
    if unbatched and reduction == "none":
        loss = loss.squeeze(0)
    return _reduce(loss, reduction)


def cross_entropy(input: Tensor, target: Tensor, weight: Tensor | None = None,
                  size_average: Any = None, ignore_index: int = -100, reduce: Any = None,
                  reduction: str = "mean", label_smoothing: float = 0.0) -> Tensor:
    """Cross-entropy of logits (N, C, ...) against class indices or class probabilities,
    with class weights, ``ignore_index`` and label smoothing, as PyTorch.

    >>> import fluxion
    >>> fluxion.nn.functional.cross_entropy(fluxion.zeros(2, 4), fluxion.tensor([0, 3]))
    tensor(1.3863)
    """
    reduction = _legacy(size_average, reduce, reduction)
    if not 0.0 <= label_smoothing <= 1.0:
        raise RuntimeError(f"label_smoothing must be between 0.0 and 1.0. Got: "
                           f"{label_smoothing}")
    cdim = 0 if input.ndim == 1 else 1
    logp = log_softmax(input, cdim)
    c = input.shape[cdim]
    wshape = (c,) + (1,) * (input.ndim - cdim - 1)
    if target.dtype.is_floating_point:  # class probabilities
        if target.shape != input.shape:
            raise RuntimeError(f"cross_entropy: probability targets must have the input's shape "
                               f"{list(input.shape)}, got {list(target.shape)}")
        if label_smoothing > 0:
            target = target * (1 - label_smoothing) + label_smoothing / c
        lp = logp * weight.reshape(wshape) if weight is not None else logp
        loss = -(lp * target).sum(cdim)
        if reduction == "mean":
            return loss.sum() / (input.numel() // c)
        return _reduce(loss, reduction)
    nll = nll_loss(logp, target, weight, ignore_index=ignore_index, reduction=reduction)
    if label_smoothing == 0:
        return nll
    lp = logp * weight.reshape(wshape) if weight is not None else logp
    valid = target != ignore_index  # the shape of the per-entry loss
    smooth = F.where(valid, -lp.sum(cdim), 0)
    if reduction == "mean":
        if weight is not None:
            denom = F.where(valid, weight[F.where(valid, target, 0)], 0).sum()
        else:
            denom = valid.sum()
        smooth = smooth.sum() / denom
    else:
        smooth = _reduce(smooth, reduction)
    return nll * (1 - label_smoothing) + smooth * (label_smoothing / c)


def _check_same_shape(name: str, input: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    if input.shape != target.shape:
        try:
            input, target = F.broadcast_tensors(input, target)
        except RuntimeError:
            raise RuntimeError(f"{name}: input shape {list(input.shape)} and target shape "
                               f"{list(target.shape)} do not broadcast") from None
    return input, target


def mse_loss(input: Tensor, target: Tensor, size_average: Any = None, reduce: Any = None,
             reduction: str = "mean", weight: Tensor | None = None) -> Tensor:
    """Mean squared error.

    >>> import fluxion
    >>> fluxion.nn.functional.mse_loss(fluxion.tensor([1.0, 2.0]), fluxion.tensor([1.0, 4.0]))
    tensor(2.)
    """
    input, target = _check_same_shape("mse_loss", input, target)
    d = input - target
    loss = d * d
    return _reduce(loss * weight if weight is not None else loss,
                   _legacy(size_average, reduce, reduction))


def l1_loss(input: Tensor, target: Tensor, size_average: Any = None, reduce: Any = None,
            reduction: str = "mean") -> Tensor:
    """Mean absolute error.

    >>> import fluxion
    >>> fluxion.nn.functional.l1_loss(fluxion.tensor([1.0, 2.0]), fluxion.tensor([1.0, 4.0]))
    tensor(1.)
    """
    input, target = _check_same_shape("l1_loss", input, target)
    return _reduce((input - target).abs(), _legacy(size_average, reduce, reduction))


def smooth_l1_loss(input: Tensor, target: Tensor, size_average: Any = None, reduce: Any = None,
                   reduction: str = "mean", beta: float = 1.0) -> Tensor:
    """Quadratic below ``beta``, linear above.

    >>> import fluxion
    >>> fluxion.nn.functional.smooth_l1_loss(fluxion.tensor([0.0, 3.0]), fluxion.zeros(2))
    tensor(1.2500)
    """
    input, target = _check_same_shape("smooth_l1_loss", input, target)
    d = (input - target).abs()
    if beta == 0:
        loss = d
    else:
        loss = F.where(d < beta, d * d * (0.5 / beta), d - 0.5 * beta)
    return _reduce(loss, _legacy(size_average, reduce, reduction))


def huber_loss(input: Tensor, target: Tensor, reduction: str = "mean", delta: float = 1.0,
               weight: Tensor | None = None) -> Tensor:
    """Quadratic below ``delta``, ``delta``-scaled linear above.

    >>> import fluxion
    >>> fluxion.nn.functional.huber_loss(fluxion.tensor([0.0, 3.0]), fluxion.zeros(2), delta=2.0)
    tensor(2.)
    """
    input, target = _check_same_shape("huber_loss", input, target)
    d = (input - target).abs()
    loss = F.where(d < delta, d * d * 0.5, (d - 0.5 * delta) * delta)
    return _reduce(loss * weight if weight is not None else loss, reduction)


def binary_cross_entropy(input: Tensor, target: Tensor, weight: Tensor | None = None,
                         size_average: Any = None, reduce: Any = None,
                         reduction: str = "mean") -> Tensor:
    """BCE of probabilities; logs are clamped at -100 as in PyTorch.

    >>> import fluxion
    >>> fluxion.nn.functional.binary_cross_entropy(fluxion.tensor([0.5]), fluxion.tensor([1.0]))
    tensor(0.6931)
    """
    if input.shape != target.shape:
        raise ValueError(f"Using a target size ({list(target.shape)}) that is different to the "
                         f"input size ({list(input.shape)}) is deprecated. Please ensure they "
                         "have the same size.")
    x = input._data
    if x.size and (x.min() < 0 or x.max() > 1):
        raise RuntimeError("all elements of input should be between 0 and 1")
    loss = -(target * input.log().clamp(min=-100)
             + (1 - target) * (1 - input).log().clamp(min=-100))
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, _legacy(size_average, reduce, reduction))


def binary_cross_entropy_with_logits(input: Tensor, target: Tensor,
                                     weight: Tensor | None = None, size_average: Any = None,
                                     reduce: Any = None, reduction: str = "mean",
                                     pos_weight: Tensor | None = None) -> Tensor:
    """BCE of logits, computed stably (and with ``pos_weight`` for positives).

    >>> import fluxion
    >>> F = fluxion.nn.functional
    >>> F.binary_cross_entropy_with_logits(fluxion.tensor([0.0]), fluxion.tensor([1.0]))
    tensor(0.6931)
    """
    if input.shape != target.shape:
        raise ValueError(f"Target size ({list(target.shape)}) must be the same as input size "
                         f"({list(input.shape)})")
    log_sig_neg = _softplus_neg(input)
    if pos_weight is not None:
        lw = (pos_weight - 1) * target + 1
        loss = (1 - target) * input + lw * log_sig_neg
    else:
        loss = (1 - target) * input + log_sig_neg
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, _legacy(size_average, reduce, reduction))


def _softplus_neg(x: Tensor) -> Tensor:
    """log(1 + exp(-x)) = -log(sigmoid(x)), stable for any x and with the exact gradient
    -sigmoid(-x) everywhere (the max(-x, 0) + log1p(exp(-|x|)) form has kinks at 0 whose
    subgradients do not add up to the derivative)."""
    pos = x >= 0
    xp = F.where(pos, x, 0)
    xn = F.where(pos, 0, x)
    return F.where(pos, (-xp).exp().log1p(), xn.exp().log1p() - xn)


def kl_div(input: Tensor, target: Tensor, size_average: Any = None, reduce: Any = None,
           reduction: str = "mean", log_target: bool = False) -> Tensor:
    """KL divergence with ``input`` as log-probabilities; ``'batchmean'`` divides by N.

    >>> import fluxion
    >>> p = fluxion.tensor([[0.5, 0.5]])
    >>> fluxion.nn.functional.kl_div(p.log(), p, reduction="batchmean")
    tensor(0.)
    """
    reduction = _legacy(size_average, reduce, reduction)
    if log_target:
        loss = target.exp() * (target - input)
    else:
        safe = F.where(target > 0, target, 1)
        loss = F.where(target > 0, target * (safe.log() - input), target * 0 - input * 0)
    if reduction == "batchmean":
        return loss.sum() / (input.shape[0] if input.ndim else 1)
    return _reduce(loss, reduction)


# --- similarity, encoding, resampling -------------------------------------------------------
def cosine_similarity(x1: Tensor, x2: Tensor, dim: int = 1, eps: float = 1e-8) -> Tensor:
    """Cosine of the angle between ``x1`` and ``x2`` along ``dim``.

    >>> import fluxion
    >>> a, b = fluxion.tensor([[1.0, 0.0]]), fluxion.tensor([[1.0, 1.0]])
    >>> fluxion.nn.functional.cosine_similarity(a, b)
    tensor([0.7071])
    """
    x1, x2 = F.broadcast_tensors(x1, x2)
    # PyTorch's formula: each vector divided by its own norm clamped at eps (the clamp does
    # not take part in the gradient), which keeps the result within [-1, 1]
    n1 = x1.norm(2, dim, keepdim=True)
    n2 = x2.norm(2, dim, keepdim=True)
    n1 = n1 + (n1.detach().clamp(min=eps) - n1.detach())
    n2 = n2 + (n2.detach().clamp(min=eps) - n2.detach())
    return ((x1 / n1) * (x2 / n2)).sum(dim)


def normalize(input: Tensor, p: float = 2.0, dim: int = 1, eps: float = 1e-12) -> Tensor:
    """``input / max(||input||_p, eps)`` along ``dim``.

    >>> import fluxion
    >>> fluxion.nn.functional.normalize(fluxion.tensor([[3.0, 4.0]]))
    tensor([[0.6000, 0.8000]])
    """
    return input / input.norm(p, dim, keepdim=True).clamp(min=eps)


def one_hot(tensor: Tensor, num_classes: int = -1) -> Tensor:
    """Integer class indices as one-hot int64 rows.

    >>> import fluxion
    >>> fluxion.nn.functional.one_hot(fluxion.tensor([0, 2]), 3)
    tensor([[1, 0, 0],
            [0, 0, 1]])
    """
    if tensor.dtype.name != "int64":
        raise RuntimeError("one_hot is only applicable to index tensor of type LongTensor.")
    t = tensor._data.astype(np.int64)
    n = int(t.max()) + 1 if num_classes == -1 else num_classes
    if t.size and (t.min() < 0 or t.max() >= n):
        raise RuntimeError("one_hot: Class values must be smaller than num_classes and "
                           "non-negative.")
    return Tensor._make((t[..., None] == np.arange(n)).astype(np.int64))


def _interp_size(input: Tensor, size: Any, scale_factor: Any) -> tuple[list[int], list[float]]:
    spatial = input.shape[2:]
    k = len(spatial)
    if (size is None) == (scale_factor is None):
        raise ValueError("only one of size or scale_factor should be defined")
    if size is not None:
        out = list(_tuple(size, k, "size"))
        scales = [s / o for s, o in zip(spatial, out)]
    else:
        sf = [float(scale_factor)] * k if isinstance(scale_factor, (int, float)) else list(
            scale_factor)
        out = [math.floor(s * f) for s, f in zip(spatial, sf)]
        scales = [1.0 / f for f in sf]
    return out, scales


def interpolate(input: Tensor, size: Any = None, scale_factor: Any = None,
                mode: str = "nearest", align_corners: bool | None = None,
                recompute_scale_factor: bool | None = None, antialias: bool = False) -> Tensor:
    """Resize (N, C, H, W) (or (N, C, L)) by ``'nearest'`` or ``'bilinear'`` (``'linear'``)
    sampling, as PyTorch.

    >>> import fluxion
    >>> fluxion.nn.functional.interpolate(fluxion.ones(1, 1, 2, 2), scale_factor=2).shape
    fluxion.Size([1, 1, 4, 4])
    """
    if input.ndim not in (3, 4):
        raise NotImplementedError(f"interpolate: only 3-D and 4-D inputs are supported, got "
                                  f"{input.ndim}-D")
    if antialias:
        raise NotImplementedError("interpolate: antialias=True is not supported yet")
    if align_corners is not None and mode not in ("linear", "bilinear", "bicubic",
                                                  "trilinear"):
        raise ValueError("align_corners option can only be set with the interpolating modes: "
                         "linear | bilinear | bicubic | trilinear")
    out_size, scales = _interp_size(input, size, scale_factor)
    if recompute_scale_factor:
        scales = [s / o for s, o in zip(input.shape[2:], out_size)]
    x = input
    for axis, (n_out, scale) in enumerate(zip(out_size, scales)):
        dim = 2 + axis
        n_in = x.shape[dim]
        if mode == "nearest":
            src = np.minimum(np.floor(np.arange(n_out) * scale).astype(np.int64), n_in - 1)
            x = x.index_select(dim, Tensor._make(src))
        elif mode in ("bilinear", "linear"):
            if align_corners:
                pos = np.arange(n_out) * ((n_in - 1) / (n_out - 1) if n_out > 1 else 0.0)
            else:
                pos = np.maximum((np.arange(n_out) + 0.5) * scale - 0.5, 0.0)
            lo = np.minimum(np.floor(pos).astype(np.int64), n_in - 1)
            hi = np.minimum(lo + 1, n_in - 1)
            frac = (pos - lo).astype(x._data.dtype)
            wshape = [1] * x.ndim
            wshape[dim] = n_out
            w = Tensor._make(frac.reshape(wshape))
            a = x.index_select(dim, Tensor._make(lo))
            b = x.index_select(dim, Tensor._make(hi))
            x = a + (b - a) * w
        else:
            raise NotImplementedError(f"interpolate: mode {mode!r} is not supported (nearest, "
                                      "bilinear, linear)")
    return x


# --- transposed convolution and adaptive pooling ---------------------------------------------
def conv_transpose2d(input: Tensor, weight: Tensor, bias: Tensor | None = None,
                     stride: IntOrPair = 1, padding: IntOrPair = 0,
                     output_padding: IntOrPair = 0, groups: int = 1,
                     dilation: IntOrPair = 1) -> Tensor:
    """The adjoint of conv2d: (N, Cin, H, W) by (Cin, Cout/groups, kh, kw), built as a
    product and ``fold`` (col2im).

    >>> import fluxion
    >>> F = fluxion.nn.functional
    >>> F.conv_transpose2d(fluxion.ones(1, 2, 3, 3), fluxion.ones(2, 4, 3, 3), stride=2).shape
    fluxion.Size([1, 4, 7, 7])
    """
    unbatched = input.ndim == 3
    if unbatched:
        input = input.unsqueeze(0)
    n, cin, h, w = input.shape
    if weight.ndim != 4 or weight.shape[0] != cin:
        raise RuntimeError(f"conv_transpose2d: weight of shape {list(weight.shape)} expects "
                           f"{weight.shape[0]} input channels, but the input has {cin} "
                           f"(input shape {list(input.shape)})")
    if cin % groups:
        raise RuntimeError(f"conv_transpose2d: in_channels ({cin}) must be divisible by groups "
                           f"({groups})")
    _, cog, kh, kw = weight.shape
    s, p = _tuple(stride, 2, "stride"), _tuple(padding, 2, "padding")
    op, d = _tuple(output_padding, 2, "output_padding"), _tuple(dilation, 2, "dilation")
    ho = (h - 1) * s[0] - 2 * p[0] + d[0] * (kh - 1) + op[0] + 1
    wo = (w - 1) * s[1] - 2 * p[1] + d[1] * (kw - 1) + op[1] + 1
    cig = cin // groups
    x = input.reshape(n, groups, cig, h * w)
    wt = weight.reshape(groups, cig, cog * kh * kw).transpose(1, 2)  # G, cog*kh*kw, cig
    cols = (wt @ x).reshape(n, groups * cog * kh * kw, h * w)  # N, Cout*kh*kw, L
    full = (ho + 2 * p[0], wo + 2 * p[1])
    out = apply(OPS["fold"], cols, size=full, kernel=(kh, kw), stride=s, dilation=d)
    out = out[:, :, p[0]:p[0] + ho, p[1]:p[1] + wo]
    if bias is not None:
        out = out + bias.reshape(1, -1, 1, 1)
    return out.squeeze(0) if unbatched else out


def adaptive_avg_pool2d(input: Tensor, output_size: IntOrPair) -> Tensor:
    """Average pooling to a fixed output size, with PyTorch's window boundaries.

    >>> import fluxion
    >>> fluxion.nn.functional.adaptive_avg_pool2d(fluxion.ones(1, 3, 7, 5), 1).shape
    fluxion.Size([1, 3, 1, 1])
    """
    if input.ndim not in (3, 4):
        raise RuntimeError(f"adaptive_avg_pool2d(): Expected 3D or 4D tensor, but got "
                           f"{list(input.shape)}")
    h, w = input.shape[-2:]
    size = output_size if not isinstance(output_size, int) else (output_size, output_size)
    oh, ow = (h if size[0] is None else size[0]), (w if size[1] is None else size[1])
    if h % oh == 0 and w % ow == 0:
        x = input.reshape(*input.shape[:-2], oh, h // oh, ow, w // ow)
        return x.mean((-3, -1))
    rows = []
    for i in range(oh):
        r0, r1 = (i * h) // oh, -((-(i + 1) * h) // oh)
        cols = []
        for j in range(ow):
            c0, c1 = (j * w) // ow, -((-(j + 1) * w) // ow)
            cols.append(input[..., r0:r1, c0:c1].mean((-2, -1)))
        rows.append(F.stack(cols, -1))
    return F.stack(rows, -2)


# --- attention ----------------------------------------------------------------------------
def scaled_dot_product_attention(query: Tensor, key: Tensor, value: Tensor,
                                 attn_mask: Tensor | None = None, dropout_p: float = 0.0,
                                 is_causal: bool = False, scale: float | None = None,
                                 enable_gqa: bool = False) -> Tensor:
    """softmax(q k^T * scale + mask) v over the last two dimensions; a boolean mask keeps
    True positions, a float mask is added.

    >>> import fluxion
    >>> q = fluxion.randn(2, 4, 8)
    >>> fluxion.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True).shape
    fluxion.Size([2, 4, 8])
    """
    lq, lk = query.shape[-2], key.shape[-2]
    if enable_gqa and query.ndim >= 3 and key.shape[-3] != query.shape[-3]:
        # grouped-query attention: each key/value head serves hq // hkv query heads
        hq, hkv = query.shape[-3], key.shape[-3]
        if hq % hkv:
            raise RuntimeError(f"scaled_dot_product_attention: {hq} query heads are not a "
                               f"multiple of {hkv} key/value heads")
        rep = Tensor._make(np.repeat(np.arange(hkv), hq // hkv))
        key, value = key.index_select(-3, rep), value.index_select(-3, rep)
    sc = 1 / math.sqrt(query.shape[-1]) if scale is None else scale
    scores = (query @ key.transpose(-2, -1)) * sc
    if is_causal:
        if attn_mask is not None:
            raise RuntimeError("scaled_dot_product_attention: explicit attn_mask should not be "
                               "set when is_causal=True")
        causal = Tensor._make(np.tril(np.ones((lq, lk), dtype=bool)))
        scores = scores.masked_fill(~causal, -math.inf)
    elif attn_mask is not None:
        if attn_mask.dtype.name == "bool":
            scores = scores.masked_fill(~attn_mask, -math.inf)
        else:
            scores = scores + attn_mask
    # as PyTorch's math kernel, a row with every key masked out attends to nothing (zeros)
    # instead of producing nan; the row is softmaxed as zeros so no nan reaches backward
    if is_causal and lq <= lk:  # every row keeps its diagonal: none can be dead
        attn = softmax(scores, -1)
    else:
        dead = (scores.detach() == -math.inf).all(-1, keepdim=True)
        # inside fluxion.compile the check would split the graph: take the safe path
        if not F.has_data(dead._data) or bool(dead.any()):
            scores = F.where(dead, 0.0, scores)
            attn = F.where(dead, 0.0, softmax(scores, -1))
        else:
            attn = softmax(scores, -1)
    if dropout_p > 0:
        attn = dropout(attn, dropout_p, training=True)
    return attn @ value
