from __future__ import annotations

from typing import Iterator

import libcst as cst

from trainlint.analysis.inputs import external_origin, holds_namespace
from trainlint.rules.base import Report, Rule
from trainlint.torch_requirement import torch_pin_for

TORCH_LOAD = {"torch.load", "torch.serialization.load"}
TORCH_SAVE = {"torch.save", "torch.serialization.save"}


class UnsafeTorchLoad(Rule):
    """## What it does
    Finds `torch.load(..., weights_only=False)`, and `torch.load(path)` without
    `weights_only` when the path comes from outside the program: argparse (`args.resume`),
    `sys.argv`, the environment (`os.environ`, `os.getenv`) or a parameter of a public
    function that no caller in the module fills in.

    ## Why is this bad?
    `torch.load` unpickles: with `weights_only=False` a checkpoint file can run arbitrary
    code when it is loaded. A checkpoint downloaded from a model hub, shared in a team folder
    or named on the command line is then a way into the machine (and its credentials).
    Before PyTorch 2.6 `weights_only=False` is also the default, so a call without the
    argument is unsafe there. A file object opened on such a path (`with open(path, "rb") as
    f: torch.load(f)`) is the same. Literal paths, paths built inside the program, in-memory
    buffers and test modules are not reported.

    Which torch: a missing `weights_only` is reported only where the project allows a torch
    older than 2.6, read from the nearest metadata above the file (pyproject.toml dependencies,
    extras, dependency groups, Poetry, `requires-python`; setup.cfg; setup.py's literal
    `install_requires`; requirements*.txt) up to the repository root. A project that requires
    `torch>=2.6` gets no finding for it; where no torch pin can be read, the finding is `info`
    and says so. `weights_only=False` and a load with a `pickle_module` are reported whatever
    the version. When a `torch.save` in the same module writes an `argparse.Namespace` into the
    checkpoint, the message points at `torch.serialization.add_safe_globals`, which lets the
    weights-only load accept it.

    ## Example
    ```python
    args = parser.parse_args()
    state = torch.load(args.checkpoint)
    ```

    ## Use instead
    ```python
    args = parser.parse_args()
    state = torch.load(args.checkpoint, weights_only=True)   # or safetensors.torch.load_file
    ```
    """

    code = "TL602"
    name = "unsafe-torch-load"
    severity = "warning"
    severities = ("info",)

    VALID = (
        """
        import torch
        state = torch.load("checkpoints/best.pt", map_location="cpu")
        """,
        """
        import argparse
        import torch
        parser = argparse.ArgumentParser()
        parser.add_argument("--resume")
        args = parser.parse_args()
        ckpt = torch.load(args.resume, map_location="cpu", weights_only=True)
        """,
        """
        import io
        import torch
        buf = io.BytesIO()
        torch.save(model.state_dict(), buf)
        state = torch.load(io.BytesIO(buf.getvalue()))
        """,
        """
        import torch
        from safetensors.torch import load_file
        def load(path):
            return load_file(path)
        """,
        """
        import os
        import torch
        out_dir = "runs/exp1"
        def resume():
            return torch.load(os.path.join(out_dir, "ckpt.pt"))
        """,
        """
        import torch
        def _load(path):
            return torch.load(path)
        state = _load("weights.pt")
        """,
        """
        import argparse
        import torch
        # a file object: opened on a literal path, or loaded with weights_only=True
        def load_weights(path):
            with open(path, "rb") as f:
                return torch.load(f, weights_only=True)
        with open("checkpoints/best.pt", "rb") as f:
            state = torch.load(f)
        parser = argparse.ArgumentParser()
        parser.add_argument("--model")
        opt = parser.parse_args()
        # allow-listed classes: written for the weights-only default
        with open(opt.model, "rb") as f:
            with torch.serialization.safe_globals([Net]):
                model = torch.load(f)
        """,
    )
    INVALID = (
        """
        import torch
        state = torch.load("model.pt", weights_only=False)  # !
        """,
        """
        import argparse
        import torch
        def get_args():
            parser = argparse.ArgumentParser()
            parser.add_argument("--resume", type=str)
            return parser.parse_args()
        args = get_args()
        if args.resume:
            checkpoint = torch.load(args.resume, map_location="cpu")  # !
        """,
        """
        import sys
        import torch
        model.load_state_dict(torch.load(sys.argv[1]))  # !
        """,
        """
        import os
        import torch
        ckpt = torch.load(os.environ["CKPT_PATH"])  # !
        """,
        """
        import torch
        from pathlib import Path
        def load_model(model, checkpoint_dir):
            state = torch.load(Path(checkpoint_dir) / "model.pt", map_location="cpu")  # !
            model.load_state_dict(state)
        """,
        """
        import argparse
        import torch
        # the file object of a path from a parameter, or from argparse
        def load_weights(path):
            with open(path, "rb") as f:
                return torch.load(f)  # !
        parser = argparse.ArgumentParser()
        parser.add_argument("--ckpt")
        args = parser.parse_args()
        with open(args.ckpt, "rb") as fh:
            state = torch.load(fh, map_location="cpu")  # !
        """,
    )

    def check(self, ctx) -> Iterator[Report]:
        if ctx.is_test_file:
            return
        loads = [c for c in ctx.facts.calls if c.qualname in TORCH_LOAD]
        if not loads:
            return
        held = _saved_objects(ctx)
        allow_list = (
            f" The checkpoint saved in this module holds {held}, which a weights-only load refuses: "
            f"allow-list it with `torch.serialization.add_safe_globals([...])` (or save plain values, "
            f"e.g. `vars(args)`)."
            if held
            else ""
        )
        pin = None
        for call in loads:
            flag = call.keyword("weights_only")
            if flag is not None:
                if isinstance(flag, cst.Name) and flag.value == "False":
                    yield Report(
                        call.node,
                        "`torch.load(..., weights_only=False)` unpickles arbitrary objects: a checkpoint from an "
                        "untrusted source runs code when loaded. Load with `weights_only=True` (save plain "
                        "state_dicts) or use safetensors." + allow_list,
                    )
                continue
            if call.has_star_args or any(a.star == "**" for a in call.args):
                continue
            path = call.arg(0, "f")
            if path is None:
                continue
            if any(b.test is not None and "weights_only" in ctx.module.code_for_node(b.test) for b in call.ifs):
                continue  # the code branches on the flag itself: a deliberate (often old-torch) path
            if _relies_on_weights_only(ctx, call):
                continue
            try:
                origin = external_origin(ctx, path, call)
            except RecursionError:  # FileContext.constructions loops on `self.x = self.x.to(dev)`
                continue
            if origin is None:
                continue
            severity = None
            if call.keyword("pickle_module") is not None:
                when = "with `pickle_module` given, torch.load defaults to weights_only=False"
            else:
                if pin is None:
                    pin = torch_pin_for(ctx.path)
                if pin.state == "new":
                    continue  # every torch the project allows loads weights-only by default
                if pin.state == "old":
                    when = (
                        f"the project allows a torch older than 2.6 (`{pin.source}`), where torch.load "
                        f"defaults to weights_only=False"
                    )
                else:
                    severity = "info"
                    when = (
                        "before PyTorch 2.6 torch.load defaults to weights_only=False (the project's torch "
                        "version could not be read: no torch pin in pyproject.toml, setup.cfg, setup.py or "
                        "requirements*.txt)"
                    )
            yield Report(
                call.node,
                f"`torch.load` on a path from {origin} without `weights_only=True`: {when} and "
                f"unpickles arbitrary objects, so a crafted checkpoint runs code when loaded. "
                f"Pass `weights_only=True` (or load safetensors).{allow_list}",
                severity=severity,
            )


