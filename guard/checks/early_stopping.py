"""Early stopping on a validation metric, with the Keras/Lightning semantics.

An improvement is a change better than ``min_delta`` in the direction of
``mode``; training should stop once ``patience`` calls in a row brought no
improvement. Non-finite metrics never improve. With ``restore_best`` the
best weights are kept as one CPU copy of the model's state (the only model
copy the guard ever makes) and loaded back when the stop is decided.
"""
from __future__ import annotations

import math
from typing import Dict, Optional

import torch
from torch import nn


class EarlyStopping:
    def __init__(self, patience: Optional[int], min_delta: float = 0.0, mode: str = "min",
                 restore_best: bool = False):
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        if patience is not None and (not isinstance(patience, int) or patience < 0):
            raise ValueError(f"patience must be a non-negative int or None, got {patience!r}")
        if min_delta < 0:
            raise ValueError("min_delta must be >= 0 (it is a magnitude, as in Keras)")
        self.patience = patience
        self.min_delta = float(min_delta)
        self.mode = mode
        self.restore_best = restore_best
        self.best: Optional[float] = None
        self.best_call: Optional[int] = None
        self.best_step: Optional[int] = None   # the last optimizer step before the best call
        self.stop_step: Optional[int] = None   # ... before the call that decided to stop
        self.wait = 0
        self.calls = 0
        self.stopped = False
        self.restored = False
        self._best_state: Optional[Dict[str, torch.Tensor]] = None

    def improved(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def update(self, value: float, model: nn.Module, step: Optional[int] = None) -> bool:
        """Record one metric (``step``: the last optimizer step taken, for the plot);
        return whether training should stop now."""
        self.calls += 1
        if self.improved(value):
            self.best, self.best_call, self.wait = value, self.calls, 0
            self.best_step = step
            if self.restore_best:
                # One CPU copy: never a second model on the accelerator.
                self._best_state = {k: v.detach().to("cpu", copy=True)
                                    for k, v in model.state_dict().items()}
            return False
        self.wait += 1
        return self.patience is not None and self.wait >= self.patience

    def restore(self, model: nn.Module) -> bool:
        if self._best_state is None:
            return False
        model.load_state_dict(self._best_state)   # copies into the existing tensors
        self.restored = True
        return True
