from __future__ import annotations

from typing import Iterator, Optional

import libcst as cst

from trainlint.analysis.training import BACKWARD, CLIP, STEP, UNSCALE, Event, clip_measures_only, exclusive
from trainlint.rules.base import Report, Rule


class ClipWithoutUnscale(Rule):
    """## What it does
    Finds gradient clipping under mixed precision with a `GradScaler`
    (`scaler.scale(loss).backward()` ... `scaler.step(optimizer)`) where
    `scaler.unscale_(optimizer)` does not run before the clip in the iteration.

    ## Why is this bad?
    Until `unscale_` runs, `.grad` holds the gradients multiplied by the loss scale (often
    65536). `clip_grad_norm_(params, 1.0)` then compares the *scaled* norm with the
    threshold: it clips almost every step by a huge factor, and the factor changes whenever
    the scaler adjusts its scale, so the effective learning rate jumps around.

    ## Example
    ```python
    scaler.scale(loss).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    scaler.step(optimizer)
    scaler.update()
    ```

    ## Use instead
    ```python
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    scaler.step(optimizer)
    scaler.update()
    ```
    """

    code = "TL106"
    name = "clip-without-unscale"
    severity = "error"

    VALID = (
        """
        import torch
        scaler = torch.cuda.amp.GradScaler()
        for x, y in loader:
            optimizer.zero_grad()
            with torch.autocast("cuda"):
                loss = criterion(model(x), y)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(optimizer)
            scaler.update()
        """,
        """
        import torch
        # the unscale happens in a helper called before the clip
        def unscale(scaler, opt):
            scaler.unscale_(opt)

        for x, y in loader:
            scaler.scale(criterion(model(x), y)).backward()
            unscale(scaler, optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad()
        """,
        """
        import torch
        # without a scaler the gradients are not scaled
        for x, y in loader:
            optimizer.zero_grad()
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = criterion(model(x), y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
        """,
        """
        import torch
        # accelerate unscales inside its own clip_grad_norm_
        for batch in loader:
            loss = model(**batch).loss
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad()
        """,
        """
        import torch
        # the clip is on the path without the scaler
        for x, y in loader:
            loss = criterion(model(x), y)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
            optimizer.zero_grad()
        """,
        """
        import torch
        # micro-batches in an inner loop, unscale before the clip after it
        scaler = torch.cuda.amp.GradScaler(enabled=(dtype == "float16"))
        while True:
            for micro_step in range(accum_steps):
                with ctx:
                    logits, loss = model(X, Y)
                    loss = loss / accum_steps
                scaler.scale(loss).backward()
            if grad_clip != 0.0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
        """,
    )
    INVALID = (
        """
        import torch
        # micro-batches in an inner loop, the clip after it without unscaling
        scaler = torch.cuda.amp.GradScaler()
        while True:
            for micro_step in range(accum_steps):
                with torch.autocast("cuda", dtype=torch.float16):
                    loss = model(X, Y) / accum_steps
                scaler.scale(loss).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # !
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
        """,
        """
        import torch
        scaler = torch.cuda.amp.GradScaler()
        for x, y in loader:
            optimizer.zero_grad()
            with torch.autocast("cuda"):
                loss = criterion(model(x), y)
            scaler.scale(loss).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # !
            scaler.step(optimizer)
            scaler.update()
        """,
        """
        import torch
        from torch.nn.utils import clip_grad_norm_
        # accumulation: the clip inside the step guard, still before any unscale
        scaler = torch.amp.GradScaler("cuda")
        for step, batch in enumerate(loader):
            loss = model(**batch).loss / accum
            scaler.scale(loss).backward()
            if (step + 1) % accum == 0:
                clip_grad_norm_(model.parameters(), max_norm)  # !
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad()
        """,
        """
        import torch
        # the scaled gradients are clipped (and stepped) without the scaler's unscale
        scaler = torch.cuda.amp.GradScaler()
        for idx, batch in enumerate(data):
            optimizer.zero_grad()
            with torch.cuda.amp.autocast():
                logits, aux = model(batch)
                loss = F.cross_entropy(logits, batch) + 0.001 * aux
            scaler.scale(loss).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # !
            optimizer.step()
        """,
        """
        import torch
        # a Trainer whose update helper clips without unscaling
        class Trainer:
            def __init__(self, model, opt):
                self.model, self.opt = model, opt
                self.scaler = torch.cuda.amp.GradScaler()

            def update(self):
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)  # !
                self.scaler.step(self.opt)
                self.scaler.update()

            def fit(self, loader):
                for x, y in loader:
                    self.opt.zero_grad()
                    self.scaler.scale(self.model(x, y)).backward()
                    self.update()
        """,
    )

    def check(self, ctx) -> Iterator[Report]:
        if not ctx.uses_torch:
            return
        tr = ctx.training
        seen = set()
        for loop, events in [*tr.iteration_units(), *tr.nested_iteration_units()]:
            for i, c in enumerate(events):
                if c.kind != CLIP or id(c.site.node) in seen or not _torch_clip(c) or clip_measures_only(ctx, c):
                    continue
                step = next((e for e in events[i + 1 :] if e.kind == STEP and not exclusive(e, c)), None)
                if step is None:
                    continue
                earlier = [e for e in events[:i] if not exclusive(e, c)]
                backward = next((e for e in reversed(earlier) if e.kind == BACKWARD), None)
                if backward is None or any(e.kind in (UNSCALE, STEP) for e in earlier[earlier.index(backward):]):
                    continue
                if any(e.kind == UNSCALE for e in earlier):
                    continue
                scaler = _scaled_backward(ctx, tr, backward)
                if scaler is None or not _grad_scaler(ctx, scaler, backward.site) or tr.in_except(c):
                    continue
                seen.add(id(c.site.node))
                opt = step.target or "optimizer"
                name = ctx.module.code_for_node(scaler)
                yield Report(
                    c.site.node,
                    f"Gradients are clipped while still multiplied by the GradScaler's loss scale "
                    f"(`{name}.scale(loss).backward()` with no `{name}.unscale_({opt})` before "
                    f"the clip): the threshold is compared with scaled norms. Call "
                    f"`{name}.unscale_({opt})` right before clipping.",
                )


