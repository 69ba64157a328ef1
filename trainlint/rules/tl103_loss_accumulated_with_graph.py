from __future__ import annotations

from typing import Iterator, List, Optional, Tuple

import libcst as cst

from trainlint.analysis.facts import AssignSite, CallSite, walk
from trainlint.analysis.names import dotted
from trainlint.analysis.training import BACKWARD, STEP, conditions
from trainlint.rules.base import Replacement, Report, Rule

# Calls that hand a tensor on as a tensor: an accumulator passed to these must stay one.
_TENSOR_ONLY_ATTRS = {"all_reduce", "reduce", "all_gather", "gather", "reduce_mean", "backward", "sync", "mean", "sum"}


class LossAccumulatedWithGraph(Rule):
    """## What it does
    Finds a running total that adds the loss tensor itself (`total += loss`,
    `epoch_loss += loss * x.size(0)`) across the iterations of a training loop, where that
    same loss is backpropagated, so it carries an autograd graph.

    Not reported: a total re-initialised every iteration, or at every optimizer step (`if (i
    + 1) % accum == 0: optimizer.step(); ...; running_loss = 0`) while each micro-batch loss
    is backpropagated at once: it then holds one step's micro-batches at most (a tensor on
    purpose there, to log it without a host sync per micro-batch). A reset on a logging
    interval of its own (`if i % 2000 == 1999: ...; running_loss = 0.0`) still is.

    ## Why is this bad?
    The total becomes a tensor whose history links every iteration's loss: each step's
    autograd graph stays referenced until the total is dropped, so memory grows with every
    iteration (the "Don't accumulate history across your training loop" entry of the
    PyTorch FAQ), and every later use of the total extends the graph further. Adding
    `loss.item()` or `loss.detach()`, or adding under `torch.no_grad()`, is fine.

    ## Example
    ```python
    total_loss = 0.0
    for x, y in loader:
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        total_loss += loss
    ```

    ## Use instead
    ```python
    total_loss = 0.0
    for x, y in loader:
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        total_loss += loss.item()
    ```
    """

    code = "TL103"
    name = "loss-accumulated-with-graph"
    severity = "warning"
    fixable = "safe"

    VALID = (
        """
        import torch
        total_loss = 0.0
        for x, y in loader:
            optimizer.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
            total_loss += loss.item()
        """,
        """
        import torch
        # detached before adding
        running = torch.zeros(())
        for x, y in loader:
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            running += loss.detach()
        """,
        """
        import torch
        # evaluation under no_grad: no graph
        total = 0.0
        with torch.no_grad():
            for x, y in val_loader:
                loss = criterion(model(x), y)
                total += loss
        """,
        """
        import torch
        # losses of one step summed for a single backward: the total is reset every iteration
        for x, y in loader:
            total = 0.0
            for head in heads:
                loss = criterion(head(model(x)), y)
                total += loss
            total.backward()
            optimizer.step()
            optimizer.zero_grad()
        """,
        """
        import torch
        # the name is rebound to a float after the backward
        epoch_loss = 0
        for x, y in loader:
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            loss = loss.item()
            epoch_loss += loss
        """,
        """
        import torch
        # appending is another matter
        losses = []
        for x, y in loader:
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
            losses.append(loss)
        """,
        """
        import torch
        # the training step returns a float
        def train_step(model, optimizer, x, y):
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            return loss.item()

        total = 0.0
        for x, y in loader:
            loss = train_step(model, optimizer, x, y)
            total += loss
        """,
        """
        import torch
        import lightning as L
        # Lightning: the framework runs the loop, backward and step
        class LitModel(L.LightningModule):
            def training_step(self, batch, batch_idx):
                loss = self.loss_fn(self(batch[0]), batch[1])
                self.log("train_loss", loss)
                return loss
        """,
        """
        import torch
        # reset at the top of every iteration, under the same `if` as the sum
        for i, (x, y) in enumerate(loader):
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            if i % 10 == 0:
                window = 0.0
                window = window + loss
                print(window)
        """,
        """
        import torch
        # the explicit sum of the loss's value
        total_loss = 0
        for x, y in loader:
            optimizer.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
            total_loss = total_loss + loss.item()
        """,
        """
        import torch
        # reset at every optimizer step: the total holds one step's micro-batch losses, each
        # backpropagated at once (kept a tensor to log it without a host sync per micro-batch)
        class Recipe:
            def train(self):
                running_loss = 0
                num_tokens = 0
                for epoch in range(self.epochs):
                    for idx, batch in enumerate(self._dataloader):
                        current_loss = self._loss_step(batch) * batch["n"]
                        running_loss += current_loss
                        current_loss.backward()
                        if (idx + 1) % self._gradient_accumulation_steps == 0:
                            if not self._optimizer_in_bwd:
                                self._optimizer.step()
                                self._optimizer.zero_grad(set_to_none=True)
                            self.log(running_loss.item() / num_tokens)
                            running_loss = 0
                            num_tokens = 0
        """,
        """
        import torch
        # the reward is an input of the loss, not the loss: summing it keeps no graph
        def generate_session(env, t_max=1000, train=False):
            total_reward = 0
            s, _ = env.reset()
            for t in range(t_max):
                a = get_action(s)
                next_s, r, terminated, truncated, _ = env.step(a)
                if train:
                    opt.zero_grad()
                    compute_td_loss([s], [a], [r], [next_s], [terminated]).backward()
                    opt.step()
                total_reward += r
                s = next_s
            return total_reward
        """,
    )
    INVALID = (
        """
        import torch
        total_loss = 0.0
        for x, y in loader:
            optimizer.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
            total_loss += loss  # !
        print(total_loss / len(loader))
        """,
        """
        import torch
        # weighted by the batch size: the product keeps the graph too
        epoch_loss = 0.0
        for i, (x, y) in enumerate(tqdm(loader)):
            loss = criterion(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            epoch_loss += loss * x.size(0)  # !
        """,
        """
        import torch
        # AMP, a Trainer attribute as the running total
        class Trainer:
            def train_epoch(self, loader):
                self.running_loss = 0.0
                for x, y in loader:
                    with torch.autocast("cuda"):
                        loss = self.criterion(self.model(x), y)
                    self.scaler.scale(loss).backward()
                    self.scaler.step(self.optimizer)
                    self.scaler.update()
                    self.optimizer.zero_grad()
                    self.running_loss += loss  # !
        """,
        """
        import torch
        # the training step returns the loss it backpropagated, graph and all
        def train_step(model, optimizer, x, y):
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            return loss

        running = 0.0
        for x, y in loader:
            running += train_step(model, optimizer, x, y)  # !
        """,
        """
        import torch
        # accumulation: the loss divided on its own line is still a graph
        tr_loss = 0.0
        for step, batch in enumerate(loader):
            loss = model(**batch).loss
            loss = loss / accum_steps
            loss.backward()
            tr_loss += loss  # !
            if (step + 1) % accum_steps == 0:
                optimizer.step()
                optimizer.zero_grad()
        """,
        """
        import torch
        # the PyTorch CIFAR tutorial's shape: a reset every 2000 batches still keeps 2000 graphs
        for epoch in range(2):
            running_loss = 0.0
            for i, data in enumerate(trainloader, 0):
                inputs, labels = data
                optimizer.zero_grad()
                loss = criterion(net(inputs), labels)
                loss.backward()
                optimizer.step()
                running_loss += loss  # !
                if i % 2000 == 1999:
                    print(running_loss / 2000)
                    running_loss = 0.0
        """,
        """
        import torch
        # the explicit sum keeps the graph just the same
        for epoch in range(200):
            total_loss = 0
            for i in range(0, len(X), 32):
                loss = F.mse_loss(model(X[i:i + 32]), y[i:i + 32])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total_loss = total_loss + loss  # !
            print(epoch, total_loss.item())
        """,
        """
        import torch
        # near-miss of the reset at every step: here the reset follows the logging interval,
        # not the optimizer step, which runs every iteration
        running_loss = 0.0
        for epoch in range(epochs):
            for i, (x, y) in enumerate(loader):
                loss = criterion(model(x), y)
                running_loss += loss  # !
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                if i % 100 == 99:
                    print(running_loss / 100)
                    running_loss = 0.0
        """,
        """
        import torch
        # the step and the reset lie in different branches of one `if`
        total = 0.0
        for i, (x, y) in enumerate(loader):
            loss = criterion(model(x), y)
            loss.backward()
            total += loss  # !
            if (i + 1) % accum == 0:
                optimizer.step()
                optimizer.zero_grad()
            else:
                total = 0.0
        """,
    )

    def check(self, ctx) -> Iterator[Report]:
        if not ctx.uses_torch:
            return
        tr = ctx.training
        for a in ctx.facts.assigns:
            if a.op not in ("+=", "=") or not a.loops or len(a.targets) != 1 or a.value is None:
                continue
            acc = dotted(a.targets[0])
            if acc is None:
                continue
            added = a.value if a.op == "+=" else self._added_to(acc, a.value)
            if added is None:
                continue
            loss = self._loss_operand(added)
            if loss is None or tr.grad_enabled_at(a) is False:
                continue
            if isinstance(a.targets[0], cst.Name) and any(
                isinstance(d.value, (cst.List, cst.ListComp, cst.Tuple, cst.Dict)) for d in ctx.reaching(acc, a) if d.value is not None
            ):
                continue  # `losses = []; losses += loss`: a container, not a running total
            found = self._backpropagated(ctx, tr, loss, a)
            if found is None or self._reset_in_loop(ctx, tr, acc, a) or self._total_backpropagated(ctx, tr, acc, a):
                continue
            backward, name = found
            text = ctx.module.code_for_node(loss)
            where = "in this loop" if backward.function is a.function else f"in `{backward.function.name}()`"
            fix = None
            if self._fix_is_safe(ctx, tr, acc, name, a, backward):
                item = cst.Call(func=cst.Attribute(value=loss, attr=cst.Name("item")))
                fix = Replacement(loss, item, "safe", f"add `{text}.item()` instead of the tensor")
            yield Report(
                a.node,
                f"`{acc}` adds the loss tensor `{text}` itself, which is backpropagated {where}: "
                f"the running total keeps every iteration's autograd graph alive, so memory grows "
                f"each step. Add `{text}.item()` (or `.detach()`) instead.",
                fix,
            )

    @staticmethod
    def _added_to(acc: str, value: cst.BaseExpression) -> Optional[cst.BaseExpression]:
        """`x` in the explicit running sum `total = total + x` (or `x + total`); None for any
        other assignment."""
        if isinstance(value, cst.BinaryOperation) and isinstance(value.operator, cst.Add):
            if dotted(value.left) == acc and dotted(value.right) != acc:
                return value.right
            if dotted(value.right) == acc and dotted(value.left) != acc:
                return value.left
        return None

    @staticmethod
    def _loss_operand(value: cst.BaseExpression) -> Optional[cst.BaseExpression]:
        """`loss` in `loss`, `loss * n`, `n * loss`, `loss / n` (a bare name), or a call
        (`total += train_step(batch)`)."""
        if isinstance(value, (cst.Name, cst.Call)):
            return value
        if isinstance(value, cst.BinaryOperation) and isinstance(value.operator, (cst.Multiply, cst.Divide)):
            for side in (value.left, value.right):
                if isinstance(side, cst.Name):
                    return side
        return None

    def _backpropagated(self, ctx, tr, loss: cst.BaseExpression, a: AssignSite) -> Optional[Tuple[CallSite, str]]:
        """The backward that differentiates this very value: in the same iteration, or in the
        same-module training-step helper that returned it. (backward call, the loss's name there)"""
        if isinstance(loss, cst.Call):
            return self._returned_after_backward(ctx, tr, loss, a)
        if not isinstance(loss, cst.Name):
            return None
        defs = ctx.reaching(loss.value, a)
        if not defs:
            return None
        loop = a.loops[-1]
        for c in ctx.calls_within(loop):
            if not c.loops or c.loops[-1] is not loop or not any(e.kind == BACKWARD for e in tr.site_events(c)):
                continue
            expr = tr.backward_loss(c)
            if expr is None:
                continue
            if loss.value in _loss_names(expr) and ctx.reaching(loss.value, c) == defs:
                return c, loss.value
        if len(defs) == 1 and defs[0].function is a.function and isinstance(defs[0].value, cst.Call) and loop.contains(defs[0].order):
            return self._returned_after_backward(ctx, tr, defs[0].value, defs[0])
        return None

    @staticmethod
    def _returned_after_backward(ctx, tr, call: cst.Call, at) -> Optional[Tuple[CallSite, str]]:
        """`call` runs a same-module helper every `return` of which gives back a loss the
        helper itself backpropagated (`loss.backward(); ...; return loss`)."""
        site = next((c for c in ctx.calls_in(at.function) if c.node is call), None)
        callee = ctx.callee(site) if site is not None else None
        if callee is None:
            return None
        returns = [r for r in ctx.returns_of(callee) if r.value is not None]
        if not returns:
            return None
        found = None
        for r in returns:
            if not isinstance(r.value, cst.Name):
                return None
            name = r.value.value
            defs = ctx.reaching(name, r)
            match = None
            for c in ctx.calls_in(callee):
                if c.loops or c.order > r.order or not any(e.kind == BACKWARD for e in tr.site_events(c)):
                    continue
                expr = tr.backward_loss(c)
                if expr is not None and defs and name in _loss_names(expr) and ctx.reaching(name, c) == defs:
                    match = (c, name)
            if match is None:
                return None
            found = found or match
        return found

    @classmethod
    def _reset_in_loop(cls, ctx, tr, acc: str, a: AssignSite) -> bool:
        """The total is re-initialised inside the same loop whenever it is added to: it sums
        within one iteration. Or it is re-initialised at every optimizer step (`if (i + 1) %
        accum == 0: optimizer.step(); ...; running_loss = 0`): it then sums the micro-batch
        losses of one step, each already backpropagated, and holds no more than the step's
        own micro-batches (torchtune's recipes keep it a tensor on purpose, to log it without
        a host sync per micro-batch). A reset under an `if` of its own (`if i % 2000 == 1999:
        print(running / 2000); running = 0.0`) does not count: between two resets the total
        still links every iteration's graph. Nor does the explicit sum `total = total + x`."""
        loop = a.loops[-1]
        steps = None
        for s in ctx.assigns_within(loop):
            if s.op != "=" or not any(dotted(t) == acc for t in s.targets):
                continue
            if s.value is not None and cls._added_to(acc, s.value) is not None:
                continue
            guards = [b for b in s.ifs if loop.contains(b.start)]
            if all(b in a.ifs for b in guards):
                return True
            if not s.loops or s.loops[-1] is not loop:
                continue  # reset in an inner loop: not once per iteration of this one
            if steps is None:
                steps = [e for e in tr.iteration_events(loop) if e.kind == STEP]
            # Every `if` the reset depends on also guards an optimizer step of this loop:
            # whenever the total is kept, the step it belongs to has run.
            for e in steps:
                around = conditions(e, loop)
                if all(b in around for b in guards if b not in a.ifs):
                    return True
        return False

    @staticmethod
    def _scope_functions(ctx, acc: str, a: AssignSite) -> list:
        """Where the total can be read: its function, or every method of the class for `self.x`."""
        cls = ctx.method_class(a.function) if acc.startswith("self.") else None
        if cls is None:
            return [a.function]
        return [f for f in ctx.facts.functions if ctx.method_class(f) is cls]

    def _scope_calls(self, ctx, acc: str, a: AssignSite) -> List[CallSite]:
        return [c for f in self._scope_functions(ctx, acc, a) for c in ctx.calls_in(f)]

    def _uses(self, ctx, acc: str, a: AssignSite) -> List[CallSite]:
        """Calls in the function that take the total as receiver or argument."""
        out = []
        for c in self._scope_calls(ctx, acc, a):
            if c.receiver is not None and dotted(c.receiver) == acc:
                out.append(c)
            elif any(dotted(arg.value) == acc for arg in c.args):
                out.append(c)
        return out

    def _total_backpropagated(self, ctx, tr, acc: str, a: AssignSite) -> bool:
        """The total is itself differentiated (losses summed on purpose for one backward)."""
        for c in self._uses(ctx, acc, a):
            if c.attr == "backward" or any(e.kind == BACKWARD for e in tr.site_events(c)):
                return True
        return False

    def _fix_is_safe(self, ctx, tr, acc: str, loss: str, a: AssignSite, backward: CallSite) -> bool:
        """`.item()` keeps the program working: the loss is a scalar (backpropagated without
        a `gradient`, as itself or scaled), and the total is never used as a tensor (a method
        call, a torch function, a return value the caller may treat as one)."""
        expr = tr.backward_loss(backward)
        if backward.keyword("gradient") is not None or (expr is backward.receiver and backward.positional(0) is not None):
            return False  # `loss.backward(gradient)`: a non-scalar loss
        if not (expr is not None and (isinstance(expr, cst.Name) or (isinstance(expr, cst.BinaryOperation) and loss in (getattr(expr.left, "value", None), getattr(expr.right, "value", None))))):
            return False
        for c in self._uses(ctx, acc, a):
            if c.receiver is not None and dotted(c.receiver) == acc:
                return False
            if (c.qualname or "").startswith("torch") or c.attr in _TENSOR_ONLY_ATTRS:
                return False
        returns = [r for f in self._scope_functions(ctx, acc, a) if f is not None for r in ctx.returns_of(f)]
        for r in returns:
            if r.value is not None and any(dotted(n) == acc for n in walk(r.value) if isinstance(n, (cst.Name, cst.Attribute))):
                return False
        return True


def _loss_names(expr: cst.BaseExpression) -> set:
    """Names a backpropagated expression is made of: `loss` in `loss`, `loss / accum`,
    `(loss1 + loss2)`, `loss.mean()`; not the inputs a loss function is called with
    (`compute_td_loss(states, [r]).backward()` does not backpropagate the reward `r`)."""
    out = set()
    stack = [expr]
    while stack:
        e = stack.pop()
        if isinstance(e, cst.Name):
            out.add(e.value)
        elif isinstance(e, cst.BinaryOperation):
            stack += [e.left, e.right]
        elif isinstance(e, cst.UnaryOperation):
            stack.append(e.expression)
        elif isinstance(e, (cst.Attribute, cst.Subscript)):
            stack.append(e.value)
        elif isinstance(e, cst.Call) and isinstance(e.func, cst.Attribute):
            stack.append(e.func.value)  # `loss.mean()`, `loss.sum()`
    return out


RULE = LossAccumulatedWithGraph
