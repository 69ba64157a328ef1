"""finite: NaN/Inf in the loss, the gradients, or the parameters after a step.

The policy (``on_nonfinite`` or ``checks={"finite": ...}``):

* ``"raise"`` -- NonFiniteError naming the step and the first offending
  parameter; the non-finite update is not applied (see the guard for how this
  is done without a per-step host sync);
* ``"skip"``  -- the update is skipped (optimizer state untouched), training
  goes on, skipped steps are counted in ``history`` and ``report()``;
* ``"warn"``  -- a warning only: the update is applied.

Steps that a GradScaler skipped (inf gradients in fp16 AMP) are normal and
never reported.
"""
from __future__ import annotations

import math
from typing import List, Optional

from ..errors import NonFiniteError
from .base import Check, Finding

_REMEDIES = ("Remedies: lower the learning rate, clip gradients (max_grad_norm), check the "
             "batch for NaN/Inf inputs, guard log/sqrt/division against 0, use bf16 or a "
             "GradScaler for fp16.")


class FiniteCheck(Check):
    name = "finite"
    error = NonFiniteError
    modes = ("off", "warn", "raise", "skip")
    defaults: dict = {}

    def first_offender(self, loss: Optional[float], per_row, has_grad) -> str:
        """Name what went non-finite first: the first parameter whose gradient
        norm is NaN/Inf (in the optimizer's order), else the loss."""
        if per_row is not None:
            for name, v, present in zip(self.guard.param_names, per_row, has_grad):
                if present and not math.isfinite(v):
                    return name
        if loss is not None and not math.isfinite(loss):
            return "loss"
        return "?"

    def explosion_before(self, w, k: int) -> Optional[tuple]:
        """(step, norm) of the first finite gradient norm above the exploding threshold
        before step ``w.steps[k]``: in this window, else in the window before. A NaN is
        often the overflow of the update an exploding gradient made."""
        gn = self.guard._checks["gradient-norm"]
        limit = gn.opt["exploding"]
        for j in range(k):
            n = w.grad_norm[j]
            if n is not None and math.isfinite(n) and n > limit and not w.nonfinite[j] \
                    and not w.scaler_skipped[j]:
                return w.steps[j], n
        last = gn.last_exploding
        if last is not None and w.steps[k] - last[0] <= self.guard.check_every:
            return last
        return None

    def describe(self, step: int, loss: Optional[float], where: str, exact: bool,
                 explosion: Optional[tuple] = None) -> Finding:
        what = "the loss" if where == "loss" else f"the gradient of {where}"
        seen = f"non-finite value (NaN/Inf) in {what} at step {step}"
        if loss is not None and where != "loss":
            seen += f" (loss {loss:.4g})"
        if explosion is not None:
            seen += (f", after an exploding gradient (global norm {explosion[1]:.3g} at step "
                     f"{explosion[0]}) whose update most likely made the model overflow")
        if self.mode == "skip":
            tail = "the update was skipped (optimizer state untouched); later skips are counted " \
                   "in g.history / g.report()."
        elif self.mode == "raise":
            tail = ("the update was not applied: parameters and optimizer state are those of "
                    "the last good step." if exact else
                    "it was detected at the periodic read-back, so the parameters may have "
                    "taken non-finite updates since; for an exact stop use a fused optimizer "
                    "(e.g. Adam(fused=True)) or check_every=1.")
        else:
            tail = "the update was applied (on_nonfinite='warn')."
        return Finding("nonfinite", f"{seen}: {tail} {_REMEDIES}", step=step,
                       param=None if where == "loss" else where)

    def on_window(self, w) -> List[Finding]:
        findings: List[Finding] = []
        for k, (step, bad) in enumerate(zip(w.steps, w.nonfinite)):
            if bad:
                row = w.per_param[k].tolist() if w.per_param is not None else None
                mask = w.has_grad[k].tolist() if w.has_grad is not None else None
                where = self.first_offender(w.loss[k], row, mask)
                exact = self.guard._gate in ("host", "device")
                findings.append(self.describe(step, w.loss[k], where, exact,
                                              self.explosion_before(w, k)))
                break
        bad_params = getattr(w, "nonfinite_params", None)
        if bad_params:
            findings.append(Finding(
                "nonfinite-params",
                f"non-finite values in the parameters after step {w.steps[-1] if w.steps else 0}"
                f", first in {bad_params[0]}"
                f"{' (and %d more)' % (len(bad_params) - 1) if len(bad_params) > 1 else ''}. "
                + _REMEDIES, step=w.steps[-1] if w.steps else None, param=bad_params[0]))
        return findings
