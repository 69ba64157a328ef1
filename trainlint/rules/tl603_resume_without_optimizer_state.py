from __future__ import annotations

import re
from typing import Iterator, List, Optional, Tuple

import libcst as cst

from trainlint.analysis.checkpoints import (
    OPTIMIZER_TEXT,
    PROGRESS_KEY,
    SCHEDULER_TEXT,
    TORCH_LOAD,
    holds_optimizer_state,
    holds_scheduler_state,
    literal_path,
    load_path,
    loaded_checkpoint,
    saved_checkpoints,
)
from trainlint.analysis.containers import subscript_key
from trainlint.analysis.facts import CallSite, walk
from trainlint.analysis.names import dotted
from trainlint.rules.base import Report, Rule

RESUME_TEXT = re.compile(r"resum|restart|continue_from|last_ckpt|latest", re.I)
# Calls that only show a value: a progress key read inside them feeds no training loop.
DISPLAY_CALL = re.compile(r"^(print|info|debug|warning|warn|log|write|set_description|set_postfix|format)$")
EXIT_CALLS = {"sys.exit", "exit", "quit", "os._exit"}
# Receivers whose state is not the model's.
NOT_MODEL = re.compile(r"optim|(^|_)opt|sched|scaler|ema|swa|sampler|loader|tokenizer|metric", re.I)


