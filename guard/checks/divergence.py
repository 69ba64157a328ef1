"""divergence: the loss running away, or not moving at all.

Judged on a smoothed loss -- the rolling median of the last 25 step losses,
robust to single bad batches -- never on single batch losses:

* diverging   -- for ``persist`` steps the smoothed loss stays above ``factor`` x
  its best (by a margin that matters on the loss's scale), or, after the run had
  learned, above the loss it started from;
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
        "factor": 3.0,           # smoothed > factor x best ...
        "persist": 10,           # ... for this many consecutive steps
        "min_steps": 10,         # smoothed values (after the first full window) before judging
        "window": 200,           # steps without progress
        "min_improvement": 0.01,
    }

    def __init__(self, mode, options, guard):
        super().__init__(mode, options, guard)
        self._recent = deque(maxlen=int(self.opt["smooth"]))
        self._n = 0
        self._n_smoothed = 0
        self._above = 0
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
            if len(self._recent) < self._recent.maxlen:
                continue   # judge only full windows: a median of 1-2 losses is just noise
            # A rolling median: robust to single bad batches, follows a real trend
            # within smooth/2 steps.
            sm = statistics.median(self._recent)
            if self.start is None:
                self.start = sm
            self._n_smoothed += 1
            self.smoothed = sm
            if self.best == math.inf or \
                    sm < self.best - self.opt["min_improvement"] * abs(self.best):
                self._last_improvement = step
            if sm < self.best:
                self.best, self.best_step = sm, step
            if "diverging" not in self._done and self._n_smoothed >= self.opt["min_steps"]:
                gap = sm - self.best
                progress = max(self.start - self.best, 0.0)
                # The rise must also be large on the loss's own scale: against the
                # progress made, and against the untrained loss (log C) when known.
                meta = getattr(self.guard, "_loss_meta", None)
                scale = meta["expected"] if meta else 0.0
                far_above_best = gap > (self.opt["factor"] - 1) * abs(self.best) and \
                    gap > 0.1 * progress and gap > 0.1 * scale
                # ... or it had learned (best <= 90 % of the start) and is now worse
                # than where it started: the progress is lost.
                lost_progress = self.start > 0 and self.best <= 0.9 * self.start and \
                    sm > self.start + 0.5 * progress and gap > 0.1 * scale
                above = far_above_best or lost_progress
                # Noise lifts the median above the line for a few steps; a divergence
                # stays there. Require `persist` consecutive smoothed values.
                self._above = self._above + 1 if above else 0
                if self._above >= self.opt["persist"]:
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
