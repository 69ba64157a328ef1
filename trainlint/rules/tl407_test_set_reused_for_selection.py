from __future__ import annotations

import re
from typing import Iterator, Optional

import libcst as cst

from trainlint.analysis.accumulators import accumulating_loops
from trainlint.analysis.facts import Site, walk
from trainlint.analysis.names import dotted
from trainlint.analysis.selection import BEST_NAME, selections
from trainlint.rules.base import Report, Rule

# Named for the test set (not validation): `test_acc`, `testloader`, `self.test_loss`.
TEST_NAME = re.compile(r"(^|_)(test|testing)(_|$|set|data|loader|dl|ds|acc|loss|err|score|metric|f1|auc|iter)", re.I)
VAL_NAME = re.compile(r"(^|_)(val|valid|validation|dev|eval|evaluation|holdout)(_|$|set|data|loader|dl|ds|acc|loss|iter)", re.I)
REPORTERS = re.compile(r"^(print|info|log|debug|warning|add_scalar|add_scalars|log_metric|log_metrics|write|set_postfix|set_description)$")
# Reinforcement learning's evaluation episodes are fresh draws from the environment, not a
# fixed test set: selecting on their return is not test-set reuse.
EPISODE_METRIC = re.compile(r"reward|return|episode|score_env|ep_ret", re.I)
SHOWS = re.compile(r"print|log|progress|postfix|write|report|save", re.I)


