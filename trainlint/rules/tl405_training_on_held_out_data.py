from __future__ import annotations

import re
from typing import Iterator, List, Optional, Tuple

import libcst as cst

from trainlint.analysis.evaluation import iterates_eval_data
from trainlint.analysis.facts import Block, CallSite, FunctionInfo, walk
from trainlint.analysis.names import dotted
from trainlint.analysis.splits import TRAIN_IN_NAME, is_train_name
from trainlint.analysis.torch_api import DATALOADERS
from trainlint.analysis.training import BACKWARD, STEP, Event, conditions
from trainlint.rules.base import Report, Rule

# Training on held-out data on purpose: test-time adaptation/training, few-shot adaptation on a
# test task's support set, calibration, adversarial examples optimised per test batch.
DELIBERATE = re.compile(r"adapt|tta|test_?time|ttt|support|meta|calib|attack|adv|pgd|fgsm|perturb|finetune|fine_tune|tent", re.I)


class TrainingOnHeldOutData(Rule):
    """## What it does
    Finds training steps — `backward()` and an optimizer `step()`, both run on every
    iteration — in a loop over validation or test data (`for x, y in val_loader:`,
    `enumerate(test_loader)`, `loaders["test"]`), also when the loop is in a training
    function that a same-module caller hands a validation/test loader
    (`train_one_epoch(model, test_loader, optimizer)`).

    ## Why is this bad?
    The model then learns the data that is supposed to measure it: validation loss and
    accuracy become optimistic, early stopping and model selection follow a contaminated
    signal, and the reported test score no longer estimates performance on new data. It is
    usually a copy-paste slip (the training loop pasted for evaluation, or the wrong loader
    passed).

    Left alone: a backward without an optimizer step (saliency maps, gradient statistics), a
    step under an `if` in the loop (`if phase == "train":`), a loop under `no_grad`/
    `set_grad_enabled(flag)`, a loop that also iterates training data (bilevel
    optimisation over `zip(train_loader, val_loader)`), an optimizer over something other
    than a model's parameters (an adversarial perturbation), and code named for deliberate
    adaptation (`adapt`, `tta`, `test_time`, `support`, `meta`, `calib`, `attack`, `finetune`).

    ## Example
    ```python
    for x, y in val_loader:
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
    ```

    ## Use instead
    ```python
    model.eval()
    with torch.no_grad():
        for x, y in val_loader:
            val_loss += criterion(model(x), y).item()
    ```
    """

    code = "TL405"
    name = "training-on-held-out-data"
    severity = "error"

    VALID = (
        """
        import torch
        for epoch in range(10):
            for x, y in train_loader:
                optimizer.zero_grad()
                criterion(model(x), y).backward()
                optimizer.step()
            with torch.no_grad():
                for x, y in val_loader:
                    val_loss = criterion(model(x), y)
        """,
        """
        import torch
        # the classic phase loop: the step only in the training phase
        for phase in ["train", "val"]:
            for inputs, labels in dataloaders[phase]:
                with torch.set_grad_enabled(phase == "train"):
                    loss = criterion(model(inputs), labels)
                    if phase == "train":
                        loss.backward()
                        optimizer.step()
        """,
        """
        import torch
        # saliency maps over test images: a backward, no optimizer step
        for x, y in test_loader:
            x.requires_grad_()
            model(x).gather(1, y[:, None]).sum().backward()
            saliency = x.grad.abs()
        """,
        """
        import torch
        # an adversarial perturbation optimised per test batch: the optimizer holds `delta`
        for x, y in test_loader:
            delta = torch.zeros_like(x, requires_grad=True)
            opt = torch.optim.SGD([delta], lr=0.01)
            for _ in range(10):
                opt.zero_grad()
                (-criterion(model(x + delta), y)).backward()
                opt.step()
        """,
        """
        import torch
        # bilevel optimisation: the validation batches drive the architecture parameters
        for (x, y), (xv, yv) in zip(train_loader, valid_loader):
            arch_opt.zero_grad()
            criterion(model(xv), yv).backward()
            arch_opt.step()
        """,
        """
        import torch
        def run_epoch(model, loader, optimizer, train):
            for x, y in loader:
                loss = criterion(model(x), y)
                if train:
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
        run_epoch(model, train_loader, optimizer, True)
        run_epoch(model, val_loader, optimizer, False)
        """,
    )
    INVALID = (
        """
        import torch
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        for epoch in range(10):
            for x, y in train_loader:
                optimizer.zero_grad()
                criterion(model(x), y).backward()
                optimizer.step()
            for x, y in val_loader:
                optimizer.zero_grad()
                val_loss = criterion(model(x), y)
                val_loss.backward()  # !
                optimizer.step()
        """,
        """
        import torch
        def train_one_epoch(model, loader, optimizer):
            model.train()
            for batch_idx, (data, target) in enumerate(loader):
                optimizer.zero_grad()
                loss = F.nll_loss(model(data), target)
                loss.backward()
                optimizer.step()

        for epoch in range(1, 11):
            train_one_epoch(model, train_loader, optimizer)
            train_one_epoch(model, test_loader, optimizer)  # !
        """,
        """
        import torch
        class Trainer:
            def __init__(self, model, loaders):
                self.model = model
                self.opt = torch.optim.SGD(model.parameters(), lr=0.1)
                self.loaders = loaders
            def step(self, x, y):
                self.opt.zero_grad()
                loss = self.model.loss(x, y)
                loss.backward()
                self.opt.step()
                return loss.item()
            def validate(self):
                return [self.step(x, y) for x, y in self.loaders["val"]]
            def fit(self):
                for x, y in self.loaders["val"]:
                    self.step(x, y)  # !
        """,
    )

    def check(self, ctx) -> Iterator[Report]:
        if not ctx.uses_torch:
            return
        reported = set()
        for loop in ctx.loops:
            if loop.kind != "for":
                continue
            events = self._training_steps(ctx, loop)
            if events is None:
                continue
            backward = events[0]
            if iterates_eval_data(loop.iter) and not self._names_training_data(ctx, loop):
                if id(backward.anchor.node) in reported:
                    continue
                reported.add(id(backward.anchor.node))
                it = " ".join(ctx.module.code_for_node(loop.iter).split())
                yield Report(
                    backward.anchor.node,
                    f"this loop over `{it}`, held-out data, runs `backward()` and an optimizer step on every "
                    f"batch: the model trains on the data meant to measure it, so its validation/test scores "
                    f"are optimistic. Evaluate under `torch.no_grad()` without stepping the optimizer.",
                )
                continue
            # A training function's loop over a parameter: what do the callers pass?
            fn = loop.function
            param = self._iterated_parameter(loop, fn)
            if fn is None or param is None or self._returns_before(ctx, fn, loop) or DELIBERATE.search(fn.name):
                continue
            if any(conditions(e) for e in events):
                continue  # the loop or its step lies under an `if` in the function: a mode flag
            for arg, site in ctx.param_arguments(fn, param):
                if not isinstance(site, CallSite) or id(site.node) in reported:
                    continue
                if iterates_eval_data(arg) and not any(TRAIN_IN_NAME.search(n.value) for n in walk(arg) if isinstance(n, cst.Name)):
                    reported.add(id(site.node))
                    text = ctx.module.code_for_node(arg)
                    yield Report(
                        site.node,
                        f"`{fn.name}()` trains (`backward()` and an optimizer step on every batch of "
                        f"`{param}`), and this call hands it `{text}`, held-out data: the model trains on "
                        f"the data meant to measure it. Pass the training loader, or evaluate `{text}` "
                        f"without stepping the optimizer.",
                    )

    # -- the training steps of a loop -----------------------------------------------------
    def _training_steps(self, ctx, loop: Block) -> Optional[List[Event]]:
        """[backward, step] run unconditionally on every iteration of `loop` (its own body or
        a called helper), by an optimizer over model parameters; None otherwise."""
        tr = ctx.training
        events = tr.all_events(loop)
        found: List[Event] = []
        for kind in (BACKWARD, STEP):
            cands = [e for e in events if e.kind == kind and not conditions(e, loop) and not tr.in_except(e)]
            cands = [e for e in cands if not any(inner is not loop and loop.contains(inner.start) for inner in e.anchor.loops if inner.function is loop.function)]
            if not cands:
                return None
            found.append(cands[0])
        backward, step = found
        if tr.under_no_grad(backward.site) or any(tr.under_no_grad(s) for s in backward.chain):
            return None
        if self._optimizer_not_over_model(ctx, step):
            return None
        if loop.function is not None and DELIBERATE.search(loop.function.name):
            return None
        text = ctx.module.code_for_node(loop.node)
        if DELIBERATE.search(ctx.module.code_for_node(loop.iter)) or re.search(r"\b(adapt\w*|tta|attack\w*|perturb\w*)\s*\(", text):
            return None
        return found

    @staticmethod
    def _optimizer_not_over_model(ctx, step: Event) -> bool:
        """The stepped optimizer is built here over tensors, not `model.parameters()`."""
        site = step.site
        recv = site.receiver if isinstance(site, CallSite) else None
        if recv is None:
            return False
        for value, _ in ctx.constructions(recv, site):
            if isinstance(value, cst.Call) and value.args:
                params = value.args[0].value
                if isinstance(params, (cst.List, cst.Tuple)) and not any(
                    isinstance(n, cst.Name) and n.value in ("parameters", "params") for n in walk(params)
                ):
                    return True
        return False

    @staticmethod
    def _names_training_data(ctx, loop: Block) -> bool:
        """The loop also iterates training data (`zip(train_loader, val_loader)`), or its
        held-out-named loader is built over a training set."""
        names = [n.value for n in walk(loop.iter) if isinstance(n, cst.Name)]
        if any(TRAIN_IN_NAME.search(n) for n in names):
            return True
        it = loop.iter
        if isinstance(it, cst.Call) and it.args and dotted(it.func) in ("enumerate", "tqdm", "tqdm.tqdm"):
            it = it.args[0].value
        if isinstance(it, (cst.Name, cst.Attribute)):
            for value, _ in ctx.constructions(it, loop_site(ctx, loop)):
                if isinstance(value, cst.Call) and ctx.qualname(value.func) in DATALOADERS and value.args:
                    if is_train_name(dotted(value.args[0].value)):
                        return True
        return False

    @staticmethod
    def _iterated_parameter(loop: Block, fn: Optional[FunctionInfo]) -> Optional[str]:
        """The parameter of `fn` the loop iterates: `loader` in `for x in enumerate(loader)`."""
        if fn is None or loop.iter is None:
            return None
        it = loop.iter
        while isinstance(it, cst.Call) and it.args and dotted(it.func) in ("enumerate", "tqdm", "tqdm.tqdm", "iter"):
            it = it.args[0].value
        if isinstance(it, cst.Name) and it.value in fn.params:
            return it.value
        return None

    @staticmethod
    def _returns_before(ctx, fn: FunctionInfo, loop: Block) -> bool:
        return any(r.order < loop.start for r in ctx.returns_of(fn))


def loop_site(ctx, loop: Block):
    """A site at the loop's head, to resolve names from (the loop variable's assignment)."""
    for a in ctx.facts.assigns:
        if a.node is loop.node:
            return a
    from trainlint.analysis.facts import Site

    return Site(loop.node, loop.function, (), (), (), loop.start)


RULE = TrainingOnHeldOutData
