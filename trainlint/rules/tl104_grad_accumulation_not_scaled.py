from __future__ import annotations

import re
from typing import Iterator, Optional, Tuple

import libcst as cst

from trainlint.analysis.context import MAX_DEPTH
from trainlint.analysis.facts import Block, CallSite, Site, walk
from trainlint.analysis.names import dotted
from trainlint.analysis.training import BACKWARD, FRAMEWORK_BACKWARD, STEP, ZERO_GRAD, Event, conditions, exclusive
from trainlint.rules.base import Report, Rule

# A loss module or function by name (not `compute_loss`: a helper that may scale inside).
_LOSS_CALLABLE = re.compile(r"^_?(\w+_)?(criterion|crit)(_\w+)?$|^_?(loss_fn|lossfn|loss_func|loss_function|loss_module|loss)$", re.I)
# Methods that pass a tensor through unchanged in scale.
_KEEP_SCALE = {"mean", "sum", "float", "double", "half", "squeeze", "to", "cuda", "clone", "contiguous", "view", "reshape"}
# Element-wise and reducing methods of a hand-written loss (`(out - y).pow(2).mean()`): no
# accumulation count enters through them, so they are as scaled as their receiver.
_ELEMENTWISE = {"pow", "abs", "square", "sqrt", "exp", "log", "log1p", "neg", "relu", "clamp", "clamp_min", "norm"}
_TORCH_ELEMENTWISE = {"torch." + n for n in ("mean", "sum", "abs", "pow", "square", "sqrt", "exp", "log", "log1p", "neg", "relu", "clamp", "norm")}
_SCALE_METHODS = {"div", "div_", "mul", "mul_", "true_divide", "true_divide_", "__truediv__", "__mul__"}


