from __future__ import annotations

import re
from typing import Iterator, List, Optional, Tuple

import libcst as cst

from trainlint.analysis.names import dotted
from trainlint.analysis.torch_api import DATALOADERS
from trainlint.analysis.training import BACKWARD
from trainlint.rules.base import Report, Rule

MIN_BATCH = 8
BATCHNORM = re.compile(r"^torch\.nn\.(?:modules\.batchnorm\.)?(?:Lazy)?BatchNorm[123]d$")
TRAIN_NAME = re.compile(r"train", re.I)
NOT_TRAIN_NAME = re.compile(
    r"(^|_)(val|valid|validation|test|testing|eval|evaluation|dev|holdout|calib|calibration|predict|prediction|infer|inference|demo|vis|viz|sample|samples)(_|$|loader|dl|data|set|ds|\d)"
    r"|untrain|pretrained",
    re.I,
)
# Batch statistics taken over several devices (SyncBatchNorm) or switched off on purpose:
# a tiny per-device batch is then the usual, deliberate set-up.
BN_HANDLED = re.compile(r"SyncBatchNorm|convert_sync_batchnorm|freeze_?bn|frozen_?bn|FrozenBatchNorm|track_running_stats\s*=\s*False", re.I)


class TinyBatchWithBatchNorm(Rule):
    """## What it does
    Finds a training `DataLoader` with a literal `batch_size` below 8 in a file whose model
    uses BatchNorm (`nn.BatchNorm1d/2d/3d`, in a model class or an `nn.Sequential`).

    ## Why is this bad?
    In training mode BatchNorm normalises each batch with that batch's own mean and variance.
    From two or four samples those statistics are mostly noise: training is unstable, the
    running averages used at evaluation time do not match what the network learned with, and
    with `batch_size=1` a `BatchNorm1d` layer fails outright ("Expected more than 1 value per
    channel"). Validation and inference loaders are not reported (BatchNorm uses its running
    statistics there), nor are files that use `SyncBatchNorm` or freeze their BatchNorm layers.

    ## Example
    ```python
    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.ReLU())
    train_loader = DataLoader(train_set, batch_size=2, shuffle=True)
    ```

    ## Use instead
    ```python
    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.ReLU())
    train_loader = DataLoader(train_set, batch_size=32, shuffle=True)
    # or, when memory forces tiny batches: nn.GroupNorm(4, 16) instead of BatchNorm
    ```
    """

    code = "TL403"
    name = "tiny-batch-with-batchnorm"
    severity = "info"

    VALID = (
        """
        import torch.nn as nn
        from torch.utils.data import DataLoader
        model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.ReLU())
        train_loader = DataLoader(train_set, batch_size=64, shuffle=True)
        val_loader = DataLoader(val_set, batch_size=1)
        """,
        """
        import torch.nn as nn
        from torch.utils.data import DataLoader
        # GroupNorm does not depend on the batch: tiny batches are fine
        model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.GroupNorm(4, 16), nn.ReLU())
        train_loader = DataLoader(train_set, batch_size=2, shuffle=True)
        """,
        """
        import torch.nn as nn
        from torch.utils.data import DataLoader
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.bn = nn.BatchNorm1d(32)
        test_loader = DataLoader(test_set, batch_size=1, shuffle=False)
        for x, y in test_loader:
            pred = model(x)
        """,
        """
        import torch.nn as nn
        from torch.utils.data import DataLoader
        # the batch size comes from the command line: cannot tell
        model = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8))
        train_loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True)
        """,
        """
        import torch.nn as nn
        from torch.utils.data import DataLoader
        # per-GPU batches of 4, statistics synchronised across GPUs
        model = nn.SyncBatchNorm.convert_sync_batchnorm(nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8)))
        train_loader = DataLoader(train_set, batch_size=4, sampler=sampler)
        """,
        """
        import torch.nn as nn
        from torch.utils.data import DataLoader
        # every item is already a batch: the collate function unwraps it
        model = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8))
        train_loader = DataLoader(train_batches, batch_size=1, shuffle=True, collate_fn=lambda b: b[0])
        """,
        """
        from torch.utils.data import DataLoader
        # no BatchNorm in this file
        train_loader = DataLoader(train_set, batch_size=1, shuffle=True)
        """,
    )
    INVALID = (
        """
        import torch.nn as nn
        from torch.utils.data import DataLoader
        model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.ReLU())
        train_loader = DataLoader(train_set, batch_size=2, shuffle=True)  # !
        """,
        """
        import torch
        from torch import nn
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(10, 32)
                self.bn = nn.BatchNorm1d(32)
        BATCH = 1
        loader = torch.utils.data.DataLoader(ds, BATCH, shuffle=True)  # !
        for x, y in loader:
            loss = crit(net(x), y)
            loss.backward()
            opt.step()
        """,
        """
        import torch.nn as nn
        from torch.utils.data import DataLoader
        class Block(nn.Module):
            def __init__(self, c):
                super().__init__()
                self.norm = nn.BatchNorm3d(c)
        class Data:
            def train_dataloader(self):
                return DataLoader(self.train_ds, batch_size=4, num_workers=4)  # !
        """,
    )

    def check(self, ctx) -> Iterator[Report]:
        if ctx.is_test_file or BN_HANDLED.search(ctx.text):
            return
        bn = next((c for c in ctx.facts.calls if c.qualname and BATCHNORM.match(c.qualname)), None)
        if bn is None:
            return
        bn_name = ctx.module.code_for_node(bn.func)
        for call in ctx.facts.calls:
            if call.qualname not in DATALOADERS or call.has_star_args:
                continue
            arg = call.arg(1, "batch_size")
            if arg is None:
                continue
            size = self._literal_size(ctx, arg, call)
            if size is None or not 0 < size < MIN_BATCH:
                continue
            if size == 1 and call.arg(6, "collate_fn") is not None:
                continue  # one pre-batched item per step, unwrapped by the collate function
            if not self._is_training(ctx, call):
                continue
            yield Report(
                arg,
                f"training DataLoader with batch_size={size} while the model uses BatchNorm "
                f"(`{bn_name}`): batch statistics of {size} sample{'s' if size > 1 else ''} are noise "
                f"(and a batch of 1 fails in training). Use batches of at least {MIN_BATCH}-16, or "
                f"GroupNorm/LayerNorm, or freeze the BatchNorm layers.",
            )

    @staticmethod
    def _literal_size(ctx, arg, call) -> Optional[int]:
        """The integer `arg` always is, or None."""
        values: List[int] = []
        for value, _ in ctx.resolve(arg, call):
            if not isinstance(value, cst.Integer):
                return None
            values.append(int(value.evaluated_value))
        if not values or len(set(values)) != 1:
            return None
        return values[0]

    @staticmethod
    def _is_training(ctx, call) -> bool:
        dataset = call.arg(0, "dataset")
        names = [dotted(dataset) or "" if dataset is not None else ""]
        loader_names = []
        for a in ctx.facts.assigns:
            if a.value is call.node:
                loader_names.extend(dotted(t) or "" for t in a.targets)
        fn_name = call.function.name if call.function is not None else ""
        names += loader_names + [fn_name]
        if any(NOT_TRAIN_NAME.search(n) for n in names if n):
            return False
        if any(TRAIN_NAME.search(n) for n in names if n):
            return True
        shuffle = call.arg(2, "shuffle")
        if isinstance(shuffle, cst.Name) and shuffle.value == "True":
            return True
        # Iterated by a loop that trains?
        tr = ctx.training
        for loop in ctx.loops:
            if loop.iter is None or loop.function is not call.function:
                continue
            it = ctx.module.code_for_node(loop.iter)
            if any(n and re.search(rf"\b{re.escape(n)}\b", it) for n in loader_names):
                if any(e.kind == BACKWARD for e in tr.all_events(loop)):
                    return True
        return False


RULE = TinyBatchWithBatchNorm