class ResumeWithoutOptimizerState(Rule):
    """## What it does
    Finds a training script that resumes from a checkpoint — it loads the model's state
    from a `torch.load`ed dict (`model.load_state_dict(ckpt["model"])`) and picks up where
    the run stopped (it reads the checkpoint's epoch/step, or the load sits under a
    `resume` flag or path) — while the file saves that checkpoint with the optimizer's
    (or the scheduler's) state under the same model key, and never loads that state back.

    ## Why is this bad?
    The optimizer restarts from zero: Adam's moment estimates and SGD's momentum are gone,
    so the first updates after the resume are wrongly sized and the loss jumps; a scheduler
    that is not restored restarts its warm-up or decay from the first step. The resumed run
    is not the run that was saved, and results are not reproducible. The state was saved
    for exactly this purpose.

    Left alone: a load for evaluation or fine-tuning (no epoch/step read beyond a print or
    log line, no `resume`), a load in a branch that exits (`--eval-only: ... raise
    SystemExit`), a load from a file other than the one saved (both paths literal), a
    checkpoint the file does not save with an optimizer state (an entry keyed like an
    optimizer, or any `X.state_dict()` of an optimizer `X`), and any file that loads an
    optimizer's state somewhere or hands the checkpoint's optimizer entry (or the whole
    checkpoint) to other code.

    ## Example
    ```python
    torch.save({"epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict()}, path)
    ...
    ckpt = torch.load(path)
    model.load_state_dict(ckpt["model"])
    start_epoch = ckpt["epoch"] + 1
    ```

    ## Use instead
    ```python
    ckpt = torch.load(path)
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    start_epoch = ckpt["epoch"] + 1
    ```
    """

    code = "TL603"
    name = "resume-without-optimizer-state"
    severity = "warning"

    VALID = (
        """
        import torch
        optimizer = torch.optim.Adam(model.parameters())
        if args.resume:
            ckpt = torch.load(args.resume)
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            start_epoch = ckpt["epoch"] + 1
        for epoch in range(start_epoch, 100):
            loss = train(model, optimizer)
            loss.backward()
            optimizer.step()
            torch.save({"epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict()}, "ckpt.pt")
        """,
        """
        import torch
        # loading the best weights for the final test: not a resume
        for epoch in range(10):
            train_loss = train_epoch(model, optimizer)
            optimizer.step()
            loss.backward()
            torch.save({"epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict()}, "best.pt")
        ckpt = torch.load("best.pt")
        model.load_state_dict(ckpt["model"])
        test(model, test_loader)
        """,
        """
        import torch
        # the checkpoint file never held an optimizer state
        torch.save({"epoch": epoch, "model": model.state_dict()}, "ckpt.pt")
        ckpt = torch.load("ckpt.pt")
        model.load_state_dict(ckpt["model"])
        start_epoch = ckpt["epoch"]
        loss.backward()
        optimizer.step()
        """,
        """
        import torch
        def save(model, opt, epoch):
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "epoch": epoch}, "last.pt")
        def resume(model, opt, path):
            state = torch.load(path)
            model.load_state_dict(state["model"])
            restore_optimizer(opt, state)  # handed on: may restore the optimizer
            return state["epoch"]
        loss.backward()
        opt.step()
        """,
        """
        import torch
        # fine-tuning from pretrained weights with a fresh optimizer: no progress read
        torch.save({"step": step, "model": model.state_dict(), "optimizer": opt.state_dict()}, "ft.pt")
        pretrained = torch.load("pretrain.pt")
        model.load_state_dict(pretrained["model"], strict=False)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
        loss.backward()
        opt.step()
        """,
        """
        import torch
        # an evaluation-only load: the epoch is only printed and the branch exits
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        if args.eval_only:
            ckpt = torch.load("best.pt", map_location="cpu")
            model.load_state_dict(ckpt["model"])
            model.eval()
            print(f"checkpoint from epoch {ckpt['epoch']}")
            raise SystemExit
        for epoch in range(10):
            loss = train(model, optimizer)
            loss.backward()
            optimizer.step()
            torch.save({"epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict()}, "best.pt")
        """,
        """
        import torch
        # fine-tuning from another file than the one this script saves
        PRETRAINED = "simclr_pretrain.pt"
        state = torch.load(PRETRAINED, map_location="cpu")
        backbone.load_state_dict(state["model"])
        start = state["epoch"]
        optimizer = torch.optim.SGD(classifier.parameters(), lr=0.01)
        for epoch in range(20):
            classifier(x).sum().backward()
            optimizer.step()
            torch.save({"epoch": epoch, "model": classifier.state_dict(), "optimizer": optimizer.state_dict()}, "finetuned.pt")
        """,
    )
    INVALID = (
        """
        import torch
        # the optimizer's state is saved under its variable's name: still optimizer state
        optG = torch.optim.Adam(netG.parameters())
        ckpt_path = "ckpt.pt"
        if os.path.exists(ckpt_path):
            ck = torch.load(ckpt_path)
            netG.load_state_dict(ck["G"])  # !
            start_iter = ck["iter"]
        for it in range(start_iter, 100):
            optG.zero_grad()
            netG(z).sum().backward()
            optG.step()
            torch.save({"G": netG.state_dict(), "optG": optG.state_dict(), "iter": it}, ckpt_path)
        """,
        """
        import torch
        # the epoch printed and fed to the loop's start, from the file this script saves
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        state = torch.load("last.pt")
        model.load_state_dict(state["model"])  # !
        print("resuming after epoch", state["epoch"])
        for epoch in range(state["epoch"] + 1, 50):
            model(x).sum().backward()
            optimizer.step()
            torch.save({"epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict()}, "last.pt")
        """,
        """
        import torch
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        start_epoch = 0
        if args.resume:
            checkpoint = torch.load(args.resume, map_location="cpu")
            model.load_state_dict(checkpoint["model_state_dict"])  # !
            start_epoch = checkpoint["epoch"] + 1
        for epoch in range(start_epoch, args.epochs):
            for x, y in loader:
                optimizer.zero_grad()
                criterion(model(x), y).backward()
                optimizer.step()
            torch.save({"epoch": epoch, "model_state_dict": model.state_dict(),
                        "optimizer_state_dict": optimizer.state_dict()}, "checkpoint.pt")
        """,
        """
        import torch
        def save_checkpoint(state, filename="checkpoint.pth.tar"):
            torch.save(state, filename)

        class Trainer:
            def __init__(self, net, lr):
                self.net = net
                self.opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
                self.sched = torch.optim.lr_scheduler.StepLR(self.opt, 30)
            def resume(self, path):
                ckpt = torch.load(path)
                self.net.load_state_dict(ckpt["state_dict"])  # !
                self.opt.load_state_dict(ckpt["optimizer"])
                self.start = ckpt["epoch"]
            def train_epoch(self, epoch, loader):
                for x, y in loader:
                    self.opt.zero_grad()
                    self.net(x).loss.backward()
                    self.opt.step()
                self.sched.step()
                save_checkpoint({"epoch": epoch, "state_dict": self.net.state_dict(),
                                 "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict()})
        """,
        """
        import torch
        ckpt = {}
        ckpt["net"] = net.state_dict()
        ckpt["optim"] = optim.state_dict()
        ckpt["step"] = step
        torch.save(ckpt, "last.pt")
        resume_path = "last.pt"
        net.load_state_dict(torch.load(resume_path)["net"])  # !
        loss.backward()
        optim.step()
        """,
        """
        import torch
        def load_checkpoint(path):
            return torch.load(path, map_location="cpu")
        def main(args):
            model, optimizer = build(args)
            start = 0
            if args.resume:
                state = load_checkpoint(args.resume)
                model.load_state_dict(state["model"])  # !
                start = state["step"]
            for step in range(start, args.steps):
                loss = model(next(batches)).loss
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
                if step % 1000 == 0:
                    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step}, "ckpt.pt")
        """,
    )

    def check(self, ctx) -> Iterator[Report]:
        if ctx.is_test_file or not self._trains(ctx):
            return
        loads = [c for c in ctx.facts.calls if c.attr == "load_state_dict" and c.receiver is not None]
        if not loads:
            return
        saved = None
        restored_opt, restored_sched = self._restored(ctx, loads)
        for call in loads:
            recv_name = dotted(call.receiver) or ""
            if NOT_MODEL.search(recv_name.rsplit(".", 1)[-1]) or ctx.training.is_optimizer(call.receiver, call) or ctx.training.is_scheduler(call.receiver, call):
                continue
            arg = call.arg(0, "state_dict")
            found = loaded_checkpoint(ctx, arg, call) if arg is not None else None
            if found is None:
                continue
            key, holder = found
            if saved is None:
                saved = saved_checkpoints(ctx)
            # The checkpoint this load reads: saved under the model's key, and not to a file
            # that is clearly another one (fine-tuning from "pretrain.pt" while saving
            # "finetuned.pt" starts a new run, it does not resume the saved one).
            loaded_from = literal_path(ctx, load_path(ctx, holder, arg, call), call)
            same = [
                d
                for d in saved
                if any(k == key for k, _, _ in d.entries)
                and not (loaded_from is not None and literal_path(ctx, d.path, d.save) not in (None, loaded_from))
            ]
            if not same:
                continue
            opt_saved = any(holds_optimizer_state(ctx, k, v, s) for d in same for k, v, s in d.entries)
            sched_saved = any(holds_scheduler_state(ctx, k, v, s) for d in same for k, v, s in d.entries)
            if holder is not None and self._checkpoint_handed_on(ctx, holder, call):
                continue
            reads, progress_fed = self._keys_read(ctx, holder) if holder is not None else (set(), False)
            if any(OPTIMIZER_TEXT.search(k) for k in reads):
                restored_here_opt = True
            else:
                restored_here_opt = restored_opt
            restored_here_sched = restored_sched or any(SCHEDULER_TEXT.search(k) for k in reads)
            missing = []
            if opt_saved and not restored_here_opt:
                missing.append("optimizer")
            if sched_saved and not restored_here_sched:
                missing.append("scheduler")
            if not missing or not self._resumes(ctx, call, arg, holder, progress_fed):
                continue
            what = " and the ".join(missing)
            source = f"`{holder}[{key!r}]`" if holder else f"the checkpoint's {key!r} entry"
            effect = {
                "optimizer": "the optimizer restarts from zero (Adam's moments, SGD's momentum are lost)",
                "scheduler": "the learning-rate schedule restarts from its first step",
            }
            yield Report(
                call.node,
                f"this resume restores the model from {source} but not the {what} state the checkpoint "
                f"is saved with: " + "; ".join(effect[m] for m in missing) + ". Load it too "
                f"(`{'optimizer' if 'optimizer' in missing else 'scheduler'}.load_state_dict(...)`).",
            )

    @staticmethod
    def _trains(ctx) -> bool:
        attrs = {c.attr for c in ctx.facts.calls}
        return "backward" in attrs and "step" in attrs

    @staticmethod
    def _restored(ctx, loads: List[CallSite]) -> Tuple[bool, bool]:
        """Whether anything in the file loads an optimizer's / a scheduler's state."""
        opt = sched = False
        for c in loads:
            text = ctx.module.code_for_node(c.node)
            recv = c.receiver
            if ctx.training.is_scheduler(recv, c) or SCHEDULER_TEXT.search(dotted(recv) or ""):
                sched = True
            elif ctx.training.is_optimizer(recv, c) or OPTIMIZER_TEXT.search(text):
                opt = True
            if SCHEDULER_TEXT.search(text):
                sched = True
        return opt, sched

    @staticmethod
    def _keys_read(ctx, holder: str) -> Tuple[set, bool]:
        """The string keys read from the checkpoint name anywhere in the file, and whether a
        progress key (epoch/step) is read for more than display: a print or a log line of
        the checkpoint's epoch does not continue a run, `start_epoch = ckpt["epoch"]` does."""
        shown = set()
        for c in ctx.facts.calls:
            if c.attr is not None and DISPLAY_CALL.match(c.attr):
                for a in c.args:
                    shown.update(id(n) for n in walk(a.value))
        keys = set()
        fed = False
        for node in walk(ctx.module):
            k = None
            if isinstance(node, cst.Subscript) and dotted(node.value) == holder:
                k = subscript_key(node)
            elif isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute) and node.func.attr.value == "get" and dotted(node.func.value) == holder and node.args:
                v = node.args[0].value
                if isinstance(v, cst.SimpleString) and isinstance(v.evaluated_value, str):
                    k = v.evaluated_value
            if k is not None:
                keys.add(k)
                if PROGRESS_KEY.search(k) and id(node) not in shown:
                    fed = True
        return keys, fed

    @staticmethod
    def _checkpoint_handed_on(ctx, holder: str, load: CallSite) -> bool:
        """The whole checkpoint is passed to other code in the load's function (which may restore
        the optimizer from it)."""
        for c in ctx.calls_in(load.function):
            if c.attr in ("print", "len", "keys", "items", "get") or c.qualname in TORCH_LOAD:
                continue
            for a in c.args:
                if dotted(a.value) == holder:
                    return True
        return False

    @staticmethod
    def _resumes(ctx, call: CallSite, arg, holder: Optional[str], progress_fed: bool) -> bool:
        """Evidence that the load continues a run: the checkpoint's progress is read (for more
        than a message), or the load sits under a `resume` condition, in a `resume` function,
        or on a `resume` path. A load in a branch that ends the program (`--eval-only: ...
        raise SystemExit`) continues nothing."""
        if any(_ends_program(ctx, b.node) for b in call.ifs):
            return False
        if progress_fed:
            return True
        texts = [ctx.module.code_for_node(b.test) for b in call.ifs if b.test is not None]
        if call.function is not None:
            texts.append(call.function.name)
        if holder is not None:
            for value, _ in ctx.resolve(cst.Name(holder), call) if "." not in holder else []:
                if isinstance(value, cst.Call) and value.args:
                    texts.append(ctx.module.code_for_node(value.args[0].value))
        elif isinstance(arg, cst.Subscript) and isinstance(arg.value, cst.Call) and arg.value.args:
            texts.append(ctx.module.code_for_node(arg.value.args[0].value))
        return any(RESUME_TEXT.search(t) for t in texts)


def _ends_program(ctx, node: cst.CSTNode) -> bool:
    """An `if` body whose last statement exits: `raise SystemExit`, `sys.exit()`, `exit()`."""
    body = getattr(getattr(node, "body", None), "body", None)
    if not body or not isinstance(body[-1], cst.SimpleStatementLine) or not body[-1].body:
        return False
    last = body[-1].body[-1]
    if isinstance(last, cst.Raise) and last.exc is not None:
        exc = last.exc.func if isinstance(last.exc, cst.Call) else last.exc
        return dotted(exc) == "SystemExit"
    if isinstance(last, cst.Expr) and isinstance(last.value, cst.Call):
        func = last.value.func
        return (ctx.qualname(func) or dotted(func)) in EXIT_CALLS
    return False


RULE = ResumeWithoutOptimizerState