class GradAccumulationNotScaled(Rule):
    """## What it does
    Finds gradient accumulation whose loss is not scaled: `backward()` runs every
    iteration, `optimizer.step()` (and the clearing of gradients) only every k iterations
    under a `% k` guard, and the backpropagated loss is divided neither by k nor by
    anything else.

    ## Why is this bad?
    Accumulated gradients are the *sum* of k micro-batch gradients, k times the gradient of
    the large batch the accumulation stands for. The effective learning rate is multiplied
    by k (and the gradient-clipping threshold means something else), so changing the
    accumulation count silently changes the optimisation; large k often diverges.

    ## Example
    ```python
    for i, (x, y) in enumerate(loader):
        loss = criterion(model(x), y)
        loss.backward()
        if (i + 1) % accum_steps == 0:
            optimizer.step()
            optimizer.zero_grad()
    ```

    ## Use instead
    ```python
    for i, (x, y) in enumerate(loader):
        loss = criterion(model(x), y) / accum_steps
        loss.backward()
        if (i + 1) % accum_steps == 0:
            optimizer.step()
            optimizer.zero_grad()
    ```
    """

    code = "TL104"
    name = "grad-accumulation-not-scaled"
    severity = "warning"

    VALID = (
        """
        import torch
        for i, (x, y) in enumerate(tqdm(loader)):
            loss = criterion(model(x), y)
            loss = loss / accum_steps
            loss.backward()
            if (i + 1) % accum_steps == 0:
                optimizer.step()
                optimizer.zero_grad()
        """,
        """
        import torch
        # scaled inline, and the AMP scaler path
        for step, batch in enumerate(loader):
            loss = model(**batch).loss
            scaler.scale(loss / args.gradient_accumulation_steps).backward()
            if step % args.gradient_accumulation_steps == 0 or step == len(loader) - 1:
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad()
        """,
        """
        import torch
        # WGAN: the generator trains every n_critic iterations, its backward too
        for i, real in enumerate(loader):
            opt_d.zero_grad()
            d_loss = -critic(real).mean() + critic(gen(z)).mean()
            d_loss.backward()
            opt_d.step()
            if i % n_critic == 0:
                opt_g.zero_grad()
                g_loss = -critic(gen(z)).mean()
                g_loss.backward()
                opt_g.step()
        """,
        """
        import torch
        # accelerate's backward divides by the accumulation count itself
        for step, batch in enumerate(loader):
            loss = model(**batch).loss
            accelerator.backward(loss)
            if step % accum == 0:
                optimizer.step()
                optimizer.zero_grad()
        """,
        """
        import torch
        # the loss comes from a helper we cannot see into: it may scale
        for step, batch in enumerate(loader):
            loss = compute_loss(model, batch)
            loss.backward()
            if (step + 1) % accum == 0:
                optimizer.step()
                optimizer.zero_grad()
        """,
        """
        import torch
        # gradients cleared every iteration: not accumulation
        for i, (x, y) in enumerate(loader):
            optimizer.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            if i % 2 == 0:
                optimizer.step()
        """,
        """
        import torch
        # scaled in place
        for i, (x, y) in enumerate(loader):
            loss = criterion(model(x), y)
            loss /= accum
            loss.backward()
            if (i + 1) % accum == 0:
                optimizer.step()
                optimizer.zero_grad()
        """,
        """
        import torch
        # the discriminator's own (unscaled, every-iteration) step comes between
        def train_d(netD, optD, real, fake):
            optD.zero_grad()
            loss = bce(netD(real), ones) + bce(netD(fake.detach()), zeros)
            loss.backward()
            optD.step()

        for i, real in enumerate(loader):
            fake = netG(noise)
            g_loss = bce(netD(fake), ones) / accum
            g_loss.backward()
            train_d(netD, optD, real, fake)
            if (i + 1) % accum == 0:
                optG.step()
                optG.zero_grad()
        """,
        """
        import torch
        # a hand-written loss, divided by the accumulation count
        for step, (x, y) in enumerate(loader):
            loss = (model(x) - y).pow(2).mean() / 4
            loss.backward()
            if step % 4 == 0:
                opt.step()
                opt.zero_grad()
        """,
    )
    INVALID = (
        """
        import torch
        # a NaN batch is skipped (cleared and continued); the rest accumulates unscaled
        def train_one_epoch(model, loader, criterion, optimizer, accumulation_steps=4):
            for i, (x, y) in enumerate(tqdm(loader)):
                loss = criterion(model(x), y)
                if torch.isnan(loss):
                    optimizer.zero_grad()
                    continue
                loss.backward()  # !
                if (i + 1) % accumulation_steps == 0:
                    optimizer.step()
                    optimizer.zero_grad()
        """,
        """
        import torch
        criterion = torch.nn.CrossEntropyLoss()
        for i, (x, y) in enumerate(tqdm(loader)):
            loss = criterion(model(x), y)
            loss.backward()  # !
            if (i + 1) % accum_steps == 0:
                optimizer.step()
                optimizer.zero_grad()
        """,
        """
        import torch
        # a Hugging Face model's own loss, AMP, and a last-batch escape
        for step, batch in enumerate(train_dataloader):
            with torch.autocast("cuda"):
                outputs = model(**batch)
            loss = outputs.loss
            scaler.scale(loss).backward()  # !
            if step % gradient_accumulation_steps == 0 or step == len(train_dataloader) - 1:
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad()
        """,
        """
        import torch
        import torch.nn.functional as F
        # a while loop over an iterator, with the loss returned by a local helper
        def compute_loss(model, x, y):
            return F.cross_entropy(model(x), y)

        it = iter(loader)
        step = 0
        while step < max_steps:
            x, y = next(it)
            compute_loss(model, x, y).backward()  # !
            step += 1
            if step % 4 == 0:
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        """,
        """
        import torch
        # a hand-written loss: no loss function, still unscaled
        for step, (x, y) in enumerate(loader):
            loss = (model(x) - y).pow(2).mean()
            loss.backward()  # !
            if step % 4 == 0:
                opt.step()
                opt.zero_grad()
        """,
    )

    def check(self, ctx) -> Iterator[Report]:
        if not ctx.uses_torch:
            return
        tr = ctx.training
        seen = set()
        for loop in ctx.loops:
            events = tr.iteration_events(loop)
            for i, s in enumerate(events):
                if s.kind != STEP or s.closure:
                    continue
                guard = _modulo_guard(conditions(s, loop))
                if guard is None:
                    continue
                block, k = guard
                j = next((n for n in range(i - 1, -1, -1) if events[n].kind == BACKWARD and not exclusive(events[n], s)), None)
                if j is None:
                    continue
                b = events[j]
                if any(e.kind == STEP for e in events[j + 1 : i]):
                    continue  # another optimizer steps in between: that backward is not this step's
                if block in conditions(b, loop) or _modulo_guard(conditions(b, loop)) is not None or id(b.site.node) in seen:
                    continue
                if not self._clears_with_step(events, s, loop):
                    continue
                loss = self._loss(ctx, tr, b)
                if loss is None or _scaled(ctx, tr, loss, b.site) is not False:
                    continue
                seen.add(id(b.site.node))
                kt = ctx.module.code_for_node(k)
                yield Report(
                    b.site.node,
                    f"Gradients accumulate over `{kt}` iterations (the step runs under "
                    f"`% {kt}`) but this loss is backpropagated unscaled: the summed gradients are "
                    f"`{kt}` times too large. Divide the loss by `{kt}` before `backward()`.",
                )

    @staticmethod
    def _clears_with_step(events, s: Event, loop: Block) -> bool:
        """Gradients are cleared under a `% k` guard too, and never unconditionally (that
        would be a step skipped, not accumulation); a clear on a skip path (`if nan: ...
        continue`) is neither."""
        clears = [e for e in events if e.kind == ZERO_GRAD and (e.target is None or s.target is None or e.target == s.target or not _optimizer_like(e.target))]
        if any(not conditions(e, loop) for e in clears):
            return False
        return any(_modulo_guard(conditions(e, loop)) is not None for e in clears)

    @staticmethod
    def _loss(ctx, tr, b: Event) -> Optional[cst.BaseExpression]:
        site = b.site
        recv = getattr(site, "receiver", None)
        if isinstance(recv, (cst.Name, cst.Attribute)) and FRAMEWORK_BACKWARD.search((dotted(recv) or "").rsplit(".", 1)[-1]):
            return None  # accelerate / DeepSpeed / Lightning scale by the accumulation count themselves
        if isinstance(site, CallSite) and site.node.args and site.receiver is not None and tr.backward_loss(site) is site.receiver:  # type: ignore[attr-defined]
            return None  # `loss.backward(gradient)`
        return tr.backward_loss(site)


