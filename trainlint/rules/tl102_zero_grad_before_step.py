from __future__ import annotations

from typing import Iterator, List, Optional

import libcst as cst

from trainlint.analysis.facts import AssignSite, CallSite, walk
from trainlint.analysis.names import dotted
from trainlint.analysis.training import BACKWARD, STEP, ZERO_GRAD, Event, exclusive, exits_before, is_conditional_wrt
from trainlint.rules.base import Report, Rule


class ZeroGradBeforeStep(Rule):
    """## What it does
    Finds gradients cleared between `backward()` and `optimizer.step()` in one iteration:
    `optimizer.zero_grad()` (or `model.zero_grad()` on the model the optimizer trains) after
    the loss's backward and before the step, also when these sit in helpers called from the
    loop.

    ## Why is this bad?
    `zero_grad()` throws away the gradients that `backward()` just computed, so the step
    sees zeros (or `None`) and the parameters do not move, except for weight decay and
    momentum. Training runs, the loss stays flat, and nothing fails. A GAN's
    `netG.zero_grad()` after the discriminator's backward is fine: the generator's own
    backward comes after it, before `optG.step()`.

    Not reported: a clear that never follows the backward in one pass, because it lies in
    another branch of the same `if`, or because the backward's branch returns (or
    continues) first (`if accum == 1: ...; loss.backward(); step(); return` and then the
    accumulation path's own `optimizer.zero_grad()`).

    ## Example
    ```python
    for x, y in loader:
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.zero_grad()
        optimizer.step()
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

    code = "TL102"
    name = "zero-grad-before-step"
    severity = "error"

    VALID = (
        """
        import torch
        # zero_grad right after the step, at the end of the iteration
        for x, y in loader:
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
            model.zero_grad()
        """,
        """
        import torch
        # GAN: netG.zero_grad() comes after D's backward, but G's backward follows it
        for real in loader:
            netD.zero_grad()
            errD = criterion(netD(real), ones)
            errD.backward()
            optD.step()
            netG.zero_grad()
            errG = criterion(netD(netG(noise)), ones)
            errG.backward()
            optG.step()
        """,
        """
        import torch
        # skipping a bad batch: the clear and the step never run in the same iteration
        for x, y in loader:
            loss = criterion(model(x), y)
            loss.backward()
            if not torch.isfinite(loss):
                optimizer.zero_grad()
                continue
            optimizer.step()
            optimizer.zero_grad()
        """,
        """
        import torch
        # another optimizer's gradients are cleared between this backward and step
        gen_opt = torch.optim.Adam(generator.parameters())
        disc_opt = torch.optim.Adam(discriminator.parameters())
        for real in loader:
            d_loss = disc_loss(discriminator(real), discriminator(generator(noise)))
            d_loss.backward()
            gen_opt.zero_grad()
            disc_opt.step()
            disc_opt.zero_grad()
        """,
        """
        import torch
        # out-of-memory recovery clears and skips the batch
        for x, y in loader:
            try:
                loss = criterion(model(x), y)
                loss.backward()
            except RuntimeError:
                optimizer.zero_grad()
                continue
            optimizer.step()
            optimizer.zero_grad()
        """,
        """
        import torch
        # accumulation: the clear sits with the step, after it
        for i, (x, y) in enumerate(tqdm(loader)):
            loss = criterion(model(x), y) / accum
            scaler.scale(loss).backward()
            if (i + 1) % accum == 0:
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
        """,
        """
        import torch
        # clearing by hand at the top of the iteration
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        for i in range(0, len(X), 32):
            for p in model.parameters():
                p.grad = None
            loss = F.mse_loss(model(X[i:i + 32]), y[i:i + 32])
            loss.backward()
            optimizer.step()
        """,
        """
        import torch
        # a frozen part's gradients, and non-finite ones, dropped before the step
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
        for x, y in loader:
            optimizer.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            for p in model.encoder.parameters():
                p.grad = None
            for p in model.parameters():
                if p.grad is not None and not torch.isfinite(p.grad).all():
                    p.grad = None
            optimizer.step()
        """,
        """
        import torch
        # the plain path returns after its own step: the accumulation path's zero_grad
        # never follows that backward
        def finish_step(optimizer, scaler):
            scaler.step(optimizer)
            scaler.update()

        def train_step(model, batch, accum, optimizer, scaler, args):
            if args.accum_freq == 1:
                optimizer.zero_grad()
                loss = model(batch)
                scaler.scale(loss).backward()
                finish_step(optimizer, scaler)
                return loss
            accum.append(batch)
            if len(accum) < args.accum_freq:
                return None
            optimizer.zero_grad()
            for b in accum:
                scaler.scale(model(b)).backward()
            finish_step(optimizer, scaler)
            return None
        """,
        """
        import torch
        # without accumulation the iteration steps and continues; with it, the clear comes
        # before the micro-batches' backwards
        for it in range(max_iters):
            if accum == 1:
                loss = model(next(data))
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
                continue
            optimizer.zero_grad()
            for micro in range(accum):
                (model(next(data)) / accum).backward()
            optimizer.step()
        """,
    )
    INVALID = (
        """
        import torch
        # micro-batches in an inner loop, cleared after them
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)
        for it in range(max_iters):
            for micro_step in range(accum_steps):
                loss = model(*get_batch("train")) / accum_steps
                loss.backward()
            optimizer.zero_grad(set_to_none=True)  # !
            optimizer.step()
        """,
        """
        import torch
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        for x, y in loader:
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.zero_grad()  # !
            optimizer.step()
        """,
        """
        import torch
        # model.zero_grad() clears what the optimizer trains
        optimizer = torch.optim.Adam(model.parameters())
        it = iter(loader)
        while True:
            x, y = next(it)
            loss = criterion(model(x), y)
            loss.backward()
            model.zero_grad()  # !
            optimizer.step()
        """,
        """
        import torch
        # AMP, with the step in a Trainer method called from the loop
        class Trainer:
            def __init__(self, model):
                self.model = model
                self.opt = torch.optim.AdamW(model.parameters())
                self.scaler = torch.cuda.amp.GradScaler()

            def update(self):
                self.opt.zero_grad()  # !
                self.scaler.step(self.opt)
                self.scaler.update()

            def fit(self, loader):
                for x, y in loader:
                    loss = self.model(x, y)
                    self.scaler.scale(loss).backward()
                    self.update()
        """,
        """
        import torch
        # one training step in a function
        def train_step(model, optimizer, batch):
            loss = model(**batch).loss
            loss.backward()
            optimizer.zero_grad()  # !
            optimizer.step()
            return loss.item()
        """,
        """
        import torch
        # gradients cleared by hand between the backward and the step
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        for epoch in range(200):
            for i in range(0, len(X), 32):
                loss = F.mse_loss(model(X[i:i + 32]), y[i:i + 32])
                loss.backward()
                for p in model.parameters():
                    p.grad = None  # !
                optimizer.step()
        """,
        """
        import torch
        # near-miss of the returning branch: this one falls through to the clear
        def train_step(model, batch, optimizer, args):
            if args.warmup:
                loss = model(batch)
                loss.backward()
            optimizer.zero_grad()  # !
            optimizer.step()
        """,
        """
        import torch
        # the `continue` belongs to an inner loop: the clear still follows the backward
        for x, y in loader:
            for p in model.parameters():
                loss = criterion(model(x), y)
                if p is None:
                    loss.backward()
                    continue
            optimizer.zero_grad()  # !
            optimizer.step()
        """,
    )

    def check(self, ctx) -> Iterator[Report]:
        if not ctx.uses_torch:
            return
        tr = ctx.training
        seen = set()
        for loop, events in [*tr.iteration_units(), *tr.nested_iteration_units()]:
            for z, b, s in self._misplaced(ctx, tr, loop, events):
                if id(z.site.node) in seen:
                    continue
                seen.add(id(z.site.node))
                clear = _code(ctx, z.site.node)
                back = _code(ctx, b.site.node)
                step = _code(ctx, s.site.node)
                yield Report(
                    z.site.node,
                    f"`{clear}` runs after `{back}` and before `{step}` in the same iteration: it "
                    f"discards the gradients just computed, so the step sees none. Clear the "
                    f"gradients before the backward (or after the step).",
                )

    def _misplaced(self, ctx, tr, loop, events: List[Event]):
        for i, s in enumerate(events):
            if s.kind != STEP or s.closure:
                continue
            j = next((k for k in range(i - 1, -1, -1) if events[k].kind == BACKWARD and not _apart(events[k], s)), None)
            if j is None:
                continue
            b = events[j]
            for z in events[j + 1 : i]:
                if z.kind != ZERO_GRAD or _apart(z, s) or _apart(b, z):
                    continue
                if is_conditional_wrt(z, s, loop) or tr.in_except(z):
                    continue
                if self._clears_step(ctx, tr, z, s):
                    yield z, b, s

    @staticmethod
    def _clears_step(ctx, tr, z: Event, s: Event) -> bool:
        """The cleared gradients are the ones `s` steps with: the same optimizer, or a model
        whose parameters the optimizer was built from."""
        site = z.site
        manual = _manual_clear_owner(ctx, z)
        if manual is not None:
            owner, is_opt = manual
            if is_opt:
                return s.target is not None and owner == s.target
            return owner in _param_owners(ctx, s)
        if not (isinstance(site.node, cst.Call) and getattr(site, "attr", None) == "zero_grad"):
            return False
        recv = site.receiver  # type: ignore[attr-defined]
        if recv is None or z.target is None or s.target is None:
            return False
        if z.target == s.target:
            return True
        if tr.is_optimizer(recv, site):
            return False
        owners = _param_owners(ctx, s)
        return bool(owners) and any(_prefix(z.target, o) or _prefix(o, z.target) for o in owners)


def _apart(first: Event, later: Event) -> bool:
    """The two never run in this order in one iteration: different branches of one `if`, or
    `first` in a branch that returns/continues before `later` (`if accum == 1: ...;
    loss.backward(); step(); return` then the accumulation path's own `zero_grad()`)."""
    return exclusive(first, later) or exits_before(first, later)


def _manual_clear_owner(ctx, z: Event) -> Optional[tuple]:
    """A hand-written clear of every parameter's gradient: `p.grad = None`, `del p.grad` or
    `p.grad.zero_()` with `p` the variable of a loop over `model.parameters()` (also
    `named_parameters()`): ("model", False); over an optimizer's `group["params"]`:
    ("optimizer", True). None for anything else (a clear of some parameters, a scaling)."""
    site = z.site
    grad = None
    if isinstance(site, AssignSite):
        if site.op == "=" and not (isinstance(site.value, cst.Name) and site.value.value == "None"):
            return None
        grads = [t for t in site.targets if isinstance(t, cst.Attribute) and t.attr.value == "grad"]
        grad = grads[0] if len(site.targets) == 1 and grads else None
    elif isinstance(site, CallSite) and site.attr == "zero_" and isinstance(site.receiver, cst.Attribute):
        grad = site.receiver
        if grad.attr.value == "data" and isinstance(grad.value, cst.Attribute):
            grad = grad.value
        if grad.attr.value != "grad":
            return None
    if grad is None or not isinstance(grad.value, cst.Name):
        return None
    param = _loop_source(ctx, grad.value.value, site)
    if isinstance(param, cst.Call) and isinstance(param.func, cst.Attribute) and param.func.attr.value in ("parameters", "named_parameters"):
        if param.args:
            return None  # `named_parameters(prefix=...)`, `parameters(recurse=False)`: not all of them
        name = dotted(param.func.value)
        return (name, False) if name else None
    if isinstance(param, cst.Subscript) and isinstance(param.value, cst.Name) and len(param.slice) == 1:
        index = param.slice[0].slice
        key = getattr(index, "value", None)
        if not (isinstance(key, cst.SimpleString) and key.evaluated_value == "params"):
            return None
        groups = _loop_source(ctx, param.value.value, site)
        if isinstance(groups, cst.Attribute) and groups.attr.value == "param_groups":
            name = dotted(groups.value)
            return (name, True) if name else None
    return None


def _loop_source(ctx, name: str, site) -> Optional[cst.BaseExpression]:
    """What the `for` loop that binds `name` (its only binding reaching `site`) iterates over."""
    defs = ctx.reaching(name, site)
    if len(defs) != 1 or defs[0].op != "for" or not any(isinstance(t, cst.Name) and t.value == name for t in defs[0].targets):
        return None
    loop = next((b for b in site.loops if b.node is defs[0].node), None)
    return defs[0].whole_value if loop is not None else None


def _param_owners(ctx, step: Event) -> List[str]:
    """`model` for an optimizer built from `model.parameters()` (every owner named in its
    parameter argument, and the `self.` attributes that hold the same object:
    `self.model = model` beside `AdamW(model.parameters())` in `__init__`); empty when the
    construction is not visible."""
    site = step.site
    opt: Optional[cst.BaseExpression] = site.positional(0) or site.keyword("optimizer") if step.scaler else site.receiver  # type: ignore[attr-defined]
    if opt is None:
        return []
    owners: List[str] = []
    for value, built_at in ctx.constructions(opt, site):
        if not isinstance(value, cst.Call) or not value.args:
            return []
        params = value.args[0].value
        for node in walk(params):
            if isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute) and node.func.attr.value in ("parameters", "named_parameters"):
                name = dotted(node.func.value)
                if name:
                    owners.append(name)
                    if isinstance(node.func.value, cst.Name):
                        owners.extend(ctx.self_aliases(name, built_at))
    return owners


def _prefix(a: str, b: str) -> bool:
    return a == b or b.startswith(a + ".")


def _code(ctx, node, limit: int = 48) -> str:
    text = " ".join(ctx.module.code_for_node(node).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


RULE = ZeroGradBeforeStep
