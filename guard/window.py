"""The numbers of a block of steps, read back from the device in one go.

The guard keeps per-step tensors on the device and turns them into a
:class:`Window` every ``check_every`` steps (and at exit). Checks only ever
look at windows, so they never touch the device and never cause a sync.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np


def nanmedian(values, axis=None):
    """``np.nanmedian`` without its "All-NaN slice" RuntimeWarning: a column that was never
    measured in the window (a step a GradScaler skipped, say) is NaN, silently -- a guard
    that watches a healthy run emits nothing."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(values, axis=axis)


@dataclass
class UpdateSample:
    """Sampled parameter movement at one step (see ``guard.guard`` for how).

    Arrays are indexed like ``guard.param_names``; NaN where not measured.
    """

    step: int
    delta: np.ndarray        # ||W_after - W_before|| on the sampled elements
    weight: np.ndarray       # ||W_after|| on the same elements
    full_before: np.ndarray  # ||W|| of the whole tensor before the step (NaN: not measured)
    full_after: np.ndarray   # ||W|| of the whole tensor after the step (NaN: not measured)
    applied: bool = True     # False when the step was skipped (guard or GradScaler)

    @property
    def ratio(self) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.delta / self.weight


@dataclass
class Window:
    """Per-step values of the steps ``steps[0] .. steps[-1]``."""

    steps: List[int] = field(default_factory=list)
    loss: List[Optional[float]] = field(default_factory=list)       # mean loss of the step
    grad_norm: List[Optional[float]] = field(default_factory=list)  # global, before clipping
    applied_grad_norm: List[Optional[float]] = field(default_factory=list)  # after any clipping
    per_param: Optional[np.ndarray] = None   # (steps, params) gradient norms, NaN where no grad
    has_grad: Optional[np.ndarray] = None    # (steps, params) bool: the parameter had a .grad
    nonfinite: List[bool] = field(default_factory=list)        # a real NaN/Inf (not AMP's)
    scaler_skipped: List[bool] = field(default_factory=list)   # GradScaler found inf
    skipped: List[bool] = field(default_factory=list)          # update not applied by the guard
    spike: List[bool] = field(default_factory=list)   # gated as a spike (on_spike="skip" only)
    updates: List[UpdateSample] = field(default_factory=list)
    nonfinite_params: List[str] = field(default_factory=list)  # after the last step
    final: bool = False       # the last window, read at exit

    def __len__(self) -> int:
        return len(self.steps)
