"""torch.nn.functional, torch.optim.lr_scheduler, torch.autograd.grad, torch.no_grad,
torch.device and torch.accelerator in one small regression."""

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim import lr_scheduler

device = (torch.accelerator.current_accelerator() if torch.accelerator.is_available()
          else torch.device("cpu"))
print(f"accelerator {torch.accelerator.is_available()} device {device.type}")

rng = np.random.default_rng(1)
x = torch.tensor(rng.standard_normal((64, 5)).astype(np.float32), device=device)
y = torch.tensor(rng.standard_normal((64, 2)).astype(np.float32), device=device)
labels = torch.tensor(rng.integers(0, 2, 64), device=device)


def param(*shape, scale=0.3):
    return torch.tensor((rng.standard_normal(shape) * scale).astype(np.float32),
                        requires_grad=True, device=device)


w1, b1, w2, b2 = param(16, 5), param(16, scale=0.1), param(2, 16), param(2, scale=0.1)
params = [w1, b1, w2, b2]
optimizer = torch.optim.SGD(params, lr=0.2, momentum=0.5)
scheduler = lr_scheduler.StepLR(optimizer, step_size=10, gamma=0.5)


def forward(inp):
    h = F.gelu(F.linear(inp, w1, b1))
    h = F.layer_norm(h, (16,))
    h = F.dropout(h, p=0.5, training=False)
    return F.linear(h, w2, b2)


for step in range(30):
    optimizer.zero_grad()
    out = forward(x)
    loss = F.mse_loss(out, y) + 0.1 * F.cross_entropy(out, labels, label_smoothing=0.1)
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    scheduler.step()
    if step % 10 == 9:
        print(f"step {step} loss {loss.item():.8f} norm {float(norm):.8f} "
              f"lr {scheduler.get_last_lr()[0]:.6f}")

with torch.no_grad():
    probs = F.softmax(forward(x), dim=-1)
    logp = F.log_softmax(forward(x), dim=-1)
print(f"no_grad {probs.requires_grad} {torch.is_grad_enabled()}")
print(f"probs {probs[:3, 0].tolist()} {logp.exp().sum().item():.6f}")

# higher-order gradients with torch.autograd.grad
z = torch.tensor([0.5, -1.0, 2.0], requires_grad=True)
(g,) = torch.autograd.grad((z**3).sum(), z, create_graph=True)
(gg,) = torch.autograd.grad(g.sum(), z)
print(f"grad {g.tolist()} gradgrad {gg.tolist()}")
# a gradient with respect to the input of the trained network
inp = x[:4].clone().requires_grad_(True)
(gx,) = torch.autograd.grad(forward(inp).pow(2).sum(), inp)
print(f"input_grad {gx.abs().sum().item():.8f} {gx[0].tolist()}")
