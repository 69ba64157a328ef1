"""Sanity checks before training: overfit one batch, then find a learning rate.

    python examples/sanity_checks.py [--plot]      (--plot needs: pip install "trainlint[plot]")
"""
import sys

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

from guard.sanity import lr_find, overfit_one_batch

torch.manual_seed(0)
centers = torch.randn(3, 20)
y = torch.randint(0, 3, (512,))
X = centers[y] + torch.randn(512, 20)
train_loader = DataLoader(TensorDataset(X, y), batch_size=32, shuffle=True)
criterion = nn.CrossEntropyLoss()

model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 3))
optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

# 1. Can the model drive the loss on one batch to ~0? (model left as it was)
batch = next(iter(train_loader))
print(overfit_one_batch(model, batch, criterion))

# The same check catches a classic bug: a softmax fed into CrossEntropyLoss, here with the
# last layer accidentally frozen as well.
broken = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 3), nn.Softmax(dim=1))
broken[2].requires_grad_(False)
print(overfit_one_batch(broken, batch, criterion))

# 2. The learning-rate range test (model and optimizer left as they were).
found = lr_find(model, optimizer, train_loader, criterion)
print(found)
if "--plot" in sys.argv:
    found.plot("lr_find.png")
    print("wrote lr_find.png")

# 3. Train with the suggested rate.
for group in optimizer.param_groups:
    group["lr"] = found.suggestion
for epoch in range(3):
    for xb, yb in train_loader:
        optimizer.zero_grad()
        loss = criterion(model(xb), yb)
        loss.backward()
        optimizer.step()
    print(f"epoch {epoch}: loss {loss.item():.4f}")
