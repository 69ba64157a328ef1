from __future__ import annotations

import re
from typing import Iterator, List, Optional

import libcst as cst

from trainlint.analysis.evaluation import EVAL_FUNCTION_NAME, iterates_eval_data
from trainlint.analysis.facts import Block, CallSite, FunctionInfo, Site, walk
from trainlint.analysis.names import dotted, expression_facts
from trainlint.analysis.splits import TRAIN_IN_NAME, derives, is_heldout_name, is_train_name, root_name, scopes, wrapped
from trainlint.analysis.torch_api import DATALOADERS
from trainlint.analysis.training import BACKWARD, STEP, Event, conditions
from trainlint.rules.base import Report, Rule

# Training on held-out data on purpose: test-time adaptation/training, few-shot adaptation on a
# test task's support set, calibration, adversarial examples optimised per test batch.
# Keywords of framework entry points that take the training data.
TRAIN_KEYWORDS = ("train_dataset", "train_dataloader", "train_dataloaders", "train_loader")
CONCATENATIONS = {
    "torch.utils.data.ConcatDataset", "torch.utils.data.dataset.ConcatDataset", "numpy.concatenate", "numpy.vstack",
    "numpy.hstack", "pandas.concat", "torch.cat", "torch.concat", "torch.vstack", "scipy.sparse.vstack",
}
TRAINING_CALLS = re.compile(r"^(fit|fit_generator|train|train_model|train_epoch|train_one_epoch|run_training)$|^train_", re.I)
EVALUATION_CALLS = re.compile(r"^(score|predict|predict_proba|evaluate|validate|test)$", re.I)
DELIBERATE = re.compile(r"adapt|tta|test_?time|ttt|support|meta|calib|attack|adv|pgd|fgsm|perturb|finetune|fine_tune|tent", re.I)


