"""Reads its command line (argparse over sys.argv): fits a cubic with torch.optim.Adam."""

import argparse
import os
import sys

import numpy as np
import torch

parser = argparse.ArgumentParser()
parser.add_argument("name")
parser.add_argument("--steps", type=int, default=20)
parser.add_argument("--lr", type=float, default=0.05)
args = parser.parse_args()
print(f"script {os.path.basename(sys.argv[0])} name {args.name} argc {len(sys.argv)}")
print(f"main {__name__ == '__main__'}")

rng = np.random.default_rng(2)
xs = np.linspace(-1, 1, 64).astype(np.float32)
ys = (0.5 - 1.5 * xs + 2.0 * xs**3 + 0.05 * rng.standard_normal(64)).astype(np.float32)
x, y = torch.from_numpy(xs), torch.from_numpy(ys)
features = torch.stack([x**i for i in range(4)], dim=1)
coef = torch.zeros(4, requires_grad=True)
optimizer = torch.optim.Adam([coef], lr=args.lr)
for _ in range(args.steps):
    optimizer.zero_grad()
    loss = ((features @ coef - y) ** 2).mean()
    loss.backward()
    optimizer.step()
print(f"steps {args.steps} loss {loss.item():.8f}")
print(f"coef {coef.detach().tolist()}")
