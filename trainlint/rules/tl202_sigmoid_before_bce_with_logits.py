from __future__ import annotations

from typing import Iterator, Optional


from trainlint.analysis.losses import loss_input
from trainlint.analysis.values import SIGMOID, activation_input, snippet, source_of
from trainlint.rules.base import Replacement, Report, Rule


class SigmoidBeforeBceWithLogits(Rule):
    """## What it does
    Finds the output of a sigmoid — `torch.sigmoid`, `x.sigmoid()`, `nn.Sigmoid`, or a
    helper, model `forward` or `nn.Sequential` that ends in one — passed as the input of
    `nn.BCEWithLogitsLoss` / `F.binary_cross_entropy_with_logits`, or of a loss class that
    hands its input on to one unchanged (a focal loss built on it). A sigmoid behind a flag
    parameter (`def forward(self, x, apply_sigmoid=False)`) counts only for calls that turn
    the flag on.

    ## Why is this bad?
    The `with_logits` losses apply the sigmoid themselves (in a numerically stable way).
    Given probabilities, they squash them a second time into the narrow range
    0.5–0.73: the loss can never get close to zero, the gradients shrink, and the model
    learns slowly or not at all — without any error.

    ## Example
    ```python
    probs = torch.sigmoid(model(x))
    loss = nn.BCEWithLogitsLoss()(probs, y)
    ```

    ## Use instead
    ```python
    logits = model(x)
    loss = nn.BCEWithLogitsLoss()(logits, y)
    probs = torch.sigmoid(logits)  # for metrics only
    ```
    """

    code = "TL202"
    name = "sigmoid-before-bce-with-logits"
    severity = "error"
    fixable = "unsafe"

    VALID = (
        """
        import torch
        import torch.nn as nn
        criterion = nn.BCEWithLogitsLoss()
        logits = model(x)
        loss = criterion(logits, y)
        probs = torch.sigmoid(logits)  # metrics only
        """,
        """
        import torch
        import torch.nn.functional as F
        # a sigmoid on the target (soft labels from a teacher) is fine
        loss = F.binary_cross_entropy_with_logits(student(x), torch.sigmoid(teacher(x)))
        """,
        """
        import torch
        import torch.nn as nn
        # plain BCE wants probabilities
        probs = torch.sigmoid(model(x))
        loss = nn.BCELoss()(probs, y)
        """,
        """
        import torch
        import torch.nn as nn
        class Net(nn.Module):
            def forward(self, x):
                x = self.fc(x)
                if not self.training:
                    return torch.sigmoid(x)
                return x
        net = Net()
        loss = nn.BCEWithLogitsLoss()(net(x), y)
        """,
        """
        import torch
        import torch.nn.functional as F
        out = model(x)
        p = out.sigmoid()
        out = head(out)
        loss = F.binary_cross_entropy_with_logits(out, y)
        """,
        """
        import torch
        import torch.nn as nn
        # sigmoid behind a flag that defaults off: the training call gets logits
        class ReviewClassifier(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(300, 1)
            def forward(self, x_in, apply_sigmoid=False):
                y_out = self.fc(x_in).squeeze()
                if apply_sigmoid:
                    y_out = torch.sigmoid(y_out)
                return y_out
        classifier = ReviewClassifier()
        loss_func = nn.BCEWithLogitsLoss()
        y_pred = classifier(x_in=batch["x"].float())
        loss = loss_func(y_pred, batch["y"].float())
        """,
        """
        import torch
        import torch.nn as nn
        import torch.nn.functional as F
        # a loss class that turns probabilities back into logits before the with-logits loss
        class ProbFocalLoss(nn.Module):
            def forward(self, probs, targets):
                logits = torch.logit(probs, eps=1e-6)
                return F.binary_cross_entropy_with_logits(logits, targets)
        model = nn.Sequential(nn.Linear(4, 1), nn.Sigmoid())
        crit = ProbFocalLoss()
        loss = crit(model(x), y)
        """,
        """
        import torch
        import torch.nn.functional as F
        # the helper feeds its second argument (the teacher's soft targets) as the target
        def distill(student_logits, teacher_probs):
            return F.binary_cross_entropy_with_logits(student_logits, teacher_probs)
        loss = distill(student(x), torch.sigmoid(teacher(x)))
        """,
        """
        import torch
        import torch.nn as nn
        # a wrapper of the plain BCE: probabilities are what it wants
        class MaskedBCE(nn.Module):
            def __init__(self):
                super().__init__()
                self.bce = nn.BCELoss(reduction="none")
            def forward(self, probs, y, mask):
                return (self.bce(probs, y) * mask).mean()
        crit = MaskedBCE()
        loss = crit(torch.sigmoid(model(x)), y, m)
        """,
    )
    INVALID = (
        """
        import torch
        import torch.nn as nn
        # near-miss of the flag: the training call turns the sigmoid on
        class ReviewClassifier(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(300, 1)
            def forward(self, x_in, apply_sigmoid=False):
                y_out = self.fc(x_in).squeeze()
                if apply_sigmoid:
                    y_out = torch.sigmoid(y_out)
                return y_out
        classifier = ReviewClassifier()
        loss_func = nn.BCEWithLogitsLoss()
        y_pred = classifier(batch["x"].float(), True)
        loss = loss_func(y_pred, batch["y"].float())  # !
        """,
        """
        import torch
        import torch.nn as nn
        criterion = nn.BCEWithLogitsLoss()
        probs = torch.sigmoid(model(x))
        loss = criterion(probs, y)  # !
        """,
        """
        import torch.nn.functional as F
        loss = F.binary_cross_entropy_with_logits(model(x).sigmoid(), y)  # !
        """,
        """
        from torch import nn
        model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 1), nn.Sigmoid())
        loss_fn = nn.BCEWithLogitsLoss(pos_weight=w)
        for x, y in loader:
            loss = loss_fn(model(x), y)  # !
        """,
        """
        import torch
        import torch.nn as nn
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(10, 1)
            def forward(self, x):
                return torch.sigmoid(self.fc(x)).squeeze(1)

        class Trainer:
            def __init__(self):
                self.model = Net().cuda()
                self.criterion = nn.BCEWithLogitsLoss()
            def step(self, x, y):
                return self.criterion(self.model(x), y)  # !
        """,
        """
        import torch.nn.functional as F
        from torch.nn.functional import sigmoid
        def predict(model, x):
            return sigmoid(model(x))

        def train(model, loader):
            for x, y in loader:
                loss = F.binary_cross_entropy_with_logits(input=predict(model, x), target=y)  # !
        """,
        """
        import torch
        import torch.nn as nn
        import torch.nn.functional as F
        # a focal loss class built on the with-logits loss (LMFD-PAD before its fix)
        class WeightedFocalLoss(nn.Module):
            def __init__(self, alpha=.25, gamma=2):
                super().__init__()
                self.gamma = gamma
            def forward(self, inputs, targets):
                bce = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
                pt = torch.exp(-bce)
                return ((1 - pt) ** self.gamma * bce).mean()
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.cls = nn.Linear(8, 1)
            def forward(self, x):
                return torch.sigmoid(self.cls(x)), x
        model = Net().cuda()
        criterion = WeightedFocalLoss(alpha=.5).cuda()
        for x, y in loader:
            pred, _ = model(x)
            pred = torch.squeeze(pred)
            loss = criterion(pred.type(torch.cuda.FloatTensor), y)  # !
        """,
    )

    def check(self, ctx) -> Iterator[Report]:
        for call in ctx.facts.calls:
            if call.has_star_args:
                continue
            try:
                found = loss_input(ctx, call, "bce_with_logits")
                if found is None:
                    continue
                inp, via = found
                why = source_of(ctx, inp, call, SIGMOID) if inp is not None else None
            except RecursionError:  # pathological value chains: cannot tell
                continue
            if why is None:
                continue
            text = snippet(ctx, inp)
            through = f" (through {via})" if via else ""
            yield Report(
                inp,
                f"`{text}` is sigmoid output (from {why}) fed to a `with_logits` BCE loss{through}, which "
                f"applies the sigmoid itself: the probabilities are squashed twice and the loss "
                f"cannot fall. Pass the raw logits (or use `BCELoss` on probabilities).",
                self._fix(ctx, inp),
            )

    @staticmethod
    def _fix(ctx, inp) -> Optional[Replacement]:
        """Drop a sigmoid written directly inside the loss call."""
        inner = activation_input(ctx, inp, SIGMOID)
        return Replacement(inp, inner, "unsafe", "drop the sigmoid feeding the loss") if inner is not None else None


RULE = SigmoidBeforeBceWithLogits
