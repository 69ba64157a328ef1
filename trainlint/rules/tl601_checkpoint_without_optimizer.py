from __future__ import annotations

import re
from typing import Iterator, List, Optional, Tuple

import libcst as cst

from trainlint.analysis.checkpoints import holds_optimizer_state
from trainlint.analysis.containers import dict_entries as _entries
from trainlint.analysis.facts import Site, walk
from trainlint.analysis.names import dotted
from trainlint.analysis.training import BACKWARD, STEP
from trainlint.analysis.torch_api import MODEL_CONSTRUCTOR_PREFIXES, is_optimizer_qualname, looks_like_model_name
from trainlint.rules.base import Report, Rule

TORCH_SAVE = {"torch.save", "torch.serialization.save"}
TORCH_LOAD = {"torch.load", "torch.serialization.load"}
RESUME_NAME = re.compile(r"resum|restore|load_checkpoint|load_ckpt", re.I)
MODEL_KEY = re.compile(r"^(model|net|network|state_dict|model_state|model_state_dict|model_dict|net_state_dict|model_weights|weights)$", re.I)
PROGRESS_KEY = re.compile(r"epoch|step|iter", re.I)
OPTIMIZER_TEXT = re.compile(r"optim|(^|[^a-z])opt([^a-z]|$)", re.I)
SCHEDULER_TEXT = re.compile(r"sched|lr_s", re.I)
MUTATING_METHODS = {"update", "setdefault", "__setitem__"}
MAX_DEPTH = 6


def _runs_within(ctx, inner, fn, seen: set) -> bool:
    """Code of function `inner` may run while `fn` is active: `inner` is `fn`, is nested in
    it, or is a helper called (through same-module helpers) from it -- or a call cannot be
    followed (then it may)."""
    scope = inner
    while scope is not None:
        if scope is fn:
            return True
        scope = scope.parent
    if inner is None or id(inner) in seen:
        return False
    if len(seen) > 8:
        return True  # too deep to follow: it may
    seen.add(id(inner))
    return any(_runs_within(ctx, c.function, fn, seen) for c in ctx.callers(inner))


def _is_none(node: cst.BaseExpression) -> bool:
    return isinstance(node, cst.Name) and node.value == "None"