def _torch_clip(c: Event) -> bool:
    """PyTorch's own clip functions (a framework's `accelerator.clip_grad_norm_` unscales itself)."""
    q = getattr(c.site, "qualname", None)
    return bool(q) and q.startswith("torch.nn.utils")


def _scaled_backward(ctx, tr, backward: Event) -> Optional[cst.BaseExpression]:
    """`scaler` in `scaler.scale(loss).backward()`."""
    recv = getattr(backward.site, "receiver", None)
    if isinstance(recv, cst.Call) and isinstance(recv.func, cst.Attribute) and recv.func.attr.value == "scale":
        scaler = recv.func.value
        if tr.is_scaler(scaler, backward.site):
            return scaler
    return None


def _grad_scaler(ctx, scaler: cst.BaseExpression, at) -> bool:
    """Every visible construction of the scaler is a `GradScaler` (unknown ones are taken
    on the evidence of the `scale(loss).backward()` / `step(optimizer)` API)."""
    for value, _ in ctx.constructions(scaler, at):
        if isinstance(value, cst.Call):
            q = ctx.qualname(value.func)
            if not (q or "").endswith("GradScaler"):
                return False
            enabled = next((a.value for a in value.args if a.keyword is not None and a.keyword.value == "enabled"), None)
            if isinstance(enabled, cst.Name) and enabled.value == "False":
                return False  # a disabled scaler does not scale
        elif not isinstance(value, (cst.Name, cst.Attribute)):
            return False
    return True


RULE = ClipWithoutUnscale
