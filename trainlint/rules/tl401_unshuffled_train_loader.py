from __future__ import annotations

import re
from typing import Iterator, Optional

import libcst as cst

from trainlint.analysis.datasets import draws_fresh_samples, is_iterable_dataset_class, shuffles_itself
from trainlint.analysis.facts import walk
from trainlint.analysis.names import dotted
from trainlint.analysis.project import constructor_summary
from trainlint.analysis.torch_api import DATALOADERS
from trainlint.analysis.training import BACKWARD, STEP
from trainlint.rules.base import Replacement, Report, Rule

TRAIN_NAME = re.compile(r"train", re.I)
NOT_TRAIN_NAME = re.compile(r"(^|_)(val|valid|validation|test|testing|eval|dev|holdout|calib|predict|infer|inference)(_|$|loader|dl|data|set|ds)|untrain|pretrained", re.I)
ITERABLE_DATASET = re.compile(r"IterableDataset|WebDataset|IterDataPipe|streaming", re.I)
# Random data has no order to learn from: demos and tests load it unshuffled on purpose.
SYNTHETIC_DATASET = re.compile(r"^(Random|Dummy|Fake|Synthetic|Boring)\w*", re.I)
# A dataset's own reshuffling method: `shuffleSamples()`, `shuffle()`, `reshuffle()`.
SHUFFLE_METHOD = re.compile(r"shuffle", re.I)
# DataLoader(dataset, batch_size, shuffle, sampler, batch_sampler, ...)
SHUFFLE_POS, SAMPLER_POS, BATCH_SAMPLER_POS = 2, 3, 4


def _iter_of(expr, names) -> bool:
    """`iter(loader)` for a loader in `names`."""
    return (
        isinstance(expr, cst.Call) and isinstance(expr.func, cst.Name) and expr.func.value == "iter"
        and len(expr.args) == 1 and (dotted(expr.args[0].value) or "") in names
    )


class _At:
    """A program point (function, order) to ask `ctx.reaching` about."""

    def __init__(self, function, order) -> None:
        self.function, self.order = function, order


