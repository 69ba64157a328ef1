from __future__ import annotations

from typing import Iterator

from trainlint.analysis.training import BACKWARD, CLIP, STEP, clip_measures_only, exclusive, is_conditional_wrt
from trainlint.rules.base import Report, Rule


class ClipMisplaced(Rule):
    """## What it does
    Finds `clip_grad_norm_`/`clip_grad_value_` placed where it clips nothing useful: before
    the iteration's `backward()`, or after its `optimizer.step()`, also when these run in
    helpers called from the loop.

    ## Why is this bad?
    Clipping acts on the gradients in `.grad` at the moment it runs. Before `backward()` they
    are the previous iteration's (or zeros); after `step()` the update has already used the
    unclipped gradients. Either way training runs without the clipping it was configured
    with, and exploding gradients are not caught.

    ## Example
    ```python
    for x, y in loader:
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    ```

    ## Use instead
    ```python
    for x, y in loader:
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    ```
    """

    code = "TL105"
    name = "clip-misplaced"
    severity = "error"

    VALID = (
        """
        import torch
        for x, y in loader:
            optimizer.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
        """,
        """
        import torch
        # AMP with accumulation: unscale and clip inside the step guard
        for i, (x, y) in enumerate(tqdm(loader)):
            with torch.autocast("cuda"):
                loss = criterion(model(x), y) / accum
            scaler.scale(loss).backward()
            if (i + 1) % accum == 0:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), max_norm)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad()
        """,
        """
        import torch
        # GAN: each network is clipped between its own backward and step
        for real in loader:
            optD.zero_grad()
            lossD = d_loss(netD, netG, real)
            lossD.backward()
            torch.nn.utils.clip_grad_norm_(netD.parameters(), 1.0)
            optD.step()
            optG.zero_grad()
            lossG = g_loss(netD, netG)
            lossG.backward()
            torch.nn.utils.clip_grad_norm_(netG.parameters(), 1.0)
            optG.step()
        """,
        """
        import torch
        # the step of the previous backward runs at the top of the next iteration
        for i, (x, y) in enumerate(loader):
            if i > 0:
                torch.nn.utils.clip_grad_value_(model.parameters(), 0.5)
                optimizer.step()
                optimizer.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
        """,
        """
        import torch
        # the clip lives in a helper called between backward and step
        def clip(model):
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)

        for x, y in loader:
            optimizer.zero_grad()
            criterion(model(x), y).backward()
            clip(model)
            optimizer.step()
        """,
        """
        import torch
        # two code paths: each clips in its own branch
        for x, y in loader:
            loss = criterion(model(x), y)
            if use_amp:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
            optimizer.zero_grad()
        """,
    )
    INVALID = (
        """
        import torch
        for x, y in loader:
            optimizer.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # !
        """,
        """
        import torch
        from torch.nn.utils import clip_grad_value_
        # clipping before the backward clips the zeroed gradients
        for x, y in loader:
            optimizer.zero_grad()
            clip_grad_value_(model.parameters(), 0.5)  # !
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
        """,
        """
        import torch
        # the step lives in a method called from the loop, and the clip comes after it
        class Trainer:
            def update(self, loss):
                self.optimizer.zero_grad()
                loss.backward()
                self.optimizer.step()

            def fit(self, loader):
                for x, y in loader:
                    self.update(self.model(x, y))
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), 5.0)  # !
        """,
        """
        import torch
        # a training step function: clip after step
        def train_step(model, optimizer, x, y):
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # !
            return loss.item()
        """,
    )

    def check(self, ctx) -> Iterator[Report]:
        if not ctx.uses_torch:
            return
        tr = ctx.training
        seen = set()
        for loop, events in tr.iteration_units():
            for i, c in enumerate(events):
                if c.kind != CLIP or id(c.site.node) in seen or clip_measures_only(ctx, c):
                    continue
                around = [(k, e) for k, e in enumerate(events) if e.kind in (BACKWARD, STEP) and not e.closure and not exclusive(e, c)]
                before = [e for k, e in around if k < i]
                after = [e for k, e in around if k > i]
                where = None
                if not any(e.kind == BACKWARD for e in before) and after and after[0].kind == BACKWARD and any(e.kind == STEP for e in after):
                    where = "before `backward()`: it clips the previous iteration's (or already cleared) gradients"
                elif (
                    before and before[-1].kind == STEP and any(e.kind == BACKWARD for e in before)
                    and not after and not is_conditional_wrt(before[-1], c, loop)
                ):
                    where = "after `optimizer.step()`: the update has already used the unclipped gradients"
                if where is None or tr.in_except(c):
                    continue
                seen.add(id(c.site.node))
                yield Report(
                    c.site.node,
                    f"Gradient clipping runs {where}. Clip between `backward()` and `step()` "
                    f"(after `scaler.unscale_(optimizer)` with AMP).",
                )


RULE = ClipMisplaced
