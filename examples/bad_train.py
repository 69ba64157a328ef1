"""A small training script with three classic bugs (trainlint finds them all)."""
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

X = torch.randn(512, 20)
y = torch.randint(0, 3, (512,))
train_loader = DataLoader(TensorDataset(X[:400], y[:400]), batch_size=32)
val_loader = DataLoader(TensorDataset(X[400:], y[400:]), batch_size=64)

model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Dropout(0.2), nn.Linear(64, 3))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
criterion = nn.CrossEntropyLoss()

for epoch in range(5):
    model.train()
    for xb, yb in train_loader:
        probs = F.softmax(model(xb), dim=1)
        loss = criterion(probs, yb)
        loss.backward()
        optimizer.step()

    correct = 0
    for xb, yb in val_loader:
        correct += (model(xb).argmax(1) == yb).sum().item()
    print(f"epoch {epoch}: val acc {correct / 112:.3f}")
