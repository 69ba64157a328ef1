from __future__ import annotations

from typing import Iterator, Optional

import libcst as cst

from trainlint.rules.base import Report, Rule

# Functions whose `dim` defaults to None (PyTorch then guesses the dimension and warns) or
# is required: `F.softmax(x)` guesses, `torch.softmax(x)` fails; both want an explicit dim.
_FUNCS = {
    "torch.nn.functional.softmax": "softmax",
    "torch.nn.functional.log_softmax": "log_softmax",
    "torch.nn.functional.softmin": "softmin",
    "torch.softmax": "softmax",
    "torch.log_softmax": "log_softmax",
    "torch.special.softmax": "softmax",
    "torch.special.log_softmax": "log_softmax",
}
_MODULES = {
    "torch.nn.Softmax": "Softmax",
    "torch.nn.LogSoftmax": "LogSoftmax",
    "torch.nn.Softmin": "Softmin",
    "torch.nn.modules.activation.Softmax": "Softmax",
    "torch.nn.modules.activation.LogSoftmax": "LogSoftmax",
    "torch.nn.modules.activation.Softmin": "Softmin",
}
_METHODS = {"softmax", "log_softmax"}
# The native functions and tensor methods go through PyTorch's argument parser, which takes
# NumPy's `axis=` as an alias of `dim=` (`torch.softmax(x, axis=1)` works). The Python
# functions of torch.nn.functional and the modules do not: there `axis=` raises TypeError.
_TAKES_AXIS = {q for q in _FUNCS if not q.startswith("torch.nn.")}


def _is_none(expr: Optional[cst.BaseExpression]) -> bool:
    return isinstance(expr, cst.Name) and expr.value == "None"


