"""initial-loss: the loss of step 0 against what an untrained model gives.

An untrained classifier predicts roughly uniformly, so its cross-entropy is
``log(C)`` (C = classes, read from the logits) and its binary cross-entropy
``log 2``. Far above means the logits are too large at init (scale, a missing
normalisation); far below means the labels leak into the inputs, the loss is
computed on the wrong tensors, or the model is not untrained after all.
Only losses seen through a hooked ``loss_fn`` module are checked (the guard
needs the logits to know C).
"""
from __future__ import annotations

import math
from typing import List, Optional

import torch
from torch import nn

from ..errors import InitialLossError
from .base import Check, Finding


def describe_loss_call(module: nn.Module, args, kwargs) -> Optional[dict]:
    """What the initial-loss check needs from one call of the loss module:
    the expected loss of an untrained model and how to normalise a summed loss.
    ``None`` when the loss type is not one it knows."""
    inp = args[0] if args else kwargs.get("input")
    if not isinstance(inp, torch.Tensor):
        return None
    reduction = getattr(module, "reduction", "mean")
    if isinstance(module, (nn.CrossEntropyLoss, nn.NLLLoss)):
        classes = inp.shape[1] if inp.dim() >= 2 else inp.shape[0]   # PyTorch's class dim
        if classes < 2:
            return None
        kind, expected = type(module).__name__, math.log(classes)
        count = max(1, inp.numel() // classes)
        detail = f"log({classes} classes) = {expected:.3f}"
    elif isinstance(module, (nn.BCEWithLogitsLoss, nn.BCELoss)):
        kind, expected, count = type(module).__name__, math.log(2.0), max(1, inp.numel())
        detail = f"log 2 = {expected:.3f}"
    else:
        return None
    return {"kind": kind, "expected": expected, "detail": detail,
            "divide": count if reduction == "sum" else 1}


class InitialLossCheck(Check):
    name = "initial-loss"
    error = InitialLossError
    defaults = {
        "too_high": 1.0,   # L0 - expected > too_high * expected (TheDeepChecker's 1.0 x log C)
        "too_low": 0.5,    # L0 < too_low * expected
    }

    def check(self, loss: float, meta: dict) -> List[Finding]:
        loss = loss / meta["divide"]
        expected = meta["expected"]
        if not math.isfinite(loss):
            return []   # the finite check reports this
        seen = (f"the loss at step 0 is {loss:.4g}; an untrained model should give about "
                f"{meta['detail']} with {meta['kind']}")
        if loss - expected > self.opt["too_high"] * expected:
            return [Finding("too-high", (
                f"{seen}. Far above means over-confident wrong predictions at init: logits "
                "too large (last layer initialised at too large a scale, a missing "
                "normalisation, a temperature or a scaling of the logits). Remedies: "
                "initialise the output layer small (e.g. std 0.01 or zeros), check input "
                "normalisation, check that the logits are not multiplied by a constant."),
                step=0)]
        if loss < self.opt["too_low"] * expected:
            return [Finding("too-low", (
                f"{seen}. Far below means the task looks solved before training: labels "
                "leaking into the inputs, the loss computed on the wrong tensors "
                "(e.g. probabilities fed to NLLLoss), a wrong reduction, or a model that "
                "is not untrained. Remedies: check the data pipeline for label leakage "
                "and the loss inputs; when fine-tuning a pretrained model, switch this "
                "check off (checks={'initial-loss': 'off'})."), step=0)]
        return []
