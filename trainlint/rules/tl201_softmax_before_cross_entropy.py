from __future__ import annotations

from typing import Iterator, Optional

from trainlint.analysis.losses import is_loss_call
from trainlint.analysis.torch_api import CROSS_ENTROPY_FUNCS, CROSS_ENTROPY_MODULES
from trainlint.analysis.values import SOFTMAX, activation_input, snippet, source_of
from trainlint.rules.base import Replacement, Report, Rule


class SoftmaxBeforeCrossEntropy(Rule):
    """## What it does
    Finds probabilities — the output of `softmax`, `nn.Softmax`, or a model whose `forward`
    or `nn.Sequential` ends in one — passed to `nn.CrossEntropyLoss` / `F.cross_entropy`.

    ## Why is this bad?
    Cross-entropy in PyTorch expects raw logits: it applies `log_softmax` itself. Feeding it
    probabilities applies softmax twice, which squashes the outputs, shrinks the gradients and
    makes the model learn slowly or stall well above the loss it could reach — with no error.
    (`log_softmax` before the loss is harmless: it is idempotent.)

    ## Example
    ```python
    probs = F.softmax(model(x), dim=1)
    loss = nn.CrossEntropyLoss()(probs, y)
    ```

    ## Use instead
    ```python
    logits = model(x)
    loss = nn.CrossEntropyLoss()(logits, y)
    probs = logits.softmax(dim=1)  # for reporting only
    ```
    """

    code = "TL201"
    name = "softmax-before-cross-entropy"
    severity = "error"
    fixable = "unsafe"

    VALID = (
        """
        import torch.nn as nn
        import torch.nn.functional as F
        class Net(nn.Module):
            def forward(self, x):
                logits = self.fc(x)
                return logits, F.softmax(logits, dim=1)
        model = Net()
        logits, probs = model(x)
        loss = nn.CrossEntropyLoss()(logits, y)
        """,
        """
        import torch.nn as nn
        criterion = nn.CrossEntropyLoss()
        logits = model(x)
        loss = criterion(logits, y)
        probs = logits.softmax(dim=1)  # reporting only, after the loss
        acc = (probs.argmax(1) == y).float().mean()
        """,
        """
        import torch.nn.functional as F
        out = F.log_softmax(model(x), dim=1)
        loss = F.cross_entropy(out, y)
        """,
        """
        import torch.nn as nn
        import torch.nn.functional as F
        class Net(nn.Module):
            def forward(self, x):
                x = self.fc(x)
                if not self.training:
                    return F.softmax(x, dim=1)
                return x
        net = Net()
        loss = nn.CrossEntropyLoss()(net(x), y)
        """,
        """
        import torch.nn as nn
        import torch.nn.functional as F
        # softmax feeding a different loss (NLL of log-probabilities is another matter)
        probs = F.softmax(model(x), dim=1)
        loss = nn.MSELoss()(probs, onehot)
        """,
        """
        import torch.nn as nn
        import torch.nn.functional as F
        out = model(x)
        p = F.softmax(out, dim=1)
        out = head(out)
        loss = F.cross_entropy(out, y)
        """,
        """
        import torch.nn as nn
        # a layer named `softmax` that is a LogSoftmax (harmless before cross-entropy)
        class RNN(nn.Module):
            def __init__(self):
                super().__init__()
                self.out = nn.Linear(128, 10)
                self.softmax = nn.LogSoftmax(dim=1)
            def forward(self, x):
                return self.softmax(self.out(x))
        rnn = RNN()
        loss = nn.CrossEntropyLoss()(rnn(x), y)
        """,
    )
    INVALID = (
        """
        import torch.nn as nn
        import torch.nn.functional as F
        class Net(nn.Module):
            def forward(self, x):
                logits = self.fc(x)
                return logits, F.softmax(logits, dim=1)
        model = Net()
        logits, probs = model(x)
        loss = nn.CrossEntropyLoss()(probs, y)  # !
        """,
        """
        import torch.nn as nn
        import torch.nn.functional as F
        criterion = nn.CrossEntropyLoss()
        probs = F.softmax(model(x), dim=1)
        loss = criterion(probs, y)  # !
        """,
        """
        from torch.nn.functional import softmax, cross_entropy
        loss = cross_entropy(softmax(model(x), dim=-1), y)  # !
        """,
        """
        import torch
        import torch.nn as nn
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(10, 3)
            def forward(self, x):
                return torch.softmax(self.fc(x), dim=1)

        class Trainer:
            def __init__(self):
                self.model = Net().to("cuda")
                self.criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
            def train_step(self, x, y):
                return self.criterion(self.model(x), y)  # !
        """,
        """
        import torch.nn as nn
        model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 3), nn.Softmax(dim=1))
        loss_fn = nn.CrossEntropyLoss()
        for x, y in loader:
            loss = loss_fn(model(x), y)  # !
        """,
        """
        import torch.nn as nn
        import torch.nn.functional as F
        def predict(model, x):
            return F.softmax(model(x), dim=1)

        def train(model, loader, criterion):
            for x, y in loader:
                out = predict(model, x)
                loss = criterion(out, y)  # !

        train(net, loader, nn.CrossEntropyLoss())
        """,
    )

    def check(self, ctx) -> Iterator[Report]:
        for call in ctx.facts.calls:
            if not is_loss_call(ctx, call, CROSS_ENTROPY_FUNCS, CROSS_ENTROPY_MODULES):
                continue
            inp = call.arg(0, "input")
            if inp is None:
                continue
            why = source_of(ctx, inp, call, SOFTMAX)
            if why is None:
                continue
            text = snippet(ctx, inp)
            yield Report(
                inp,
                f"`{text}` is softmax output (from {why}) fed to cross-entropy, which applies "
                f"log_softmax itself: softmax runs twice and the gradients shrink. Pass the raw logits.",
                self._fix(ctx, inp),
            )

    @staticmethod
    def _fix(ctx, inp) -> Optional[Replacement]:
        """Drop a softmax written directly inside the loss call."""
        inner = activation_input(ctx, inp, SOFTMAX)
        return Replacement(inp, inner, "unsafe", "drop the softmax feeding the loss") if inner is not None else None


RULE = SoftmaxBeforeCrossEntropy
