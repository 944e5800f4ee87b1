"""An Elman RNN unrolled by hand: in-place writes into a preallocated output buffer,
views, cat/stack, tanh and sigmoid, float64, manual SGD with weight decay (plain PyTorch)."""

import numpy as np
import torch


def main(steps=30, lr=0.1, hidden=6, seq_len=8):
    rng = np.random.default_rng(3)
    xs = torch.from_numpy(rng.standard_normal((16, seq_len, 2)))  # float64
    target = (xs[:, :, 0].cumsum(dim=1) > 0).double()  # label: running sum positive?

    Wx = torch.tensor(rng.standard_normal((2, hidden)) * 0.5, requires_grad=True)
    Wh = torch.tensor(rng.standard_normal((hidden, hidden)) * 0.3, requires_grad=True)
    Wo = torch.tensor(rng.standard_normal((hidden + 2, 1)) * 0.5, requires_grad=True)
    params = [Wx, Wh, Wo]

    losses = []
    for step in range(steps):
        h = torch.zeros(16, hidden, dtype=torch.float64)
        logits = torch.zeros(16, seq_len, dtype=torch.float64)
        for t in range(seq_len):
            x_t = xs[:, t, :]
            h = torch.tanh(x_t @ Wx + h @ Wh)
            feat = torch.cat([h, x_t], dim=1)
            logits[:, t] = (feat @ Wo).squeeze(1)  # in-place write into the buffer
        p = torch.sigmoid(logits).clamp(1e-6, 1 - 1e-6)
        bce = -(target * p.log() + (1 - target) * (1 - p).log()).mean()
        loss = bce + 1e-3 * sum((w ** 2).sum() for w in params)
        loss.backward()
        with torch.no_grad():
            for w in params:
                w.add_(w.grad, alpha=-lr)
                w.grad = None
        losses.append(loss.item())
        if step % 10 == 0:
            print(f"step {step:3d}  loss {loss.item():.6f}")
    stacked = torch.stack([Wx.sum(), Wh.sum(), Wo.sum()])
    return losses + stacked.tolist()


if __name__ == "__main__":
    main()
