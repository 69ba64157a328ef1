from __future__ import annotations

from typing import Iterator

from trainlint.analysis.losses import BCE_FUNCS, BCE_MODULES, is_loss_call
from trainlint.analysis.outputs import LOGITS, final_output
from trainlint.analysis.values import snippet
from trainlint.rules.base import Report, Rule


class BceLossOnRawLogits(Rule):
    """## What it does
    Finds `nn.BCELoss` / `F.binary_cross_entropy` fed raw scores: the output of a Linear
    (or convolution) layer with no sigmoid after it — directly, through a variable, a helper,
    or a model whose `forward` or `nn.Sequential` visibly ends in that layer (also one built
    by a factory function of the module: `model = build_small()`).

    ## Why is this bad?
    `BCELoss` expects probabilities in [0, 1]. Raw scores are not: on the CPU the loss raises
    as soon as one leaves the range, on the GPU it fails with a device-side assert, and
    clamped or lucky values give a meaningless loss. `BCEWithLogitsLoss` takes the scores
    as they are and applies the sigmoid inside, in a numerically stable way.

    It stays silent when the model ends in a sigmoid, when its last layer cannot be seen
    (a model from another package, `nn.Sequential(*layers)`, arithmetic on the output) and
    when the forward's branches end differently.

    ## Example
    ```python
    model = nn.Sequential(nn.Linear(30, 16), nn.ReLU(), nn.Linear(16, 1))
    loss = nn.BCELoss()(model(x).squeeze(1), y)
    ```

    ## Use instead
    ```python
    loss = nn.BCEWithLogitsLoss()(model(x).squeeze(1), y)
    ```
    """

    code = "TL206"
    name = "bce-loss-on-raw-logits"
    severity = "error"

    VALID = (
        """
        import torch.nn as nn
        import torch.nn.functional as F
        # the head called from outside the class ends in a sigmoid; another was swapped in
        class MultiLabel(nn.Module):
            def __init__(self):
                super().__init__()
                self.backbone = nn.Sequential(nn.Linear(50, 256), nn.ReLU())
                self.head = nn.Sequential(nn.Linear(256, 12), nn.Sigmoid())
                self.aux = nn.Linear(256, 12)
            def forward(self, x):
                return self.backbone(x)
        def step(model, x, y):
            feats = model(x)
            return F.binary_cross_entropy(model.head(feats), y) + F.binary_cross_entropy(model.aux(feats), y)
        net = MultiLabel()
        net.aux = nn.Sequential(nn.Linear(256, 12), nn.Sigmoid())
        step(net, x, y)
        """,
        """
        import torch
        import torch.nn as nn
        # factories that end in a sigmoid, or add one after building the network
        def build_small(n_in):
            return nn.Sequential(nn.Linear(n_in, 32), nn.ReLU(), nn.Linear(32, 1), nn.Sigmoid())

        def build_head(n_in):
            head = nn.Sequential(nn.Linear(n_in, 1))
            head.add_module("prob", nn.Sigmoid())
            return head

        model, head = build_small(12), build_head(12)
        loss = nn.BCELoss()(model(X), y) + nn.BCELoss()(head(X), y)
        """,
        """
        import torch.nn as nn
        model = nn.Sequential(nn.Linear(30, 16), nn.ReLU(), nn.Linear(16, 1), nn.Sigmoid())
        criterion = nn.BCELoss()
        loss = criterion(model(x).squeeze(1), y)
        """,
        """
        import torch
        import torch.nn as nn
        class Discriminator(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(784, 1)
            def forward(self, x):
                return torch.sigmoid(self.fc(x))
        D = Discriminator()
        loss = nn.BCELoss()(D(real), ones)
        """,
        """
        import torch
        import torch.nn as nn
        import torch.nn.functional as F
        # the sigmoid is applied outside the model
        head = nn.Linear(128, 1)
        probs = torch.sigmoid(head(feats))
        loss = F.binary_cross_entropy(probs, y)
        """,
        """
        import torch.nn as nn
        # raw scores into the with-logits loss
        model = nn.Sequential(nn.Linear(30, 16), nn.ReLU(), nn.Linear(16, 1))
        loss = nn.BCEWithLogitsLoss()(model(x), y)
        """,
        """
        import torch.nn as nn
        from torchvision import models
        model = models.resnet18(num_classes=1)
        loss = nn.BCELoss()(model(x), y)
        """,
        """
        import torch.nn as nn
        # the head is swapped for one that ends in a sigmoid after the model is built
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.body = nn.Linear(64, 32)
                self.fc = nn.Linear(32, 1)
            def forward(self, x):
                return self.fc(self.body(x))
        model = Net()
        model.fc = nn.Sequential(nn.Linear(32, 1), nn.Sigmoid())
        loss = nn.BCELoss()(model(x), y)
        """,
    )
    INVALID = (
        """
        import torch.nn as nn
        import torch.nn.functional as F
        # a layer of the model called from outside the class
        class MultiLabel(nn.Module):
            def __init__(self):
                super().__init__()
                self.backbone = nn.Sequential(nn.Linear(50, 256), nn.ReLU())
                self.head = nn.Linear(256, 12)
            def forward(self, x):
                return self.backbone(x)
        def step(model, x, y):
            scores = model.head(model(x))
            return F.binary_cross_entropy(scores, y)  # !
        net = MultiLabel()
        step(net, x, y)
        """,
        """
        import torch.nn as nn
        model = nn.Sequential(nn.Linear(30, 16), nn.ReLU(), nn.Linear(16, 1))
        criterion = nn.BCELoss()
        for x, y in loader:
            out = model(x).squeeze(1)
            loss = criterion(out, y)  # !
        """,
        """
        import torch
        import torch.nn as nn
        import torch.nn.functional as F
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.hidden = nn.Linear(20, 64)
                self.out = nn.Linear(64, 1)
            def forward(self, x):
                x = F.relu(self.hidden(x))
                x = self.out(x)
                return x

        class Trainer:
            def __init__(self):
                self.net = Net().cuda()
                self.loss_fn = nn.BCELoss()
            def step(self, x, y):
                return self.loss_fn(self.net(x).view(-1), y)  # !
        """,
        """
        import torch.nn as nn
        from torch.nn.functional import binary_cross_entropy
        def score(model, x):
            return model(x)[:, 0]

        net = nn.Sequential(nn.Conv1d(4, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 98, 1))
        loss = binary_cross_entropy(score(net, x), y)  # !
        """,
        """
        import torch
        # the model comes from a factory function of the module, also as a submodule
        def build_small(n_in):
            return torch.nn.Sequential(torch.nn.Linear(n_in, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1))

        class Wrapper(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.net = build_small(12)
            def forward(self, x):
                return self.net(x)

        model = build_small(12).to("cpu")
        loss_fn = torch.nn.BCELoss()
        loss = loss_fn(model(X), y)  # !
        loss2 = loss_fn(Wrapper()(X), y)  # !
        """,
    )

    def check(self, ctx) -> Iterator[Report]:
        for call in ctx.facts.calls:
            if call.has_star_args or not is_loss_call(ctx, call, BCE_FUNCS, BCE_MODULES):
                continue
            inp = call.arg(0, "input")
            out = final_output(ctx, inp, call) if inp is not None else None
            if out is None or out.kind != LOGITS:
                continue
            yield Report(
                inp,
                f"`{snippet(ctx, inp)}` is raw scores (from {out.why}) with no sigmoid, fed to BCE, "
                f"which expects probabilities in [0, 1]. Use `BCEWithLogitsLoss` / "
                f"`binary_cross_entropy_with_logits` on the scores (stable), or apply a sigmoid first.",
            )


RULE = BceLossOnRawLogits
