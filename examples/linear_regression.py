"""Fit a linear model with autograd and plain gradient descent.

Runs unchanged on PyTorch: replace ``import fluxion as torch`` with ``import torch``.

    python examples/linear_regression.py
"""

import fluxion as torch


def main(steps: int = 200, lr: float = 0.1, seed: int = 0) -> float:
    torch.manual_seed(seed)
    true_w = torch.tensor([[2.0], [-3.4], [0.5]])
    true_b = 4.2
    x = torch.randn(256, 3)
    y = x @ true_w + true_b + 0.01 * torch.randn(256, 1)

    w = torch.zeros(3, 1, requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    for step in range(steps):
        loss = ((x @ w + b - y) ** 2).mean()
        loss.backward()
        with torch.no_grad():
            w -= lr * w.grad
            b -= lr * b.grad
            w.grad.zero_()
            b.grad.zero_()
        if step % 50 == 0 or step == steps - 1:
            print(f"step {step:4d}  loss {loss.item():.6f}")
    print("learned w:", [round(v, 3) for v in w.flatten().tolist()], " b:", round(b.item(), 3))
    return loss.item()


if __name__ == "__main__":
    main()