class TestSetReusedForSelection(Rule):
    """## What it does
    Finds model selection on the test set: a comparison of a test metric (`test_acc`,
    `test_loss`, an accuracy computed over `test_loader`, or what `evaluate(model,
    test_loader)` returns) with the best value so far, where the winner is kept — a
    checkpoint is saved (`torch.save`, `save_checkpoint(..., is_best)`, a copy of the
    `state_dict`), the best epoch or hyper-parameters are recorded, or an early-stopping
    counter is reset — and the test metric is reported (printed, logged, returned).

    ## Why is this bad?
    The epoch, checkpoint or hyper-parameters are chosen because they score best on the
    test set, so the reported test score is the maximum over many tries on the same data:
    it is optimistically biased and no longer estimates performance on new data. Select on
    a validation split carved from the training data and evaluate the chosen model on the
    test set once.

    Only names that say *test* count (`val_*`, `valid_*`, `dev_*` are what selection should
    use); a comparison whose metric cannot be traced to test data is left alone, and so is a
    reinforcement-learning return (`test_reward`: evaluation episodes are fresh draws from the
    environment, not a fixed test set).

    ## Example
    ```python
    for epoch in range(epochs):
        train(model, train_loader)
        test_acc = evaluate(model, test_loader)
        if test_acc > best_acc:
            best_acc = test_acc
            torch.save(model.state_dict(), "best.pt")
    print(f"best test accuracy {best_acc:.2f}")
    ```

    ## Use instead
    ```python
    for epoch in range(epochs):
        train(model, train_loader)
        val_acc = evaluate(model, val_loader)
        if val_acc > best_acc:
            best_acc = val_acc
            torch.save(model.state_dict(), "best.pt")
    model.load_state_dict(torch.load("best.pt"))
    print(f"test accuracy {evaluate(model, test_loader):.2f}")
    ```
    """

    code = "TL407"
    name = "test-set-reused-for-selection"
    severity = "warning"

    VALID = (
        """
        import torch
        # accumulated over the validation loader; the test set is scored once at the end
        for epoch in range(40):
            train(model, train_loader)
            correct = 0
            with torch.no_grad():
                for x, y in val_loader:
                    correct += (model(x).argmax(1) == y).sum().item()
            acc = 100.0 * correct / len(val_loader.dataset)
            if acc > best_acc:
                best_acc = acc
                torch.save(model.state_dict(), "best.pt")
        print("best val accuracy", best_acc, "test", evaluate(model, test_loader))
        """,
        """
        import torch
        for epoch in range(100):
            train(model, train_loader)
            val_acc = evaluate(model, val_loader)
            if val_acc > best_acc:
                best_acc = val_acc
                torch.save(model.state_dict(), "best.pt")
        print("test", evaluate(model, test_loader))
        """,
        """
        import torch
        # the test score is only logged every epoch, nothing is selected on it
        for epoch in range(100):
            train(model, train_loader)
            test_acc = evaluate(model, test_loader)
            print(f"epoch {epoch}: test accuracy {test_acc:.3f}")
        """,
        """
        import torch
        # the best training loss, not a test metric
        for epoch in range(100):
            loss = train(model, train_loader)
            if loss < best_loss:
                best_loss = loss
                torch.save(model.state_dict(), "best.pt")
            print(loss)
        """,
        """
        import torch
        def test(model, test_loader):
            correct = 0
            with torch.no_grad():
                for x, y in test_loader:
                    correct += (model(x).argmax(1) == y).sum().item()
            acc = correct / len(test_loader.dataset)
            print(acc)
            return acc
        """,
        """
        import torch
        # reinforcement learning: evaluation episodes are new draws from the environment
        for it in range(1000):
            agent.update(rollout(env))
            test_reward = evaluate_policy(agent, env, episodes=10)
            if test_reward > best_reward:
                best_reward = test_reward
                torch.save(agent.state_dict(), "best.pt")
            print(test_reward)
        """,
        """
        import torch
        # a unit test comparing against the best known value
        def test_model_beats_baseline():
            test_acc = run_small_experiment()
            assert test_acc > best_baseline
        """,
    )
    INVALID = (
        """
        import torch
        # an accuracy accumulated inline over the test loader, held in a name without "test"
        for epoch in range(40):
            train(model, train_loader)
            hits = n = 0
            with torch.no_grad():
                for x, y in test_loader:
                    hits += (model(x).argmax(1) == y).sum().item()
                    n += len(y)
            acc = hits / n
            if acc > best_acc:  # !
                best_acc = acc
                torch.save(model.state_dict(), "best.pt")
        print("best test accuracy", best_acc)
        """,
        """
        import torch
        best_acc = 0
        def test(epoch):
            global best_acc
            net.eval()
            correct = total = 0
            with torch.no_grad():
                for inputs, targets in testloader:
                    outputs = net(inputs)
                    correct += outputs.argmax(1).eq(targets).sum().item()
                    total += targets.size(0)
            acc = 100.0 * correct / total
            print("Acc: %.3f" % acc)
            if acc > best_acc:  # !
                torch.save({"net": net.state_dict(), "acc": acc, "epoch": epoch}, "./checkpoint/ckpt.pth")
                best_acc = acc
        """,
        """
        import torch
        for epoch in range(args.epochs):
            train_one_epoch(model, train_loader, optimizer)
            test_loss, test_acc = evaluate(model, test_loader)
            is_best = test_acc > best_acc1  # !
            best_acc1 = max(test_acc, best_acc1)
            save_checkpoint({"epoch": epoch, "state_dict": model.state_dict()}, is_best)
            logger.info("test acc %.2f (best %.2f)", test_acc, best_acc1)
        """,
        """
        import copy
        for lr in [1e-2, 1e-3, 1e-4]:
            model = build()
            fit(model, train_loader, lr)
            score = evaluate(model, test_loader)
            if score > best_score:  # !
                best_score, best_lr = score, lr
                best_weights = copy.deepcopy(model.state_dict())
        print("best lr", best_lr, "test score", best_score)
        """,
    )

    def check(self, ctx) -> Iterator[Report]:
        if ctx.is_test_file:
            return
        for sel in selections(ctx):
            site = sel.site
            source = self._test_source(ctx, sel.metric, site)
            if source is None or not self._reported(ctx, sel.metric, site):
                continue
            yield Report(
                sel.comparison,
                f"the best model is picked by {source}, a test-set metric, and the test score is reported: "
                f"the reported number is the best of many tries on the test set, an optimistic estimate. "
                f"Select on a validation split and evaluate the chosen model on the test set once.",
            )

    def _test_source(self, ctx, metric, site: Site) -> Optional[str]:
        """How `metric` comes from test data (for the message), or None."""
        name = _metric_name(metric)
        if name and (VAL_NAME.search(name) or EPISODE_METRIC.search(name)):
            return None
        if name and TEST_NAME.search(name):
            return f"`{name}`"
        if not isinstance(metric, cst.Name):
            return None
        cands = ctx.resolve(metric, site)
        if len(cands) != 1 or cands[0][0] is metric:
            return None
        value, vsite = cands[0]
        for call in (n for n in walk(value) if isinstance(n, cst.Call)):
            fname = (dotted(call.func) or "").rsplit(".", 1)[-1]
            args = [dotted(a.value) or "" for a in call.args]
            if any(VAL_NAME.search(a.rsplit(".", 1)[-1]) for a in args):
                return None
            held = [a for a in args if TEST_NAME.search(a.rsplit(".", 1)[-1])]
            if held:
                return f"`{metric.value}` (from `{fname}(...)` on `{held[0]}`)"
        # Accumulated over test data inline, in the epoch loop (`for x, y in test_loader:
        # correct += ...` then `acc = 100 * correct / len(test_loader.dataset)`).
        loops = [loop for _, loop in accumulating_loops(ctx, value, vsite)]
        over = [n.value for loop in loops for n in walk(loop.iter) if isinstance(n, cst.Name)]
        if any(TEST_NAME.search(n) for n in over) and not any(VAL_NAME.search(n) for n in over):
            held = next(loop for loop in loops if any(TEST_NAME.search(n.value) for n in walk(loop.iter) if isinstance(n, cst.Name)))
            return f"`{metric.value}` (accumulated over `{ctx.module.code_for_node(held.iter)}`)"
        # Computed in the function that runs over the test data (`acc = 100. * correct / total`).
        fn = vsite.function
        if fn is not None:
            iters = [ctx.module.code_for_node(b.iter) for b in ctx.loops if b.function is fn and b.iter is not None]
            names = [n.value for b in ctx.loops if b.function is fn and b.iter is not None for n in walk(b.iter) if isinstance(n, cst.Name)]
            if any(TEST_NAME.search(n) for n in names) and not any(VAL_NAME.search(n) for n in names):
                return f"`{metric.value}` (computed over `{iters[0]}`)" if iters else None
        return None

    @staticmethod
    def _reported(ctx, metric, site: Site) -> bool:
        """The metric is shown or kept: printed, logged, written, returned or saved with the
        checkpoint — by name, through the best value it updates, or through what it is
        computed from (`progress_bar(..., 100. * correct / total)`)."""
        name = dotted(metric)
        if not name:
            return False
        names = {name}
        if isinstance(metric, cst.Name):
            for value, _ in ctx.resolve(metric, site):
                if value is not metric:
                    names |= {n.value for n in walk(value) if isinstance(n, cst.Name)}
        for c in ctx.facts.calls:
            callee = (c.attr or "") if c.attr else ""
            if not (REPORTERS.match(callee) or SHOWS.search(callee) or c.qualname in ("torch.save",)):
                continue
            for a in c.args:
                for n in walk(a.value):
                    if isinstance(n, (cst.Name, cst.Attribute)):
                        text = dotted(n) or ""
                        if text in names or BEST_NAME.search(text.rsplit(".", 1)[-1]):
                            return True
        fn = site.function
        return fn is not None and any(r.value is not None and dotted(r.value) == name for r in ctx.returns_of(fn))


def _metric_name(metric) -> Optional[str]:
    """`test_acc` for `test_acc`, `self.test_acc`, `metrics["test_acc"]`, `test_metrics["acc"]`."""
    if isinstance(metric, cst.Subscript):
        sl = metric.slice[0].slice if len(metric.slice) == 1 else None
        key = getattr(sl, "value", None)
        base = (dotted(metric.value) or "").rsplit(".", 1)[-1]
        if isinstance(key, cst.SimpleString) and isinstance(key.evaluated_value, str):
            return key.evaluated_value if TEST_NAME.search(key.evaluated_value) or VAL_NAME.search(key.evaluated_value) else base
        return base
    name = dotted(metric)
    return name.rsplit(".", 1)[-1] if name else None


RULE = TestSetReusedForSelection
