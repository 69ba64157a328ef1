"""divergence: the loss running away, or not moving at all.

Judged on a smoothed loss -- the rolling median of the last 25 step losses,
robust to single bad batches -- never on single batch losses:

* diverging   -- for ``persist`` steps the smoothed loss stays above ``factor`` x
  its best (by a margin that matters on the loss's scale), or, after the run had
  learned, above the loss it started from, or above ``worse_than_start`` x the
  loss before training (a blow-up the run never recovered from);
* no-progress -- for ``window`` steps the smoothed loss has not improved by
  ``min_improvement`` (relative to its value at the last improvement) and its
  best is still within ``learned`` (10 %) of the starting loss: the run has not
  learned anything yet. A run that has learned and then plateaus is healthy and
  is not reported -- also when its plateau is high: a noisy or hard task (heavily
  overlapping classes, noisy regression targets) settles at a floor that no
  learning rate removes.
* chance      -- ``window`` steps after the first smoothed value, a
  classification loss (cross-entropy, BCE) has never been clearly below the
  value of an untrained model (``chance`` x ``log C``): the model predicts no
  better than chance (labels shuffled or misaligned, dead units after a
  blow-up). It takes the place of no-progress.

The loss *before training* is not only the first smoothed value: a blow-up in
the first 25 steps would become the baseline. It is also taken from the very
first losses where they can be trusted -- the step-0 loss of a classification
loss near its untrained value (little batch-to-batch noise there), or the
median of the first ``early`` losses when they agree with each other.
"""
from __future__ import annotations

import math
import statistics
from collections import deque
from typing import List, Optional

from ..errors import DivergenceError
from .base import Check, Finding


def untrained_loss(meta) -> Optional[float]:
    """The loss an untrained classifier gives (``log C``, ``log 2``) in the loss's
    own units (a ``reduction="sum"`` loss is summed over the batch); None when the
    loss type is not one the initial-loss check knows."""
    if not meta:
        return None
    return meta["expected"] * meta["divide"]


