"""Matrix products (BLAS through the array namespace), einsum, and the sliding-window
pair ``unfold``/``fold`` (im2col/col2im) that convolutions and pooling are built from."""

from __future__ import annotations

import numpy as np

from fluxion.ops.registry import OPS, apply, defop


@defop("matmul", "linalg", takes_out=True)
def matmul(xp, a, b, out=None):
    """Batched matrix product of operands with at least 2 dimensions; ``out``: a
    C-contiguous array of the result's shape to write it into (the compiler's pooled
    memory)."""
    if b.ndim == 2 and a.ndim > 2:
        # one (B*M, K) @ (K, N) BLAS call beats B small ones
        flat = None if out is None else out.reshape(-1, b.shape[-1])
        r = xp.matmul(a.reshape(-1, a.shape[-1]), b, out=flat)
        return r.reshape(*a.shape[:-1], b.shape[-1]) if out is None else out
    return xp.matmul(a, b, out=out)


@matmul.defgrad
def _(n, g):
    from fluxion.ops.elementwise import sum_to

    a, b = n.inputs
    ga = None
    if n.needs_input_grad[0]:
        if a.ndim == 2 and b.ndim > 2:
            # a matrix times a batch (a convolution's weight and columns): the batch's
            # b_i @ g_i^T with the small g_i^T made contiguous, summed and transposed, so
            # BLAS reads the large b in its own order (not transposed: 1.8x faster for
            # MNIST's second convolution)
            ga = sum_to(b @ g.mT.contiguous(), n.shapes[0][::-1]).mT
        else:
            ga = sum_to(g @ b.mT, n.shapes[0])
    gb = None
    if n.needs_input_grad[1]:
        if b.ndim == 2 and a.ndim > 2:  # the batch sum folded into one product
            k, m = a.shape[-1], g.shape[-1]
            gb = a.reshape(-1, k).mT @ g.reshape(-1, m)
        else:
            gb = sum_to(a.mT @ g, n.shapes[1])
    return ga, gb


@defop("linear", "linalg", saves=lambda need: (need[1], need[0], False))
def linear(xp, x, w, b=None):
    """``x @ w.T + b`` (``b`` optional): a linear layer as one op, so capture records one
    node, not three (the compiler's first pass, ``passes.decompose``, splits it into the
    transpose, the product and the sum that the rest of the pipeline knows); the same
    kernels and rounding as those three ops."""
    y = matmul.forward(xp, x, w.T)
    return y if b is None else y + b


@linear.defgrad
def _(n, g):
    x, w, _ = n.inputs
    need = n.needs_input_grad
    # the bias's sum first: recorded right after g's producer, the compiler computes it in
    # the same pass (a sum read after the products would be a pass of its own)
    gb = g.sum(tuple(range(g.ndim - 1))) if need[2] else None
    gx = g @ w if need[0] else None
    gw = g.reshape(-1, g.shape[-1]).mT @ x.reshape(-1, x.shape[-1]) if need[1] else None
    return gx, gw, gb