def _optimizer_like(name: str) -> bool:
    return "opt" in name.rsplit(".", 1)[-1].lower()


def _modulo_guard(blocks) -> Optional[Tuple[Block, cst.BaseExpression]]:
    """The innermost `if` whose test takes a counter modulo k (k not the literal 1)."""
    for block in reversed(blocks):
        test = block.test if block.kind == "if" else None
        if test is None:
            continue
        for node in walk(test):
            if isinstance(node, cst.BinaryOperation) and isinstance(node.operator, cst.Modulo):
                if isinstance(node.left, (cst.SimpleString, cst.FormattedString, cst.ConcatenatedString)):
                    continue
                k = node.right
                if isinstance(k, cst.Integer) and k.value in ("0", "1"):
                    continue
                return block, k
    return None


def _scaled(ctx, tr, expr: cst.BaseExpression, at: Site, depth: int = 0) -> Optional[bool]:
    """True: the loss is divided or multiplied by something on its way to `backward()`;
    False: it visibly is a loss function's or model's output, unscaled; None: cannot tell."""
    if depth > MAX_DEPTH + 2:
        return None
    if isinstance(expr, cst.BinaryOperation):
        if isinstance(expr.operator, (cst.Divide, cst.FloorDivide, cst.Multiply)):
            return True
        if isinstance(expr.operator, (cst.Add, cst.Subtract)):
            # A visibly unscaled term keeps the whole sum unscaled (`(out - y)`,
            # `criterion(out, y) + aux`), unless the other term is divided or multiplied.
            left, right = _scaled(ctx, tr, expr.left, at, depth + 1), _scaled(ctx, tr, expr.right, at, depth + 1)
            if left is True or right is True:
                return True
            return False if left is False or right is False else None
        if isinstance(expr.operator, cst.Power) and isinstance(expr.right, (cst.Integer, cst.Float)):
            return _scaled(ctx, tr, expr.left, at, depth + 1)
        return None
    if isinstance(expr, cst.UnaryOperation):
        return _scaled(ctx, tr, expr.expression, at, depth + 1)
    if isinstance(expr, cst.Name):
        if at.function is not None:
            for a in ctx.facts.assigns:
                if a.function is at.function and a.op in ("/=", "*=", "op=") and any(isinstance(t, cst.Name) and t.value == expr.value for t in a.targets):
                    return True
        cands = ctx.resolve(expr, at)
        if not cands or any(isinstance(v, cst.Name) and v.value == expr.value for v, _ in cands):
            return None
        results = [_scaled(ctx, tr, v, site, depth + 1) for v, site in cands]
        if any(r is True for r in results):
            return True
        return None if any(r is None for r in results) else False
    if isinstance(expr, (cst.Attribute, cst.Subscript)):
        base = expr.value
        if isinstance(base, cst.Name) and base.value == "self":
            return None
        inner = _scaled(ctx, tr, base, at, depth + 1)
        return inner if inner is not False or _output_field(expr) else None
    if isinstance(expr, cst.Call):
        func = expr.func
        if isinstance(func, cst.Attribute):
            if func.attr.value in _SCALE_METHODS:
                return True
            if func.attr.value in _KEEP_SCALE and ctx.qualname(func) is None:
                return _scaled(ctx, tr, func.value, at, depth + 1)
            if func.attr.value in _ELEMENTWISE and ctx.qualname(func) is None:
                return False if _scaled(ctx, tr, func.value, at, depth + 1) is False and not _scaling_args(expr) else None
        if ctx.qualname(func) in _TORCH_ELEMENTWISE and expr.args and expr.args[0].keyword is None and not _scaling_args(expr, 1):
            return False if _scaled(ctx, tr, expr.args[0].value, at, depth + 1) is False else None
        return _call_output(ctx, tr, expr, at, depth)
    return None


