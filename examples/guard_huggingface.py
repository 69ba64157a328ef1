"""guard.TrainingGuard inside a Hugging Face transformers Trainer.

    pip install "trainlint[guard,integrations]"
    python examples/guard_huggingface.py          # a healthy run: no findings
    python examples/guard_huggingface.py --bad    # logits x100 and an unused layer

Nothing is downloaded: the model is a tiny PreTrainedModel defined here.
GuardTrainerCallback enters the guard in on_train_begin with the real torch
optimizer (accelerate's wrapper removed), reads each step's loss from the
model's output, checks the initial loss from the first batch's logits, stops
through the guard's early stopping, and leaves everything as it was. The
Trainer clips the gradients (max_grad_norm=1.0, its default), so the guard
does not clip again.
"""
import os
import sys
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from torch import nn  # noqa: E402
from transformers import (PretrainedConfig, PreTrainedModel, Trainer,  # noqa: E402
                          TrainingArguments)

from guard.integrations.huggingface import GuardTrainerCallback  # noqa: E402


class TinyConfig(PretrainedConfig):
    model_type = "guard-example-tiny"

    def __init__(self, n_in=20, hidden=64, num_labels=5, bad=False, **kwargs):
        super().__init__(num_labels=num_labels, **kwargs)
        self.n_in, self.hidden, self.bad = n_in, hidden, bad


class TinyClassifier(PreTrainedModel):
    config_class = TinyConfig

    def __init__(self, config):
        super().__init__(config)
        self.net = nn.Sequential(nn.Linear(config.n_in, config.hidden), nn.ReLU(),
                                 nn.Linear(config.hidden, config.num_labels))
        self.logit_scale = 100.0 if config.bad else 1.0
        if config.bad:
            self.unused = nn.Linear(config.n_in, config.num_labels)   # never used

    def _init_weights(self, module):
        pass                                    # keep PyTorch's default initialisation

    def forward(self, x, labels=None):
        logits = self.net(x) * self.logit_scale
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return {"loss": loss, "logits": logits}


class Data(torch.utils.data.Dataset):
    def __init__(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 20, generator=g)
        self.y = self.x[:, :5].argmax(1)        # the label is a function of the input

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "labels": self.y[i]}


def main(bad=False):
    torch.manual_seed(0)
    guard_cb = GuardTrainerCallback(patience=3, tensorboard="runs/guard_huggingface")
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, report_to=[], use_cpu=True, num_train_epochs=8,
                                 per_device_train_batch_size=64, learning_rate=3e-3,
                                 eval_strategy="epoch", save_strategy="no",
                                 logging_strategy="epoch", disable_tqdm=True)
        trainer = Trainer(model=TinyClassifier(TinyConfig(bad=bad)), args=args,
                          train_dataset=Data(1024, 0), eval_dataset=Data(256, 1),
                          callbacks=[guard_cb])
        trainer.train()
    print(guard_cb.guard.report())
    print("TensorBoard: tensorboard --logdir runs/guard_huggingface")


if __name__ == "__main__":
    main(bad="--bad" in sys.argv)
