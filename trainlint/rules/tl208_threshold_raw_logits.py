from __future__ import annotations

from typing import Iterator, List, Optional, Tuple

import libcst as cst

from trainlint.analysis.facts import Site, walk
from trainlint.analysis.losses import BCE_LOGITS_FUNCS, BCE_LOGITS_MODULES, is_loss_call
from trainlint.analysis.outputs import LOGITS, final_output
from trainlint.analysis.values import snippet
from trainlint.rules.base import Report, Rule

_COMPARE = (cst.GreaterThan, cst.GreaterThanEqual, cst.LessThan, cst.LessThanEqual)
_THRESHOLD_METHODS = {"gt", "ge", "lt", "le"}
_THRESHOLD_FUNCS = {"torch.gt", "torch.ge", "torch.lt", "torch.le"}
_ROUND = {"torch.round"}


def _is_half(expr: cst.BaseExpression) -> bool:
    """The literal 0.5 (`0.5`, `.5`, `0.50`)."""
    return isinstance(expr, cst.Float) and expr.value.lstrip("0").rstrip("0") == ".5"


def _holds_half(ctx, expr: cst.BaseExpression, at: Site) -> bool:
    """0.5, written out or held in a name (`THRESHOLD = 0.5` at module level, `thr = 0.5`
    in the function) that every assignment in the module sets to 0.5: a tuned threshold
    (`thr = best_thr`) or a parameter (`def evaluate(thr=0.5)`, callers may pass another)
    is not."""
    if _is_half(expr):
        return True
    if not isinstance(expr, cst.Name) or ctx.qualname(expr) is not None or not ctx.reaching(expr.value, at):
        return False
    assigned = [a for a in ctx.facts.assigns if any(isinstance(t, cst.Name) and t.value == expr.value for t in a.targets)]
    return all(a.op == "=" and len(a.targets) == 1 and a.value is not None and _is_half(a.value) for a in assigned)