def parse_einsum(equation: str, ndims: list[int]) -> tuple[list[str], str]:
    """Split an einsum equation into operand subscripts and output, expanding '...'."""
    eq = equation.replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(ndims):
        raise ValueError(
            f"einsum(): {len(terms)} operand subscripts in {equation!r} but {len(ndims)} "
            "operands were given"
        )
    used = set(c for c in eq if c.isalpha())
    spare = [c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ" if c not in used]
    n_ell = max((nd - len(t.replace("...", "")) for t, nd in zip(terms, ndims) if "..." in t),
                default=0)
    ell = "".join(spare[:n_ell])
    out_terms = []
    for t, nd in zip(terms, ndims):
        if "..." in t:
            k = nd - len(t.replace("...", ""))
            t = t.replace("...", ell[n_ell - k:] if k else "")
        if len(t) != nd:
            raise ValueError(
                f"einsum(): operand subscripts {t!r} do not match an operand with {nd} dims"
            )
        out_terms.append(t)
    if arrow:
        out = rhs.replace("...", ell)
    else:
        counts = {c: "".join(out_terms).count(c) for c in set("".join(out_terms))}
        out = ell + "".join(sorted(c for c, k in counts.items() if k == 1 and c not in ell))
    return out_terms, out


@defop("einsum", "linalg")
def einsum(xp, *arrays, terms, out):
    return xp.einsum(",".join(terms) + "->" + out, *arrays, optimize=len(arrays) > 2)


@einsum.defgrad
def _(n, g):
    from fluxion.creation import eye

    terms, out = n.attrs["terms"], n.attrs["out"]
    ins, grads = n.inputs, []
    for i, t in enumerate(terms):
        if not n.needs_input_grad[i]:
            grads.append(None)
            continue
        shape = n.shapes[i]
        size = dict(zip(t, shape))
        u = "".join(dict.fromkeys(t))  # the letters of t, each once (a diagonal if repeated)
        others = [terms[j] for j in range(len(terms)) if j != i]
        avail = set(out).union(*others) if others else set(out)
        # letters only operand i has (summed away) come back by broadcasting
        kept = "".join(c for c in u if c in avail)
        gi = apply(OPS["einsum"], g, *[ins[j] for j in range(len(ins)) if j != i],
                   terms=[out, *others], out=kept)
        # broadcasting between operands: sum back down to this operand's size-1
        # dimensions, expand where the others had size 1
        bdims = tuple(k for k, c in enumerate(kept) if size[c] == 1 and gi.shape[k] != 1)
        if bdims:
            gi = gi.sum(bdims, keepdim=True)
        if tuple(gi.shape) != tuple(size[c] for c in kept):
            gi = gi.expand(tuple(size[c] for c in kept))
        if kept != u:
            gi = gi.reshape(tuple(size[c] if c in kept else 1 for c in u))
            gi = gi.expand(tuple(size[c] for c in u))
        if u != t:
            # repeated letters: place the gradient on the diagonal, with one identity per
            # repeat (``ii`` becomes ``iA`` times the identity ``iA``)
            spare = iter(c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                         if c not in set(t).union(out, *others))
            seen, t2, eyes, eye_terms = set(), "", [], []
            for c in t:
                if c in seen:
                    d = next(spare)
                    eyes.append(eye(size[c], dtype=g.dtype))
                    eye_terms.append(c + d)
                    c = d
                seen.add(c)
                t2 += c
            gi = apply(OPS["einsum"], gi, *eyes, terms=[u, *eye_terms], out=t2)
        grads.append(gi)
    return tuple(grads)


def _window_view(xp, a, kernel, stride, dilation):
    """(N, C, oh, ow, kh, kw) strided view of the sliding windows of (N, C, H, W)."""
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    win = np.lib.stride_tricks.sliding_window_view(
        a, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(2, 3)
    )
    return win[:, :, ::sh, ::sw, ::dh, ::dw]


@defop("unfold", "nn", save_inputs=False)
def unfold(xp, a, kernel, stride, dilation):
    """im2col of an (N, C, H, W) array: (N, C*kh*kw, oh*ow), PyTorch's F.unfold layout
    (padding is a separate ``pad``)."""
    n, c = a.shape[:2]
    win = _window_view(xp, a, kernel, stride, dilation)
    oh, ow = win.shape[2:4]
    cols = xp.ascontiguousarray(win.transpose(0, 1, 4, 5, 2, 3))
    return cols.reshape(n, c * kernel[0] * kernel[1], oh * ow)


@unfold.defgrad
def _(n, g):
    return (apply(OPS["fold"], g, size=n.shapes[0][2:], **n.attrs),)


@defop("fold", "nn", save_inputs=False)
def fold(xp, cols, size, kernel, stride, dilation):
    """col2im: sum (N, C*kh*kw, L) columns back into (N, C, H, W), overlaps added."""
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    h, w = size
    oh = (h - (kh - 1) * dh - 1) // sh + 1
    ow = (w - (kw - 1) * dw - 1) // sw + 1
    n = cols.shape[0]
    c = cols.shape[1] // (kh * kw)
    cols = cols.reshape(n, c, kh, kw, oh, ow)
    out = xp.zeros((n, c, h, w), dtype=cols.dtype)
    if (sh, sw) == (kh, kw) and (dh, dw) == (1, 1):
        # windows that tile the plane (pooling's backward): no overlaps to add, each
        # column lands in its own place, one transposing copy
        out[:, :, :oh * kh, :ow * kw] = cols.transpose(0, 1, 4, 2, 5, 3).reshape(
            n, c, oh * kh, ow * kw)
        return out
    for i in range(kh):
        for j in range(kw):
            out[:, :, i * dh: i * dh + sh * oh: sh, j * dw: j * dw + sw * ow: sw] += cols[
                :, :, i, j
            ]
    return out


@fold.defgrad
def _(n, g):
    a = n.attrs
    return (apply(OPS["unfold"], g, kernel=a["kernel"], stride=a["stride"],
                  dilation=a["dilation"]),)


# --- shape rules (used by the compiler's capture instead of running the kernel) ------------
@matmul.defshape
def _(specs):
    a, b = specs
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    return (*batch, a.shape[-2], b.shape[-1]), np.result_type(a.dtype, b.dtype)


@linear.defshape
def _(specs):
    x, w, _ = specs
    return (*x.shape[:-1], w.shape[0]), x.dtype


@unfold.defshape
def _(specs, kernel, stride, dilation):
    n, c, h, w = specs[0].shape
    oh = (h - dilation[0] * (kernel[0] - 1) - 1) // stride[0] + 1
    ow = (w - dilation[1] * (kernel[1] - 1) - 1) // stride[1] + 1
    return (n, c * kernel[0] * kernel[1], oh * ow), specs[0].dtype


@fold.defshape
def _(specs, size, kernel, stride, dilation):
    n, ckk = specs[0].shape[:2]
    return (n, ckk // (kernel[0] * kernel[1]), *size), specs[0].dtype
