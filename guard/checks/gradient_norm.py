"""gradient-norm: exploding and vanishing gradients.

The guard measures the global norm (and one norm per parameter) on the device
before every step, with fused multi-tensor ops, and clips there (see
``guard.guard``). This module only judges the numbers read back per window:

* exploding -- the global norm before clipping above ``exploding`` (1e3);
* vanishing -- the median global norm of the window below ``vanishing`` (1e-7),
  or the first weight layer's gradient a tiny fraction of the last one's
  (AUTOTRAINER's rule: ratio < 1e-3 and first-layer norm < 1e-4).
"""
from __future__ import annotations

import math
from typing import List

import numpy as np

from ..errors import ExplodingGradientError, VanishingGradientError
from .base import Check, Finding


class GradientNormCheck(Check):
    name = "gradient-norm"
    error = ExplodingGradientError
    defaults = {
        "exploding": 1e3,      # global gradient norm before clipping
        "vanishing": 1e-7,     # median global gradient norm of a window
        "layer_ratio": 1e-3,   # first / last weight-layer gradient norm
        "first_layer": 1e-4,   # ... and the first layer's norm below this
    }
    last_exploding = None      # (step, norm) of the latest exploding step seen

    def on_window(self, w) -> List[Finding]:
        findings: List[Finding] = []
        usable = [(s, n) for s, n, bad, sc in zip(w.steps, w.grad_norm, w.nonfinite,
                                                  w.scaler_skipped)
                  if n is not None and not bad and not sc and math.isfinite(n)]
        if not usable:
            return findings
        g = self.guard
        over = [(s, n) for s, n in usable if n > self.opt["exploding"]]
        if over:
            step, norm = over[0]
            self.last_exploding = over[-1]   # a NaN soon after: the finite check names it
            peak = max(n for _, n in over)
            # Clipped by the guard, or by a framework or the user (seen through
            # observe_gradients): the norm the update used is below the one measured.
            applied = dict(zip(w.steps, w.applied_grad_norm))
            clipped = [applied[s] for s, n in over if applied.get(s) is not None and applied[s] < n]
            if g.max_grad_norm:
                clip = (f" Clipping to max_grad_norm={g.max_grad_norm:g} bounds each update, but "
                        "the raw gradient says the loss surface is this steep.")
            elif clipped:
                clip = (f" The gradients are clipped (to a norm of {max(clipped):.3g}), which bounds "
                        "each update, but the raw gradient says the loss surface is this steep.")
            else:
                clip = ""
            remedies = ("lower the learning rate or add warm-up" if (g.max_grad_norm or clipped)
                        else "clip the gradient norm (max_grad_norm=1.0), lower the learning rate or add warm-up")
            findings.append(Finding(
                "exploding",
                f"exploding gradients: global gradient norm {norm:.3g} at step {step} "
                f"(threshold {self.opt['exploding']:g}; peak {peak:.3g} in steps "
                f"{w.steps[0]}-{w.steps[-1]}).{clip} Remedies: {remedies}, check the "
                "initialisation, use normalisation layers; for RNNs prefer LSTM/GRU.",
                step=step, error=ExplodingGradientError))
        median = float(np.median([n for _, n in usable]))
        if median < self.opt["vanishing"]:
            findings.append(Finding(
                "vanishing",
                f"vanishing gradients: median global gradient norm {median:.3g} over steps "
                f"{w.steps[0]}-{w.steps[-1]} (threshold {self.opt['vanishing']:g}). "
                "Remedies: ReLU/GELU instead of sigmoid/tanh in deep stacks, He/Xavier "
                "initialisation, residual connections, normalisation layers; check that the "
                "loss is not detached or scaled to ~0.",
                step=usable[0][0], error=VanishingGradientError))
        elif w.per_param is not None and len(g.weight_index) >= 2:
            first, last = g.weight_index[0], g.weight_index[-1]
            rows = [i for i, (bad, sc) in enumerate(zip(w.nonfinite, w.scaler_skipped))
                    if not bad and not sc]
            col_first = w.per_param[rows, first]
            col_last = w.per_param[rows, last]
            ok = ~np.isnan(col_first) & ~np.isnan(col_last)
            if ok.any():
                nf, nl = float(np.median(col_first[ok])), float(np.median(col_last[ok]))
                if nl > 0 and nf > 0 and nf / nl < self.opt["layer_ratio"] \
                        and nf < self.opt["first_layer"]:
                    name = g.param_names[first]
                    findings.append(Finding(
                        "vanishing-layers",
                        f"vanishing gradients through depth: the first layer {name} gets a "
                        f"gradient norm of {nf:.3g}, {nf / nl:.2g} x that of the last layer "
                        f"{g.param_names[last]} ({nl:.3g}), over steps {w.steps[0]}-"
                        f"{w.steps[-1]}; the early layers barely learn. Remedies: ReLU/GELU "
                        "instead of sigmoid/tanh, He/Xavier initialisation, residual "
                        "connections, normalisation layers.",
                        step=w.steps[0], param=name, error=VanishingGradientError))
        return findings
