"""A healthy training loop under guard.TrainingGuard: it stays silent.

    python examples/guard_good.py

Trains a small MLP on a synthetic classification task with gradient clipping
and early stopping (restoring the best weights), then prints the guard's report.
"""
import torch
from torch import nn

from guard import TrainingGuard


def make_data(n, generator):
    x = torch.randn(n, 20, generator=generator)
    y = x[:, :5].argmax(1)          # the label is a function of the input
    return x, y


def main():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x_train, y_train = make_data(2048, g)
    x_val, y_val = make_data(512, g)

    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                          nn.Linear(64, 5))
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-2)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=30 * 32)

    with TrainingGuard(model, optimizer, loss_fn=criterion, max_grad_norm=1.0,
                       patience=3, restore_best=True) as guard:
        for epoch in range(30):
            model.train()
            order = torch.randperm(len(x_train), generator=g)
            for i in range(0, len(order), 64):
                idx = order[i:i + 64]
                optimizer.zero_grad()
                loss = criterion(model(x_train[idx]), y_train[idx])
                loss.backward()
                optimizer.step()            # the guard clips and checks here
                scheduler.step()
            model.eval()
            with torch.no_grad():
                val_loss = criterion(model(x_val), y_val).item()
            print(f"epoch {epoch:2d}  val loss {val_loss:.4f}")
            if guard.early_stop(val_loss):
                print(f"early stop: best val loss {guard.best_metric:.4f}")
                break
    print(guard.report())


if __name__ == "__main__":
    main()
