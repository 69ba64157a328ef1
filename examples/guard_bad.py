"""A broken training loop under guard.TrainingGuard: every bug is named.

    python examples/guard_bad.py

The code looks fine to a linter; the numbers do not:
  * the output layer is initialised 100x too large (init scale, loss at step 0),
  * the first layer is cut off by a .detach() (it never gets a gradient),
  * the learning rate is far too high for SGD (exploding gradients, and the
    loss never gets anywhere).
The guard warns once per cause, pointing at the line of your loop; had the loss
gone NaN it would have stopped the run (NonFiniteError) before the non-finite
update reached the weights.
"""
import torch
from torch import nn

from guard import GuardError, TrainingGuard


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Linear(20, 64)
        self.body = nn.Sequential(nn.ReLU(), nn.Linear(64, 64), nn.ReLU())
        self.head = nn.Linear(64, 5)
        with torch.no_grad():
            self.head.weight.mul_(100.0)            # bug 1: a huge output layer

    def forward(self, x):
        h = self.encoder(x).detach()                # bug 2: the encoder never learns
        return self.head(self.body(h))


def main():
    torch.manual_seed(0)
    x = torch.randn(2048, 20)
    y = x[:, :5].argmax(1)
    model = Net()
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=50.0)  # bug 3: lr far too high

    guard = TrainingGuard(model, optimizer, loss_fn=criterion, check_every=10)
    try:
        with guard:
            for step in range(300):
                idx = torch.randint(0, len(x), (64,))
                optimizer.zero_grad()
                loss = criterion(model(x[idx]), y[idx])
                loss.backward()
                optimizer.step()
    except GuardError as err:
        print(f"\nstopped by the guard: {type(err).__name__} at step {err.step} "
              f"({err.param})\n")
    print(guard.report())
    finite = all(torch.isfinite(p).all() for p in model.parameters())
    print(f"\nparameters still finite: {finite}")


if __name__ == "__main__":
    main()