class UnshuffledTrainLoader(Rule):
    """## What it does
    Finds a `DataLoader` over training data (a `train*` name, or a loader iterated by a
    loop that calls `backward()`) with no `shuffle=True`, `sampler` or `batch_sampler`.

    ## Why is this bad?
    Without shuffling every epoch sees the batches in the same order; with data stored by
    class or by time, batches are not representative and SGD follows a biased path. Models
    train worse and, with sorted data, may not learn at all. A same-module map-style dataset
    whose `__getitem__` draws a fresh random sample (ignoring the index, or using it only to
    seed a generator) gains nothing from shuffling and is not reported, nor is a dataset that
    orders itself: an `IterableDataset`, or a class (of this module or another module of the
    project) that reshuffles its own samples after construction, or that the training loop
    reshuffles through `loader.dataset` every epoch. `shuffle=<variable>`, a `train*` loader
    whose binding is only read where nothing trains (one batch peeked at with
    `next(iter(loader))`, statistics, an accuracy function under `no_grad`; a notebook that
    rebinds the name counts each binding apart), and a loader handed over only under
    evaluation names (`machine.test_loader = loader`) are not reported.

    ## Example
    ```python
    train_loader = DataLoader(train_set, batch_size=64)
    ```

    ## Use instead
    ```python
    train_loader = DataLoader(train_set, batch_size=64, shuffle=True)
    ```
    """

    code = "TL401"
    name = "unshuffled-train-loader"
    severity = "warning"
    fixable = "safe"

    VALID = (
        """
        from torch.utils.data import DataLoader
        train_loader = DataLoader(train_set, batch_size=64, shuffle=True)
        val_loader = DataLoader(val_set, batch_size=64)
        """,
        """
        from torch.utils.data import DataLoader, DistributedSampler
        train_loader = DataLoader(train_set, batch_size=64, sampler=DistributedSampler(train_set))
        """,
        """
        from torch.utils.data import DataLoader
        def make_loader(ds, train):
            return DataLoader(ds, batch_size=32, shuffle=train)
        """,
        """
        from torch.utils.data import DataLoader, IterableDataset
        class Stream(IterableDataset):
            def __iter__(self):
                yield from range(10)
        train_loader = DataLoader(Stream(), batch_size=8)
        """,
        """
        import torch
        test_loader = torch.utils.data.DataLoader(test_ds, batch_size=256, shuffle=False)
        for x, y in test_loader:
            preds = model(x)
        """,
        """
        from torch.utils.data import DataLoader
        train_loader = DataLoader(train_set, 64, True)
        """,
        """
        from torch.utils.data import DataLoader, Subset
        class Data:
            def setup(self):
                self.random_train = Subset(self.random_full, indices=range(64))
            def train_dataloader(self):
                return DataLoader(self.random_train)  # random data: no order to learn
        """,
        """
        from torch.utils.data import DataLoader
        # statistics of the training set: the order does not matter
        stats_loader = DataLoader(train_subset, batch_size=256)
        total = 0
        for imgs, _ in stats_loader:
            total += imgs.sum(dim=(0, 2, 3))
        """,
        """
        from torch.utils.data import DataLoader
        # one batch of the training set to look at: the order does not matter
        small_loader = DataLoader(train_set, batch_size=256, shuffle=False)
        imgs, labels = next(iter(small_loader))
        show_gradients(net, imgs, labels)
        """,
        """
        import numpy as np
        import torch
        from torch.utils.data import DataLoader, Dataset
        # every item is a fresh random draw (the index only seeds it): order is random already
        class GeneratedShapes(Dataset):
            def __init__(self, n, seed=0):
                self.n, self.seed = n, seed
            def __len__(self):
                return self.n
            def __getitem__(self, idx):
                rng = np.random.default_rng(self.seed + idx)
                return torch.from_numpy(rng.normal(size=(3, 32, 32))).float(), int(rng.integers(10))
        train_loader = DataLoader(GeneratedShapes(5000), batch_size=64)
        for x, y in train_loader:
            loss = loss_fn(model(x), y)
            loss.backward()
        """,
        """
        import numpy as np
        import torch
        from torch.utils.data import DataLoader, Dataset
        # the index is ignored: each item is a new random task
        class SineTasks(Dataset):
            def __len__(self):
                return 10000
            def __getitem__(self, _):
                return self._sample()
            def _sample(self):
                amp = np.random.uniform(0.1, 5.0)
                return amp * torch.sin(torch.linspace(-5, 5, 50))
        tasks = DataLoader(SineTasks(), batch_size=25)
        for batch in tasks:
            loss = meta_loss(model, batch)
            loss.backward()
        """,
        """
        import numpy as np
        import torch
        from torch.utils.data import DataLoader
        # notebook cells: a statistics pass over an unshuffled `train_loader`, then the name
        # is rebound to a shuffled loader for training, then to an unshuffled one again for
        # an accuracy pass under no_grad
        train_loader = DataLoader(train_set, batch_size=256, shuffle=False)
        means = []
        for i, batch in enumerate(train_loader, 0):
            means.append(np.mean(batch[0].numpy(), axis=(0, 2, 3)))

        train_loader = DataLoader(train_set, batch_size=64, shuffle=True)
        for x, y in train_loader:
            opt.zero_grad()
            loss_fn(model(x), y).backward()
            opt.step()

        train_loader = DataLoader(train_set, batch_size=64, shuffle=False)
        correct = 0
        with torch.no_grad():
            for x, y in train_loader:
                correct += int((model(x).argmax(1) == y).sum())
        """,
        """
        import torch
        # in a function named `*_train`, a loader handed over only as the test loader
        def teacher_train(machine, clean_set):
            clean_loader = torch.utils.data.DataLoader(clean_set, batch_size=64, shuffle=False)
            machine.train()
            machine.test_loader = clean_loader
            return machine.test()
        """,
        """
        import random
        import numpy as np
        import torch
        # the dataset shuffles its own sample list and builds its batches itself
        class TrainDataset(torch.utils.data.Dataset):
            def __init__(self, samples):
                self.list_sample = list(samples)
                self.if_shuffled = False
            def __getitem__(self, index):
                if not self.if_shuffled:
                    np.random.shuffle(self.list_sample)
                    self.if_shuffled = True
                return self.list_sample[index]
            def __len__(self):
                return len(self.list_sample)

        loader_train = torch.utils.data.DataLoader(
            TrainDataset(records),
            batch_size=2,
            shuffle=False,  # we do not use this param
        )
        """,
        """
        from torch.utils.data import DataLoader
        # the training loop reshuffles the dataset (of a class chosen at run time) every epoch
        class App:
            def init_train_dl(self):
                train_ds = getattr(dsets, self.args.dataset)(val_stride=10)
                train_dl = DataLoader(train_ds, batch_size=32, num_workers=4)
                return train_dl

            def do_training(self, train_dl):
                train_dl.dataset.shuffleSamples()
                for batch in train_dl:
                    self.optimizer.zero_grad()
                    self.loss(batch).backward()
                    self.optimizer.step()
        """,
    )
    INVALID = (
        """
        import random
        from torch.utils.data import DataLoader, Dataset
        # near-miss: the dataset shuffles once when built, the same order every epoch
        class LunaDataset(Dataset):
            def __init__(self, candidates):
                self.candidates = list(candidates)
                random.shuffle(self.candidates)
            def __getitem__(self, i):
                return self.candidates[i]
            def __len__(self):
                return len(self.candidates)

        train_dl = DataLoader(LunaDataset(cands), batch_size=32)  # !
        """,
        """
        import torch
        # near-miss of the hand-over: the loader is also the trainer's training loader
        def teacher_train(machine, clean_set):
            clean_loader = torch.utils.data.DataLoader(clean_set, batch_size=64, shuffle=False)  # !
            machine.test_loader = clean_loader
            machine.train_loader = clean_loader
            machine.train()
        """,
        """
        from torch.utils.data import DataLoader
        # near-miss of the rebinding: the unshuffled binding is the one a later cell trains on
        train_loader = DataLoader(train_set, batch_size=64, shuffle=True)
        training_loop(model, train_loader)

        train_loader = DataLoader(train_set, batch_size=64, shuffle=False)  # !
        validate(model, train_loader)
        training_loop(NetWidth(), train_loader)

        def training_loop(model, train_loader):
            for x, y in train_loader:
                opt.zero_grad()
                loss_fn(model(x), y).backward()
                opt.step()

        def validate(model, train_loader):
            for name, loader in [("train", train_loader)]:
                print(name, sum(model(x).sum() for x, _ in loader))
        """,
        """
        import numpy as np
        import torch
        from torch.utils.data import DataLoader, Dataset
        # near-miss: random augmentation, but the index picks the sample
        class Augmented(Dataset):
            def __init__(self, images, labels):
                self.images, self.labels = images, labels
            def __len__(self):
                return len(self.images)
            def __getitem__(self, idx):
                rng = np.random.default_rng(idx)
                img = self.images[idx] + rng.normal(scale=0.1, size=self.images[idx].shape)
                return torch.as_tensor(img), self.labels[idx]
        train_loader = DataLoader(Augmented(X, y), batch_size=64)  # !
        """,
        """
        import torch
        from torch.utils.data import DataLoader
        loader = DataLoader(train_set, batch_size=64)  # !
        for step in range(1000):
            x, y = next(iter(loader))  # the same first batch every step
            opt.zero_grad()
            loss_fn(model(x), y).backward()
            opt.step()
        """,
        """
        from torch.utils.data import DataLoader
        train_loader = DataLoader(train_set, batch_size=64)  # !
        """,
        """
        from torch.utils.data import DataLoader
        def make_loader(dataset, batch_size, workers=4):
            return DataLoader(dataset, batch_size=batch_size, num_workers=workers)  # !

        train_loader = make_loader(train_ds, 128)
        val_loader = make_loader(val_ds, 256)
        """,
        """
        import torch
        loader = torch.utils.data.DataLoader(TensorDataset(X, y), batch_size=32, shuffle=False)  # !
        for x, y in loader:
            opt.zero_grad()
            loss_fn(model(x), y).backward()
            opt.step()
        """,
        """
        from torch.utils.data import DataLoader
        class Data:
            def train_dataloader(self):
                return DataLoader(self.ds, batch_size=self.bs, num_workers=4)  # !
        """,
    )

    def check(self, ctx) -> Iterator[Report]:
        if ctx.is_test_file:
            return
        for call in ctx.facts.calls:
            if call.qualname not in DATALOADERS or call.has_star_args:
                continue
            if call.arg(SAMPLER_POS, "sampler") is not None or call.arg(BATCH_SAMPLER_POS, "batch_sampler") is not None:
                continue
            shuffle = call.arg(SHUFFLE_POS, "shuffle")
            if shuffle is not None and not (isinstance(shuffle, cst.Name) and shuffle.value == "False"):
                continue  # shuffle=True, or a variable we do not second-guess
            dataset = call.arg(0, "dataset")
            if dataset is None or self._iterable(ctx, dataset, call) or self._unknown_or_synthetic(ctx, dataset, call):
                continue
            if draws_fresh_samples(ctx, dataset, call):
                continue  # every item is a fresh random draw: any order is already random
            if self._orders_itself(ctx, dataset, call):
                continue  # an IterableDataset, or a dataset that reshuffles its own samples
            if not self._is_training(ctx, call, dataset):
                continue
            yield Report(
                call.node,
                "this DataLoader feeds training but does not shuffle: every epoch sees the same "
                "batch order, which biases SGD (badly so for data stored by class or time). "
                "Pass `shuffle=True` (or a sampler).",
                self._fix(call, shuffle),
            )

    @staticmethod
    def _iterable(ctx, dataset, call) -> bool:
        if "iter" in (dotted(dataset) or "").lower():
            return True  # `train_iter`, `train_iterator`: torchtext-style iterable datasets
        for value, _ in ctx.constructions(dataset, call):
            if isinstance(value, cst.Call) and (ctx.qualname(value.func) or "").startswith("torchtext."):
                return True
            text = ctx.module.code_for_node(value)
            if ITERABLE_DATASET.search(text):
                return True
            if isinstance(value, cst.Call) and isinstance(value.func, cst.Name):
                cls = ctx.class_named(value.func.value)
                if cls is not None and any(ITERABLE_DATASET.search(b) for b in ctx.base_qualnames(cls) + [dotted(b) or "" for b in cls.bases]):
                    return True
        return False

    @classmethod
    def _orders_itself(cls, ctx, dataset, call) -> bool:
        """The dataset orders its own samples: the training code reshuffles it through the
        loader every epoch (`train_dl.dataset.shuffleSamples()`), or every value of `dataset`
        is an instance of a class -- of this module, or of another project module (its
        summary, analysis/project.py) -- that is an `IterableDataset` or reshuffles its own
        samples (analysis/datasets.py)."""
        loader_names = {dotted(t) for a in ctx.facts.assigns if a.value is call.node for t in a.targets} - {None}
        for c in ctx.facts.calls:
            recv = c.receiver
            if (
                c.attr and SHUFFLE_METHOD.search(c.attr) and isinstance(recv, cst.Attribute)
                and recv.attr.value == "dataset" and (dotted(recv.value) or "").rsplit(".", 1)[-1] in {n.rsplit(".", 1)[-1] for n in loader_names}
            ):
                return True
        cands = ctx.constructions(dataset, call)
        if not cands:
            return False
        return all(isinstance(value, cst.Call) and cls._class_orders_itself(ctx, value.func, 0) for value, _ in cands)

    @classmethod
    def _class_orders_itself(cls, ctx, func, depth) -> bool:
        local = ctx.class_named(func.value) if isinstance(func, cst.Name) else None
        if local is not None:
            if is_iterable_dataset_class(ctx, local) or shuffles_itself(ctx, local):
                return True
            # `class Benchmark(TrainingDataset)` over a class of another project module
            return depth < 3 and any(cls._class_orders_itself(ctx, b, depth + 1) for b in local.bases)
        found = constructor_summary(ctx, func)
        return found is not None and bool(found[0].get("iterable_dataset") or found[0].get("shuffles_itself"))

    @staticmethod
    def _unknown_or_synthetic(ctx, dataset, call) -> bool:
        if isinstance(dataset, cst.Name):
            bound = ctx.reaching(dataset.value, call) or dataset.value in ctx.imports.alias or any(
                dataset.value in f.params for f in ctx.enclosing_function_chain(call.function)
            )
            if not bound and dataset.value in ctx.facts.lambda_params:
                return True  # a lambda's parameter: cannot tell what it holds
        if SYNTHETIC_DATASET.match((dotted(dataset) or "").rsplit(".", 1)[-1]):
            return True  # `self.random_train`, `dummy_ds`
        for value, _ in ctx.constructions(dataset, call):
            if isinstance(value, cst.Call) and SYNTHETIC_DATASET.match((dotted(value.func) or "").rsplit(".", 1)[-1]):
                return True
        return False

    @classmethod
    def _is_training(cls, ctx, call, dataset) -> bool:
        loader_names = [dotted(t) or "" for a in ctx.facts.assigns if a.value is call.node for t in a.targets]
        names = [dotted(dataset) or "", *loader_names]
        if call.function is not None:
            names.append(call.function.name)
        if any(NOT_TRAIN_NAME.search(n) for n in names if n):
            return False
        # `machine.test_loader = clean_loader`: a loader whose own names say nothing, handed
        # over under evaluation names only (the `train` in its function's name is not its own).
        aliases = {dotted(t) or "" for a in ctx.facts.assigns if a.value is not None and (dotted(a.value) or "") in set(loader_names) - {""} for t in a.targets}
        own = [dotted(dataset) or "", *loader_names]
        if aliases and all(NOT_TRAIN_NAME.search(n.rsplit(".", 1)[-1]) for n in aliases) and not any(TRAIN_NAME.search(n) for n in own if n):
            return False
        loops = cls._loops_over(ctx, call.function, loader_names)
        if any(TRAIN_NAME.search(n) for n in names if n):
            # A `train*` loader only ever read where nothing trains -- loops computing the
            # mean/std of the training set, one batch peeked at to look at, an accuracy
            # function under no_grad -- and not handed on: order does not matter.
            return not cls._read_without_training(ctx, loader_names, call)
        if any(cls._trains(ctx, l) for l in loops):
            return True
        return cls._built_for_training(ctx, call)

    @staticmethod
    def _trains(ctx, loop) -> bool:
        return any(e.kind == BACKWARD for e in ctx.training.all_events(loop))

    @staticmethod
    def _loops_over(ctx, function, names):
        names = [n for n in names if n]
        out = []
        for loop in ctx.loops:
            if loop.iter is None or loop.function is not function:
                continue
            it = ctx.module.code_for_node(loop.iter)
            if any(re.search(rf"\b{re.escape(n)}\b", it) for n in names):
                out.append(loop)
        return out

    @classmethod
    def _read_without_training(cls, ctx, names, call=None) -> bool:
        """Every use of the loader reads it where nothing trains: loops that do not train,
        `next(iter(loader))` or `it = iter(loader)` ... `next(it)` outside a training loop
        (inside one, an unshuffled loader hands every step the same first batch),
        `len(loader)`, or a same-module function whose loops over it do not train. There
        must be some use; anything else (a trainer, a return) may train. Only the uses this
        binding reaches count: a notebook rebinds `train_loader` to an unshuffled loader for
        an accuracy pass after training on a shuffled one."""
        names = {n for n in names if n}
        binding = [a for a in ctx.facts.assigns if call is not None and a.value is call.node]

        def reached(function, order) -> bool:
            """A use at (function, order) of a plain-name loader sees this binding."""
            for n in names:
                if "." in n:
                    return True  # `self.loader`: not followed per binding
                sites = ctx.reaching(n, _At(function, order))
                if sites and not any(s is b for s in sites for b in binding):
                    return False
                if not sites and any(n in f.params for f in ctx.enclosing_function_chain(function)):
                    return False  # a parameter of that name: reached through calls, judged there
            return True

        if not names or any((dotted(r.value) or "") in names for r in ctx.facts.returns if r.value is not None):
            return False
        iterators = {t.value for a in ctx.facts.assigns if a.value is not None and _iter_of(a.value, names)
                     for t in a.targets if isinstance(t, cst.Name)}
        nested = {id(c.node.args[0].value) for c in ctx.facts.calls
                  if isinstance(c.node.func, cst.Name) and c.node.func.value == "next" and c.node.args}
        used = False
        in_loop_headers = {id(n) for loop in ctx.loops if loop.iter is not None for n in walk(loop.iter)}
        for c in ctx.facts.calls:
            args = [a.value for a in c.node.args]
            if not any((dotted(v) or "") in names or _iter_of(v, names) or (dotted(v) or "") in iterators for v in args):
                continue
            if binding and not reached(c.function, c.order):
                continue
            used = True
            if id(c.node) in in_loop_headers and ctx.callee(c) is None:
                continue  # `for i, b in enumerate(loader)`: the loop is judged below
            func = c.node.func
            name = func.value if isinstance(func, cst.Name) else None
            if name == "len":
                continue
            if name == "iter" and (id(c.node) in nested or any(a.value is c.node for a in ctx.facts.assigns)):
                continue  # `next(iter(loader))`, `it = iter(loader)`: judged by the `next`
            if name == "next" and args and (_iter_of(args[0], names) or (dotted(args[0]) or "") in iterators):
                if any(cls._trains(ctx, loop) for loop in c.loops):
                    return False
                continue
            if not cls._callee_reads_without_training(ctx, c, names):
                return False
        for loop in ctx.loops:
            if loop.iter is None:
                continue
            if (dotted(loop.iter) or "") in iterators:
                return False  # `for batch in it`: a loop over the iterator
            it = ctx.module.code_for_node(loop.iter)
            if any(re.search(rf"\b{re.escape(n)}\b", it) for n in names):
                if binding and not reached(loop.function, loop.start):
                    continue
                if cls._trains(ctx, loop):
                    return False  # a loop anywhere in the module trains on it
                used = True
        return used

    @classmethod
    def _callee_reads_without_training(cls, ctx, call, names) -> bool:
        """`accuracy(acc_train_loader)`: a same-module function that only loops over the
        parameter it gets the loader in, and none of those loops trains."""
        fn = ctx.callee(call)
        if fn is None:
            return False
        params = [p for p in fn.params if p not in ("self", "cls")]
        bound = set()
        for i, a in enumerate(call.node.args):
            if (dotted(a.value) or "") not in names:
                continue
            if a.keyword is not None:
                bound.add(a.keyword.value)
            elif a.star or i >= len(params):
                return False
            else:
                bound.add(params[i])
        if not bound:
            return False
        for c in ctx.calls_in(fn):
            if any((dotted(a.value) or "") in bound for a in c.node.args) and not (isinstance(c.node.func, cst.Name) and c.node.func.value == "len"):
                return False  # handed on again
        loops = [l for l in ctx.loops if l.function is fn and l.iter is not None and (dotted(l.iter) or "") in bound]
        if loops:
            return not any(cls._trains(ctx, l) for l in loops)
        # `for name, loader in [("train", train_loader), ("val", val_loader)]`: the loader is
        # read by a loop we do not follow, but nothing in the function trains at all.
        listed = [
            l for l in ctx.loops
            if l.function is fn and l.iter is not None and any(isinstance(n, cst.Name) and n.value in bound for n in walk(l.iter))
        ]
        return bool(listed) and not any(e.kind in (BACKWARD, STEP) for e in ctx.training.function_events(fn))

    @classmethod
    def _built_for_training(cls, ctx, call) -> bool:
        """`return DataLoader(ds, ...)` in a helper that callers use for training data."""
        fn = call.function
        if fn is None or not any(r.value is call.node for r in ctx.returns_of(fn)):
            return False
        for c in ctx.callers(fn):
            names = [dotted(t) or "" for a in ctx.facts.assigns if a.value is c.node for t in a.targets]
            names += [dotted(a.value) or "" for a in c.node.args]
            if any(NOT_TRAIN_NAME.search(n) for n in names if n):
                continue
            if any(TRAIN_NAME.search(n) for n in names if n):
                return True
        return False

    @staticmethod
    def _fix(call, shuffle) -> Optional[Replacement]:
        node = call.node
        if shuffle is not None:
            args = [
                a.with_changes(value=cst.Name("True")) if a.value is shuffle else a for a in node.args
            ]
            return Replacement(node, node.with_changes(args=args), "safe", "set `shuffle=True`")
        args = list(node.args)
        last = args[-1]
        comma = last.comma if last.comma is not cst.MaybeSentinel.DEFAULT else cst.MaybeSentinel.DEFAULT
        new_arg = cst.Arg(
            value=cst.Name("True"),
            keyword=cst.Name("shuffle"),
            equal=cst.AssignEqual(cst.SimpleWhitespace(""), cst.SimpleWhitespace("")),
            comma=comma,
        )
        sep = cst.Comma(whitespace_after=cst.SimpleWhitespace(" "))
        if isinstance(last.comma, cst.Comma) and len(args) >= 2 and isinstance(args[-2].comma, cst.Comma):
            # A trailing comma, usually one argument per line: the old last argument keeps its
            # comment and gets the indentation of the arguments before; the new one closes.
            ws, prev_ws = last.comma.whitespace_after, args[-2].comma.whitespace_after
            if isinstance(ws, cst.ParenthesizedWhitespace) and isinstance(prev_ws, cst.ParenthesizedWhitespace):
                sep = last.comma.with_changes(whitespace_after=ws.with_changes(last_line=prev_ws.last_line))
                new_arg = new_arg.with_changes(
                    comma=cst.Comma(whitespace_after=cst.ParenthesizedWhitespace(indent=ws.indent, last_line=ws.last_line))
                )
            else:
                sep = args[-2].comma
        args[-1] = last.with_changes(comma=sep)
        return Replacement(node, node.with_changes(args=[*args, new_arg]), "safe", "add `shuffle=True`")


RULE = UnshuffledTrainLoader
