from __future__ import annotations

import re
from typing import Iterator, Optional

import libcst as cst

from trainlint.analysis.facts import Site, walk
from trainlint.analysis.names import dotted
from trainlint.analysis.selection import selections
from trainlint.analysis.training import exclusive_sites
from trainlint.rules.base import Report, Rule

TRAIN_METRIC = re.compile(r"(^|_)(train|training|tr|trn)(_|$)|^train(loss|acc|err)", re.I)
HELDOUT_METRIC = re.compile(r"(^|_)(val|valid|validation|dev|eval|evaluation|test|testing|holdout)(_|$|loss|acc|err|score|metric|f1|auc)", re.I)
# What selection should use instead (a test metric is TL407's business, not a better choice).
VAL_METRIC = re.compile(r"(^|_)(val|valid|validation|dev|eval|evaluation|holdout)(_|$|loss|acc|err|score|metric|f1|auc)", re.I)
TRAINING_FUNCTION = re.compile(r"^(train|fit)(_|$)|_train$|^train\w*epoch|^run_train", re.I)


class SelectionOnTrainingLoss(Rule):
    """## What it does
    Finds early stopping or best-checkpoint selection on a training metric (`if train_loss <
    best_loss: torch.save(...)`, `is_best = train_acc > best_acc`, what `train_one_epoch()`
    returns, or a value computed from a sum the training loop accumulates, whatever its name:
    `epoch_loss = running_loss / len(train_dl.dataset)`) in code that also computes a
    validation metric at that point, which the selection ignores.

    ## Why is this bad?
    The training loss keeps falling while the model overfits, so "best on the training
    loss" is simply the last epoch, and early stopping on it never stops when it should. The
    validation loss that measures generalisation is right there and unused — almost always a
    slip (the wrong variable in the comparison).

    Selection on the training loss is left alone where no validation metric is computed
    (language-model pre-training or generative models often have no other signal), where it
    is only computed in another branch (`if val_loader is None:` falls back to the training
    loss), and where the same function also selects on the validation metric (a second
    "best on training loss" checkpoint is deliberate).

    ## Example
    ```python
    train_loss = train_one_epoch(model, train_loader, optimizer)
    val_loss = evaluate(model, val_loader)
    if train_loss < best_loss:
        best_loss = train_loss
        torch.save(model.state_dict(), "best.pt")
    ```

    ## Use instead
    ```python
    if val_loss < best_loss:
        best_loss = val_loss
        torch.save(model.state_dict(), "best.pt")
    ```
    """

    code = "TL304"
    name = "selection-on-training-loss"
    severity = "warning"

    VALID = (
        """
        import copy, torch
        # the accumulated loss selected on comes from the loop that only evaluates
        for epoch in range(40):
            for x, m in train_dl:
                optimizer.zero_grad()
                criterion(model(x), m).backward()
                optimizer.step()
            running = 0.0
            with torch.no_grad():
                for x, m in val_dl:
                    running += criterion(model(x), m).item()
            epoch_loss = running / len(val_dl.dataset)
            val_acc = accuracy(model, val_dl)
            if epoch_loss < lowest:
                lowest = epoch_loss
                best_wts = copy.deepcopy(model.state_dict())
        """,
        """
        import torch
        for epoch in range(50):
            train_loss = train_one_epoch(model, train_loader, optimizer)
            val_loss = evaluate(model, val_loader)
            if val_loss < best_loss:
                best_loss = val_loss
                torch.save(model.state_dict(), "best.pt")
        """,
        """
        import torch
        # no validation data: the training loss is the only signal
        for step in range(100000):
            loss = train_step(model, batch())
            if loss < best_loss:
                best_loss = loss
                torch.save(model.state_dict(), "best.pt")
        """,
        """
        import torch
        def fit(self, train_loader, val_loader=None):
            for epoch in range(self.epochs):
                train_loss = self.train_epoch(train_loader)
                if val_loader is not None:
                    val_loss = self.validate(val_loader)
                    is_best = val_loss < self.best_loss
                else:
                    is_best = train_loss < self.best_loss  # the fallback without validation data
                self.save_checkpoint(epoch, is_best)
        """,
        """
        import torch
        # two checkpoints: the best on validation, and the best on training loss as an extra
        for epoch in range(50):
            train_loss = train(model, train_loader)
            val_loss = evaluate(model, val_loader)
            if val_loss < best_val:
                best_val = val_loss
                torch.save(model.state_dict(), "best.pt")
            if train_loss < best_train:
                best_train = train_loss
                torch.save(model.state_dict(), "best_train.pt")
        """,
        """
        import torch
        # the best training loss is only logged; selection uses the validation loss
        for epoch in range(50):
            train_loss = train(model, train_loader)
            val_loss = evaluate(model, val_loader)
            best_train = min(best_train, train_loss)
            if val_loss < best_val:
                best_val = val_loss
                torch.save(model.state_dict(), "best.pt")
        """,
        """
        import torch
        # the flag on the training loss only picks a log line; nothing is kept
        for epoch in range(50):
            train_loss = train_one_epoch(model, train_loader, optimizer)
            val_loss = evaluate(model, val_loader)
            is_best = train_loss < best_loss
            if is_best:
                print("new lowest training loss", train_loss)
        """,
    )
    INVALID = (
        """
        import copy, torch
        # `epoch_loss` is the training loss by where it comes from (the tutorial's naming)
        for epoch in range(40):
            running_loss = 0.0
            for x, m in train_dl:
                optimizer.zero_grad()
                loss = criterion(model(x), m)
                loss.backward()
                optimizer.step()
                running_loss += loss.item() * x.size(0)
            epoch_loss = running_loss / len(train_dl.dataset)
            val_epoch_loss = evaluate(model, val_dl)
            if epoch_loss < lowest:  # !
                lowest = epoch_loss
                best_wts = copy.deepcopy(model.state_dict())
        """,
        """
        import torch
        for epoch in range(50):
            train_loss = train_one_epoch(model, train_loader, optimizer)
            val_loss = evaluate(model, val_loader)
            print(epoch, train_loss, val_loss)
            if train_loss < best_loss:  # !
                best_loss = train_loss
                torch.save(model.state_dict(), "best.pt")
        """,
        """
        import torch
        class Trainer:
            def run(self):
                for epoch in range(self.epochs):
                    loss = self.train_epoch()
                    metrics = self.validate()
                    is_best = loss < self.best  # !
                    self.best = min(loss, self.best)
                    self.save_checkpoint(is_best)
            def train_epoch(self):
                total = 0.0
                for x, y in self.train_loader:
                    self.opt.zero_grad()
                    loss = self.criterion(self.model(x), y)
                    loss.backward()
                    self.opt.step()
                    total += loss.item()
                return total / len(self.train_loader)
        """,
        """
        import torch
        patience, wait = 5, 0
        for epoch in range(100):
            tr_loss = fit_epoch(model, loader)
            valid_acc = accuracy(model, valid_loader)
            if tr_loss < min_loss:  # !
                min_loss = tr_loss
                wait = 0
            else:
                wait += 1
                if wait >= patience:
                    break
        """,
        """
        import torch
        def main(model, train_loader, val_loader, opt):
            best_loss = float("inf")
            for epoch in range(10):
                train_loss = train_epoch(model, train_loader, opt)
                val_loss = evaluate(model, val_loader)
                is_best = train_loss < best_loss  # !
                if is_best and epoch >= 2:
                    best_loss = train_loss
                    torch.save(model.state_dict(), "best.pt")
        """,
    )

    def check(self, ctx) -> Iterator[Report]:
        found = selections(ctx)
        # Functions that also select on a validation metric: a training-loss selection beside it
        # is a deliberate extra (`best_train.pt` next to `best.pt`).
        on_val = {id(s.site.function) for s in found if VAL_METRIC.search((dotted(s.metric) or "").rsplit(".", 1)[-1])}
        for sel in found:
            if id(sel.site.function) in on_val:
                continue
            source = self._training_source(ctx, sel.metric, sel.site)
            if source is None:
                continue
            held = self._heldout_metric_available(ctx, sel.site)
            if held is None:
                continue
            yield Report(
                sel.comparison,
                f"the best model is picked (or training stopped) by {source}, a training metric, while "
                f"`{held}` is computed alongside: the training loss keeps falling as the model overfits, so "
                f"this selects the last epoch, not the best one. Compare `{held}` instead.",
            )

    @staticmethod
    def _training_source(ctx, metric, site: Site) -> Optional[str]:
        name = dotted(metric) or ""
        last = name.rsplit(".", 1)[-1]
        if HELDOUT_METRIC.search(last):
            return None
        if TRAIN_METRIC.search(last):
            return f"`{name}`"
        if not isinstance(metric, (cst.Name, cst.Attribute)):
            return None
        cands = ctx.resolve(metric, site)
        if len(cands) != 1 or cands[0][0] is metric:
            return None
        value, value_site = cands[0]
        if isinstance(value, cst.Call):
            fname = (dotted(value.func) or "").rsplit(".", 1)[-1]
            if TRAINING_FUNCTION.search(fname):
                return f"`{name}` (what `{fname}()` returns)"
        # By where the value comes from: a sum the training loop accumulates
        # (`epoch_loss = running_loss / len(train_dl.dataset)`, the transfer-learning tutorial's naming).
        acc = ctx.training.training_accumulator(value, value_site)
        if acc is not None:
            return f"`{name}` (from `{acc}`, accumulated in the loop that trains)"
        return None

    @staticmethod
    def _heldout_metric_available(ctx, site: Site) -> Optional[str]:
        """A held-out metric assigned before the comparison, in the same function and on the
        same path (not in an exclusive branch), from a computation (not a placeholder)."""
        for a in ctx.facts.assigns:
            if a.function is not site.function or a.order >= site.order or a.op != "=":
                continue
            value = a.value if a.value is not None else a.whole_value
            if value is None or isinstance(value, (cst.Integer, cst.Float, cst.Name)):
                continue  # `val_loss = 0.0`, `val_loss = None`: a placeholder
            if not any(isinstance(n, cst.Call) for n in walk(value)):
                continue
            if exclusive_sites(a, site) or (site.loops and not any(loop.contains(a.order) for loop in site.loops)):
                continue  # another branch, or before the loop the selection runs in
            for t in a.targets:
                name = dotted(t) or ""
                last = name.rsplit(".", 1)[-1]
                if VAL_METRIC.search(last) or (last in ("metrics", "scores") and _from_heldout_call(value)):
                    return name
            if _from_heldout_call(value) and len(a.targets) == 1:
                return dotted(a.targets[0]) or None
        return None


def _from_heldout_call(value) -> bool:
    """`self.validate()`, `evaluate(model, val_loader)`, `accuracy(model, valid_loader)`."""
    for n in walk(value):
        if isinstance(n, cst.Call):
            fname = (dotted(n.func) or "").rsplit(".", 1)[-1]
            if re.match(r"^(validate|validation|valid|val|evaluate_val|run_validation|validation_epoch|val_epoch)$", fname, re.I):
                return True
            if any(VAL_METRIC.search((dotted(a.value) or "").rsplit(".", 1)[-1]) for a in n.args):
                return True
    return False


RULE = SelectionOnTrainingLoss
