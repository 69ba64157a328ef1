from __future__ import annotations

import re
from typing import Dict, Iterator, List, Optional, Tuple

import libcst as cst

from trainlint.analysis.facts import Site, walk
from trainlint.analysis.names import Imports
from trainlint.analysis.values import SIGMOID, SOFTMAX, source_of
from trainlint.rules.base import Replacement, Report, Rule

LOG_FUNCS = {"torch.log"}
EXP_FUNCS = {"torch.exp"}
SUM_FUNCS = {"torch.sum"}
# softmax spellings that have a log_softmax sibling under the same module
_LOG_SOFTMAX_OF = {
    "torch.nn.functional.softmax": "torch.nn.functional.log_softmax",
    "torch.softmax": "torch.log_softmax",
    "torch.special.softmax": "torch.special.log_softmax",
}
_SHAPE_METHODS = {"unsqueeze", "view", "reshape", "expand", "expand_as", "squeeze", "float", "to"}
_MAX_RESOLVE = 4


def _module_level_imports(module: cst.Module) -> Imports:
    """Names bound by imports at module level (also under a top-level `if`/`try`): the ones
    a fix may use anywhere in the file."""
    imports = Imports()
    stack: List[cst.CSTNode] = list(module.body)
    while stack:
        stmt = stack.pop()
        if isinstance(stmt, cst.SimpleStatementLine):
            for small in stmt.body:
                if isinstance(small, cst.Import):
                    imports.add_import(small)
                elif isinstance(small, cst.ImportFrom):
                    imports.add_import_from(small)
        elif isinstance(stmt, (cst.If, cst.Try, cst.Else)):
            if isinstance(stmt, cst.If) and "TYPE_CHECKING" in module.code_for_node(stmt.test):
                continue  # not imported at run time
            body = stmt.body
            stack.extend(body.body if isinstance(body, cst.IndentedBlock) else [])
            if isinstance(stmt, cst.If) and stmt.orelse is not None:
                stack.append(stmt.orelse)
            if isinstance(stmt, cst.Try) and stmt.orelse is not None:
                stack.append(stmt.orelse)
    return imports


def _name_for(imports: Imports, qualname: str) -> Optional[cst.BaseExpression]:
    """An expression that names `qualname` with the file's own module-level imports:
    `log_softmax` if imported as such, else `F.log_softmax` through a module alias."""
    best: Optional[Tuple[int, str]] = None
    for local, full in imports.alias.items():
        if full == qualname:
            return cst.Name(local)
        if qualname.startswith(full + "."):
            rest = qualname[len(full) + 1 :]
            cand = (rest.count("."), f"{local}.{rest}")
            if best is None or cand < best:
                best = cand
    return cst.parse_expression(best[1]) if best else None


