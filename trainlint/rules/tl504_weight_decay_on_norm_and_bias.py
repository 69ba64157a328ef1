from __future__ import annotations

from typing import Iterator, Optional, Tuple

import libcst as cst

from trainlint.analysis.layers import norm_layer_in
from trainlint.analysis.facts import Site
from trainlint.analysis.names import dotted
from trainlint.analysis.values import snippet
from trainlint.rules.base import Report, Rule
from trainlint.rules.tl502_high_adam_learning_rate import literal_number

# Optimizers whose default weight decay is not zero.
_DEFAULT_DECAY = {"torch.optim.AdamW": 0.01, "torch.optim.adamw.AdamW": 0.01}


class WeightDecayOnNormAndBias(Rule):
    """## What it does
    Finds a `torch.optim` optimizer built with weight decay (`weight_decay=` a number above
    zero, or `AdamW`'s default of 0.01) over `model.parameters()` as a whole — no parameter
    groups — where the model, visible in the module, has normalisation layers with learnable
    weights (`BatchNorm`, `LayerNorm`, `GroupNorm`, `RMSNorm`). Both are followed through
    names (`params = model.parameters()`), and the weight decay through the default of a
    same-module function's parameter (`def main(wd=5e-4)` run as `main()`).

    ## Why is this bad?
    Weight decay is meant to keep the weight matrices small. Applied to a normalisation
    layer's scale and shift (and to biases), it pulls them towards zero for no benefit: the
    layer's output is invariant to the scale of the weights before it, so decaying the
    normalisation scale only fights the signal the model needs. The usual recipe (BERT, GPT,
    timm, torchvision's `--norm-weight-decay 0`) puts biases and normalisation weights in a
    parameter group with `weight_decay=0`. The effect is usually modest, hence *info*.

    What it leaves alone: parameter groups of any kind, `weight_decay=0` or a value it cannot
    read, models whose layers it cannot see (torchvision, `transformers`), and models without
    normalisation layers — decaying only the biases of a plain MLP or CNN matters too little
    to report, whatever the optimizer.

    ## Example
    ```python
    model = nn.Sequential(nn.Conv2d(3, 64, 3), nn.BatchNorm2d(64), nn.ReLU(), ...)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    ```

    ## Use instead
    ```python
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)  # biases and norm weights are 1-D
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}], lr=1e-3
    )
    ```
    """

    code = "TL504"
    name = "weight-decay-on-norm-and-bias"
    severity = "info"

    VALID = (
        """
        import torch
        import torch.nn as nn
        model = nn.Sequential(nn.Conv2d(3, 64, 3), nn.BatchNorm2d(64), nn.ReLU())
        decay = [p for p in model.parameters() if p.ndim > 1]
        no_decay = [p for p in model.parameters() if p.ndim <= 1]
        optimizer = torch.optim.AdamW([
            {"params": decay, "weight_decay": 0.05},
            {"params": no_decay, "weight_decay": 0.0},
        ], lr=1e-3)
        """,
        """
        import torch
        import torch.nn as nn
        # no normalisation layer in the model
        model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=5e-4)
        """,
        """
        import torch
        import torch.nn as nn
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(3, 16, 3)
                self.bn = nn.BatchNorm2d(16)
        net = Net()
        optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=0)
        """,
        """
        import torch
        import torchvision
        # the model's layers are not visible here
        model = torchvision.models.resnet50()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=1e-4)
        """,
        """
        import torch
        import torch.nn as nn
        # Adam's default weight decay is 0
        model = nn.Sequential(nn.Linear(16, 16), nn.LayerNorm(16))
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        """,
        """
        import torch
        import torch.nn as nn
        # a LayerNorm without learnable weights
        model = nn.Sequential(nn.Linear(16, 16), nn.LayerNorm(16, elementwise_affine=False))
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
        """,
        """
        import torch
        import torch.nn as nn
        # the one call passes `wd=0`: the default of 5e-4 never applies
        def main(epochs=10, wd=5e-4):
            model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16))
            optimizer = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=wd)
        if __name__ == "__main__":
            main(wd=0.0)
        """,
        """
        import fire
        import torch
        import torch.nn as nn
        # handed to a CLI: the command line may set `wd`
        def main(wd=5e-4):
            model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16))
            optimizer = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=wd)
        main()
        fire.Fire(main)
        """,
        """
        import torch
        import torch.nn as nn
        model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.ReLU())
        # the name holds parameter groups, not all of `model.parameters()`
        params = [{"params": model[0].parameters()}, {"params": model[1].parameters(), "weight_decay": 0.0}]
        optimizer = torch.optim.SGD(params, lr=0.1, weight_decay=5e-4)
        """,
    )
    INVALID = (
        """
        import torch
        import torch.nn as nn
        model = nn.Sequential(nn.Conv2d(3, 64, 3), nn.BatchNorm2d(64), nn.ReLU(), nn.Flatten(), nn.LazyLinear(10))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)  # !
        """,
        """
        import torch
        from torch import nn, optim
        class Block(nn.Module):
            def __init__(self, d):
                super().__init__()
                self.norm = nn.LayerNorm(d)
                self.ff = nn.Linear(d, d)
        class Transformer(nn.Module):
            def __init__(self, d, n):
                super().__init__()
                self.blocks = nn.ModuleList([Block(d) for _ in range(n)])
                self.head = nn.Linear(d, 100)
        model = Transformer(256, 4).cuda()
        WD = 0.1
        opt = optim.AdamW(model.parameters(), lr=3e-4, weight_decay=WD)  # !
        """,
        """
        import torch
        import torch.nn as nn
        import lightning as L
        class LitModel(L.LightningModule):
            def __init__(self):
                super().__init__()
                self.net = nn.Sequential(nn.Linear(32, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 2))
            def configure_optimizers(self):
                return torch.optim.AdamW(self.parameters(), lr=1e-3)  # !
        """,
        """
        import torch
        import torch.nn as nn
        from torch import optim
        def main(epochs=10, lr=0.1, wd=5e-4):
            model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.ReLU())
            optimizer = optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=wd)  # !
        if __name__ == "__main__":
            main()
        """,
        """
        import torch
        import torch.nn as nn
        WEIGHT_DECAY = 1e-2
        net = nn.Sequential(nn.Conv1d(8, 32, 5), nn.GroupNorm(4, 32), nn.SiLU())
        params = net.parameters()
        opt = torch.optim.Adam(params, lr=1e-3, weight_decay=WEIGHT_DECAY)  # !
        """,
    )

    def check(self, ctx) -> Iterator[Report]:
        if ctx.is_test_file:
            return
        for call in ctx.facts.calls:
            q = call.qualname or ""
            if not q.startswith("torch.optim.") or call.has_star_args or ".lr_scheduler" in q or "swa_utils" in q:
                continue
            decay = self._decay(ctx, call, q)
            if decay is None:
                continue
            value, node, how = decay
            whole = self._whole_model(ctx, call)
            if whole is None:
                continue
            model, at = whole
            norm = norm_layer_in(ctx, model, at)
            if norm is None:
                continue
            yield Report(
                node,
                f"weight decay {how} over all of `{snippet(ctx, model)}.parameters()`, whose model has "
                f"normalisation layers (`{norm}`): their scales and shifts, and every bias, are decayed "
                f"towards zero too. Put 1-D parameters (biases, norm weights) in a group with "
                f"`weight_decay=0`.",
            )

    @staticmethod
    def _decay(ctx, call, q: str) -> Optional[Tuple[float, cst.CSTNode, str]]:
        """(weight decay, node to point at, how it was given) when it is a readable value > 0."""
        if len([a for a in call.node.args if a.keyword is None]) > 2:
            return None  # weight decay may be given by position: not read
        wd = call.keyword("weight_decay")
        if wd is None:
            default = _DEFAULT_DECAY.get(q)
            return (default, call.func, f"({call.attr}'s default of {default})") if default else None
        value = literal_number(wd)
        if value is None and isinstance(wd, cst.Name):
            # `defaults`: `def main(wd=5e-4)` run as `main()` decays by 5e-4.
            values = [literal_number(v) for v, _ in ctx.resolve(wd, call, defaults=True)]
            value = values[0] if values and len(set(values)) == 1 else None
        if value is None or value <= 0:
            return None
        return value, wd, f"`weight_decay={ctx.module.code_for_node(wd)}`"

    @staticmethod
    def _whole_model(ctx, call) -> Optional[Tuple[cst.BaseExpression, Site]]:
        """(`model`, where it is read) for `model.parameters()` (or `filter(..., model.parameters())`,
        `list(model.parameters())`) as the parameters, written in the call or bound to a name
        first (`params = net.parameters()`): every parameter of the model in one group."""
        params = call.arg(0, "params")
        if params is None:
            return None
        candidates = ctx.resolve(params, call)
        if len(candidates) != 1:
            return None  # several possible parameter sets: not read
        params, at = candidates[0]
        if isinstance(params, cst.Call) and dotted(params.func) in ("filter", "list") and params.args:
            if len(params.args) != (2 if dotted(params.func) == "filter" else 1):
                return None
            params = params.args[-1].value
        if not (isinstance(params, cst.Call) and isinstance(params.func, cst.Attribute) and params.func.attr.value == "parameters"):
            return None
        if params.args:
            return None  # `parameters(recurse=False)`
        return params.func.value, at

RULE = WeightDecayOnNormAndBias
