from __future__ import annotations

from typing import Iterator

import libcst as cst

from trainlint.analysis.inputs import external_origin
from trainlint.rules.base import Report, Rule

TORCH_LOAD = {"torch.load", "torch.serialization.load"}


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
    buffers and test files are not reported.

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
        for call in ctx.facts.calls:
            if call.qualname not in TORCH_LOAD:
                continue
            flag = call.keyword("weights_only")
            if flag is not None:
                if isinstance(flag, cst.Name) and flag.value == "False":
                    yield Report(
                        call.node,
                        "`torch.load(..., weights_only=False)` unpickles arbitrary objects: a checkpoint from an "
                        "untrusted source runs code when loaded. Load with `weights_only=True` (save plain "
                        "state_dicts) or use safetensors.",
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
            when = (
                "with `pickle_module` given, torch.load defaults to weights_only=False"
                if call.keyword("pickle_module") is not None
                else "before PyTorch 2.6 (or with a `pickle_module`) torch.load defaults to weights_only=False"
            )
            yield Report(
                call.node,
                f"`torch.load` on a path from {origin} without `weights_only=True`: {when} and "
                f"unpickles arbitrary objects, so a crafted checkpoint runs code when loaded. "
                f"Pass `weights_only=True` (or load safetensors).",
            )


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