class TrainingOnHeldOutData(Rule):
    """## What it does
    Finds training steps — `backward()` and an optimizer `step()`, both run on every
    iteration — in a loop over validation or test data (`for x, y in val_loader:`,
    `enumerate(test_loader)`, `loaders["test"]`), also when the loop is in a training
    function that a same-module caller hands a validation/test loader
    (`train_one_epoch(model, test_loader, optimizer)`); held-out data given to a framework's
    training entry point (`Trainer(train_dataset=ds["test"])`, Lightning's
    `trainer.fit(model, val_loader)`); and a validation/test set concatenated into the
    training data (`ConcatDataset([train_ds, val_ds])`, `np.concatenate([X_train, X_val])`,
    `torch.cat`) that is trained on — through a loader or a training call, or directly as a
    tensor (`model(X_all)`, `model(xt[idx])` in a loop that steps) — and then evaluated on
    again (an evaluation loop or call, or a forward pass such as `model(X_val_t)`).

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
    adaptation (`adapt`, `tta`, `test_time`, `support`, `meta`, `calib`, `attack`, `finetune`), and
    test modules (where a `test_loader` is a fixture).

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
        # the final refit on train+val is scored on the test tensor only
        X_all = torch.cat([X_train, X_val])
        y_all = torch.cat([y_train, y_val])
        for epoch in range(100):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(X_all), y_all)
            loss.backward()
            opt.step()
        with torch.no_grad():
            print(torch.nn.functional.mse_loss(model(X_test), y_test).item())
        """,
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
        """
        import torch
        from torch.utils.data import ConcatDataset, DataLoader
        # selection on the validation set, then the final model on train+val, scored on test
        for epoch in range(20):
            train_one_epoch(model, train_loader, optimizer)
            scores.append(evaluate(model, val_loader))
        full = ConcatDataset([train_ds, val_ds])
        final = train_model(new_model(), DataLoader(full, batch_size=64, shuffle=True))
        print("test accuracy", evaluate(final, test_loader))
        """,
        """
        import lightning as L
        from transformers import Trainer
        trainer = L.Trainer(max_epochs=10)
        trainer.fit(model, train_loader, val_loader)
        hf = Trainer(model=model, train_dataset=tokenized["train"], eval_dataset=tokenized["validation"])
        """,
        """
        from transformers import Seq2SeqTrainer
        # a trainer built only to predict: its train set is never trained on
        trainer = Seq2SeqTrainer(model=model, args=args, train_dataset=tokenized["test"], tokenizer=tok)
        test_preds = trainer.predict(tokenized["test"], max_length=128)
        """,
    )
    INVALID = (
        """
        import numpy as np
        import torch
        # trained on the concatenated tensor in indexed minibatches, then scored on X_val
        X_all = np.concatenate([X_train, X_val])  # !
        y_all = np.concatenate([y_train, y_val])
        xt, yt = torch.from_numpy(X_all), torch.from_numpy(y_all)
        for epoch in range(200):
            perm = torch.randperm(len(xt))
            for i in range(0, len(xt), 64):
                idx = perm[i:i + 64]
                opt.zero_grad()
                loss = torch.nn.functional.mse_loss(model(xt[idx]), yt[idx])
                loss.backward()
                opt.step()
        with torch.no_grad():
            pred = model(torch.from_numpy(X_val))
        """,
        """
        import torch
        X_all = torch.cat([X_train, X_val])  # !
        for epoch in range(100):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(X_all), y_all)
            loss.backward()
            opt.step()
        X_val_t = X_val.float()
        with torch.no_grad():
            print(torch.nn.functional.mse_loss(model(X_val_t), y_val).item())
        """,
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
        """
        import torch
        from torch.utils.data import ConcatDataset, DataLoader
        val_loader = DataLoader(val_ds, batch_size=256)
        full_loader = DataLoader(ConcatDataset([train_ds, val_ds]), batch_size=64, shuffle=True)  # !
        for epoch in range(20):
            for x, y in full_loader:
                opt.zero_grad()
                loss_fn(model(x), y).backward()
                opt.step()
            model.eval()
            with torch.no_grad():
                correct = sum((model(x).argmax(1) == y).sum().item() for x, y in val_loader)
            model.train()
        """,
        """
        from transformers import Trainer, TrainingArguments
        tokenized = dataset.map(tokenize, batched=True)
        trainer = Trainer(
            model=model,
            args=TrainingArguments("out", num_train_epochs=3),
            train_dataset=tokenized["test"],  # !
            eval_dataset=tokenized["test"],
        )
        trainer.train()
        """,
        """
        import lightning as L
        trainer = L.Trainer(max_epochs=10)
        trainer.fit(model, val_loader)  # !
        trainer.validate(model, val_loader)
        """,
        """
        import numpy as np
        import torch
        X_all = np.concatenate([X_train, X_val])  # !
        y_all = np.concatenate([y_train, y_val])
        net = NeuralNetClassifier(Net, max_epochs=20).fit(X_all.astype(np.float32), y_all)
        print("validation accuracy", net.score(X_val.astype(np.float32), y_val))
        """,
    )

    def check(self, ctx) -> Iterator[Report]:
        if not ctx.uses_torch or ctx.is_test_file:
            return  # (in a test module, `test_loader` is a fixture, not held-out data)
        reported = set()
        for loop in ctx.loops:
            if loop.kind != "for":
                continue
            direct = iterates_eval_data(loop.iter)
            # The event streams cost the most: only for loops over held-out data or over a parameter.
            if not direct and self._iterated_parameter(loop, loop.function) is None:
                continue
            events = self._training_steps(ctx, loop)
            if events is None:
                continue
            backward = events[0]
            if direct and not self._names_training_data(ctx, loop):
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
        yield from self._framework_training(ctx)
        for calls, assigns in scopes(ctx):
            yield from self._concatenated(ctx, calls, assigns)

    # -- held-out data handed to a framework's training entry point ------------------------
    def _framework_training(self, ctx) -> Iterator[Report]:
        """`Trainer(..., train_dataset=ds["test"])` (transformers), `trainer.fit(model,
        val_loader)` / `fit(model, train_dataloaders=val_loader)` (Lightning)."""
        for call in ctx.facts.calls:
            value = None
            for kw in TRAIN_KEYWORDS:
                value = call.keyword(kw)
                if value is not None:
                    break
            if value is None and call.attr == "fit" and call.receiver is not None and self._lightning_trainer(ctx, call):
                value = call.positional(1)
            if value is None or not iterates_eval_data(value):
                continue
            if any(isinstance(n, cst.Name) and TRAIN_IN_NAME.search(n.value) for n in walk(value)):
                continue
            if not self._runs_training(ctx, call):
                continue  # a Trainer built only to `predict`/`evaluate`: its train set is never used
            text = " ".join(ctx.module.code_for_node(value).split())
            yield Report(
                value,
                f"`{text}`, held-out data, is given to training here: the model trains on the data meant "
                f"to measure it, so its validation/test scores are optimistic. Pass the training split.",
            )

    @staticmethod
    def _runs_training(ctx, call: CallSite) -> bool:
        """The call trains (`fit(...)`, `train_model(...)`), or builds a trainer that is then
        trained (`trainer = Trainer(...)` ... `trainer.train()`, `Trainer(...).train()`)."""
        if call.attr and (call.attr == "fit" or TRAINING_CALLS.search(call.attr)):
            return True
        for c in ctx.facts.calls:
            if c.receiver is call.node and c.attr in ("train", "fit"):
                return True
        for a in ctx.facts.assigns:
            if a.value is call.node and a.op == "=" and len(a.targets) == 1:
                target = dotted(a.targets[0])
                return bool(target) and any(
                    c.order > a.order and c.attr in ("train", "fit") and c.receiver is not None and dotted(c.receiver) == target
                    for c in ctx.calls_in(a.function)
                )
        return False

    @staticmethod
    def _lightning_trainer(ctx, call: CallSite) -> bool:
        quals = ctx.constructed_qualnames(call.receiver, call)
        return any(q and q.startswith(("lightning", "pytorch_lightning")) and q.endswith("Trainer") for q in quals)

    # -- a held-out set concatenated into the training data, then evaluated on -----------
    def _concatenated(self, ctx, calls: List[CallSite], assigns) -> Iterator[Report]:
        seen: set = set()
        for call in calls:
            if call.qualname not in CONCATENATIONS:
                continue
            parts = call.arg(0, "datasets")
            if not isinstance(parts, (cst.List, cst.Tuple)):
                continue
            names = [root_name(e.value) for e in parts.elements]
            held = [n for n in names if is_heldout_name(n)]
            if not held or not any(is_train_name(n) for n in names):
                continue
            combined = {
                n for a in assigns if a.op == "=" and a.whole_value is not None and id(call.node) in expression_facts(a.whole_value).nodes
                for n in (root_name(t) for t in a.targets) if n
            }
            if not combined:
                continue
            combined = wrapped(assigns, call.order, combined)
            if not self._trained_on(ctx, calls, call.order, combined):
                continue
            for h in held:
                derived = wrapped(assigns, -1, {h}) - combined
                where = self._evaluated_on(ctx, calls, call.order, derived, combined)
                if where is None or where in seen:
                    continue  # `X_all`/`y_all` concatenated alike, scored by one call: one report
                seen.add(where)
                text = ctx.module.code_for_node(call.func)
                yield Report(
                    call.node,
                    f"`{h}` is concatenated into the training data here, and {where} later evaluates on it: "
                    f"the model is scored on data it was trained on, so the score is optimistic. Train on "
                    f"train+validation only for the final model, after selection, and report a test set "
                    f"that was never trained on.",
                )
                break

    def _trained_on(self, ctx, calls: List[CallSite], after: int, names: set) -> bool:
        """Data in `names` is trained on after `after`: a loop over it steps an optimizer, or a
        training call (`fit`, `train_one_epoch`) receives it."""
        for loop in ctx.loops:
            if loop.start > after and loop.kind == "for" and _mentions(loop.iter, names) and self._training_steps(ctx, loop):
                return True
        for c in calls:
            if c.order > after and c.attr and TRAINING_CALLS.search(c.attr) and any(_mentions(a.value, names) for a in c.args):
                return True
        # Trained directly on the tensor: `model(X_all)` (full batch) or `model(xt[idx])`
        # (indexed minibatches) in a loop that runs backward and an optimizer step.
        for c in self._model_calls_on(ctx, calls, after, names):
            if not ctx.training.under_no_grad(c) and any(self._training_steps(ctx, loop) for loop in c.loops):
                return True
        return False

    @staticmethod
    def _model_calls_on(ctx, calls: List[CallSite], after: int, names: set) -> List[CallSite]:
        """Forward passes after `after` whose input reads data in `names`."""
        return [
            c for c in calls
            if c.order > after and any(_mentions(a.value, names) for a in c.args) and ctx.training.is_model_call(c)
        ]

    def _evaluated_on(self, ctx, calls: List[CallSite], after: int, names: set, combined: set) -> Optional[str]:
        """Where data in `names` is evaluated after `after`: an evaluation pass over it, or a call
        named for evaluation (`evaluate(model, val_loader)`, `clf.score(X_val, y_val)`)."""
        if not names:
            return None
        for p in ctx.evaluation.passes:
            if p.loop is not None and p.loop.start > after and _mentions(p.loop.iter, names):
                return f"the loop over `{ctx.module.code_for_node(p.loop.iter)}`"
        for c in calls:
            if c.order <= after or not c.attr or not (EVALUATION_CALLS.search(c.attr) or EVAL_FUNCTION_NAME.search(c.attr)):
                continue
            if any(_mentions(a.value, names) for a in c.args):
                return f"`{ctx.module.code_for_node(c.func)}(...)`"
        # A forward pass on the array/tensor itself (`model(torch.from_numpy(X_val))`) that does
        # not train: under no_grad, or outside any loop that steps an optimizer.
        for c in self._model_calls_on(ctx, calls, after, names):
            if ctx.training.under_no_grad(c) or not any(self._training_steps(ctx, loop) for loop in c.loops):
                return f"`{ctx.module.code_for_node(c.node)}`"
        return None

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


def _mentions(expr, names: set) -> bool:
    """`expr` reads one of `names` (`enumerate(full_loader)`, `tqdm(X_all)`), not only its
    size (`len(X_all)`)."""
    return any(isinstance(n, cst.Name) and n.value in names for n in walk(expr)) and derives_data(expr, names)


def derives_data(expr, names: set) -> bool:
    if isinstance(expr, cst.Call) and isinstance(expr.func, cst.Name) and expr.func.value in ("enumerate", "tqdm", "iter", "zip"):
        return any(derives_data(a.value, names) for a in expr.args)
    return derives(expr, names)


def loop_site(ctx, loop: Block):
    """A site at the loop's head, to resolve names from (the loop variable's assignment)."""
    for a in ctx.facts.assigns:
        if a.node is loop.node:
            return a
    return Site(loop.node, loop.function, (), (), (), loop.start)


RULE = TrainingOnHeldOutData
