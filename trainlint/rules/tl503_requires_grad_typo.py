from __future__ import annotations

import re
from typing import Iterator, Optional

import libcst as cst

from trainlint.rules.base import Report, Rule

CORRECT = "requires_grad"


def _distance(a: str, b: str) -> int:
    """Damerau-Levenshtein (optimal string alignment) distance."""
    d = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a) + 1):
        d[i][0] = i
    for j in range(len(b) + 1):
        d[0][j] = j
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            cost = a[i - 1] != b[j - 1]
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[len(a)][len(b)]


def is_typo(name: str) -> bool:
    """`require_grad`, `requires_grads`, `requires_gradient`, `requiresgrad`, `requries_grad`,
    `requires_grad_` (the in-place method's name used as an attribute) ... but not
    `requires_grad` itself nor private names (`_requires_grad`)."""
    if name == CORRECT or name.startswith("_") or name.lower() != name:
        return False
    if name == CORRECT + "_":
        return True
    squashed = name.replace("_", "")
    m = re.match(r"^(re?q\w*?)(grad|gard|gradient)(s?)$", squashed)
    if m is None:
        return False
    return _distance(m.group(1) + "grad", "requiresgrad") + len(m.group(3)) <= 2


# Tensor factories and Parameter: a misspelt keyword there raises TypeError at once.
_FACTORY = re.compile(
    r"^torch\.(tensor|as_tensor|zeros|ones|empty|full|rand|randn|randint|arange|linspace|logspace|eye|"
    r"zeros_like|ones_like|empty_like|full_like|rand_like|randn_like|nn\.Parameter|nn\.parameter\.Parameter|Tensor)$"
)


class RequiresGradTypo(Rule):
    """## What it does
    Finds an assignment to a misspelt `requires_grad` attribute — `p.require_grad = False`,
    `requires_grads`, `requires_gradient`, `requiresgrad`, `p.requires_grad_ = False` — and
    the same misspelling as a keyword of a tensor factory or `nn.Parameter`
    (`torch.zeros(3, require_grad=True)`).

    ## Why is this bad?
    Tensors and modules accept any attribute, so `p.require_grad = False` just creates a new,
    unused attribute: the parameter keeps training. A "frozen" backbone is silently
    fine-tuned, or a tensor meant to be learned never gets a gradient. (The keyword form
    raises `TypeError` when it runs; it is reported so that it is caught before a long job
    starts.) Attributes that the file also reads elsewhere, or that a class sets on `self`,
    are taken as the project's own and not reported.

    ## Example
    ```python
    for p in model.backbone.parameters():
        p.require_grad = False
    ```

    ## Use instead
    ```python
    for p in model.backbone.parameters():
        p.requires_grad = False          # or: model.backbone.requires_grad_(False)
    ```
    """

    code = "TL503"
    name = "requires-grad-typo"
    severity = "error"

    VALID = (
        """
        import torch
        for p in model.parameters():
            p.requires_grad = False
        """,
        """
        import torch
        x = torch.zeros(3, requires_grad=True)
        model.backbone.requires_grad_(False)
        """,
        """
        import torch
        # a project's own setting, read back elsewhere
        class Config:
            pass
        cfg = Config()
        cfg.require_grads = ["encoder"]
        if cfg.require_grads:
            print(cfg.require_grads)
        """,
        """
        import torch.nn as nn
        class Adapter(nn.Module):
            def __init__(self, require_grad=True):
                super().__init__()
                self.require_grad = require_grad
        """,
        """
        import torch
        # private attributes are deliberate
        t = torch.ones(2)
        t._requires_grad = True
        """,
    )
    INVALID = (
        """
        import torch
        scale = torch.ones(1, require_grad=True)  # !
        model.head.weight.require_grad = model.head.bias.require_grad = True  # !
        """,
        """
        import torch
        for p in model.encoder.parameters():
            p.require_grad = False  # !
        """,
        """
        import torch.nn as nn
        model = nn.Linear(10, 2)
        model.weight.requires_grads = False  # !
        model.bias.requires_grad_ = False  # !
        """,
        """
        import torch
        w = torch.randn(10, 10, require_grad=True)  # !
        """,
        """
        import torch
        for name, param in net.named_parameters():
            if name.startswith("fc"):
                param.requiresgrad = True  # !
        """,
    )

    def check(self, ctx) -> Iterator[Report]:
        if not ctx.uses_torch:
            return
        for a in ctx.facts.assigns:
            if a.op != "=":
                continue
            for t in a.targets:
                if not (isinstance(t, cst.Attribute) and is_typo(t.attr.value)):
                    continue
                if isinstance(t.value, cst.Name) and t.value.value in ("self", "cls"):
                    continue
                if self._used_elsewhere(ctx, t.attr.value):
                    continue
                yield Report(
                    t,
                    f"`.{t.attr.value}` is not `.requires_grad`: the assignment creates a new attribute "
                    f"and silently changes nothing (the tensor keeps its gradient setting). "
                    f"Write `.requires_grad`{' (or call `.requires_grad_(...)`)' if t.attr.value.endswith('_') else ''}.",
                )
        for call in ctx.facts.calls:
            if call.qualname is None or not _FACTORY.match(call.qualname):
                continue
            for arg in call.args:
                if arg.keyword is not None and is_typo(arg.keyword.value) and not arg.keyword.value.endswith("_"):
                    yield Report(
                        arg.keyword,
                        f"`{arg.keyword.value}=` is not a keyword of `{call.attr}`: this raises TypeError "
                        f"when it runs. Write `requires_grad=`.",
                    )

    @staticmethod
    def _used_elsewhere(ctx, attr: str) -> bool:
        """The name appears somewhere other than in attribute assignments: read back, a
        parameter, a keyword, a string — a project's own attribute, not a typo."""
        total = len(re.findall(rf"\b{re.escape(attr)}(?!\w)(?!\s*\()", ctx.text))
        assigned = 0
        for a in ctx.facts.assigns:
            if a.op == "=":
                assigned += sum(1 for t in a.targets if isinstance(t, cst.Attribute) and t.attr.value == attr)
        # The same misspelling as a tensor factory's keyword is a typo too, not a use.
        for call in ctx.facts.calls:
            if call.qualname is not None and _FACTORY.match(call.qualname):
                assigned += sum(1 for a in call.args if a.keyword is not None and a.keyword.value == attr)
        return total > assigned


RULE = RequiresGradTypo
