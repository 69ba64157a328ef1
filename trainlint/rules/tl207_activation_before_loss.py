from __future__ import annotations

from typing import Iterator

from trainlint.analysis.losses import BCE_LOGITS_FUNCS, BCE_LOGITS_MODULES, CE_FUNCS, CE_MODULES, is_loss_call
from trainlint.analysis.outputs import DROPOUT, RELU, final_output
from trainlint.analysis.values import snippet
from trainlint.rules.base import Report, Rule


class ActivationBeforeLoss(Rule):
    """## What it does
    Finds a ReLU or a dropout applied to the final logits right before a loss that takes
    logits (`nn.CrossEntropyLoss` / `F.cross_entropy`, `nn.BCEWithLogitsLoss` /
    `F.binary_cross_entropy_with_logits`): written in the loss call (`criterion(F.relu(out),
    y)`), through a variable or helper, or as the last step of a model whose `forward` or
    `nn.Sequential` visibly ends in `nn.ReLU` / `F.relu` / `nn.Dropout`.

    ## Why is this bad?
    Logits must be free to go negative. After a ReLU every negative score becomes 0: the
    classes it held get the same probability, their gradient is zero, and the model cannot
    push a wrong class down (with BCE, no prediction can fall below 0.5). Dropout on the
    logits randomly zeroes class scores and rescales the others, so the loss is computed on
    distorted predictions. Training runs and plateaus, with no error.

    It stays silent when the activation is followed by a last Linear layer (the usual
    classifier head), when the model's end cannot be seen, and for other losses.

    ## Example
    ```python
    model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10), nn.ReLU())
    loss = nn.CrossEntropyLoss()(model(x), y)
    ```

    ## Use instead
    ```python
    model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
    loss = nn.CrossEntropyLoss()(model(x), y)
    ```
    """

    code = "TL207"
    name = "activation-before-loss"
    severity = "error"

    VALID = (
        """
        import torch.nn as nn
        # the ReLU and dropout sit before the last Linear layer
        model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Dropout(0.5), nn.Linear(256, 10))
        loss = nn.CrossEntropyLoss()(model(x), y)
        """,
        """
        import torch.nn as nn
        import torch.nn.functional as F
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc1 = nn.Linear(20, 64)
                self.drop = nn.Dropout(0.3)
                self.fc2 = nn.Linear(64, 3)
            def forward(self, x):
                x = self.drop(F.relu(self.fc1(x)))
                return self.fc2(x)
        net = Net()
        loss = F.cross_entropy(net(x), y)
        """,
        """
        import torch.nn as nn
        import torch.nn.functional as F
        # a ReLU before a regression loss is a choice, not a bug
        model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 1), nn.ReLU())
        loss = F.mse_loss(model(x), y)
        """,
        """
        import torch.nn as nn
        import torch.nn.functional as F
        # ReLU on features that a head turns into logits
        feats = F.relu(backbone(x))
        logits = head(feats)
        loss = F.cross_entropy(logits, y)
        """,
        """
        import torch.nn as nn
        import torch.nn.functional as F
        class Net(nn.Module):
            def forward(self, x):
                x = self.fc(x)
                if self.clip:
                    x = F.relu(x)
                return x
        net = Net()
        loss = nn.BCEWithLogitsLoss()(net(x), y)
        """,
    )
    INVALID = (
        """
        import torch.nn as nn
        model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10), nn.ReLU())
        criterion = nn.CrossEntropyLoss()
        for x, y in loader:
            loss = criterion(model(x), y)  # !
        """,
        """
        import torch.nn.functional as F
        from torch import nn
        criterion = nn.BCEWithLogitsLoss()
        out = model(x)
        loss = criterion(F.relu(out), y)  # !
        """,
        """
        import torch.nn as nn
        import torch.nn.functional as F
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc1 = nn.Linear(20, 64)
                self.fc2 = nn.Linear(64, 3)
                self.dropout = nn.Dropout(0.5)
            def forward(self, x):
                x = F.relu(self.fc1(x))
                x = self.fc2(x)
                return self.dropout(x)

        class Trainer:
            def __init__(self):
                self.model = Net().cuda()
                self.criterion = nn.CrossEntropyLoss()
            def train_step(self, x, y):
                return self.criterion(self.model(x), y)  # !
        """,
        """
        import torch
        import torch.nn.functional as F
        def logits_of(model, x):
            return torch.relu(model(x))

        def train(model, loader):
            for x, y in loader:
                loss = F.cross_entropy(logits_of(model, x), y)  # !
        """,
    )

    def check(self, ctx) -> Iterator[Report]:
        for call in ctx.facts.calls:
            if call.has_star_args:
                continue
            if is_loss_call(ctx, call, CE_FUNCS, CE_MODULES):
                loss = "cross-entropy"
            elif is_loss_call(ctx, call, BCE_LOGITS_FUNCS, BCE_LOGITS_MODULES):
                loss = "BCE-with-logits"
            else:
                continue
            inp = call.arg(0, "input")
            out = final_output(ctx, inp, call) if inp is not None else None
            if out is None or out.kind not in (RELU, DROPOUT):
                continue
            if out.kind == RELU:
                harm = "every negative score becomes 0, so wrong classes cannot be pushed down (their gradient is zero)"
            else:
                harm = "random class scores are zeroed and the others rescaled, so the loss sees distorted predictions"
            yield Report(
                inp,
                f"`{snippet(ctx, inp)}` went through a {out.kind} (from {out.why}) right before "
                f"{loss}, which takes raw logits: {harm}. Feed the last layer's output directly.",
            )


RULE = ActivationBeforeLoss