def _saved_objects(ctx) -> str:
    """What else than tensors a `torch.save` in this module writes into a checkpoint: an
    `argparse.Namespace` (the parsed command line, saved as is or as a dict value). Empty
    when nothing such is seen."""
    for call in ctx.facts.calls:
        if call.qualname not in TORCH_SAVE:
            continue
        obj = call.arg(0, "obj")
        if obj is None:
            continue
        for value, site in ctx.resolve(obj, call):
            candidates = [value]
            if isinstance(value, cst.Dict):
                candidates = [e.value for e in value.elements if isinstance(e, cst.DictElement)]
            for v in candidates:
                if holds_namespace(ctx, v, site):
                    return "an `argparse.Namespace`"
    return ""


def _relies_on_weights_only(ctx, call) -> bool:
    """The load runs under `torch.serialization.safe_globals([...])`, or the file allow-lists
    classes with `add_safe_globals`: both only matter to a weights-only load, so the code is
    written for torch's weights_only default (2.6+), not for unpickling."""
    for block in call.withs:
        for item in block.items:
            if isinstance(item, cst.Call) and (ctx.qualname(item.func) or "").endswith(".safe_globals"):
                return True
    return any((c.qualname or "").endswith(".add_safe_globals") for c in ctx.facts.calls)


RULE = UnsafeTorchLoad