class ThresholdRawLogits(Rule):
    """## What it does
    Finds predictions made by thresholding raw logits at 0.5 — `(logits > 0.5)`,
    `logits.gt(0.5)`, `torch.round(logits)`, the 0.5 also held in a name
    (`THRESHOLD = 0.5`), the scores also after `.detach().cpu().numpy().ravel()` — where
    `logits` is the output of a model whose last layer is visibly a Linear (or convolution)
    layer with no sigmoid, and that same model's output is trained with `BCEWithLogitsLoss`
    / `binary_cross_entropy_with_logits` in the module.

    ## Why is this bad?
    A with-logits model outputs scores, not probabilities: the decision boundary p = 0.5 is
    a score of 0. Cutting the scores at 0.5 means predicting positive only above p ≈ 0.62,
    so accuracy, F1 and the confusion matrix are computed for the wrong threshold (and
    `torch.round` of scores is not a prediction at all). Nothing fails; the metrics are
    just off.

    It stays silent when the value went through a sigmoid, when the model is not trained
    with a with-logits loss here (a model ending in a Linear may be a regressor), when the
    model's end cannot be seen, and for thresholds other than 0.5.

    ## Example
    ```python
    criterion = nn.BCEWithLogitsLoss()
    logits = model(x)
    loss = criterion(logits, y)
    preds = (logits > 0.5).float()
    ```

    ## Use instead
    ```python
    preds = (logits > 0).float()            # or
    preds = (torch.sigmoid(logits) > 0.5).float()
    ```
    """

    code = "TL208"
    name = "threshold-raw-logits"
    severity = "warning"

    VALID = (
        """
        import torch
        import torch.nn as nn
        # probabilities copied to numpy; a threshold tuned on validation data; a parameter
        model = nn.Sequential(nn.Linear(30, 16), nn.ReLU(), nn.Linear(16, 1))
        criterion = nn.BCEWithLogitsLoss()
        THRESHOLD = 0.5
        def evaluate(model, X_va, thr=0.5):
            outputs = model(X_va)
            oof = torch.sigmoid(outputs).detach().cpu().numpy().ravel()
            return oof > 0.5, outputs.detach().numpy() > thr
        for x, y in loader:
            logits = model(x)
            loss = criterion(logits, y)
        THRESHOLD = tune_threshold(model, X_va)
        preds = (model(X_va) > THRESHOLD).float()
        """,
        """
        import torch
        import torch.nn as nn
        model = nn.Sequential(nn.Linear(30, 16), nn.ReLU(), nn.Linear(16, 1))
        criterion = nn.BCEWithLogitsLoss()
        logits = model(x)
        loss = criterion(logits, y)
        preds = (torch.sigmoid(logits) > 0.5).float()
        """,
        """
        import torch.nn as nn
        model = nn.Sequential(nn.Linear(30, 16), nn.ReLU(), nn.Linear(16, 1))
        criterion = nn.BCEWithLogitsLoss()
        logits = model(x)
        loss = criterion(logits, y)
        preds = (logits > 0).long()
        """,
        """
        import torch.nn as nn
        # a model with a sigmoid, trained with plain BCE: its outputs are probabilities
        model = nn.Sequential(nn.Linear(30, 16), nn.ReLU(), nn.Linear(16, 1), nn.Sigmoid())
        out = model(x)
        loss = nn.BCELoss()(out, y)
        acc = ((out > 0.5) == y).float().mean()
        """,
        """
        import torch.nn as nn
        # a regressor: no with-logits loss trains it
        reg = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 1))
        pred = reg(x)
        loss = nn.MSELoss()(pred, y)
        above = (pred > 0.5).sum()
        """,
        """
        import torch
        import torch.nn as nn
        # the threshold is applied to probabilities computed in a helper
        model = nn.Sequential(nn.Linear(30, 16), nn.ReLU(), nn.Linear(16, 1))
        def predict_proba(m, x):
            return torch.sigmoid(m(x))
        loss = nn.BCEWithLogitsLoss()(model(x), y)
        preds = predict_proba(model, x).gt(0.5)
        """,
    )
    INVALID = (
        """
        import torch
        import torch.nn as nn
        # the threshold held in a module constant; the scores copied to numpy (Kaggle OOF)
        THRESHOLD = 0.5
        model = nn.Sequential(nn.Linear(30, 16), nn.ReLU(), nn.Linear(16, 1))
        criterion = nn.BCEWithLogitsLoss()
        for x, y in loader:
            loss = criterion(model(x), y)
        def evaluate(X_va):
            outputs = model(X_va)
            oof = outputs.detach().cpu().numpy().ravel()
            thr = 0.5
            hard = (outputs > THRESHOLD).float()  # !
            oof_pred = oof > 0.5  # !
            return hard, oof_pred, oof >= thr  # !
        """,
        """
        import torch.nn as nn
        model = nn.Sequential(nn.Linear(30, 16), nn.ReLU(), nn.Linear(16, 1))
        criterion = nn.BCEWithLogitsLoss()
        for x, y in loader:
            logits = model(x).squeeze(1)
            loss = criterion(logits, y)
            correct = ((logits > 0.5) == y).sum().item()  # !
        """,
        """
        import torch
        import torch.nn as nn
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc1 = nn.Linear(20, 64)
                self.out = nn.Linear(64, 1)
            def forward(self, x):
                return self.out(torch.relu(self.fc1(x)))

        class Trainer:
            def __init__(self):
                self.model = Net()
                self.criterion = nn.BCEWithLogitsLoss()
            def train_step(self, x, y):
                return self.criterion(self.model(x), y)
            def evaluate(self, x, y):
                with torch.no_grad():
                    preds = torch.round(self.model(x))  # !
                return (preds == y).float().mean()
        """,
        """
        import torch
        import torch.nn as nn
        import torch.nn.functional as F
        net = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 30 * 30, 5))
        def train(loader):
            for x, y in loader:
                loss = F.binary_cross_entropy_with_logits(net(x), y)
                loss.backward()
        def predict(x):
            scores = net(x)
            return scores.ge(0.5).int()  # !
        """,
        """
        import torch
        import torch.nn as nn
        # multiple-instance learning: a backbone passed in, instance scores averaged
        class InstanceNet(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc1 = nn.Linear(512, 128)
                self.fc2 = nn.Linear(128, 1)
            def forward(self, x):
                return self.fc2(torch.relu(self.fc1(x)))
        class BagModel(nn.Module):
            def __init__(self, instance_model):
                super().__init__()
                self.instance_model = instance_model
            def forward(self, x):
                b, n, d = x.size()
                x = self.instance_model(x.view(-1, d)).view(b, n)
                return torch.mean(x, dim=1)
        def train(model, loader, criterion):
            for x, y in loader:
                loss = criterion(model(x), y.float())
                loss.backward()
        def evaluate(model, loader):
            with torch.no_grad():
                for x, y in loader:
                    preds = torch.round(model(x))  # !
        if __name__ == "__main__":
            model = BagModel(InstanceNet())
            train(model, train_loader, nn.BCEWithLogitsLoss())
            evaluate(model, val_loader)
        """,
    )

    def check(self, ctx) -> Iterator[Report]:
        trained = self._with_logits_layers(ctx)
        if not trained:
            return
        for (value, how), site in self._thresholds(ctx):
            out = final_output(ctx, value, site)
            if out is None or out.kind != LOGITS or not (out.origins & trained):
                continue
            verb = "rounds raw scores, a cut at 0.5," if _is_round(ctx, how) else "cuts raw scores at 0.5"
            yield Report(
                how,
                f"`{snippet(ctx, how)}` {verb} (from {out.why}), but this model "
                f"is trained with a with-logits loss: p = 0.5 is a score of 0, so this predicts "
                f"positive only above p ≈ 0.62. Use `> 0`, or `torch.sigmoid(...) > 0.5`.",
            )

    @staticmethod
    def _with_logits_layers(ctx) -> frozenset:
        """The layers whose raw output some with-logits BCE loss in the module trains."""
        out: frozenset = frozenset()
        for call in ctx.facts.calls:
            if call.has_star_args or not is_loss_call(ctx, call, BCE_LOGITS_FUNCS, BCE_LOGITS_MODULES):
                continue
            inp = call.arg(0, "input")
            found = final_output(ctx, inp, call) if inp is not None else None
            if found is not None and found.kind == LOGITS:
                out |= found.origins
        return out

    @staticmethod
    def _thresholds(ctx) -> Iterator[Tuple[Tuple[cst.BaseExpression, cst.CSTNode], Site]]:
        """((thresholded value, node to report), site) for each `x > 0.5`, `x.gt(0.5)`,
        `torch.gt(x, 0.5)`, `torch.round(x)`, `x.round()` in assignments, returns and calls."""
        roots: List[Tuple[cst.CSTNode, Site]] = []
        for a in ctx.facts.assigns:
            if a.value is not None and a.op != "for":
                roots.append((a.value, a))
        roots += [(r.value, r) for r in ctx.facts.returns if r.value is not None]
        roots += [(c.node, c) for c in ctx.facts.calls]
        done = set()
        for root, site in roots:
            for node in walk(root):
                if id(node) in done:
                    continue
                done.add(id(node))
                found = _threshold(ctx, node, site)
                if found is not None:
                    yield (found, node), site