class SoftmaxImplicitDim(Rule):
    """## What it does
    Finds `softmax`/`log_softmax` (and `softmin`) written without `dim`: the functional
    form `F.softmax(x)`, the tensor method `x.softmax()`, or the module `nn.Softmax()` /
    `nn.LogSoftmax()`.

    ## Why is this bad?
    Without `dim` PyTorch guesses: dimension 0 for 0-, 1- and 3-D inputs, dimension 1
    otherwise (and emits a deprecation warning). For a 3-D batch of sequences
    (`batch, seq, classes`) that normalises across the *batch*; for an unbatched input that
    later gets a batch dimension the axis silently changes. The probabilities then do not sum
    to one over the classes and training quietly goes wrong. (`torch.softmax(x)` and
    `x.softmax()` have no default at all and fail.)

    `torch.softmax(x, axis=1)` and `x.softmax(axis=1)` give the dimension: PyTorch's native
    functions take NumPy's `axis=` as an alias of `dim=`. `F.softmax(x, axis=1)` does not (the
    functional form and the modules have no such alias): it raises `TypeError`, and is
    reported as such.

    ## Example
    ```python
    probs = F.softmax(logits)
    head = nn.Sequential(nn.Linear(128, 10), nn.LogSoftmax())
    ```

    ## Use instead
    ```python
    probs = F.softmax(logits, dim=-1)
    head = nn.Sequential(nn.Linear(128, 10), nn.LogSoftmax(dim=1))
    ```
    """

    code = "TL204"
    name = "softmax-implicit-dim"
    severity = "warning"

    VALID = (
        """
        import torch.nn.functional as F
        probs = F.softmax(logits, dim=-1)
        logp = F.log_softmax(logits, 1)
        """,
        """
        import torch
        import torch.nn as nn
        head = nn.Sequential(nn.Linear(8, 3), nn.Softmax(dim=1))
        act = nn.LogSoftmax(-1)
        p = torch.softmax(x, -1)
        q = x.softmax(dim=1)
        """,
        """
        from scipy.special import softmax
        # scipy's softmax normalises over all elements by design (axis=None)
        p = softmax(scores)
        """,
        """
        import torch.nn.functional as F
        # the arguments come from elsewhere: cannot tell
        def act(x, *args, **kwargs):
            return F.softmax(x, *args, **kwargs)
        """,
        """
        import torch
        # `axis=` is the native functions' alias of `dim=`
        probas = torch.softmax(logits, axis=1)
        logp = torch.log_softmax(logits, axis=-1)
        p = logits.softmax(axis=-1)
        q = torch.special.softmax(logits, axis=1)
        """,
        """
        import torch.nn as nn
        # Softmax2d has no dim: it always normalises over channels
        attn = nn.Softmax2d()
        """,
        """
        import numpy as np
        class Scores:
            def softmax(self):
                e = np.exp(self.v - self.v.max())
                return e / e.sum()
        s = Scores().softmax()
        """,
    )
    INVALID = (
        """
        import torch.nn.functional as F
        probs = F.softmax(model(x))  # !
        """,
        """
        from torch import nn
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.head = nn.Sequential(nn.Linear(64, 10), nn.LogSoftmax())  # !
        """,
        """
        from torch.nn.functional import log_softmax
        import torch
        logp = log_softmax(scores, dim=None)  # !
        attn = torch.softmax(q @ k.T)  # !
        """,
        """
        import torch
        weights = (q @ k.transpose(-2, -1)).softmax()  # !
        """,
        """
        import torch
        import torch.nn.functional as F
        # near-miss of the `axis=` alias: the functional form and the module do not take it
        probs = F.softmax(logits, axis=1)  # !
        head = torch.nn.LogSoftmax(axis=-1)  # !
        ok = torch.softmax(logits, axis=1)
        """,
    )

    def check(self, ctx) -> Iterator[Report]:
        if not ctx.uses_torch:
            return
        for call in ctx.facts.calls:
            if call.has_star_args:
                continue
            q = call.qualname
            if q in _FUNCS:
                dim = call.arg(1, "dim")
                if dim is None and call.keyword("axis") is not None:
                    if q not in _TAKES_AXIS:
                        yield self._report_axis(call.node, f"`{ctx.module.code_for_node(call.func)}(...)`")
                    continue
                if dim is None or _is_none(dim):
                    yield self._report(call.node, f"`{ctx.module.code_for_node(call.func)}(...)`")
            elif q in _MODULES:
                dim = call.arg(0, "dim")
                if dim is None and call.keyword("axis") is not None:
                    yield self._report_axis(call.node, f"`{ctx.module.code_for_node(call.func)}()`")
                elif dim is None or _is_none(dim):
                    yield self._report(call.node, f"`{ctx.module.code_for_node(call.func)}()`")
            elif q is None and call.attr in _METHODS and call.receiver is not None and self._tensor_method(ctx, call):
                dim = call.arg(0, "dim")
                if dim is None and call.keyword("axis") is not None:
                    continue
                if dim is None or _is_none(dim):
                    yield self._report(call.node, f"`.{call.attr}()`")

    @staticmethod
    def _tensor_method(ctx, call) -> bool:
        """`x.softmax()` on a tensor, not on an object of a same-module class with its own
        `softmax` method."""
        if isinstance(call.receiver, cst.Name) and call.receiver.value == "self":
            return False
        if any(call.attr in c.methods for c in ctx.facts.classes.values()):
            return False
        try:
            return ctx.callee(call) is None
        except RecursionError:  # pathological value chains: cannot tell
            return False

    def _report(self, node: cst.CSTNode, what: str) -> Report:
        return Report(
            node,
            f"{what} without `dim`: PyTorch guesses the dimension (0 for 1-D and 3-D inputs, "
            f"else 1), which for a batch of sequences normalises across the batch. Pass the "
            f"class dimension explicitly, e.g. `dim=-1`.",
        )

    def _report_axis(self, node: cst.CSTNode, what: str) -> Report:
        return Report(
            node,
            f"{what} with `axis=`: only the native `torch.softmax`/`Tensor.softmax` take `axis` "
            f"as an alias of `dim`; `torch.nn.functional` and the `nn` modules have no such parameter and raise TypeError. "
            f"Write `dim=` instead.",
        )


RULE = SoftmaxImplicitDim
