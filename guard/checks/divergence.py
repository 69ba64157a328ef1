"""divergence: the loss running away, or not moving at all.

Judged on a smoothed loss -- the rolling median of the last 25 step losses,
robust to single bad batches -- never on single batch losses:

* diverging   -- after ``min_steps``, the smoothed loss is above ``factor`` x its
  best and has given back a real part of the progress made since the start;
* no-progress -- for ``window`` steps the best smoothed loss has not improved by
  ``min_improvement`` (relative) and it is still above half the starting loss:
  the run has not learned anything yet. A run that has learned and then
  plateaus is healthy and is not reported.
"""
from __future__ import annotations

import math
import statistics
from collections import deque
from typing import List

from ..errors import DivergenceError
from .base import Check, Finding


class DivergenceCheck(Check):
    name = "divergence"
    error = DivergenceError
    defaults = {
        "smooth": 25,            # the smoothed loss is the median of the last `smooth` steps
        "factor": 2.0,           # smoothed > factor x best (TheDeepChecker's ratio)
        "min_steps": 25,         # steps before divergence is judged
        "window": 200,           # steps without progress
        "min_improvement": 0.01,
    }

    def __init__(self, mode, options, guard):
        super().__init__(mode, options, guard)
        self._recent = deque(maxlen=int(self.opt["smooth"]))
        self._first: List[float] = []
        self._n = 0
        self.smoothed = None
        self.best = math.inf
        self.best_step = None
        self.start = None
        self._last_improvement = 0
        self._done = set()

    def on_window(self, w) -> List[Finding]:
        findings: List[Finding] = []
        for step, loss, bad in zip(w.steps, w.loss, w.nonfinite):
            if loss is None or bad or not math.isfinite(loss):
                continue   # the finite check owns NaN/Inf
            self._n += 1
            self._recent.append(loss)
            if len(self._first) < 5:
                self._first.append(loss)
                self.start = statistics.median(self._first)
            # A rolling median: robust to single bad batches, follows a real trend
            # within smooth/2 steps.
            sm = statistics.median(self._recent)
            self.smoothed = sm
            if self.best == math.inf or \
                    sm < self.best - self.opt["min_improvement"] * abs(self.best):
                self._last_improvement = step
            if sm < self.best:
                self.best, self.best_step = sm, step
            if "diverging" not in self._done and self._n >= self.opt["min_steps"]:
                gap = sm - self.best
                progress = max(self.start - self.best, 0.0)
                if gap > (self.opt["factor"] - 1) * abs(self.best) and gap > 0.1 * progress:
                    self._done.add("diverging")
                    ratio = f"{sm / self.best:.3g} x" if self.best > 0 else "far above"
                    findings.append(Finding(
                        "diverging",
                        f"the loss is diverging: smoothed loss (median of the last "
                        f"{len(self._recent)} steps) {sm:.4g} at step {step}, {ratio} its best "
                        f"{self.best:.4g} (step {self.best_step}). Remedies: lower the "
                        "learning rate or add warm-up/decay, clip gradients "
                        "(max_grad_norm), check for bad batches and for a sign error "
                        "(maximising the loss); with Adam try a smaller lr or a larger eps.",
                        step=step))
            if "no-progress" not in self._done and self.start is not None and self.start > 0 \
                    and step - self._last_improvement >= self.opt["window"] \
                    and self.best > 0.5 * self.start:
                self._done.add("no-progress")
                findings.append(Finding(
                    "no-progress",
                    f"no progress: the smoothed loss ({sm:.4g} at step {step}) has not "
                    f"improved by {self.opt['min_improvement']:.0%} in {self.opt['window']} "
                    f"steps and is still near its starting value {self.start:.4g}. "
                    "Remedies: raise the learning rate (run guard.lr_find), check that "
                    "labels match inputs, that the optimizer holds the model's parameters "
                    "and that gradients reach them.", step=step))
        return findings
