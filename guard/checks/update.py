"""update: do the trainable parameters really learn?

* not-in-optimizer -- requires grad but is in no param group (checked on entry);
* no-grad          -- requires grad, is in the optimizer, but never got a
                      ``.grad`` (unused in forward, or cut off by ``.detach()``);
* zero-grad        -- got gradients that were exactly 0 on every step;
* unchanged        -- had gradients, yet the step did not move it (lr = 0, a
                      frozen param group, an optimizer bug);
* ratio-low / ratio-high -- the update-to-weight ratio ``|dW| / |W|`` of a
  weight matrix, median over the sampled steps: about 1e-3 is healthy, far
  below means learning nothing, far above means unstable.

Parameter movement is *sampled*: on a few steps the guard reads a fixed set of
at most 32 elements per tensor before and after the step (a small constant
per parameter, never a copy of the model), plus the whole tensor's norm.
"""
from __future__ import annotations

from collections import deque
from typing import List

import numpy as np

from ..errors import NoUpdateError
from ..window import nanmedian
from .base import Check, Finding


def _names(names: List[str], limit: int = 5) -> str:
    extra = f" (and {len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + extra


class UpdateCheck(Check):
    name = "update"
    error = NoUpdateError
    defaults = {
        "min_steps": 2,        # steps before "never got a gradient" is judged
        "min_samples": 2,      # sampled steps before "did not change" is judged
        "ratio_low": 1e-7,     # median update/weight ratio below this: learning nothing
        "ratio_high": 0.5,     # ... above this: unstable
        "ratio_samples": 3,    # sampled steps (after step 1) before ratios are judged
        "ratio_window": 50,    # the median is over the latest this many samples
    }

    def __init__(self, mode, options, guard):
        super().__init__(mode, options, guard)
        self._ever_nonzero = None      # per param: a non-zero gradient was seen
        self._grad_typical = None      # per param: largest window-median gradient norm
        # Bounded state, whatever the run's length: which parameters were ever seen
        # moving, how many samples were taken, and the ratios of the latest ones.
        self._moved = None
        self._n_samples = 0
        self._last_sample_step = None
        self._recent_ratios = deque(maxlen=int(self.opt["ratio_window"]))
        self._reported = set()         # params already blamed for a cause

    def on_enter(self) -> List[Finding]:
        g = self.guard
        in_opt = {id(p) for grp in g.optimizer.param_groups for p in grp["params"]}
        missing = [n for n, p in g.root.named_parameters()
                   if p.requires_grad and id(p) not in in_opt]
        if not missing:
            return []
        self._reported.update(missing)
        return [Finding(
            "not-in-optimizer",
            f"parameters that require grad are missing from the optimizer: {_names(missing)}. "
            "They get gradients but are never updated. Remedies: build the optimizer from "
            "model.parameters() after the model is complete (e.g. after replacing a head), "
            "or freeze them with requires_grad_(False).", param=missing[0])]

    def on_window(self, w) -> List[Finding]:
        g = self.guard
        findings: List[Finding] = []
        P = len(g.param_names)
        if self._ever_nonzero is None:
            self._ever_nonzero = np.zeros(P, dtype=bool)
        if w.per_param is not None and len(w):
            ok_rows = ~np.asarray(w.nonfinite, dtype=bool)
            vals = np.where(w.has_grad[ok_rows], w.per_param[ok_rows], 0.0)
            self._ever_nonzero |= (np.nan_to_num(vals, nan=1.0) != 0).any(axis=0)
            if vals.size:
                typical = nanmedian(np.where(np.isfinite(vals), vals, np.nan), axis=0)
                self._grad_typical = typical if self._grad_typical is None else \
                    np.fmax(self._grad_typical, typical)

        if g.step >= self.opt["min_steps"]:
            never = [g.param_names[i] for i in sorted(g._unseen)
                     if g.param_names[i] not in self._reported]
            if never:
                self._reported.update(never)
                findings.append(Finding(
                    "no-grad",
                    f"parameters that require grad received no gradient in {g.step} steps: "
                    f"{_names(never)}. They are not used in the forward pass or are cut off "
                    "from the loss (.detach(), .data, torch.no_grad(), a tensor rebuilt from "
                    ".item()/numpy). Remedies: remove the detach, or freeze/remove them "
                    "(requires_grad_(False)) if they are meant to be unused.",
                    step=g.step - 1, param=never[0]))
            zero = [g.param_names[i] for i in range(P)
                    if not self._ever_nonzero[i] and i not in g._unseen
                    and g.param_names[i] not in self._reported]
            if zero and w.per_param is not None:
                self._reported.update(zero)
                findings.append(Finding(
                    "zero-grad",
                    f"parameters whose gradient was exactly 0 on every one of {g.step} steps: "
                    f"{_names(zero)}. They are cut off from the loss (a detached branch with "
                    "zero_grad(set_to_none=False), a multiplication by 0, dead ReLUs). "
                    "Remedies: check the forward pass for detach()/.data and masks.",
                    step=g.step - 1, param=zero[0]))

        for smp in w.updates:
            if not smp.applied:
                continue
            if self._moved is None:
                self._moved = np.zeros(P, dtype=bool)
            with np.errstate(invalid="ignore"):
                full_moved = (smp.full_before != smp.full_after) & ~np.isnan(smp.full_before)
                self._moved |= (smp.delta > 0) | full_moved
            self._n_samples += 1
            self._last_sample_step = smp.step
            if smp.step >= 2:                  # Adam's first steps are special
                self._recent_ratios.append(smp.ratio)
        if self._moved is not None:
            # Once every parameter has been seen moving, later samples can skip the
            # whole-tensor norms (the only full pass of the update check).
            g.needs_full_norms = not self._moved.all()
        findings += self._unchanged(w)
        findings += self._ratios(w)
        return findings

    def _unchanged(self, w) -> List[Finding]:
        g = self.guard
        if self._n_samples < self.opt["min_samples"]:
            return []
        moved = self._moved
        # A gradient that is only rounding noise (e.g. the bias of a layer followed
        # by BatchNorm: exactly 0 in exact arithmetic) legitimately moves nothing.
        typical = self._grad_typical
        if typical is None:
            return []
        with np.errstate(all="ignore"):
            floor = 1e-6 * nanmedian(typical) if np.isfinite(typical).any() else 0.0
        still = [g.param_names[i] for i in range(len(moved))
                 if not moved[i] and self._ever_nonzero[i] and typical[i] > floor
                 and g.param_names[i] not in self._reported]
        if not still:
            return []
        self._reported.update(still)
        lrs = sorted({grp.get("lr") for grp in g.optimizer.param_groups
                      if not hasattr(grp.get("lr"), "item")})
        return [Finding(
            "unchanged",
            f"parameters with non-zero gradients did not change over "
            f"{self._n_samples} sampled steps (up to step {self._last_sample_step}): "
            f"{_names(still)}. Learning rate(s): {lrs}. Remedies: check the learning rate "
            "(lr = 0, a scheduler that decayed it to 0, a param group with lr 0) and that "
            "the optimizer is the one being stepped.", step=self._last_sample_step,
            param=still[0])]

    def _ratios(self, w) -> List[Finding]:
        g = self.guard
        n = len(self._recent_ratios)
        if n < self.opt["ratio_samples"] or not g.weight_index:
            return []
        ratios = np.stack(self._recent_ratios)[:, g.weight_index]
        with np.errstate(all="ignore"):
            med = nanmedian(np.where(np.isfinite(ratios), ratios, np.nan), axis=0)
        findings = []
        low = [(g.param_names[j], m) for j, m in zip(g.weight_index, med)
               if np.isfinite(m) and 0 < m < self.opt["ratio_low"]
               and g.param_names[j] not in self._reported]
        high = [(g.param_names[j], m) for j, m in zip(g.weight_index, med)
                if np.isfinite(m) and m > self.opt["ratio_high"]
                and g.param_names[j] not in self._reported]
        if low:
            self._reported.update(n for n, _ in low)
            name, m = low[0]
            findings.append(Finding(
                "ratio-low",
                f"update-to-weight ratio of {name} is {m:.2g} (median over {n} "
                f"sampled steps; about 1e-3 is healthy{', also ' + _names([n for n, _ in low[1:]]) if len(low) > 1 else ''}): "
                "the layer is effectively not learning. Remedies: raise the learning rate, "
                "check the scheduler and weight decay.",
                step=self._last_sample_step, param=name))
        if high:
            self._reported.update(n for n, _ in high)
            name, m = high[0]
            findings.append(Finding(
                "ratio-high",
                f"update-to-weight ratio of {name} is {m:.2g} (median over {n} "
                f"sampled steps; about 1e-3 is healthy{', also ' + _names([n for n, _ in high[1:]]) if len(high) > 1 else ''}): "
                "each step rewrites a large part of the weights, training is unstable. "
                "Remedies: lower the learning rate, add warm-up, clip gradients.",
                step=self._last_sample_step, param=name))
        return findings
