"""A custom autograd.Function (a leaky clipped activation with its own backward), hooks
and retain_grad, trained with manual SGD on a regression task (plain PyTorch)."""

import numpy as np
import torch


class LeakyClip(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, lo, hi, slope):
        ctx.save_for_backward(x)
        ctx.lo, ctx.hi, ctx.slope = lo, hi, slope
        inside = x.clamp(lo, hi)
        return inside + slope * (x - inside)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        inside = (x >= ctx.lo) & (x <= ctx.hi)
        scale = torch.where(inside, torch.ones_like(x), torch.full_like(x, ctx.slope))
        return grad * scale, None, None, None


def main(steps=50, lr=0.05):
    rng = np.random.default_rng(2)
    X = torch.tensor(rng.uniform(-2, 2, size=(64, 4)), dtype=torch.float32)
    y = torch.tensor(np.sin(X.numpy()).sum(axis=1, keepdims=True), dtype=torch.float32)
    W1 = torch.tensor(rng.standard_normal((4, 8)) * 0.5, dtype=torch.float32,
                      requires_grad=True)
    W2 = torch.tensor(rng.standard_normal((8, 1)) * 0.5, dtype=torch.float32,
                      requires_grad=True)
    grad_norms = []
    W1.register_hook(lambda g: g.clamp(-1.0, 1.0))  # gradient clipping by hook

    losses = []
    for step in range(steps):
        pre = X @ W1
        pre.retain_grad()
        h = LeakyClip.apply(pre, -1.0, 1.0, 0.1)
        out = h @ W2
        loss = ((out - y) ** 2).mean()
        loss.backward()
        grad_norms.append(pre.grad.norm().item())
        with torch.no_grad():
            for p in (W1, W2):
                p -= lr * p.grad
                p.grad.zero_()
        losses.append(loss.item())
        if step % 10 == 0:
            print(f"step {step:3d}  loss {loss.item():.6f}  |dL/dpre| {grad_norms[-1]:.6f}")
    return losses + grad_norms


if __name__ == "__main__":
    main()
