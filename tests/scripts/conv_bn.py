"""A small CNN (Conv2d, BatchNorm2d, MaxPool2d, Flatten) trained with Adam, saved and loaded
with torch.save/torch.load into a second model. The convolution has no bias (BatchNorm
follows): a bias there gets only rounding-noise gradients, which Adam would amplify."""

import io

import numpy as np
import torch
from torch import nn

rng = np.random.default_rng(3)
images = rng.standard_normal((48, 1, 8, 8)).astype(np.float32)
labels = (images[:, 0, :4].mean((1, 2)) > images[:, 0, 4:].mean((1, 2))).astype(np.int64)


def make():
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 2))


model = make()
with torch.no_grad():
    for p in model.parameters():
        p.copy_(torch.tensor(rng.standard_normal(tuple(p.shape)).astype(np.float32) * 0.2))

optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
criterion = nn.CrossEntropyLoss()
x_all, y_all = torch.from_numpy(images), torch.from_numpy(labels)
for epoch in range(3):
    model.train()
    for i in range(0, 48, 16):
        optimizer.zero_grad()
        loss = criterion(model(x_all[i:i + 16]), y_all[i:i + 16])
        loss.backward()
        optimizer.step()
    print(f"epoch {epoch} loss {loss.item():.8f}")

buf = io.BytesIO()
torch.save(model.state_dict(), buf)
buf.seek(0)
clone = make()
clone.load_state_dict(torch.load(buf))
model.eval()
clone.eval()
with torch.no_grad():
    a, b = model(x_all), clone(x_all)
print(f"eval {a.sum().item():.6f} same {torch.equal(a, b)}")
print(f"running_mean {model[1].running_mean.tolist()}")
print(f"batches {int(model[1].num_batches_tracked)}")