class UnstableLogOfSoftmax(Rule):
    """## What it does
    Finds `log(softmax(x))` (`torch.log(F.softmax(x, 1))`, `F.softmax(x, 1).log()`,
    `probs.log()` of a softmax output), `log(sigmoid(x))`, and a hand-written softmax
    `torch.exp(x) / torch.exp(x).sum(...)`.

    ## Why is this bad?
    Softmax and sigmoid underflow: for a confident model the small probabilities become
    exactly 0 in float32 (and far sooner in float16), `log(0)` is `-inf`, and the loss or
    its gradient turns into `inf`/`nan`. A hand-written softmax also overflows: `exp(x)` is
    `inf` once `x > 88`, and `inf / inf` is `nan`. `log_softmax`, `logsigmoid` and
    `softmax` compute the same values with the log-sum-exp trick and never do that.

    ## Example
    ```python
    logp = torch.log(F.softmax(logits, dim=1))
    log_q = torch.log(torch.sigmoid(z))
    probs = torch.exp(logits) / torch.exp(logits).sum(1, keepdim=True)
    ```

    ## Use instead
    ```python
    logp = F.log_softmax(logits, dim=1)
    log_q = F.logsigmoid(z)
    probs = torch.softmax(logits, dim=1)
    ```
    """

    code = "TL203"
    name = "unstable-log-of-softmax"
    severity = "warning"
    fixable = "safe"

    VALID = (
        """
        import torch
        import torch.nn.functional as F
        logp = F.log_softmax(logits, dim=1)
        nll = -logp.gather(1, y[:, None]).mean()
        ls = F.logsigmoid(z)
        """,
        """
        import torch
        import torch.nn.functional as F
        # an epsilon already guards the log
        probs = F.softmax(logits, dim=1)
        ent = -(probs * torch.log(probs + 1e-8)).sum(1)
        """,
        """
        import torch
        # the max-subtraction trick: a stable hand-written softmax
        z = x - x.max(dim=1, keepdim=True).values
        e = torch.exp(z)
        p = e / e.sum(dim=1, keepdim=True)
        """,
        """
        import numpy as np
        import math
        # numpy and math are not PyTorch
        p = np.exp(x) / np.exp(x).sum()
        l = math.log(sigmoid(v))
        """,
        """
        import torch
        # exp divided by something else than its own sum
        ratio = torch.exp(a) / torch.exp(b).sum()
        w = torch.exp(x) / n
        """,
        """
        import torch
        import torch.nn.functional as F
        out = F.softmax(logits, dim=1)
        out = head(out)
        l = torch.log(out)
        """,
    )
    INVALID = (
        """
        import torch
        import torch.nn.functional as F
        logp = torch.log(F.softmax(logits, dim=1))  # !
        """,
        """
        from torch.nn.functional import softmax
        import torch.nn.functional as F
        def loss_fn(logits, y):
            return F.nll_loss(softmax(logits, 1).log(), y)  # !
        """,
        """
        import torch
        z = model(x)
        log_p = torch.log(torch.sigmoid(z))  # !
        log_q = z.sigmoid().log()  # !
        """,
        """
        import torch
        def my_softmax(x):
            x_exp = torch.exp(x)
            partition = x_exp.sum(1, keepdim=True)
            return x_exp / partition  # !
        """,
        """
        import torch
        import torch.nn.functional as F
        probs = F.softmax(model(x), dim=-1)
        entropy = -(probs * probs.log()).sum(-1)  # !
        nll = -torch.log(probs[range(len(y)), y]).mean()  # !
        """,
        """
        import torch
        from torch import nn
        a = torch.log(nn.functional.softmax(x, dim=-1))  # !
        b = torch.log(torch.softmax(x, 1, dtype=torch.float32))  # !
        """,
        """
        import torch
        scores = q @ k.transpose(-2, -1)
        attn = scores.exp() / scores.exp().sum(-1, keepdim=True)  # !
        logp = scores.softmax(-1).log()  # !
        """,
    )

    def check(self, ctx) -> Iterator[Report]:
        if not ctx.uses_torch:
            return
        imports = None
        exp_functions = set()
        for call in ctx.facts.calls:
            if call.qualname in EXP_FUNCS or (call.attr == "exp" and call.qualname is None and call.receiver is not None and not call.node.args):
                exp_functions.add(id(call.function))
                continue
            arg = self._log_argument(call)
            if arg is None:
                continue
            try:
                found = self._kind_of(ctx, arg, call)
            except RecursionError:  # pathological value chains: cannot tell
                continue
            if found is None:
                continue
            kind, why, direct = found
            if imports is None:
                imports = _module_level_imports(ctx.module)
            fix = self._fix(ctx, imports, call, arg, kind) if direct else None
            if kind is SOFTMAX:
                msg = (
                    f"log of softmax output (from {why}): small probabilities underflow to 0 and "
                    f"`log` gives -inf/nan. Use `log_softmax`, which computes the same stably."
                )
            else:
                msg = (
                    f"log of sigmoid output (from {why}): it underflows to 0 for large negative "
                    f"inputs and `log` gives -inf/nan. Use `F.logsigmoid`, which computes the same stably."
                )
            yield Report(call.node, msg, fix)
        if exp_functions:
            yield from self._hand_written(ctx, exp_functions)

    # -- log(softmax(x)) ------------------------------------------------------------------
    @staticmethod
    def _log_argument(call) -> Optional[cst.BaseExpression]:
        if call.qualname in LOG_FUNCS:
            args = call.node.args
            if len(args) == 1 and args[0].keyword is None and not args[0].star:
                return args[0].value
            return None
        if call.attr == "log" and call.qualname is None and call.receiver is not None and not call.node.args:
            return call.receiver
        return None

    @staticmethod
    def _kind_of(ctx, arg, call):
        """(kind, description, written directly inside the log) or None."""
        direct = True
        if isinstance(arg, cst.Subscript):
            arg, direct = arg.value, False
        for kind in (SOFTMAX, SIGMOID):
            why = source_of(ctx, arg, call, kind)
            if why is not None:
                return kind, why, direct and isinstance(arg, cst.Call) and _direct_activation(ctx, arg, kind)
        return None

    def _fix(self, ctx, imports: Imports, log_call, inner: cst.Call, kind) -> Optional[Replacement]:
        node = log_call.node
        if kind is SOFTMAX:
            new = self._log_softmax(ctx, imports, inner)
            if new is None:
                return None
            desc = "use `log_softmax`"
        else:
            if len(inner.args) > 1 or any(a.keyword is not None or a.star for a in inner.args):
                return None
            x = inner.args[0].value if inner.args else inner.func.value  # type: ignore[attr-defined]
            func = _name_for(imports, "torch.nn.functional.logsigmoid")
            if func is None:
                return None
            new = cst.Call(func=func, args=[cst.Arg(x)])
            desc = "use `F.logsigmoid`"
        new = new.with_changes(lpar=node.lpar, rpar=node.rpar)
        return Replacement(node, new, "safe", desc)

    @staticmethod
    def _log_softmax(ctx, imports: Imports, inner: cst.Call) -> Optional[cst.Call]:
        func = inner.func
        if any(a.star for a in inner.args):
            return None
        q = ctx.qualname(func)
        if q is None:
            # x.softmax(dim) -> x.log_softmax(dim)
            return inner.with_changes(func=func.with_changes(attr=cst.Name("log_softmax")))  # type: ignore[attr-defined]
        target = _LOG_SOFTMAX_OF.get(q)
        if target is None:
            return None
        if isinstance(func, cst.Attribute):
            # F.softmax -> F.log_softmax: the same module object, so the name is in scope.
            return inner.with_changes(func=func.with_changes(attr=cst.Name("log_softmax")))
        if any(a.keyword is not None and a.keyword.value == "_stacklevel" for a in inner.args):
            return None
        name = _name_for(imports, target)
        if name is None and target == "torch.nn.functional.log_softmax":
            name = _name_for(imports, "torch.log_softmax")
        if name is None:
            return None
        return inner.with_changes(func=name)

    # -- exp(x) / exp(x).sum() --------------------------------------------------------------
    def _hand_written(self, ctx, exp_functions) -> Iterator[Report]:
        sites: List[Tuple[cst.BaseExpression, Site]] = []
        for a in ctx.facts.assigns:
            if id(a.function) in exp_functions and a.value is not None and a.op != "for":
                sites.append((a.value, a))
        for r in ctx.facts.returns:
            if id(r.function) in exp_functions and r.value is not None:
                sites.append((r.value, r))
        seen = set()
        for value, site in sites:
            for node in walk(value):
                if not (isinstance(node, cst.BinaryOperation) and isinstance(node.operator, cst.Divide)):
                    continue
                if id(node) in seen:
                    continue
                seen.add(id(node))
                num = self._exp_arg(ctx, node.left, site, 0)
                if num is None or _stabilised(ctx, num[0], num[1]):
                    continue
                den = self._sum_arg(ctx, node.right, site, 0)
                if den is None:
                    continue
                text = ctx.module.code_for_node(num[0])
                if text != ctx.module.code_for_node(den[0]):
                    continue
                if len(text) > 30:
                    text = text[:27] + "..."
                yield Report(
                    node,
                    f"hand-written softmax `exp({text}) / exp({text}).sum(...)`: `exp` overflows to inf "
                    f"once a value exceeds ~88 (float32) and the division gives nan. Use "
                    f"`torch.softmax(..., dim)` (or `log_softmax` if you take its log).",
                )

    def _exp_arg(self, ctx, expr, site, depth) -> Optional[Tuple[cst.BaseExpression, Site]]:
        if isinstance(expr, cst.Name):
            value = _single_value(ctx, expr, site)
            return self._exp_arg(ctx, value[0], value[1], depth + 1) if value and depth < _MAX_RESOLVE else None
        if not isinstance(expr, cst.Call):
            return None
        q = ctx.qualname(expr.func)
        if q in EXP_FUNCS:
            args = expr.args
            if len(args) == 1 and args[0].keyword is None and not args[0].star:
                return args[0].value, site
            return None
        if q is None and isinstance(expr.func, cst.Attribute) and expr.func.attr.value == "exp" and not expr.args:
            return expr.func.value, site
        return None

    def _sum_arg(self, ctx, expr, site, depth) -> Optional[Tuple[cst.BaseExpression, Site]]:
        if depth > _MAX_RESOLVE:
            return None
        if isinstance(expr, cst.Name):
            value = _single_value(ctx, expr, site)
            return self._sum_arg(ctx, value[0], value[1], depth + 1) if value else None
        if isinstance(expr, cst.Subscript):
            return self._sum_arg(ctx, expr.value, site, depth + 1)
        if not isinstance(expr, cst.Call):
            return None
        func = expr.func
        q = ctx.qualname(func)
        if q in SUM_FUNCS and expr.args and expr.args[0].keyword is None and not expr.args[0].star:
            return self._exp_arg(ctx, expr.args[0].value, site, depth + 1)
        if q is None and isinstance(func, cst.Attribute):
            if func.attr.value == "sum":
                return self._exp_arg(ctx, func.value, site, depth + 1)
            if func.attr.value in _SHAPE_METHODS:
                return self._sum_arg(ctx, func.value, site, depth + 1)
        return None