class CheckpointWithoutOptimizer(Rule):
    """## What it does
    Finds a training script (it calls `backward()` or builds an optimizer) that saves with
    `torch.save` a resumable checkpoint dict — model state plus the epoch or step reached —
    without the optimizer's state, or without the scheduler's when the script creates an
    `lr_scheduler`.

    ## Why is this bad?
    Resuming from such a checkpoint restarts Adam's moment estimates (or SGD's momentum)
    from zero and the learning-rate schedule from its first step: the first steps after a
    resume are wrong-sized updates, the loss jumps, and the run is not reproducible. Saving
    just `model.state_dict()` (no dict) for export is not reported, nor is a dict filled in
    later (`ckpt["optimizer"] = ...`: keys set one by one count as the dict's), one with `**`
    entries or one completed by `update(...)` or a helper. A scheduler the script puts back
    at the saved position (`scheduler.last_epoch = start_epoch - 1`, `last_epoch=` when it is
    built, or a loop that only steps it up to the saved epoch) needs no saved state; a dict
    that sets `"optimizer": None` on purpose in a script with no way to resume (no
    `torch.load`/`load_state_dict`/resume code) is a snapshot, not a resume point.

    ## Example
    ```python
    torch.save({"epoch": epoch, "model": model.state_dict()}, "ckpt.pt")
    ```

    ## Use instead
    ```python
    torch.save({"epoch": epoch, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, "ckpt.pt")
    ```
    """

    code = "TL601"
    name = "checkpoint-without-optimizer"
    severity = "info"

    VALID = (
        """
        import torch
        import torch.optim as optim
        # the optimizer is rebuilt by every call of train(): no state outlives an epoch
        net = Net()
        def train(epoch):
            optimizer = optim.SGD(net.parameters(), lr=lr_at(epoch), momentum=0.9)
            for x, y in loader:
                optimizer.zero_grad()
                loss_fn(net(x), y).backward()
                optimizer.step()
        def save(epoch):
            torch.save({"net": net.state_dict(), "epoch": epoch}, "ckpt.t7")
        for epoch in range(200):
            train(epoch)
            save(epoch)
        """,
        """
        import torch
        # each optimizer's state saved under its variable's name
        optG = torch.optim.Adam(netG.parameters())
        optD = torch.optim.Adam(netD.parameters())
        for it in range(1000):
            netD(x).mean().backward()
            optD.step()
            torch.save({"G": netG.state_dict(), "D": netD.state_dict(), "optG": optG.state_dict(),
                        "optD": optD.state_dict(), "iter": it}, "gan.pt")
        """,
        """
        import torch
        optimizer = torch.optim.Adam(model.parameters())
        for epoch in range(10):
            train(model, optimizer)
            torch.save({"epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict()}, "ckpt.pt")
        """,
        """
        import torch
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        loss.backward()
        # export for inference: not a resumable checkpoint
        torch.save(model.state_dict(), "model.pt")
        """,
        """
        import torch
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        ckpt = {"epoch": epoch, "model": model.state_dict()}
        ckpt["optimizer"] = optimizer.state_dict()
        torch.save(ckpt, "ckpt.pt")
        """,
        """
        import torch
        # not a training script: converting weights
        sd = torch.load("old.pt", weights_only=True)
        torch.save({"epoch": 0, "state_dict": sd}, "new.pt")
        """,
        """
        import torch
        from torch.optim.lr_scheduler import StepLR
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        scheduler = StepLR(opt, 30)
        def save_checkpoint(state, filename="checkpoint.pth.tar"):
            torch.save(state, filename)
        for epoch in range(90):
            save_checkpoint({"epoch": epoch + 1, "state_dict": model.state_dict(),
                             "optimizer": opt.state_dict(), "scheduler": scheduler.state_dict()})
        """,
        """
        import torch
        opt = torch.optim.AdamW(model.parameters())
        # model and config, for sampling: no training progress in it
        torch.save({"model": model.state_dict(), "config": config}, "final.pt")
        """,
        """
        import torch
        optimizer = torch.optim.Adam(model.parameters())
        for epoch in range(10):
            train(model, optimizer)
            torch.save({"epoch": epoch, "model": model.state_dict()}, "model.pt")
            torch.save(optimizer.state_dict(), "optimizer.pt")
            if is_best:
                torch.save({"epoch": epoch, "model": model.state_dict()}, "best.pt")
        """,
        """
        import torch
        # built key by key, then completed by an update we cannot read
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)
        for epoch in range(10):
            train(model, optimizer)
            checkpoint = {}
            checkpoint["model"] = model.state_dict()
            checkpoint["epoch"] = epoch
            checkpoint.update(extra_state(optimizer))
            torch.save(checkpoint, f"ckpt_{epoch}.pt")
        """,
        """
        import torch
        # the schedule is put back at the saved epoch, so its state need not be saved
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, [30, 60])
        start_epoch = 0
        if args.resume:
            ckpt = torch.load(args.resume, weights_only=True)
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            start_epoch = ckpt["epoch"] + 1
            scheduler.last_epoch = start_epoch - 1
        for epoch in range(start_epoch, 90):
            train(model, optimizer)
            scheduler.step()
            torch.save({"epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict()}, "ckpt.pt")
        """,
        """
        import torch
        # fast-forwarding the schedule to the saved epoch rebuilds it
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 30)
        ckpt = torch.load("ckpt.pt", weights_only=True)
        optimizer.load_state_dict(ckpt["optimizer"])
        for _ in range(ckpt["epoch"]):
            scheduler.step()
        for epoch in range(ckpt["epoch"], 90):
            train(model, optimizer)
            scheduler.step()
            torch.save({"epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict()}, "ckpt.pt")
        """,
        """
        import torch
        # no way to resume in this script: `"optimizer": None` marks a snapshot on purpose
        optimizer = torch.optim.Adam(model.parameters())
        for epoch in range(10):
            train(model, optimizer)
            torch.save({"epoch": epoch, "model": model.state_dict(), "optimizer": None}, "snapshot.pt")
        """,
    )
    INVALID = (
        """
        import torch
        import torch.optim as optim
        # built in main(), saved by a helper main() calls: the optimizer is alive at the save
        def save_checkpoint(state, filename="checkpoint.th"):
            torch.save(state, filename)
        def main():
            model = Net()
            optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
            for epoch in range(200):
                for x, y in loader:
                    optimizer.zero_grad()
                    loss_fn(model(x), y).backward()
                    optimizer.step()
                save_checkpoint({"epoch": epoch + 1, "state_dict": model.state_dict()})  # !
        main()
        """,
        """
        import torch
        import torch.optim as optim
        # built per call, but saved while it is alive: its momentum is lost on resume
        net = Net()
        def train(epochs):
            optimizer = optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
            for epoch in range(epochs):
                for x, y in loader:
                    optimizer.zero_grad()
                    loss_fn(net(x), y).backward()
                    optimizer.step()
                torch.save({"net": net.state_dict(), "epoch": epoch}, "ckpt.t7")  # !
        train(200)
        """,
        """
        import torch
        # two networks' states, neither optimizer's
        optG = torch.optim.Adam(netG.parameters())
        optD = torch.optim.Adam(netD.parameters())
        for it in range(1000):
            netD(x).mean().backward()
            optD.step()
            torch.save({"G": netG.state_dict(), "D": netD.state_dict(), "iter": it}, "gan.pt")  # !
        """,
        """
        import torch
        # the schedule is restored from the epoch, but the optimizer's moments are not saved
        optimizer = torch.optim.Adam(model.parameters())
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 30)
        if args.resume:
            ckpt = torch.load(args.resume, weights_only=True)
            model.load_state_dict(ckpt["model"])
            scheduler.last_epoch = ckpt["epoch"]
        for epoch in range(90):
            train(model, optimizer)
            scheduler.step()
            torch.save({"epoch": epoch, "model": model.state_dict()}, "ckpt.pt")  # !
        """,
        """
        import torch
        # `"optimizer": None` in a script that resumes from the checkpoint: Adam restarts
        optimizer = torch.optim.Adam(model.parameters())
        start = 0
        if args.resume:
            ckpt = torch.load(args.resume, weights_only=True)
            model.load_state_dict(ckpt["model"])
            start = ckpt["epoch"]
        for epoch in range(start, 10):
            train(model, optimizer)
            torch.save({"epoch": epoch, "model": model.state_dict(), "optimizer": None}, "ckpt.pt")  # !
        """,
        """
        import torch
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        for epoch in range(100):
            train_one_epoch(model, optimizer)
            torch.save({"epoch": epoch, "model_state_dict": model.state_dict()}, f"ckpt_{epoch}.pt")  # !
        """,
        """
        import torch
        def save_checkpoint(state, path):
            torch.save(state, path)
        def train(model, optimizer, loader):
            for step, (x, y) in enumerate(loader):
                loss = model(x, y)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
                if step % 1000 == 0:
                    state = {"step": step, "state_dict": model.state_dict()}  # !
                    save_checkpoint(state, "last.pt")
        """,
        """
        import torch
        from torch.optim.lr_scheduler import CosineAnnealingLR
        optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
        scheduler = CosineAnnealingLR(optimizer, T_max=200)
        for epoch in range(200):
            train(epoch)
            scheduler.step()
            torch.save({"net": net.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch}, "ckpt.pth")  # !
        """,
        """
        import torch
        # built key by key: the keys set one at a time are the checkpoint's
        optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=15)
        for epoch in range(15):
            train(model, optimizer)
            sched.step()
            ckpt = {}
            ckpt["model"] = model.state_dict()
            ckpt["epoch"] = epoch
            torch.save(ckpt, "last.pt")  # !
        """,
    )

    def check(self, ctx) -> Iterator[Report]:
        if ctx.is_test_file:
            return
        saves = [c for c in ctx.facts.calls if c.qualname in TORCH_SAVE]
        if not saves or not self._is_training_script(ctx):
            return
        scheduler = self._has_scheduler(ctx)
        # What every torch.save call in the file writes: an optimizer (or scheduler) saved in a
        # file of its own, or in another checkpoint dict, means the script does keep its state
        # (a dict without it is then a "best model" snapshot, not the resume point).
        self._folded = {}
        saved_texts = []
        optimizer_entry = False  # an entry the shared checkpoint facts know holds optimizer state
        for call in saves:
            obj = call.arg(0, "obj")
            if obj is None:
                continue
            if _entries(obj) is None:  # a dict display is read entry by entry below
                saved_texts.append(ctx.module.code_for_node(obj))
            for node, site in self._safe_dicts(ctx, obj, call) or []:
                entries = _entries(node)
                if entries is None:
                    saved_texts.append(ctx.module.code_for_node(node))
                    entries = []
                for k, v in [*entries, *self._folded.get(id(node), ((), None))[0]]:
                    if not _is_none(v):  # `"optimizer": None` saves no optimizer
                        saved_texts.append((k or "") + " " + ctx.module.code_for_node(v))
                        optimizer_entry = optimizer_entry or holds_optimizer_state(ctx, k, v, site)
        optimizer_saved = optimizer_entry or any(OPTIMIZER_TEXT.search(t) for t in saved_texts)
        scheduler_saved = any(SCHEDULER_TEXT.search(t) for t in saved_texts)
        seen = set()
        for call in saves:
            obj = call.arg(0, "obj")
            if obj is None:
                continue
            dicts = self._safe_dicts(ctx, obj, call)
            if not dicts:
                continue
            for node, site in dicts:
                if id(node) in seen:
                    continue
                seen.add(id(node))
                entries = _entries(node)
                report_at = node
                if entries is not None and id(node) in self._folded:
                    extra, save_site = self._folded[id(node)]
                    entries = entries + extra
                    report_at = save_site.node  # the dict is complete where it is saved
                if entries is None or not self._has_model_state(ctx, entries, site):
                    continue
                if not any(k is not None and PROGRESS_KEY.search(k) for k, _ in entries):
                    continue  # model state without training progress: an export, not a resume point
                if any(_is_none(v) for k, v in entries if k is not None and OPTIMIZER_TEXT.search(k)):
                    # `"optimizer": None`, written on purpose: with no way back in, this is a
                    # snapshot, not a resume point (with one, a missing optimizer it is).
                    if not self._has_resume_path(ctx):
                        continue
                    entries = [(k, v) for k, v in entries if not (k is not None and OPTIMIZER_TEXT.search(k) and _is_none(v))]
                texts = [(k or "") + " " + ctx.module.code_for_node(v) for k, v in entries]
                if not any(OPTIMIZER_TEXT.search(t) for t in texts) and not any(holds_optimizer_state(ctx, k, v, site) for k, v in entries):
                    if optimizer_saved:
                        continue
                    if self._stateless_optimizers(ctx) or self._optimizers_local_to_a_call(ctx, saves):
                        if scheduler and not scheduler_saved:
                            yield Report(
                                report_at,
                                "this checkpoint holds the model state and training progress but not the "
                                "learning-rate scheduler's state: a resumed run restarts the schedule from its "
                                "first step. Save `scheduler.state_dict()` too (and load it on resume).",
                            )
                        continue
                    missing = "the optimizer's state" + (" or the scheduler's" if scheduler and not scheduler_saved else "")
                    what = "`optimizer.state_dict()`" + (" and `scheduler.state_dict()`" if scheduler and not scheduler_saved else "")
                    effect = "restarts the optimizer's moments/momentum" + (" and the schedule" if scheduler and not scheduler_saved else "") + " from scratch"
                elif scheduler and not scheduler_saved:
                    missing = "the learning-rate scheduler's state"
                    what = "`scheduler.state_dict()`"
                    effect = "restarts the learning-rate schedule from its first step"
                else:
                    continue
                yield Report(
                    report_at,
                    f"this checkpoint holds the model state and training progress but not {missing}: "
                    f"a resumed run {effect}. Save {what} too (and load it on resume).",
                )

    @staticmethod
    def _is_training_script(ctx) -> bool:
        for c in ctx.facts.calls:
            if c.attr == "backward" and c.receiver is not None:
                return True
            if is_optimizer_qualname(c.qualname):
                return True
        return False

    @staticmethod
    def _stateless_optimizers(ctx) -> bool:
        """Every optimizer the file builds is plain SGD without momentum: it has no state to lose."""
        built = [c for c in ctx.facts.calls if is_optimizer_qualname(c.qualname)]
        if not built:
            return False
        for c in built:
            if c.qualname not in ("torch.optim.SGD", "torch.optim.sgd.SGD") or c.has_star_args:
                return False
            momentum = c.arg(2, "momentum")
            if momentum is not None and not (isinstance(momentum, (cst.Integer, cst.Float)) and float(momentum.evaluated_value) == 0):
                return False
        return True

    @staticmethod
    def _optimizers_local_to_a_call(ctx, saves) -> bool:
        """Every optimizer is a local variable of a function that builds it afresh on each
        call and lets it go (`def train(epoch): optimizer = optim.SGD(...)`), and every save
        is outside that function: at a save no optimizer state exists that a resumed run
        could miss (wide-resnet.pytorch rebuilds its SGD every epoch)."""
        built = [c for c in ctx.facts.calls if is_optimizer_qualname(c.qualname)]
        if not built:
            return False
        for c in built:
            fn = c.function
            if fn is None:
                return False
            holders = [a for a in ctx.facts.assigns if a.function is fn and a.value is c.node]
            if len(holders) != 1 or not all(isinstance(t, cst.Name) for t in holders[0].targets):
                return False  # stored on `self`, unpacked, or handed straight on
            names = {t.value for t in holders[0].targets}
            for r in ctx.returns_of(fn):
                if r.value is not None and any(isinstance(n, cst.Name) and n.value in names for n in walk(r.value)):
                    return False  # returned to the caller: it lives on
            if any(_runs_within(ctx, save.function, fn, set()) for save in saves):
                return False  # saved while the optimizer is alive
        return True

    @classmethod
    def _has_scheduler(cls, ctx) -> bool:
        """An lr_scheduler is built in the file, and not restarted at a saved position."""
        found = False
        for c in ctx.facts.calls:
            q = c.qualname or ""
            if q.startswith("torch.optim.lr_scheduler.") or re.match(r"^transformers\.(optimization\.)?get_\w*schedule", q):
                if c.keyword("last_epoch") is not None:
                    return False
                found = True
        return found and not cls._schedule_restored(ctx)

    @staticmethod
    def _schedule_restored(ctx) -> bool:
        """The script puts its scheduler back at the saved position without its state:
        `scheduler.last_epoch = start_epoch - 1`, or a loop that only fast-forwards it
        (`for _ in range(start_epoch): scheduler.step()`, nothing trained)."""
        for a in ctx.facts.assigns:
            if any(isinstance(t, cst.Attribute) and t.attr.value == "last_epoch" for t in a.targets):
                return True
        tr = ctx.training
        for loop in ctx.loops:
            it = loop.iter
            if not (isinstance(it, cst.Call) and dotted(it.func) == "range" and it.args):
                continue
            if all(isinstance(a.value, cst.Integer) for a in it.args):
                continue  # a fixed count: the epoch loop itself, not a replay of a saved position
            calls = ctx.calls_within(loop)
            steps = [c for c in calls if c.attr == "step" and c.receiver is not None and tr.is_scheduler(c.receiver, c)]
            if steps and len(steps) == len(calls) and not any(e.kind in (BACKWARD, STEP) for e in tr.all_events(loop)):
                return True
        return False

    @staticmethod
    def _has_resume_path(ctx) -> bool:
        """The script can load a checkpoint back: `torch.load`, `load_state_dict`, or
        something named for resuming."""
        for c in ctx.facts.calls:
            if c.qualname in TORCH_LOAD or c.attr in ("load_state_dict", "load_from_checkpoint"):
                return True
            if c.attr and RESUME_NAME.search(c.attr):
                return True
        return any(RESUME_NAME.search(n) for a in ctx.facts.assigns for t in a.targets for n in [dotted(t) or ""])

    def _safe_dicts(self, ctx, expr, at: Site):
        try:
            return self._dicts(ctx, expr, at, 0)
        except RecursionError:  # FileContext.constructions loops on `self.x = self.x.to(dev)`
            return None

    def _dicts(self, ctx, expr, at: Site, depth: int) -> Optional[List[Tuple[cst.BaseExpression, Site]]]:
        """The dict displays `expr` stands for; None when any candidate is something else."""
        if depth > MAX_DEPTH:
            return None
        if _entries(expr) is not None or isinstance(expr, cst.Dict):
            return [(expr, at)]
        if not isinstance(expr, cst.Name):
            return None
        name = expr.value
        folded: List[Tuple[Optional[str], cst.BaseExpression]] = []
        if self._mutated(ctx, name, at):
            keyed = self._keyed_assignments(ctx, name, at)
            if not keyed:
                return None
            folded = keyed
        sites = ctx.reaching(name, at)
        if folded:
            # `ckpt = {}; ckpt["model"] = ...; ckpt["epoch"] = ...`: the keys set one by one
            # belong to the dict display the name is bound to (only one, in this scope).
            if len(sites) != 1 or sites[0].op != "=" or sites[0].function is not at.function or _entries(sites[0].value) is None:
                return None
            node = sites[0].value
            self._folded[id(node)] = (folded, at)
            return [(node, sites[0])]
        out: List[Tuple[cst.BaseExpression, Site]] = []
        if not sites:
            fn = at.function
            if fn is None or name not in fn.params:
                return None
            args = ctx.param_arguments(fn, name)
            if not args:
                return None
            for arg, site in args:
                found = self._dicts(ctx, arg, site, depth + 1)
                if found is None:
                    return None
                out.extend(found)
            return out
        for s in sites:
            if s.value is None or s.op != "=":
                return None
            found = self._dicts(ctx, s.value, s, depth + 1)
            if found is None:
                return None
            out.extend(found)
        return out

    @staticmethod
    def _keyed_assignments(ctx, name: str, at: Site) -> Optional[List[Tuple[Optional[str], cst.BaseExpression]]]:
        """The (key, value) of every `name["key"] = value` in the scope that binds `name`, when
        those are the only changes it sees: None for an `update(...)`/`setdefault`, a computed
        key, `del name[...]`, a nested `name["a"]["b"] = ...`, or `name` handed to a call
        that may fill it in."""
        out: List[Tuple[Optional[str], cst.BaseExpression]] = []
        for a in ctx.facts.assigns:
            if a.function is not at.function:
                continue
            for t in a.targets:
                root = t
                while isinstance(root, (cst.Subscript, cst.Attribute)):
                    root = root.value
                if not (isinstance(root, cst.Name) and root.value == name) or t is root:
                    continue
                if not (isinstance(t, cst.Subscript) and isinstance(t.value, cst.Name)) or a.op != "=" or a.value is None or len(a.targets) != 1:
                    return None
                if len(t.slice) != 1 or not isinstance(t.slice[0].slice, cst.Index):
                    return None
                k = t.slice[0].slice.value
                if not (isinstance(k, cst.SimpleString) and isinstance(k.evaluated_value, str)):
                    return None
                out.append((k.evaluated_value, a.value))
        for c in ctx.calls_in(at.function):
            if c.qualname in TORCH_SAVE or c.attr in ("print", "len"):
                continue
            if isinstance(c.receiver, cst.Name) and c.receiver.value == name and c.attr not in ("keys", "items", "values", "get", "copy"):
                return None
            if any(isinstance(n, cst.Name) and n.value == name for a in c.args for n in walk(a.value)):
                return None
        return out

    @staticmethod
    def _mutated(ctx, name: str, at: Site) -> bool:
        """`name[...] = ...`, `name.update(...)` anywhere in the scope that binds it."""
        for a in ctx.facts.assigns:
            if a.function is not at.function:
                continue
            for t in a.targets:
                if isinstance(t, cst.Subscript) and isinstance(t.value, cst.Name) and t.value.value == name:
                    return True
        for c in ctx.calls_in(at.function):
            if c.attr in MUTATING_METHODS and isinstance(c.receiver, cst.Name) and c.receiver.value == name:
                return True
        return False

    @staticmethod
    def _has_model_state(ctx, entries, site) -> bool:
        for key, value in entries:
            if key is not None and MODEL_KEY.match(key):
                return True
            if isinstance(value, cst.Call) and isinstance(value.func, cst.Attribute) and value.func.attr.value == "state_dict":
                recv = value.func.value
                name = dotted(recv) or ""
                if name.endswith(".module"):
                    name = name[: -len(".module")]
                if name and looks_like_model_name(name):
                    return True
                if isinstance(recv, (cst.Name, cst.Attribute)):
                    try:
                        quals = ctx.constructed_qualnames(recv, site)
                    except RecursionError:  # `self.m = self.m.to(dev)` loops in FileContext.constructions
                        quals = []
                    for q in quals:
                        if q and q.startswith(MODEL_CONSTRUCTOR_PREFIXES):
                            return True
        return False


RULE = CheckpointWithoutOptimizer
