"""guard.TrainingGuard inside a PyTorch Lightning Trainer.

    pip install "trainlint[guard,integrations]"
    python examples/guard_lightning.py            # a healthy run: no findings
    python examples/guard_lightning.py --bad      # logits x100 and an unused layer

GuardCallback enters the guard when training starts, feeds it the loss of
each training_step, hooks the module's loss (self.criterion) for the
initial-loss check, stops the trainer through the guard's early stopping,
and leaves everything as it was when fit() returns or fails. The trainer
clips the gradients (gradient_clip_val), so the guard does not clip again.
"""
import sys

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

try:
    import lightning.pytorch as pl
except ImportError:
    import pytorch_lightning as pl

from guard.integrations.lightning import GuardCallback


class Classifier(pl.LightningModule):
    def __init__(self, bad=False):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 5))
        self.criterion = nn.CrossEntropyLoss()
        self.logit_scale = 100.0 if bad else 1.0
        if bad:
            self.unused = nn.Linear(20, 5)      # trainable, but never used in forward

    def forward(self, x):
        return self.net(x) * self.logit_scale

    def training_step(self, batch, batch_idx):
        x, y = batch
        return self.criterion(self(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", self.criterion(self(x), y))

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=3e-3)


def loader(n, seed, shuffle):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 20, generator=g)
    y = x[:, :5].argmax(1)                      # the label is a function of the input
    return DataLoader(TensorDataset(x, y), batch_size=64, shuffle=shuffle, generator=g)


def main(bad=False):
    torch.manual_seed(0)
    guard_cb = GuardCallback(monitor="val_loss", patience=3, restore_best=True,
                             tensorboard="runs/guard_lightning")
    trainer = pl.Trainer(max_epochs=8, gradient_clip_val=1.0, callbacks=[guard_cb],
                         accelerator="cpu", devices=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.fit(Classifier(bad), loader(1024, 0, True), loader(256, 1, False))
    print(guard_cb.guard.report())
    print("TensorBoard: tensorboard --logdir runs/guard_lightning")


if __name__ == "__main__":
    main(bad="--bad" in sys.argv)
