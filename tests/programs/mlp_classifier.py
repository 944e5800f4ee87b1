"""A two-layer MLP classifier on synthetic blobs: matmul, relu, log_softmax, gather,
manual SGD under torch.no_grad() (plain PyTorch)."""

import numpy as np
import torch
import torch.nn.functional as F


def make_data(rng, n_per_class=60, n_classes=3):
    centers = np.array([[2.0, 0.0], [-1.0, 1.7], [-1.0, -1.7]])
    xs, ys = [], []
    for c in range(n_classes):
        xs.append(centers[c] + 0.8 * rng.standard_normal((n_per_class, 2)))
        ys.append(np.full(n_per_class, c))
    return np.concatenate(xs).astype(np.float32), np.concatenate(ys).astype(np.int64)


def main(steps=80, lr=0.5, hidden=16):
    rng = np.random.default_rng(1)
    X_np, y_np = make_data(rng)
    X = torch.tensor(X_np)
    y = torch.from_numpy(y_np)

    W1 = torch.tensor(rng.standard_normal((2, hidden)).astype(np.float32) * 0.5,
                      requires_grad=True)
    b1 = torch.zeros(hidden, requires_grad=True)
    W2 = torch.tensor(rng.standard_normal((hidden, 3)).astype(np.float32) * 0.5)
    W2.requires_grad_()
    b2 = torch.zeros(3, requires_grad=True)
    params = [W1, b1, W2, b2]

    losses = []
    for step in range(steps):
        h = torch.relu(torch.matmul(X, W1) + b1)
        logits = h @ W2 + b2
        logp = F.log_softmax(logits, dim=1)
        loss = -logp.gather(1, y.unsqueeze(1)).mean()
        for p in params:
            p.grad = None
        loss.backward()
        with torch.no_grad():
            for p in params:
                p.sub_(lr * p.grad)
        losses.append(loss.item())
        if step % 20 == 0:
            acc = (logits.argmax(dim=1) == y).float().mean().item()
            print(f"step {step:3d}  loss {loss.item():.5f}  acc {acc:.3f}")

    with torch.no_grad():
        logits = F.relu(X @ W1 + b1) @ W2 + b2
        acc = (logits.argmax(1) == y).float().mean().item()
        probs = F.softmax(logits, dim=-1)
    print(f"final accuracy {acc:.3f}")
    return [*losses, acc, probs.sum().item()]


if __name__ == "__main__":
    main()
