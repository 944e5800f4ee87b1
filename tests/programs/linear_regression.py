"""Linear regression fitted with manual SGD on autograd gradients (plain PyTorch)."""

import numpy as np
import torch


def main(steps=60, lr=0.1):
    rng = np.random.default_rng(0)
    X_np = rng.standard_normal((128, 3)).astype(np.float32)
    w_true = np.array([[2.0], [-3.0], [0.5]], dtype=np.float32)
    y_np = X_np @ w_true + 0.7 + 0.1 * rng.standard_normal((128, 1)).astype(np.float32)

    X = torch.from_numpy(X_np)
    y = torch.tensor(y_np)
    w = torch.zeros(3, 1, requires_grad=True)
    b = torch.zeros(1, requires_grad=True)

    losses = []
    for step in range(steps):
        pred = X @ w + b
        loss = ((pred - y) ** 2).mean()
        loss.backward()
        with torch.no_grad():
            w -= lr * w.grad
            b -= lr * b.grad
            w.grad.zero_()
            b.grad.zero_()
        losses.append(loss.item())
        if step % 10 == 0:
            print(f"step {step:3d}  loss {loss.item():.6f}")
    print("w", [round(v, 4) for v in w.detach().flatten().tolist()], "b", round(b.item(), 4))
    return losses + w.detach().flatten().tolist() + [b.item()]


if __name__ == "__main__":
    main()
