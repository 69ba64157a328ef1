from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Tuple

import libcst as cst

from trainlint.analysis.evaluation import FRAMEWORK_HOOK
from trainlint.analysis.facts import AssignSite, CallSite
from trainlint.analysis.modes import Step, flatten, normalise, outer_name
from trainlint.analysis.names import dotted
from trainlint.analysis.training import BACKWARD, EVAL, MODE, STEP, TRAIN
from trainlint.rules.base import Report, Rule

# `if epoch == epochs - 1:` / `if epoch + 1 == n_epochs:` / `if is_last_epoch:`: runs once, at the end.
LAST_ITERATION = re.compile(r"==\s*[\w.\[\]()]+\s*-\s*1\b|\+\s*1\s*==|\blast\b|\bis_last|\bfinal\b", re.I)
# A call we cannot follow whose name suggests it sets the mode (`set_train_mode(model)`).
MODE_LIKE = re.compile(r"(^|_)(train|training|mode)(_|$)", re.I)


@dataclass(eq=False)
class _Shim:
    """What `Evaluation.model_has_mode_layers` reads of an evaluation pass."""

    model_call: CallSite


class TrainModeNotRestored(Rule):
    """## What it does
    Finds a training loop that switches the model to `eval()` — directly or through a
    same-module function such as `evaluate()` — after training, while nothing switches it
    back with `model.train()` before the next iteration trains again.

    ## Why is this bad?
    `model.eval()` stays in effect until `model.train()` is called. From the second epoch on
    the model trains in evaluation mode: dropout is off (no regularisation) and BatchNorm
    normalises with its frozen running statistics and stops updating them. Training still
    runs and the loss still falls, so nothing looks wrong — the model is just worse.
    `model.train()` anywhere in the epoch before the training part, in the training helper,
    or at the end of the evaluation function makes this fine, and so does an evaluation that
    runs only after the last epoch.

    ## Example
    ```python
    for epoch in range(epochs):
        for x, y in train_loader:
            ...
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            val_loss = sum(criterion(model(x), y) for x, y in val_loader)
    ```

    ## Use instead
    ```python
    for epoch in range(epochs):
        model.train()
        for x, y in train_loader:
            ...
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            val_loss = sum(criterion(model(x), y) for x, y in val_loader)
    ```
    """

    code = "TL303"
    name = "train-mode-not-restored"
    severity = "error"

    VALID = (
        """
        import torch
        for epoch in range(10):
            model.train()
            for x, y in train_loader:
                opt.zero_grad()
                criterion(model(x), y).backward()
                opt.step()
            model.eval()
            with torch.no_grad():
                for x, y in val_loader:
                    model(x)
        """,
        """
        import torch
        # the training function switches to train mode itself
        def train_one_epoch(model, loader, opt):
            model.train()
            for x, y in loader:
                opt.zero_grad()
                loss = criterion(model(x), y)
                loss.backward()
                opt.step()

        @torch.no_grad()
        def evaluate(model, loader):
            model.eval()
            return sum(model(x).sum() for x, _ in loader)

        for epoch in range(5):
            train_one_epoch(model, train_loader, opt)
            evaluate(model, val_loader)
        """,
        """
        import torch
        # the evaluation helper restores training mode at its end
        def evaluate(net, loader):
            net.eval()
            with torch.no_grad():
                out = [net(x) for x, _ in loader]
            net.train()
            return out

        net.train()
        for epoch in range(5):
            for x, y in train_loader:
                opt.zero_grad()
                crit(net(x), y).backward()
                opt.step()
            evaluate(net, val_loader)
        """,
        """
        import torch
        # evaluation after the last epoch only
        for epoch in range(epochs):
            for x, y in train_loader:
                opt.zero_grad()
                crit(model(x), y).backward()
                opt.step()
            if epoch == epochs - 1:
                model.eval()
                test(model)
        model.eval()
        """,
        """
        import torch
        # the teacher is frozen in eval mode on purpose; the student trains
        for epoch in range(epochs):
            student.train()
            for x, y in train_loader:
                with torch.no_grad():
                    t = teacher(x)
                opt.zero_grad()
                kd_loss(student(x), t).backward()
                opt.step()
            teacher.eval()
        """,
        """
        import torch
        # the model is switched to eval mode only when training stops
        for epoch in range(epochs):
            for x, y in train_loader:
                opt.zero_grad()
                crit(model(x), y).backward()
                opt.step()
            if early_stop(model):
                model.eval()
                break
        """,
        """
        import torch
        # skorch/ignite style: the mode comes from a flag
        for epoch in range(epochs):
            model.train(training)
            for x, y in loader:
                opt.zero_grad()
                crit(model(x), y).backward()
                opt.step()
            model.eval()
        """,
        """
        import torch
        # an EMA copy is only ever evaluated, never trained
        for epoch in range(epochs):
            model.train()
            for x, y in train_loader:
                opt.zero_grad()
                crit(model(x), y).backward()
                opt.step()
                ema.update(model)
            ema_model.eval()
            with torch.no_grad():
                acc = [ema_model(x) for x, _ in val_loader]
        """,
        """
        import torch
        # eval mode on purpose for the whole fine-tuning (frozen BatchNorm statistics)
        for epoch in range(epochs):
            model.eval()
            for x, y in train_loader:
                opt.zero_grad()
                crit(model(x), y).backward()
                opt.step()
        """,
        """
        import torch
        # a new model every iteration: each starts in train mode
        for lr in (1e-2, 1e-3):
            model = Net()
            for x, y in train_loader:
                opt.zero_grad()
                crit(model(x), y).backward()
                opt.step()
            model.eval()
            scores.append(evaluate(model))
        """,
        """
        import torch
        import lightning as L
        # Lightning sets the modes around its hooks
        class Lit(L.LightningModule):
            def training_step(self, batch, idx):
                opt = self.optimizers()
                for chunk in batch:
                    opt.zero_grad()
                    loss = self.model(chunk).loss
                    loss.backward()
                    opt.step()
                    self.model.eval()
        """,
    )
    INVALID = (
        """
        import torch
        model.train()
        for epoch in range(10):
            for x, y in train_loader:
                opt.zero_grad()
                loss = criterion(model(x), y)
                loss.backward()
                opt.step()
            model.eval()  # !
            with torch.no_grad():
                for x, y in val_loader:
                    val_loss = criterion(model(x), y)
        """,
        """
        import torch
        def train_one_epoch(model, loader, optimizer):
            for x, y in loader:
                optimizer.zero_grad()
                criterion(model(x), y).backward()
                optimizer.step()

        @torch.no_grad()
        def evaluate(model, loader):
            model.eval()
            return [model(x) for x, _ in loader]

        def main():
            net = Net()
            net.train()
            for epoch in range(20):
                train_one_epoch(net, train_loader, opt)
                acc = evaluate(net, val_loader)  # !
        """,
        """
        import torch
        class Trainer:
            def train_epoch(self):
                for batch in self.train_loader:
                    self.optimizer.zero_grad()
                    loss = self.model(**batch).loss
                    loss.backward()
                    self.optimizer.step()

            def validate(self):
                self.model.eval()
                with torch.no_grad():
                    return [self.model(**b).loss for b in self.val_loader]

            def fit(self, epochs):
                for epoch in range(epochs):
                    self.train_epoch()
                    if epoch % 5 == 0:
                        self.validate()  # !
        """,
        """
        import torch
        # mid-epoch evaluation: the rest of the epoch trains in eval mode
        model.train()
        for step, (x, y) in enumerate(train_loader):
            opt.zero_grad()
            crit(model(x), y).backward()
            opt.step()
            if step % 500 == 0:
                model.train(False)  # !
                evaluate_on(model, val_loader)
        """,
        """
        import torch
        # evaluation at the top of the iteration (nanoGPT style), no train() afterwards
        @torch.no_grad()
        def estimate_loss():
            model.eval()
            return sum(model(x, y)[1].item() for x, y in val_batches)

        it = 0
        while it < max_iters:
            if it % eval_interval == 0:
                losses = estimate_loss()  # !
            logits, loss = model(X, Y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            it += 1
        """,
    )

    def check(self, ctx) -> Iterator[Report]:
        if not ctx.uses_torch or ctx.is_test_file or "backward" not in ctx.text:
            return
        tr = ctx.training
        reported = set()
        for loop in ctx.loops:
            if loop.function is not None and self._framework_hook(ctx, loop.function):
                continue
            found = self._check_loop(ctx, tr, loop)
            if found is None:
                continue
            step, model = found
            node = step.anchor.node
            if id(node) in reported:
                continue
            reported.add(id(node))
            inner = _short(ctx.module.code_for_node(step.site.node))
            if step.chain and isinstance(node, cst.Call):
                what = f"`{_short(ctx.module.code_for_node(node.func))}(...)`, which calls `{inner}`,"
            else:
                what = f"`{inner}`"
            yield Report(
                node,
                f"{what} switches `{model}` to eval mode and nothing switches it back before the "
                f"loop trains again: from then on dropout is off and BatchNorm uses frozen "
                f"statistics. Call `{model}.train()` before the training part of each iteration.",
            )

    @staticmethod
    def _framework_hook(ctx, fn) -> bool:
        for f in ctx.enclosing_function_chain(fn):
            if f.cls is not None and (FRAMEWORK_HOOK.search(f.name) or f.name.endswith("_step")):
                bases = ctx.base_qualnames(f.cls)
                if any(b.startswith(("lightning", "pytorch_lightning")) for b in bases) or FRAMEWORK_HOOK.search(f.name):
                    return True
        return False

    def _check_loop(self, ctx, tr, loop):
        """(eval step, model name) when an `eval()` is still in effect at a training forward
        pass of the same model in a later (or the same) iteration."""
        steps = flatten(ctx, loop)
        kinds: List[Optional[str]] = []
        first_train = last_train = None
        for i, st in enumerate(steps):
            kind = None
            for ev in tr.site_events(st.site):
                if ev.kind in (BACKWARD, STEP):
                    kind = "train_step"
                elif ev.kind in (EVAL, TRAIN, MODE):
                    kind = ev.kind
            if kind == "train_step":
                first_train = i if first_train is None else first_train
                last_train = i
            kinds.append(kind)
        if first_train is None:
            return None
        modes = [i for i, k in enumerate(kinds) if k in (EVAL, TRAIN, MODE)]
        if not modes or any(kinds[i] in (TRAIN, MODE) for i in modes):
            return None  # some train()/train(flag) in the iteration: assume it restores (precision)
        evals: Dict[str, List[int]] = {}
        for i in modes:
            st = steps[i]
            if tr.under_mode_context(st.site):
                continue
            recv = st.site.receiver  # type: ignore[attr-defined]
            name = outer_name(ctx, dotted(recv) if recv is not None else None, st)
            if name is not None:
                evals.setdefault(name, []).append(i)
        for model, idxs in evals.items():
            forwards = self._forwards(ctx, tr, steps, model)
            grad = [i for i, g in forwards if g and i <= last_train]
            if not grad:
                continue  # never trained here (a teacher, an EMA copy)
            g0 = grad[0]
            before = [i for i in idxs if i < g0]
            if before:
                # Switched to eval earlier in this iteration: a bug only when an evaluation
                # pass (a no-grad forward) runs in between; else eval-mode training is deliberate.
                e = before[-1]
                if not any(not g and e < i < g0 for i, g in forwards):
                    continue
                between = steps[e + 1 : g0]
            else:
                e = idxs[-1]
                if e < first_train or self._last_iteration_only(ctx, loop, steps[e]):
                    continue
                between = steps[:g0]
                if self._loop_target(ctx, loop, model):
                    continue
            if self._rebound(between, model) or self._unknown_mode_setter(ctx, between, model):
                continue
            if not ctx.evaluation.model_has_mode_layers(_Shim(steps[g0].site)):  # type: ignore[arg-type]
                continue
            return steps[e], model
        return None

    @staticmethod
    def _forwards(ctx, tr, steps: List[Step], model: str) -> List[Tuple[int, bool]]:
        """(index, with gradients) of every forward pass of `model` in the iteration."""
        out = []
        for i, st in enumerate(steps):
            site = st.site
            if not isinstance(site, CallSite) or not tr.is_model_call(site):
                continue
            name = outer_name(ctx, tr.model_key(site), st)
            if name is None or normalise(name) != model:
                continue
            no_grad = tr.under_no_grad(site) or any(tr.under_no_grad(c) for c in st.chain)
            out.append((i, not no_grad))
        return out

    @staticmethod
    def _loop_target(ctx, loop, model: str) -> bool:
        """`for model in models:`: a different model every iteration."""
        return loop.kind == "for" and any(
            normalise(dotted(t) or "") == model
            for a in ctx.facts.assigns
            if a.op == "for" and a.node is loop.node
            for t in a.targets
        )

    @staticmethod
    def _rebound(steps: List[Step], model: str) -> bool:
        """`model = Net()` between the eval and the training: a fresh module starts in train mode."""
        for st in steps:
            site = st.site
            if isinstance(site, AssignSite) and not st.chain:
                if any(normalise(dotted(t) or "") == model for t in site.targets):
                    return True
        return False

    @staticmethod
    def _unknown_mode_setter(ctx, steps: List[Step], model: str) -> bool:
        """Before training, a call we cannot follow that may set the mode: named like one, or
        handed the model (`prepare(model)`)."""
        for st in steps:
            site = st.site
            if not isinstance(site, CallSite) or ctx.callee(site) is not None:
                continue
            q = site.qualname or ""
            if q.startswith("torch."):
                continue
            name = dotted(site.func) or ""
            if MODE_LIKE.search(name.rsplit(".", 1)[-1]):
                return True
            for a in site.node.args:  # type: ignore[attr-defined]
                d = dotted(a.value)
                if d is not None and outer_name(ctx, d, st) == model:
                    return True
        return False

    @staticmethod
    def _last_iteration_only(ctx, loop, step: Step) -> bool:
        """Under `if epoch == epochs - 1:`, or in a branch that leaves the loop (`break`)."""
        anchor = step.anchor
        for block in anchor.ifs:
            if block.function is not loop.function or not loop.contains(block.start):
                continue
            if block.test is not None and LAST_ITERATION.search(ctx.module.code_for_node(block.test)):
                return True
            body = getattr(block.node, "body", None)
            for stmt in body.body if isinstance(body, cst.IndentedBlock) else ():
                if isinstance(stmt, cst.SimpleStatementLine) and any(isinstance(x, (cst.Break, cst.Return)) for x in stmt.body):
                    return True
        return False


def _short(text: str, limit: int = 40) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


RULE = TrainModeNotRestored
