"""``fluxion.nn.functional``: network ops built from the op table's primitives.

Convolutions and pooling are ``pad`` + ``unfold`` (im2col) + a BLAS product or a
reduction; softmax and friends are composites the compiler can fuse."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from fluxion import _dtype
from fluxion import functional as F
from fluxion.ops import OPS, apply
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
    if input.ndim == 0:
        return (input - input.detach()).exp()
    m = input.detach().amax(d, keepdim=True)
    e = (input - m.where(m.isfinite(), 0)).exp()
    return e / e.sum(d, keepdim=True)


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
    return input - F.logsumexp(input, d, keepdim=True)


# --- padding, unfold/fold ------------------------------------------------------------
def pad(input: Tensor, pad: Sequence[int], mode: str = "constant",
        value: float | None = None) -> Tensor:
    """Pad the last dimensions; ``pad`` lists (left, right) pairs from the last dimension
    backward, as in PyTorch. Negative amounts crop. Only ``'constant'`` mode for now.

    >>> import fluxion
    >>> fluxion.nn.functional.pad(fluxion.ones(1, 2), (1, 1))
    tensor([[0., 1., 1., 0.]])
    """
    if mode != "constant":
        raise NotImplementedError(f"pad: mode {mode!r} is not supported yet (only 'constant')")
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


def unfold(input: Tensor, kernel_size: IntOrPair, dilation: IntOrPair = 1,
           padding: IntOrPair = 0, stride: IntOrPair = 1) -> Tensor:
    """Sliding local blocks of an (N, C, H, W) batch as columns (N, C*kh*kw, L).

    >>> import fluxion
    >>> fluxion.nn.functional.unfold(fluxion.ones(1, 2, 4, 4), 3).shape
    fluxion.Size([1, 18, 4])
    """
    if input.ndim != 4:
        raise NotImplementedError(f"unfold: only 4-D inputs (N, C, H, W) are supported, got "
                                  f"{input.ndim}-D")
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
    k, d = _tuple(kernel_size, 2, "kernel_size"), _tuple(dilation, 2, "dilation")
    p, s = _tuple(padding, 2, "padding"), _tuple(stride, 2, "stride")
    size = _tuple(output_size, 2, "output_size")
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
    n, c, h, w = input.shape
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
        raise RuntimeError(f"max_pool2d: expected a 3-D or 4-D input, got shape {list(input.shape)}")
    k, s, p, d = _pool_args(kernel_size, stride, padding, dilation)
    n, c, h, w = x.shape
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
        raise RuntimeError(f"avg_pool2d: expected a 3-D or 4-D input, got shape {list(input.shape)}")
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
    if max_norm is not None or scale_grad_by_freq or sparse:
        raise NotImplementedError("embedding: max_norm, scale_grad_by_freq and sparse are not "
                                  "supported yet")
    idx = input._data.astype(np.int64, copy=False)
    rows = weight.shape[0]
    if idx.size and (idx.min() < -rows or idx.max() >= rows):
        raise IndexError(f"embedding: index out of range in self (indices span "
                         f"{idx.min()}..{idx.max()}, weight has {rows} rows)")
    w = weight
    if padding_idx is not None and weight.requires_grad:
        keep = np.ones((rows, 1), dtype=bool)
        keep[padding_idx] = False
        w = F.where(Tensor._make(keep), weight, weight.detach())
    return apply(OPS["index"], w, key=(idx,))
