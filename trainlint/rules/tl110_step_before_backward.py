from __future__ import annotations

from typing import Iterator, List, Optional

import libcst as cst

from trainlint.analysis.facts import walk
from trainlint.analysis.training import BACKWARD, STEP, ZERO_GRAD, Event, exclusive, in_helper_loop, is_conditional_wrt
from trainlint.analysis.values import snippet
from trainlint.rules.base import Report, Rule
from trainlint.rules.tl102_zero_grad_before_step import ZeroGradBeforeStep


class StepBeforeBackward(Rule):
    """## What it does
    Finds an `optimizer.step()` that can only ever see cleared gradients: looking back from
    the step through the iteration (and, in a loop, round into the previous iteration),
    the first thing met is a `zero_grad()` of that optimizer's gradients (also
    `model.zero_grad()` on the model it trains), not a `backward()`. Helpers called from
    the loop count, as in TL102, loops inside them included. An inner loop met on the way
    counts by its last iteration: batches that each end in `backward(); zero_grad()`
    followed by one `step()` after the loop leave that step nothing but cleared gradients.

    ## Why is this bad?
    The step applies whatever is in `.grad` at that moment. `zero_grad(); step();
    backward()` (or `step(); backward(); zero_grad()`) has every step run on zeros (or
    `None`): the parameters never move except through weight decay and momentum, and each
    backward's gradients are thrown away before any step reads them. Training runs and the
    loss stays flat.

    What is *not* reported: a step at the top of the loop that uses the previous iteration's
    gradients (`step(); zero_grad(); backward()` — a one-step lag, but every gradient is
    used); a clear that is conditional or sits in another branch or an `except` handler;
    a backward in between of another network (a GAN's losses feed different optimizers, and
    the rule does not try to tell which backward feeds which step: any backward in between
    keeps it silent); LBFGS-style `step(closure)`.

    ## Example
    ```python
    for x, y in loader:
        optimizer.zero_grad()
        optimizer.step()
        loss = criterion(model(x), y)
        loss.backward()
    ```

    ## Use instead
    ```python
    for x, y in loader:
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
    ```
    """

    code = "TL110"
    name = "step-before-backward"
    severity = "error"

    VALID = (
        """
        import torch
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        for x, y in loader:
            optimizer.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
        """,
        """
        import torch
        # the step at the top uses the previous iteration's gradients: a lag, not a loss of them
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        for x, y in loader:
            optimizer.step()
            optimizer.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
        """,
        """
        import torch
        # GAN: the generator's step comes after its own backward
        for real in loader:
            optD.zero_grad()
            errD = criterion(netD(real), ones)
            errD.backward()
            optD.step()
            optG.zero_grad()
            errG = criterion(netD(netG(noise)), ones)
            errG.backward()
            optG.step()
        """,
        """
        import torch
        # micro-batches in an inner loop, then one step
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)
        for it in range(max_iters):
            for micro in range(accum):
                loss = model(*get_batch()) / accum
                loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        """,
        """
        import torch
        # another optimizer's gradients are cleared before this step
        for real in loader:
            lossD = d_loss(netD, netG, real)
            lossD.backward()
            optG.zero_grad()
            optD.step()
            optD.zero_grad()
        """,
        """
        import torch
        # a function that clears and steps once before its loop (warm-up), then trains
        def train(model, optimizer, loader):
            optimizer.zero_grad()
            for x, y in loader:
                loss = criterion(model(x), y)
                loss.backward()
            optimizer.step()
        """,
        """
        import torch
        # the last micro-batch's backward, not a clear, comes right before the step
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        for epoch in range(100):
            for i in range(0, 600, 60):
                optimizer.zero_grad()
                loss = criterion(model(X[i:i + 60]), y[i:i + 60])
                loss.backward()
            optimizer.step()
        """,
        """
        import torch
        # (after open_clip) one branch returns after its own update; the other clears, runs
        # the backwards in a micro-batch loop, and steps in the shared helper
        def backward(total_loss, scaler):
            if scaler is not None:
                scaler.scale(total_loss).backward()
            else:
                total_loss.backward()

        def finish(optimizer, scaler):
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()

        def train_step(model, batches, optimizer, scaler, accum_freq):
            if accum_freq == 1:
                optimizer.zero_grad()
                backward(model(batches[0]), scaler)
                finish(optimizer, scaler)
                return
            optimizer.zero_grad()
            for j in range(accum_freq):
                backward(model(batches[j]) / accum_freq, scaler)
            finish(optimizer, scaler)

        for batches in loader:
            train_step(model, batches, optimizer, scaler, accum_freq)
        """,
        """
        import copy
        import torch
        from torch import nn
        # the clear in the loop is the frozen teacher's; the optimizer steps the student
        class Distiller:
            def __init__(self, model, teacher):
                self.model = model
                self.teacher = copy.deepcopy(teacher)
                self.optim = torch.optim.AdamW(model.parameters(), lr=1e-3)
            def run_epoch(self, batches):
                for x, y in batches:
                    loss = nn.functional.mse_loss(self.model(x), self.teacher(x))
                    loss.backward()
                    self.teacher.zero_grad()
                self.optim.step()
        """,
    )
    INVALID = (
        """
        import torch
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        for x, y in loader:
            optimizer.zero_grad()
            optimizer.step()  # !
            loss = criterion(model(x), y)
            loss.backward()
        """,
        """
        import torch
        # zero_grad at the end of the iteration wipes the gradients before the next step
        optimizer = torch.optim.Adam(model.parameters())
        for epoch in range(10):
            for x, y in loader:
                optimizer.step()  # !
                loss = criterion(model(x), y)
                loss.backward()
                model.zero_grad()
        """,
        """
        import torch
        # the update lives in a Trainer method; the order is wrong inside it
        class Trainer:
            def __init__(self, model):
                self.model = model
                self.opt = torch.optim.AdamW(model.parameters())
                self.scaler = torch.cuda.amp.GradScaler()

            def train_step(self, x, y):
                self.opt.zero_grad()
                self.scaler.step(self.opt)  # !
                self.scaler.update()
                loss = self.model(x, y)
                self.scaler.scale(loss).backward()

            def fit(self, loader):
                for x, y in loader:
                    self.train_step(x, y)
        """,
        """
        import torch
        def update(optimizer):
            optimizer.zero_grad()
            optimizer.step()  # !

        for x, y in loader:
            update(opt)
            loss = criterion(model(x), y)
            loss.backward()
        """,
        """
        import torch
        # every batch ends with a clear, and the one step per epoch comes after the last one
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        for epoch in range(100):
            for i in range(0, 600, 60):
                loss = criterion(model(X[i:i + 60]), y[i:i + 60])
                loss.backward()
                optimizer.zero_grad()
            optimizer.step()  # !
        """,
        """
        import torch
        from torch import nn
        # the optimizer is built over the constructor's `model`, which `self.model` holds
        class Trainer:
            def __init__(self, model, lr=1e-3):
                self.model = model
                self.optim = torch.optim.AdamW(model.parameters(), lr=lr)
            def run_epoch(self, batches):
                for x, y in batches:
                    loss = nn.functional.mse_loss(self.model(x), y)
                    loss.backward()
                    self.model.zero_grad()
                self.optim.step()  # !
        """,
    )

    def check(self, ctx) -> Iterator[Report]:
        if not ctx.uses_torch:
            return
        tr = ctx.training
        nested = {id(loop): events for loop, events in tr.nested_iteration_units()}
        seen = set()
        units = [(loop, nested.get(id(loop)) or tr.iteration_events_with_helper_loops(loop)) for loop in ctx.loops]
        units += [(None, tr.function_events(fn)) for fn in ctx.facts.functions]
        for loop, events in units:
            if not any(e.kind == BACKWARD for e in events):
                continue
            for i, s in enumerate(events):
                if s.kind != STEP or s.closure or id(s.site.node) in seen:
                    continue
                if not self._own(s, loop):
                    continue
                z = self._clear_first(ctx, tr, loop, events, i)
                if z is None:
                    continue
                seen.add(id(s.site.node))
                yield Report(
                    s.site.node,
                    f"`{snippet(ctx, s.site.node)}` comes after `{snippet(ctx, z.site.node)}` with no "
                    f"`backward()` in between (round the loop included): every step sees cleared "
                    f"gradients and the parameters never move. Order the iteration as zero_grad(), "
                    f"backward(), step().",
                )

    @staticmethod
    def _own(s: Event, loop) -> bool:
        """The step runs once per iteration of this unit: directly in the loop's body (or in a
        helper called from there, outside the helper's own loops), or, for a function,
        outside the function's loops."""
        if in_helper_loop(s):
            return False
        loops = s.anchor.loops
        if loop is None:
            return not loops
        return bool(loops) and loops[-1] is loop

    @staticmethod
    def _clear_first(ctx, tr, loop, events: List[Event], i: int) -> Optional[Event]:
        """The clear of `events[i]`'s gradients met first when looking back from the step,
        when no backward (of anything) comes before it; None otherwise.

        An inner loop met on the way is judged as a whole, by its last iteration: when that
        ends in an unconditional clear (`backward(); zero_grad()` per batch), the step after
        the loop sees cleared gradients whenever the loop ran; the path that skips the loop
        still must show no backward."""
        s = events[i]
        order = list(range(i - 1, -1, -1))
        if loop is not None:
            order += list(range(len(events) - 1, i, -1))  # round into the previous iteration
        pending: Optional[Event] = None  # the clear that ends an inner loop met on the way
        judged: set = set()
        for k in order:
            e = events[k]
            if exclusive(e, s):
                continue
            inner = _inner_loop(e, loop)
            if inner is not None:
                if id(inner) in judged:
                    continue
                judged.add(id(inner))
                verdict = StepBeforeBackward._loop_ends_cleared(ctx, tr, inner, events, s)
                if verdict is None:
                    return None  # a backward in it, or a clear that may not run: cannot tell
                if verdict is not False and pending is None:
                    pending = verdict
                continue
            if e.kind == BACKWARD:
                return None
            if e.kind != ZERO_GRAD or not ZeroGradBeforeStep._clears_step(ctx, tr, e, s):
                continue
            if tr.in_except(e):
                continue
            if pending is not None:
                continue  # the gradients were already cleared by the inner loop's end
            if in_helper_loop(e) or is_conditional_wrt(e, s, loop):
                return None  # it may not run: cannot tell
            return e
        return pending

    @staticmethod
    def _loop_ends_cleared(ctx, tr, inner, events: List[Event], s: Event):
        """How the last iteration of `inner` (a loop inside the unit, before `s`) leaves the
        gradients `s` steps with: the clear it ends with, False when it neither clears them
        nor runs a backward, None when it runs a backward or the end cannot be told (a
        `break`/`continue` may skip the clear, a clear under an `if`)."""
        members = [e for e in events if inner in e.anchor.loops and not exclusive(e, s)]
        relevant = [e for e in members if e.kind == BACKWARD or (
            e.kind == ZERO_GRAD and ZeroGradBeforeStep._clears_step(ctx, tr, e, s) and not tr.in_except(e))]
        if not relevant:
            return False
        if inner.kind not in ("for", "while") or any(isinstance(n, (cst.Break, cst.Continue)) for n in walk(inner.node)):
            return None
        last = relevant[-1]
        if last.kind == BACKWARD or last.anchor.loops[-1] is not inner or in_helper_loop(last):
            return None
        if is_conditional_wrt(last, s, inner):
            return None
        return last


def _inner_loop(e: Event, loop):
    """The loop directly inside the unit (`loop`, or the function for None) that holds the
    event's anchor; None when the anchor is in the unit's own body."""
    loops = e.anchor.loops
    if loop is None:
        return loops[0] if loops else None
    if loop not in loops or loops[-1] is loop:
        return None
    return loops[loops.index(loop) + 1]


RULE = StepBeforeBackward
