"""Fit a cubic to sin(pi x) with torch.autograd.grad, then polish it with Newton steps
whose Hessian comes from grad-of-grad (plain PyTorch)."""

import numpy as np
import torch


def loss_fn(coeffs, feats, target):
    return ((feats @ coeffs - target) ** 2).mean()


def main(steps=100, lr=0.3):
    x = torch.linspace(-1, 1, 50, dtype=torch.float64)
    target = torch.sin(np.pi * x)
    feats = x.unsqueeze(1) ** torch.arange(4, dtype=torch.float64)
    coeffs = torch.zeros(4, dtype=torch.float64, requires_grad=True)

    losses = []
    for step in range(steps):
        loss = loss_fn(coeffs, feats, target)
        (g,) = torch.autograd.grad(loss, coeffs)
        with torch.no_grad():
            coeffs -= lr * g
        losses.append(loss.item())
        if step % 25 == 0:
            print(f"step {step:3d}  loss {loss.item():.8f}")

    for _ in range(2):  # Newton: H d = g, H built row by row from grad of grad
        loss = loss_fn(coeffs, feats, target)
        (g,) = torch.autograd.grad(loss, coeffs, create_graph=True)
        rows = [torch.autograd.grad(g[i], coeffs, retain_graph=True)[0] for i in range(4)]
        H = torch.stack(rows)
        d = np.linalg.solve(H.detach().numpy(), g.detach().numpy())
        with torch.no_grad():
            coeffs -= torch.from_numpy(d)
        losses.append(loss_fn(coeffs, feats, target).item())
    print("coefficients", [round(c, 5) for c in coeffs.tolist()])
    return losses + coeffs.tolist()


if __name__ == "__main__":
    main()