def _scaling_args(call: cst.Call, skip: int = 0) -> bool:
    """An argument that might carry a factor: anything but a number literal or a `dim`-like
    keyword (`pow(2)`, `clamp(min=0)`, `mean(dim=1)` are fine)."""
    for a in list(call.args)[skip:]:
        v = a.value
        if isinstance(v, cst.UnaryOperation):
            v = v.expression
        if isinstance(v, (cst.Integer, cst.Float)) or (isinstance(v, cst.Name) and v.value in ("True", "False", "None")):
            continue
        return True
    return False


def _output_field(expr: cst.BaseExpression) -> bool:
    """`out.loss`, `out["loss"]`, `out[0]`: the loss a model returns."""
    if isinstance(expr, cst.Attribute):
        return expr.attr.value == "loss"
    if isinstance(expr, cst.Subscript) and len(expr.slice) == 1:
        idx = expr.slice[0].slice
        value = getattr(idx, "value", None)
        if isinstance(value, cst.Integer) and value.value == "0":
            return True
        if isinstance(value, cst.SimpleString) and value.value.strip("'\"") == "loss":
            return True
    return False


def _call_output(ctx, tr, call: cst.Call, at: Site, depth: int) -> Optional[bool]:
    """False for a visible loss function or model output; a same-module helper's returns."""
    site = next((c for c in ctx.calls_in(at.function) if c.node is call), None)
    if site is None:
        return None
    q = site.qualname
    if q is not None:
        return False if q.startswith("torch.nn.functional.") and not site.has_star_args else None
    callee = ctx.callee(site)
    if callee is not None:
        returns = [r for r in ctx.returns_of(callee) if r.value is not None]
        if not returns:
            return None
        results = [_scaled(ctx, tr, r.value, r, depth + 1) for r in returns]
        if any(r is True for r in results):
            return True
        return None if any(r is None for r in results) else False
    func = site.func
    if not isinstance(func, (cst.Name, cst.Attribute)):
        return None
    for qn in ctx.constructed_qualnames(func, site):
        if qn and qn.startswith("torch.nn.") and qn.endswith("Loss"):
            return False
    if _LOSS_CALLABLE.search((dotted(func) or "").rsplit(".", 1)[-1]) or tr.is_model_call(site):
        return False
    return None


RULE = GradAccumulationNotScaled