def _direct_activation(ctx, call: cst.Call, kind) -> bool:
    q = ctx.qualname(call.func)
    if q in kind.funcs:
        return True
    return q is None and isinstance(call.func, cst.Attribute) and call.func.attr.value == kind.method


def _single_value(ctx, name: cst.Name, site: Site) -> Optional[Tuple[cst.BaseExpression, Site]]:
    cands = ctx.resolve(name, site)
    if len(cands) != 1 or cands[0][0] is name:
        return None
    return cands[0]


def _stabilised(ctx, arg: cst.BaseExpression, site: Site, depth: int = 0) -> bool:
    """`exp(x - x.max())`, `exp(-d)`, `exp(x - lse)`: shifted or negated, cannot overflow
    (or is deliberate): not reported. Names are followed."""
    if isinstance(arg, cst.BinaryOperation) and isinstance(arg.operator, cst.Subtract):
        return True
    if _negated(arg):
        return True
    if re.search(r"max|logsumexp|lse", ctx.module.code_for_node(arg), re.I):
        return True
    if isinstance(arg, cst.Name) and depth < _MAX_RESOLVE:
        for value, at in ctx.resolve(arg, site):
            if value is not arg and _stabilised(ctx, value, at, depth + 1):
                return True
    return False


def _negated(arg: cst.BaseExpression) -> bool:
    """`-d`, `-0.5 * (x / s) ** 2`: a Gaussian-style weight, never large."""
    if isinstance(arg, cst.UnaryOperation) and isinstance(arg.operator, cst.Minus):
        return True
    if isinstance(arg, cst.BinaryOperation) and isinstance(arg.operator, (cst.Multiply, cst.Divide)):
        return _negated(arg.left) or _negated(arg.right)
    return False


RULE = UnstableLogOfSoftmax
