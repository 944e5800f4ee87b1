"""An MLP classifier with torch.nn, torch.optim.SGD and torch.utils.data on NumPy data;
prints the loss of every epoch and the final accuracy."""

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

rng = np.random.default_rng(0)
x = rng.standard_normal((256, 8)).astype(np.float32)
y = (x @ rng.standard_normal((8, 3)).astype(np.float32)).argmax(1).astype(np.int64)

model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3))
with torch.no_grad():  # the same initial weights in every framework
    for layer in (model[0], model[2]):
        w = rng.standard_normal(tuple(layer.weight.shape)).astype(np.float32) * 0.3
        layer.weight.copy_(torch.tensor(w))
        layer.bias.zero_()

loader = DataLoader(TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), batch_size=32)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
loss_fn = nn.CrossEntropyLoss()
for epoch in range(5):
    total = 0.0
    for xb, yb in loader:
        optimizer.zero_grad()
        loss = loss_fn(model(xb), yb)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(yb)
    print(f"epoch {epoch} loss {total / len(y):.8f}")

model.eval()
with torch.no_grad():
    logits = model(torch.from_numpy(x))
    acc = (logits.argmax(1) == torch.from_numpy(y)).float().mean().item()
print(f"final loss {loss.item():.8f} accuracy {acc:.6f}")
print(f"requires_grad {logits.requires_grad}")