class DivergenceCheck(Check):
    name = "divergence"
    error = DivergenceError
    defaults = {
        "smooth": 25,            # the smoothed loss is the median of the last `smooth` steps
        "factor": 3.0,           # smoothed > factor x best ...
        "worse_than_start": 2.0,  # ... or > this x the loss before training ...
        "persist": 10,           # ... for this many consecutive steps
        "min_steps": 10,         # smoothed values (after the first full window) before judging
        "window": 200,           # steps without progress
        "min_improvement": 0.01,
        "learned": 0.1,          # best below (1 - learned) x start: the run has learned
        "early": 5,              # first losses whose median may serve as the start
        "chance": 0.97,          # best smoothed >= chance x log C: no better than chance
    }

    def __init__(self, mode, options, guard):
        super().__init__(mode, options, guard)
        self._recent = deque(maxlen=int(self.opt["smooth"]))
        self._early: List[float] = []
        self._first: Optional[tuple] = None   # (step, loss) of the first finite loss
        self._n = 0
        self._n_smoothed = 0
        self._above = 0
        self.smoothed = None
        self.best = math.inf
        self.best_step = None
        self.start = None
        self.start_from = None       # which losses gave `start`, for the messages
        self.peak = None             # (loss, step): the largest single finite loss
        self._last_improvement = 0
        self._ref = math.inf          # the smoothed loss at the last improvement
        self._first_smoothed = 0      # the step of the first smoothed value
        self._done = set()

    # ---------------------------------------------------------------- start
    def _early_start(self, first_smoothed: float, first_step: int):
        """The loss before training and where it came from: the lowest of the
        first smoothed value and the trusted early losses (see the module doc)."""
        candidates = [(first_smoothed, f"median of steps {first_step - len(self._recent) + 1}-"
                                        f"{first_step}")]
        early = self._early
        if len(early) == self.opt["early"] and min(early) > 0 and max(early) <= 1.5 * min(early):
            # Five losses that agree within 50 %: little noise, a reliable start.
            candidates.append((statistics.median(early),
                               f"median of the first {len(early)} steps"))
        untrained = untrained_loss(getattr(self.guard, "_loss_meta", None))
        if untrained and self._first is not None and self._first[0] == 0 and \
                0.5 * untrained <= self._first[1] <= 2.0 * untrained:
            # An untrained classifier predicts about uniformly on every batch: its
            # step-0 loss (the initial-loss check's normal band) is not a noisy sample.
            candidates.append((self._first[1], "step 0, before any update"))
        return min(candidates, key=lambda c: c[0])

    def _blew_up(self) -> bool:
        """A single loss far above the start (the loss of an untrained model is
        normally the highest a run sees): the run saw a blow-up."""
        return self.peak is not None and self.start is not None and self.start > 0 and \
            self.peak[0] > self.opt["factor"] * self.start

    def _blow_up_note(self) -> str:
        if not self._blew_up():
            return ""
        return f" The loss blew up to {self.peak[0]:.4g} at step {self.peak[1]} on the way."

    # ---------------------------------------------------------------- judge
    def on_window(self, w) -> List[Finding]:
        findings: List[Finding] = []
        for step, loss, bad in zip(w.steps, w.loss, w.nonfinite):
            if loss is None or bad or not math.isfinite(loss):
                continue   # the finite check owns NaN/Inf
            self._n += 1
            if self._first is None:
                self._first = (step, loss)
            if len(self._early) < self.opt["early"]:
                self._early.append(loss)
            if self.peak is None or loss > self.peak[0]:
                self.peak = (loss, step)
            self._recent.append(loss)
            if len(self._recent) < self._recent.maxlen:
                continue   # judge only full windows: a median of 1-2 losses is just noise
            # A rolling median: robust to single bad batches, follows a real trend
            # within smooth/2 steps.
            sm = statistics.median(self._recent)
            if self.start is None:
                self.start, self.start_from = self._early_start(sm, step)
                # The loss before training counts as the best so far: a blow-up inside
                # the first window must not become the reference.
                if self.start < sm:
                    self.best, self.best_step = self.start, self._first[0]
                # Progress is counted from the first smoothed value.
                self._ref, self._last_improvement = sm, step
                self._first_smoothed = step
            self._n_smoothed += 1
            self.smoothed = sm
            # An improvement: min_improvement below the value at the last improvement
            # (not below the running best, which a slow steady decrease drags along so
            # that no single step ever improves on it by 1 %).
            if sm < self._ref - self.opt["min_improvement"] * abs(self._ref):
                self._ref, self._last_improvement = sm, step
            if sm < self.best:
                self.best, self.best_step = sm, step
            if "diverging" not in self._done and self._n_smoothed >= self.opt["min_steps"]:
                finding = self._diverging(step, sm)
                if finding is not None:
                    findings.append(finding)
            if "no-progress" in self._done:
                continue
            # Judged on its own: labels the model cannot learn (shuffled) still let it
            # memorise a little, so its loss creeps down by more than 1 % now and then.
            chance = step - self._first_smoothed >= self.opt["window"] and self._at_chance(sm)
            stalled = self.start > 0 and step - self._last_improvement >= self.opt["window"] \
                and self.best > (1.0 - self.opt["learned"]) * self.start
            if not (chance or stalled) or self._warming_up():
                continue   # during a warm-up the steps may still be tiny: no verdict yet
            self._done.add("no-progress")
            if chance:
                findings.append(self._chance(step, sm))
            else:
                # Still far above the start after a reported divergence: that finding
                # already says it all.
                if not ("diverging" in self._done and sm > self.opt["worse_than_start"]
                        * self.start):
                    findings.append(self._no_progress(step, sm))
        return findings

    def _warming_up(self) -> bool:
        """The learning rate rose over the last ``smooth`` steps: a warm-up is still under
        way, and a loss near log C may only mean the steps are still tiny."""
        def top(lr):
            vals = lr if isinstance(lr, (list, tuple)) else [lr]
            vals = [float(v) for v in vals if isinstance(v, (int, float))]
            return max(vals) if vals else None
        lrs = [top(lr) for lr in self.guard._history.recent_lrs(int(self.opt["smooth"]))]
        lrs = [v for v in lrs if v is not None]
        return len(lrs) >= 2 and lrs[-1] > lrs[0] * (1 + 1e-6)

    def _at_chance(self, sm: float) -> bool:
        """Never clearly below the untrained loss of a classifier (``log C``), and not
        far above it now (far above is a divergence, not chance)."""
        untrained = untrained_loss(getattr(self.guard, "_loss_meta", None))
        return bool(untrained) and self.best >= self.opt["chance"] * untrained and \
            sm <= 1.25 * untrained

    def _diverging(self, step: int, sm: float) -> Optional[Finding]:
        gap = sm - self.best
        progress = max(self.start - self.best, 0.0)
        # The rise must also be large on the loss's own scale: against the
        # progress made, and against the untrained loss (log C) when known.
        scale = untrained_loss(getattr(self.guard, "_loss_meta", None)) or 0.0
        far_above_best = gap > (self.opt["factor"] - 1) * abs(self.best) and \
            gap > 0.1 * progress and gap > 0.1 * scale
        # ... or it had learned (best <= 90 % of the start) and is now worse
        # than where it started: the progress is lost.
        lost_progress = self.start > 0 and self.best <= 0.9 * self.start and \
            sm > self.start + 0.5 * progress and gap > 0.1 * scale
        # ... or it never got back from a blow-up: far above the loss before training.
        worse_than_start = self.start > 0 and sm > self.opt["worse_than_start"] * self.start \
            and sm - self.start > 0.1 * scale
        # Noise lifts the median above the line for a few steps; a divergence
        # stays there. Require `persist` consecutive smoothed values.
        self._above = self._above + 1 if (far_above_best or lost_progress or
                                          worse_than_start) else 0
        if self._above < self.opt["persist"]:
            return None
        self._done.add("diverging")
        ratio = f"{sm / self.best:.3g} x" if self.best > 0 else "far above"
        start = ""
        if self.start_from and not self.start_from.startswith("median of steps"):
            start = f"; the loss before training was {self.start:.4g} ({self.start_from})"
            if self.best == self.start:   # the best is that loss: say where it came from once
                start = f" = the loss before training ({self.start_from})"
        return Finding(
            "diverging",
            f"the loss is diverging: smoothed loss (median of the last "
            f"{len(self._recent)} steps) {sm:.4g} at step {step}, {ratio} its best "
            f"{self.best:.4g} (step {self.best_step}){start}.{self._blow_up_note()} "
            "Remedies: lower the learning rate (run guard.lr_find) or add warm-up/decay, "
            "clip gradients (max_grad_norm), check for bad batches and for a sign error "
            "(maximising the loss); with Adam try a smaller lr or a larger eps.",
            step=step)

    def _lr_advice(self) -> str:
        if self._blew_up():
            # A blow-up followed by a flat loss: the step was too large (dead units,
            # saturated logits); a larger learning rate would make it worse.
            return ("the learning rate is too high: lower it (run guard.lr_find) or add "
                    "warm-up, clip gradients (max_grad_norm)")
        return "check the learning rate (run guard.lr_find)"

    def _chance(self, step: int, sm: float) -> Finding:
        meta = self.guard._loss_meta
        return Finding(
            "chance",
            f"no better than chance: after {step + 1} steps the smoothed loss ({sm:.4g} at "
            f"step {step}; best {self.best:.4g}) is still the loss of an untrained model, "
            f"{meta['detail']} with {meta['kind']}: the model predicts no better than "
            f"chance.{self._blow_up_note()} Remedies: check that labels match their inputs "
            "(shuffled or misaligned labels, a wrong target column, augmentation that "
            f"destroys the signal); {self._lr_advice()}; check that the optimizer holds the "
            "model's parameters and that gradients reach them.", step=step)

    def _no_progress(self, step: int, sm: float) -> Finding:
        blew_up = self._blew_up()
        lr_advice = self._lr_advice()
        return Finding(
            "no-progress",
            f"no progress: the smoothed loss ({sm:.4g} at step {step}) has not "
            f"improved by {self.opt['min_improvement']:.0%} in {self.opt['window']} "
            f"steps and is still near its starting value {self.start:.4g}."
            f"{self._blow_up_note()} Remedies: "
            + (f"{lr_advice}; " if blew_up else
               "raise the learning rate if it is small (run guard.lr_find); ")
            + "check that labels match inputs, that the optimizer holds the model's "
            "parameters and that gradients reach them.", step=step)
