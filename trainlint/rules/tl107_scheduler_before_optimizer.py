from __future__ import annotations

import re
from typing import Iterator, Optional, Set

import libcst as cst

from trainlint.analysis.facts import walk
from trainlint.analysis.names import dotted
from trainlint.analysis.training import SCHED_STEP, STEP, Event, conditions, exclusive
from trainlint.rules.base import Report, Rule

_COUNTER_NAME = re.compile(r"epoch|step|iter|^(i|it|n|e|ep|idx|batch_idx)$", re.I)
_SCHEDULER_PACKAGES = ("torch.optim.lr_scheduler", "torch.optim.swa_utils", "transformers", "diffusers")


class SchedulerBeforeOptimizer(Rule):
    """## What it does
    Finds `scheduler.step()` called before `optimizer.step()` in the same loop body or
    training-step function (also when the optimizer steps in a nested batch loop or a
    helper that comes after it, the pre-1.1 epoch-loop habit).

    ## Why is this bad?
    Since PyTorch 1.1 a learning-rate scheduler must step *after* the optimizer. Stepping
    it first skips the first value of the schedule: warm-up starts one step in, a step
    decay comes one epoch early, and PyTorch warns "Detected call of `lr_scheduler.step()`
    before `optimizer.step()`". Schedulers stepped with a metric or an explicit epoch
    (`ReduceLROnPlateau`, `scheduler.step(val_loss)`), stepped once before the loop, or
    stepped only after the first iteration are not reported.

    ## Example
    ```python
    for x, y in loader:
        optimizer.zero_grad()
        criterion(model(x), y).backward()
        scheduler.step()
        optimizer.step()
    ```

    ## Use instead
    ```python
    for x, y in loader:
        optimizer.zero_grad()
        criterion(model(x), y).backward()
        optimizer.step()
        scheduler.step()
    ```
    """

    code = "TL107"
    name = "scheduler-before-optimizer"
    severity = "warning"

    VALID = (
        """
        import torch
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=30)
        for epoch in range(90):
            for x, y in loader:
                optimizer.zero_grad()
                criterion(model(x), y).backward()
                optimizer.step()
            scheduler.step()
        """,
        """
        import torch
        # ReduceLROnPlateau steps on a metric, at the start of the next epoch here
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer)
        val_loss = float("inf")
        for epoch in range(90):
            scheduler.step(val_loss)
            train_one_epoch(model, optimizer)
            val_loss = validate(model)
        """,
        """
        import torch
        # a warm-up scheduler stepped once before the loop
        warmup = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.1)
        warmup.step()
        for x, y in loader:
            optimizer.zero_grad()
            criterion(model(x), y).backward()
            optimizer.step()
        """,
        """
        import torch
        # stepped at the top of each epoch but not the first: it follows the last epoch's steps
        for epoch in range(90):
            if epoch > 0:
                scheduler.step()
            for x, y in loader:
                optimizer.zero_grad()
                criterion(model(x), y).backward()
                optimizer.step()
        """,
        """
        import torch
        # a hand-written scheduler that sets the learning rate for the coming step
        class Warmup:
            def __init__(self, optimizer):
                self.optimizer = optimizer

            def step(self):
                for g in self.optimizer.param_groups:
                    g["lr"] = g["lr"] * 1.01

        lr_scheduler = Warmup(optimizer)
        for x, y in loader:
            lr_scheduler.step()
            criterion(model(x), y).backward()
            optimizer.step()
            optimizer.zero_grad()
        """,
        """
        import torch
        # GAN: D's scheduler steps before G's optimizer, after D's
        sched_d = torch.optim.lr_scheduler.ExponentialLR(opt_d, 0.99)
        sched_g = torch.optim.lr_scheduler.ExponentialLR(opt_g, 0.99)
        for real in loader:
            d_loss(real).backward()
            opt_d.step()
            sched_d.step()
            g_loss().backward()
            opt_g.step()
            sched_g.step()
        """,
    )
    INVALID = (
        """
        import torch
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=1000)
        for x, y in loader:
            optimizer.zero_grad()
            criterion(model(x), y).backward()
            scheduler.step()  # !
            optimizer.step()
        """,
        """
        import torch
        # the pre-1.1 habit: stepping at the top of the epoch loop
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=30)
        for epoch in range(90):
            scheduler.step()  # !
            for x, y in train_loader:
                optimizer.zero_grad()
                criterion(model(x), y).backward()
                optimizer.step()
        """,
        """
        import torch
        from transformers import get_linear_schedule_with_warmup
        # the optimizer step lives in a helper called after the scheduler step
        def update(optimizer):
            optimizer.step()
            optimizer.zero_grad()

        lr_scheduler = get_linear_schedule_with_warmup(optimizer, 100, 1000)
        for step, batch in enumerate(tqdm(loader)):
            model(**batch).loss.backward()
            lr_scheduler.step()  # !
            update(optimizer)
        """,
        """
        import torch
        # inside the accumulation guard, still before the optimizer
        for step, batch in enumerate(train_loader):
            loss = model(**batch).loss / accum
            loss.backward()
            if (step + 1) % accum == 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                if scheduler is not None:
                    scheduler.step()  # !
                optimizer.step()
                optimizer.zero_grad()
        """,
        """
        import torch
        # the per-epoch function steps the scheduler before its batch loop
        def train(model, loader, optimizer, scheduler):
            scheduler.step()  # !
            for x, y in loader:
                optimizer.zero_grad()
                F.nll_loss(model(x), y).backward()
                optimizer.step()

        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, [30, 60])
        for epoch in range(90):
            train(model, loader, optimizer, scheduler)
        """,
        """
        import torch
        # a training-step method (called by a loop elsewhere) with AMP
        class Trainer:
            def __init__(self, model):
                self.opt = torch.optim.AdamW(model.parameters())
                self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, 100)

            def train_step(self, loss):
                self.scaler.scale(loss).backward()
                self.sched.step()  # !
                self.scaler.step(self.opt)
                self.scaler.update()
                self.opt.zero_grad()
        """,
    )

    def check(self, ctx) -> Iterator[Report]:
        if not ctx.uses_torch:
            return
        tr = ctx.training
        seen = set()
        for loop, events in tr.iteration_units():
            scheds = [(i, e) for i, e in enumerate(events) if e.kind == SCHED_STEP]
            if not scheds:
                continue
            everything = tr.all_events(loop) if loop is not None else events
            targets = {e.target for e in everything if e.kind == STEP and not e.closure}
            for i, sc in scheds:
                site = sc.site
                if id(site.node) in seen or site.node.args:  # type: ignore[attr-defined]
                    continue
                if not self._torch_scheduler(ctx, site.receiver, site):  # type: ignore[attr-defined]
                    continue
                opt = self._optimizer_of(ctx, site.receiver, site)  # type: ignore[attr-defined]
                if opt is None and len(targets) != 1:
                    continue
                wanted = opt if opt is not None else next(iter(targets))
                if wanted is None:
                    continue
                ours = lambda e: e.kind == STEP and not e.closure and e.target == wanted and not exclusive(e, sc)  # noqa: E731
                if any(ours(e) for e in events[:i]):
                    continue  # the optimizer already stepped in this iteration
                later = next((e for e in events[i + 1 :] if ours(e)), None)
                if later is None and loop is not None:
                    # a nested batch loop, or a helper's loop, after the scheduler step
                    pos = next((n for n, e in enumerate(everything) if _key(e) == _key(sc)), None)
                    if pos is not None:
                        later = next((e for e in everything[pos + 1 :] if ours(e)), None)
                if later is None or self._after_first_iteration(sc, later, loop) or tr.in_except(sc):
                    continue
                seen.add(id(site.node))
                name = ctx.module.code_for_node(site.receiver)  # type: ignore[attr-defined]
                yield Report(
                    site.node,
                    f"`{name}.step()` runs before `{wanted}.step()` in this "
                    f"{'loop body' if loop is not None else 'training step'}: since "
                    f"PyTorch 1.1 the scheduler must step after the optimizer, otherwise the first "
                    f"value of the learning-rate schedule is skipped. Move it after `{wanted}.step()`.",
                )

    @staticmethod
    def _torch_scheduler(ctx, recv: cst.BaseExpression, at) -> bool:
        """A PyTorch-style scheduler (its `step()` sets the rate for the *next* step): built by
        torch/transformers/diffusers, by a local subclass of torch's, or not visible here."""
        for value, _ in ctx.constructions(recv, at):
            if not isinstance(value, cst.Call):
                if isinstance(value, (cst.Name, cst.Attribute)) and ctx.qualname(value) is None:
                    continue  # not visible (a parameter, a framework attribute): the name decides
                return False
            q = ctx.qualname(value.func)
            if q is not None:
                if not q.startswith(_SCHEDULER_PACKAGES) or q.endswith("ReduceLROnPlateau"):
                    return False
                continue
            cls = ctx.class_named(dotted(value.func) or "") if isinstance(value.func, cst.Name) else None
            if cls is None or not any(b.startswith("torch.optim") for b in ctx.base_qualnames(cls)):
                return False
        return True

    @staticmethod
    def _optimizer_of(ctx, recv: cst.BaseExpression, at) -> Optional[str]:
        found: Set[Optional[str]] = set()
        for value, _ in ctx.constructions(recv, at):
            arg = None
            if isinstance(value, cst.Call):
                arg = next((a.value for a in value.args if a.keyword is not None and a.keyword.value == "optimizer"), None)
                if arg is None and value.args and value.args[0].keyword is None:
                    arg = value.args[0].value
            found.add(dotted(arg) if arg is not None else None)
        return found.pop() if len(found) == 1 else None

    @staticmethod
    def _after_first_iteration(sc: Event, step: Event, loop) -> bool:
        """Under an `if` on an iteration counter that the optimizer step does not share
        (`if epoch > 0:`): it may follow the last iteration's optimizer steps rather than
        precede this one's. A guard around both (`if (i + 1) % k == 0:`) changes nothing."""
        shared = conditions(step, loop)
        for block in conditions(sc, loop):
            if block in shared:
                continue
            test = block.test if block.kind == "if" else None
            if test is None:
                return True  # an `else` branch: its condition is elsewhere
            for node in walk(test):
                if isinstance(node, cst.Name) and _COUNTER_NAME.search(node.value):
                    return True
        return False


def _key(e: Event):
    return (id(e.site), tuple(id(c) for c in e.chain))


RULE = SchedulerBeforeOptimizer
