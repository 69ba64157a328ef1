from __future__ import annotations

from typing import Iterator, Optional, Tuple

import libcst as cst

from trainlint.rules.base import Report, Rule

ADAM = {
    "torch.optim.Adam",
    "torch.optim.AdamW",
    "torch.optim.adam.Adam",
    "torch.optim.adamw.AdamW",
}
# Schedulers that overwrite the optimizer's learning rate with their own (`max_lr`, `base_lr`).
LR_OVERRIDING_SCHEDULERS = ("OneCycleLR", "CyclicLR")
THRESHOLD = 0.01


def literal_number(expr: Optional[cst.BaseExpression]) -> Optional[float]:
    """The value of a numeric literal (`0.1`, `1e-2`, `3`), else None."""
    if isinstance(expr, (cst.Float, cst.Integer)):
        try:
            return float(expr.evaluated_value)
        except (TypeError, ValueError, OverflowError):
            return None
    return None


class HighAdamLearningRate(Rule):
    """## What it does
    Finds `torch.optim.Adam` / `AdamW` created with a literal learning rate of 0.01 or more
    (as `lr=`, as the second positional argument, or through a module-level constant).

    ## Why is this bad?
    Adam normalises each step by the running gradient scale, so its step size is roughly the
    learning rate itself, whatever the gradients' magnitude. Its default is 1e-3 and most
    models train with 1e-4 to 3e-3; at 0.01 and above training often diverges, oscillates or
    settles far from the minimum. A value copied from SGD (where 0.1 is usual) is a common
    cause. Files that use `OneCycleLR`/`CyclicLR` (which overwrite the rate) and test files are
    not reported.

    ## Example
    ```python
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    ```

    ## Use instead
    ```python
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    ```
    """

    code = "TL502"
    name = "high-adam-learning-rate"
    severity = "info"

    VALID = (
        """
        import torch
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        """,
        """
        import torch
        # SGD with a high rate is normal
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        """,
        """
        import torch
        optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
        """,
        """
        from torch.optim import Adam
        from torch.optim.lr_scheduler import OneCycleLR
        opt = Adam(model.parameters(), lr=0.01)
        sched = OneCycleLR(opt, max_lr=3e-3, total_steps=1000)
        """,
        """
        import torch.optim as optim
        LR = 3e-4
        opt = optim.Adam(model.parameters(), LR, betas=(0.9, 0.99))
        """,
        """
        import torch
        # `eps` and `weight_decay` are not the learning rate
        opt = torch.optim.Adam(model.parameters(), eps=0.1, weight_decay=0.01)
        """,
    )
    INVALID = (
        """
        import torch
        optimizer = torch.optim.Adam(model.parameters(), lr=0.1)  # !
        """,
        """
        import torch.optim as optim
        opt = optim.AdamW(net.parameters(), 1e-2)  # !
        """,
        """
        from torch.optim import AdamW
        LEARNING_RATE = 0.05
        def make_optimizer(model):
            return AdamW(model.parameters(), lr=LEARNING_RATE)  # !
        """,
    )

    def check(self, ctx) -> Iterator[Report]:
        if ctx.is_test_file:
            return
        calls = [c for c in ctx.facts.calls if c.qualname in ADAM]
        if not calls:
            return
        if any((c.qualname or "").endswith(LR_OVERRIDING_SCHEDULERS) and "lr_scheduler" in (c.qualname or "") for c in ctx.facts.calls):
            return
        for call in calls:
            lr = call.arg(1, "lr")
            try:
                found = self._value(ctx, lr, call)
            except RecursionError:  # FileContext.constructions loops on `self.x = self.x.to(dev)`
                continue
            if found is None:
                continue
            value, how = found
            if value < THRESHOLD:
                continue
            shown = ctx.module.code_for_node(lr)
            yield Report(
                lr,
                f"{call.attr} with learning rate {shown}{how}: Adam's step size is about the learning "
                f"rate itself, and at >= 0.01 training often diverges or oscillates (default 1e-3, "
                f"usual range 1e-4..3e-3). Lower it (e.g. `lr=1e-3`) unless this was tuned.",
            )

    @staticmethod
    def _value(ctx, expr, call) -> Optional[Tuple[float, str]]:
        if expr is None:
            return None
        direct = literal_number(expr)
        if direct is not None:
            return direct, ""
        if not isinstance(expr, cst.Name):
            return None
        cands = ctx.resolve(expr, call)
        values = [literal_number(v) for v, _ in cands]
        if not values or any(v is None for v in values):
            return None
        # Only a constant: every assignment a literal, and a single value.
        if len(set(values)) != 1:
            return None
        return values[0], f" (= {ctx.module.code_for_node(cands[0][0])})"  # type: ignore[return-value]


RULE = HighAdamLearningRate
