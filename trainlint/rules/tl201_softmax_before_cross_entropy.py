from __future__ import annotations

from typing import Iterator, Optional

from trainlint.analysis.losses import loss_input
from trainlint.analysis.values import SOFTMAX, activation_input, activation_through_name, snippet, source_of
from trainlint.rules.base import Replacement, Report, Rule


class SoftmaxBeforeCrossEntropy(Rule):
    """## What it does
    Finds probabilities — the output of `softmax`, `nn.Softmax`, or a model whose `forward`
    or `nn.Sequential` ends in one — passed to `nn.CrossEntropyLoss` / `F.cross_entropy`,
    or to a loss class that hands its input on to one unchanged.
    A softmax behind a flag parameter (`def forward(self, x, apply_softmax=False)`) counts
    only for calls that turn the flag on; one behind another condition must also be there
    without the branch.

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

    ## Fix
    Unsafe (`--fix --unsafe-fixes`): it changes what the loss computes, which is the point,
    but also the scale of the loss and of the gradients a tuned learning rate was set for.
    It applies when the softmax is written in the loss call (`criterion(F.softmax(z, 1), y)`
    becomes `criterion(z, y)`), or assigned to a variable that only carries it to the loss:
    `probs = F.softmax(z, dim=1)` becomes `probs = z` when that statement is the variable's
    only assignment in the function (or module) of the loss call and the loss call is its
    only use there. A softmax whose output is also used elsewhere (accuracy, logging), one
    inside a model's `forward` or an `nn.Sequential`, or reached through a helper
    function is reported without a fix: removing it would change the other uses.
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
        """
        import torch.nn as nn
        import torch.nn.functional as F
        # softmax behind a flag that defaults off: the training call gets logits
        class Classifier(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(300, 18)
            def forward(self, x_in, apply_softmax=False):
                y_out = self.fc(x_in)
                if apply_softmax:
                    y_out = F.softmax(y_out, dim=1)
                return y_out
        classifier = Classifier()
        loss_func = nn.CrossEntropyLoss()
        for batch in loader:
            y_pred = classifier(batch["x"])
            loss = loss_func(y_pred, batch["y"])
        probs = classifier(x_new, apply_softmax=True)  # prediction only
        """,
        """
        import torch.nn as nn
        import torch.nn.functional as F
        # a label-smoothing loss class that takes log-probabilities: log_softmax is harmless
        class SmoothCE(nn.Module):
            def __init__(self):
                super().__init__()
                self.ce = nn.CrossEntropyLoss(label_smoothing=0.1)
            def forward(self, logits, y):
                return self.ce(logits, y)
        crit = SmoothCE()
        loss = crit(F.log_softmax(model(x), dim=1), y)
        """,
    )
    # Softmax through a variable: fixed (unsafe) only where the variable just carries the
    # softmax to the loss; `FIX_EXAMPLES` pairs (source, fixed source or None for no fix).
    FIX_EXAMPLES = (
        (
            """
            import torch.nn.functional as F
            def step(model, x, y):
                logits = model(x)
                probs = F.softmax(logits, 1)
                loss = F.cross_entropy(probs, y)
                return loss
            """,
            """
            import torch.nn.functional as F
            def step(model, x, y):
                logits = model(x)
                probs = logits
                loss = F.cross_entropy(probs, y)
                return loss
            """,
        ),
        (
            """
            import torch.nn as nn
            criterion = nn.CrossEntropyLoss()
            for x, y in loader:
                probs = model(x).softmax(dim=-1)
                loss = criterion(probs, y)
            """,
            """
            import torch.nn as nn
            criterion = nn.CrossEntropyLoss()
            for x, y in loader:
                probs = model(x)
                loss = criterion(probs, y)
            """,
        ),
        (  # `probs` also feeds the accuracy: dropping its softmax would change that
            """
            import torch.nn.functional as F
            def step(model, x, y):
                probs = F.softmax(model(x), dim=1)
                loss = F.cross_entropy(probs, y)
                acc = (probs.argmax(1) == y).float().mean()
                return loss, acc
            """,
            None,
        ),
        (  # read by a nested function (a closure): another use
            """
            import torch.nn.functional as F
            def step(model, x, y):
                probs = F.softmax(model(x), dim=1)
                def report():
                    return probs.max()
                return F.cross_entropy(probs, y), report
            """,
            None,
        ),
        (  # two assignments: which softmax reaches the loss depends on the path
            """
            import torch.nn.functional as F
            def step(model, x, y, hard):
                probs = F.softmax(model(x), dim=1)
                if hard:
                    probs = F.softmax(model(x) / 2, dim=1)
                return F.cross_entropy(probs, y)
            """,
            None,
        ),
        (  # an in-place change between the softmax and the loss
            """
            import torch.nn.functional as F
            def step(model, x, y):
                probs = F.softmax(model(x), dim=1)
                probs.clamp_(1e-6, 1.0)
                return F.cross_entropy(probs, y)
            """,
            None,
        ),
        (  # a softmax computed through a helper: not the variable's own statement
            """
            import torch.nn.functional as F
            def predict(model, x):
                return F.softmax(model(x), dim=1)
            def step(model, x, y):
                probs = predict(model, x)
                return F.cross_entropy(probs, y)
            """,
            None,
        ),
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
        """
        import torch.nn as nn
        import torch.nn.functional as F
        # near-miss of the flag: the training call turns it on, or it defaults on
        class Classifier(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(300, 18)
            def forward(self, x_in, apply_softmax=False):
                y_out = self.fc(x_in)
                if apply_softmax:
                    y_out = F.softmax(y_out, dim=1)
                return y_out

        class Tagger(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(300, 18)
            def forward(self, x_in, apply_softmax=True):
                if not apply_softmax:
                    return self.fc(x_in)
                return F.softmax(self.fc(x_in), dim=1)
        classifier, tagger = Classifier(), Tagger()
        loss_func = nn.CrossEntropyLoss()
        for batch in loader:
            y_pred = classifier(batch["x"], apply_softmax=True)
            loss = loss_func(y_pred, batch["y"])  # !
            loss = loss + loss_func(tagger(batch["x"]), batch["y"])  # !
        """,
        """
        import torch
        import torch.nn as nn
        import torch.nn.functional as F
        # a loss class that hands its input on to cross-entropy
        class SmoothCE(nn.Module):
            def __init__(self):
                super().__init__()
                self.ce = nn.CrossEntropyLoss(label_smoothing=0.1)
            def forward(self, logits, y):
                return self.ce(logits, y)
        crit = SmoothCE()
        loss = crit(torch.squeeze(F.softmax(model(x), dim=1)), y)  # !
        """,
    )

    def check(self, ctx) -> Iterator[Report]:
        for call in ctx.facts.calls:
            found = loss_input(ctx, call, "cross_entropy")
            if found is None or found[0] is None:
                continue
            inp, via = found
            why = source_of(ctx, inp, call, SOFTMAX)
            if why is None:
                continue
            text = snippet(ctx, inp)
            through = f" (through {via})" if via else ""
            yield Report(
                inp,
                f"`{text}` is softmax output (from {why}) fed to cross-entropy{through}, which applies "
                f"log_softmax itself: softmax runs twice and the gradients shrink. Pass the raw logits.",
                self._fix(ctx, inp, call),
            )

    @staticmethod
    def _fix(ctx, inp, call) -> Optional[Replacement]:
        """Drop the softmax: written inside the loss call, or in the one assignment of a
        variable that only carries it to the loss (see the docstring's *Fix*)."""
        inner = activation_input(ctx, inp, SOFTMAX)
        if inner is not None:
            return Replacement(inp, inner, "unsafe", "drop the softmax feeding the loss")
        through = activation_through_name(ctx, inp, call, SOFTMAX)
        if through is not None:
            softmax_call, inner = through
            return Replacement(softmax_call, inner, "unsafe", f"drop the softmax assigned to `{inp.value}`")
        return None


RULE = SoftmaxBeforeCrossEntropy
