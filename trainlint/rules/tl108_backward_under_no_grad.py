from __future__ import annotations

from typing import Iterator, Optional

import libcst as cst

from trainlint.analysis.facts import AssignSite, Site, walk
from trainlint.analysis.training import BACKWARD
from trainlint.rules.base import Report, Rule


class BackwardUnderNoGrad(Rule):
    """## What it does
    Finds `backward()` on a loss that is computed inside `torch.no_grad()` /
    `torch.inference_mode()` (a `with` block or a decorator), or `set_grad_enabled(False)`.

    ## Why is this bad?
    With gradients off, nothing computed in the block records an autograd graph, so the
    loss has no `grad_fn` and `backward()` fails with "element 0 of tensors does not require
    grad and does not have a grad_fn", typically the first time a code path (a validation
    step that was meant to train, a refactored `with` block) actually runs. A loss computed
    before the block and only backpropagated inside it is fine: grad mode only affects
    recording, and is not reported.

    ## Example
    ```python
    with torch.no_grad():
        loss = criterion(model(x), y)
        loss.backward()
    optimizer.step()
    ```

    ## Use instead
    ```python
    loss = criterion(model(x), y)
    loss.backward()
    optimizer.step()
    ```
    """

    code = "TL108"
    name = "backward-under-no-grad"
    severity = "error"

    VALID = (
        """
        import torch
        # the loss is computed with gradients on; only its backward is inside the block
        loss = criterion(model(x), y)
        with torch.no_grad():
            loss.backward()
        """,
        """
        import torch
        # enable_grad inside the no_grad block turns recording back on
        with torch.no_grad():
            with torch.enable_grad():
                loss = criterion(model(x), y)
                loss.backward()
        """,
        """
        import torch
        # the classic phase loop: gradients on when training
        for phase in ["train", "val"]:
            with torch.set_grad_enabled(phase == "train"):
                loss = criterion(model(inputs), labels)
                if phase == "train":
                    loss.backward()
                    optimizer.step()
        """,
        """
        import torch
        # an optimizer's step: no_grad around the update, the closure re-enables grad
        class MyOpt(torch.optim.Optimizer):
            @torch.no_grad()
            def step(self, closure=None):
                loss = None
                if closure is not None:
                    with torch.enable_grad():
                        loss = closure()
                        loss.backward()
                return loss
        """,
        """
        import torch
        # the backward is in a closure defined under no_grad but called elsewhere
        @torch.no_grad()
        def make_closure(model, x, y):
            def closure():
                loss = criterion(model(x), y)
                loss.backward()
                return loss
            return closure
        """,
        """
        import torch
        # made a leaf by hand: backward runs (pointlessly, but without error)
        with torch.no_grad():
            loss = criterion(model(x), y)
            loss.requires_grad = True
            loss.backward()
        """,
        """
        import torch
        # inference_mode(False) leaves gradients on
        with torch.inference_mode(False):
            loss = criterion(model(x), y)
            loss.backward()
        """,
    )
    INVALID = (
        """
        import torch
        for x, y in loader:
            optimizer.zero_grad()
            with torch.no_grad():
                loss = criterion(model(x), y)
                loss.backward()  # !
            optimizer.step()
        """,
        """
        import torch
        # the decorator turns gradients off for the whole function
        @torch.inference_mode()
        def train_step(model, optimizer, x, y):
            optimizer.zero_grad()
            loss = model(x, y)
            loss.backward()  # !
            optimizer.step()
        """,
        """
        import torch
        from torch import no_grad
        # AMP, loss computed inline inside the block
        with no_grad():
            scaler.scale(criterion(model(x), y)).backward()  # !
        """,
        """
        import torch
        with torch.set_grad_enabled(False):
            out = model(x)
            loss = out.loss
            accelerator.backward(loss)  # !
        """,
    )

    def check(self, ctx) -> Iterator[Report]:
        if not ctx.uses_torch:
            return
        tr = ctx.training
        for call in ctx.facts.calls:
            if not call.withs and (call.function is None or not call.function.decorators):
                continue
            if not any(e.kind == BACKWARD for e in tr.site_events(call)):
                continue
            if tr.grad_enabled_at(call) is not False:
                continue
            loss = tr.backward_loss(call)
            if loss is None or not self._computed_without_grad(ctx, tr, loss, call):
                continue
            yield Report(
                call.node,
                f"`{_code(ctx, call.node)}` runs on a loss computed with gradients off "
                f"(`torch.no_grad()`/`inference_mode()`/`set_grad_enabled(False)`): it has no "
                f"autograd graph and backward() raises. Compute the loss outside the no-grad "
                f"block, or wrap it in `torch.enable_grad()`.",
            )

    @staticmethod
    def _computed_without_grad(ctx, tr, loss: cst.BaseExpression, at: Site) -> bool:
        """The loss is computed here (inline) or assigned in this function with grad off."""
        while isinstance(loss, (cst.Attribute, cst.Subscript)) and isinstance(loss.value, (cst.Name, cst.Attribute, cst.Subscript)):
            loss = loss.value  # `out.loss`, `out["loss"]`, `losses[0]`: where the container was made
        if isinstance(loss, cst.Name):
            sites = ctx.reaching(loss.value, at)
            if len(sites) != 1:
                return False
            site: Optional[AssignSite] = sites[0]
            if site.function is not at.function or site.value is None or site.op != "=":
                return False
            if _makes_leaf(site.value) or _grad_forced(ctx, loss.value, at):
                return False
            return tr.grad_enabled_at(site) is False
        if isinstance(loss, (cst.Call, cst.BinaryOperation)):
            return not _makes_leaf(loss)
        return False


def _grad_forced(ctx, name: str, at: Site) -> bool:
    """`loss.requires_grad = True` / `loss.requires_grad_()`: made a leaf by hand (backward runs)."""
    for a in ctx.facts.assigns:
        if a.function is at.function and any(isinstance(t, cst.Attribute) and t.attr.value == "requires_grad" and isinstance(t.value, cst.Name) and t.value.value == name for t in a.targets):
            return True
    return any(c.attr == "requires_grad_" and isinstance(c.receiver, cst.Name) and c.receiver.value == name for c in ctx.calls_in(at.function))


def _makes_leaf(expr: cst.BaseExpression) -> bool:
    """A tensor created with `requires_grad=True` (a leaf; backward works under no_grad)."""
    for node in walk(expr):
        if isinstance(node, cst.Arg) and node.keyword is not None and node.keyword.value == "requires_grad":
            return True
        if isinstance(node, cst.Attribute) and node.attr.value in ("requires_grad_", "grad_fn"):
            return True
    return False


def _code(ctx, node, limit: int = 48) -> str:
    text = " ".join(ctx.module.code_for_node(node).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


RULE = BackwardUnderNoGrad