def _is_round(ctx, node: cst.CSTNode) -> bool:
    if not isinstance(node, cst.Call):
        return False
    return ctx.qualname(node.func) in _ROUND or (isinstance(node.func, cst.Attribute) and node.func.attr.value == "round")


def _threshold(ctx, node: cst.CSTNode, site: Site) -> Optional[cst.BaseExpression]:
    """The value `node` thresholds at 0.5 (or rounds), or None."""
    if isinstance(node, cst.Comparison) and len(node.comparisons) == 1:
        comp = node.comparisons[0]
        if isinstance(comp.operator, _COMPARE):
            if _holds_half(ctx, comp.comparator, site):
                return node.left
            if _holds_half(ctx, node.left, site):
                return comp.comparator
        return None
    if not isinstance(node, cst.Call):
        return None
    q = ctx.qualname(node.func)
    args = [a for a in node.args if not a.star]
    if q in _THRESHOLD_FUNCS and len(args) == 2 and _holds_half(ctx, args[1].value, site):
        return args[0].value
    if q in _ROUND and len(args) == 1 and args[0].keyword is None:
        return args[0].value
    if q is None and isinstance(node.func, cst.Attribute):
        attr = node.func.attr.value
        if attr in _THRESHOLD_METHODS and len(args) == 1 and _holds_half(ctx, args[0].value, site):
            return node.func.value
        if attr == "round" and not args:
            return node.func.value
    return None


RULE = ThresholdRawLogits
