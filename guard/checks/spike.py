"""spike: a loss or gradient-norm spike relative to its own recent level.

The absolute thresholds (gradient norm above 1e3, NaN/Inf) miss the spikes
practitioners see most: a loss that jumps from 0.3 to 6 for one batch, a
gradient norm of 40 in a run whose norms sit around 1. A step spikes when its
value is

* above ``factor`` (10) x the median of the previous ``window`` (50) steps'
  values (judged once ``min_history`` (10) of them are finite), and
* above ``floor`` (0.5) x the median of the run's first ``window`` values --
  so that a run which has converged to a loss of 1e-3 does not call a batch at
  0.05 a spike: relative noise near zero is not a blow-up -- and
* above ``above_max`` (3) x the largest value of the previous ``window`` steps
  that was not itself a spike -- clearly outside the run's own recent range.
  Per-batch losses of small batches are heavy-tailed (a batch of 2 with one
  misclassified sample has a loss 100x the median); measured on healthy MLP runs
  with batches of 1-4 this cut the steps called spikes from 36 series to 3, with
  every injected spike still caught, and none at batches of 8 or more.

Values from every finite step enter the median, spikes included, so a lasting
change of level (a new curriculum stage) stops counting as a spike after about
``window / 2`` steps instead of being flagged (or skipped) for ever; spikes stay
out of the maximum, so a second spike soon after a first is still one.

Where it is computed
--------------------
In ``"warn"`` and ``"raise"`` modes the check costs nothing per step: the loss
and the global gradient norm of every step already travel to the host at each
read-back (every ``check_every`` steps), and the check judges them there
(:class:`SpikeHistory`). ``"skip"`` (``on_spike="skip"``) needs a decision
*before* the update, taken where the non-finite ``"skip"`` policy takes its own:
on the host when the guard gates there (the CPU, where reading the two values is
free and the decision exact; a non-fused optimizer on an accelerator, one read
per step -- the documented cost of the opt-in policy) with the same
:class:`SpikeHistory` (:class:`HostSpikeGate`); on the device with a fused
optimizer on an accelerator, where a small on-device ring buffer
(:class:`DeviceSpikeRing`, 2 x ``window`` floats) keeps the same statistics and
the flag reaches the kernel as ``found_inf`` (no sync).
"""
from __future__ import annotations

import math
from collections import deque
from typing import List, Optional

import torch

from ..errors import DivergenceError, ExplodingGradientError
from .base import Check, Finding

# The two series, in this order in the ring buffer and in findings.
SERIES = ("loss", "grad_norm")


def lower_median(values: List[float]) -> float:
    """The median as ``torch.nanmedian`` takes it (the lower of the two middle
    values): the host and the device judge alike. NaN when nothing is finite."""
    finite = sorted(v for v in values if v == v)
    return finite[(len(finite) - 1) // 2] if finite else math.nan


class SpikeHistory:
    """The host-side statistics of one series (exact; fed at read-back)."""

    def __init__(self, window: int, min_history: int, factor: float, floor: float,
                 above_max: float):
        self.recent: deque = deque(maxlen=window)   # NaN where the step had no finite value
        self.calm: deque = deque(maxlen=window)     # the same, NaN where the step spiked
        self.early: List[float] = []                # values of the run's first `window` steps
        self.window, self.min_history = window, min_history
        self.factor, self.floor, self.above_max = factor, floor, above_max

    def judge(self, step: int, value: Optional[float]) -> Optional[float]:
        """The median of the previous steps when this step's value spikes, else ``None``;
        then records the value."""
        v = value if value is not None and math.isfinite(value) else math.nan
        median = math.nan
        if sum(1 for x in self.recent if x == x) >= self.min_history:
            median = lower_median(list(self.recent))
            calm = [x for x in self.calm if x == x]
            spike = v > self.factor * median and v > self.floor * lower_median(self.early) \
                and v > self.above_max * (max(calm) if calm else math.nan)
        else:
            spike = False
        self.recent.append(v)
        self.calm.append(math.nan if spike else v)
        if step < self.window:
            self.early.append(v)
        return median if spike else None


class DeviceSpikeRing:
    """The same statistics as :class:`SpikeHistory`, for both series at once, kept on
    the device: a per-step decision without a host read (``on_spike="skip"``)."""

    def __init__(self, window: int, min_history: int, factor: float, floor: float,
                 above_max: float, device):
        nan = float("nan")
        self.recent = torch.full((len(SERIES), window), nan, device=device)
        self.calm = torch.full((len(SERIES), window), -math.inf, device=device)
        self.early = torch.full((len(SERIES), window), nan, device=device)
        self.window, self.min_history = window, min_history
        self.factor, self.floor, self.above_max = factor, floor, above_max

    def flag(self, step: int, loss: Optional[torch.Tensor],
             norm: Optional[torch.Tensor]) -> torch.Tensor:
        """0-d bool on the device: this step spikes in the loss or the gradient norm.
        Also records the step's values (a host-side step index, so no sync)."""
        dev = self.recent.device
        nan = torch.full((), float("nan"), device=dev)
        vals = torch.stack([nan if t is None else t.detach().reshape(()).float().to(dev)
                            for t in (loss, norm)])
        vals = torch.where(torch.isfinite(vals), vals, nan)
        count = torch.isfinite(self.recent).sum(dim=1)
        median = torch.nanmedian(self.recent, dim=1).values
        early = torch.nanmedian(self.early, dim=1).values
        calm_max = self.calm.amax(dim=1)   # -inf slots: no value, or a spike
        # Comparisons with NaN are False: no history, no spike.
        spikes = (count >= self.min_history) & (vals > self.factor * median) & \
                 (vals > self.floor * early) & (vals > self.above_max * calm_max) & \
                 (calm_max > -math.inf)
        pos = step % self.window
        self.recent[:, pos] = vals
        self.calm[:, pos] = torch.where(spikes | torch.isnan(vals),
                                        torch.full_like(vals, -math.inf), vals)
        if step < self.window:
            self.early[:, step] = vals
        return spikes.any()


class HostSpikeGate:
    """The per-step decision of ``on_spike="skip"`` where the guard gates on the host:
    the two values read back (free on the CPU) and judged by :class:`SpikeHistory`
    -- exact, and a few microseconds where the device ring's dozen tiny tensor ops on
    the CPU cost far more."""

    def __init__(self, make_history):
        self.history = [make_history() for _ in SERIES]

    def flag(self, step: int, loss: Optional[torch.Tensor],
             norm: Optional[torch.Tensor]) -> bool:
        present = [t for t in (loss, norm) if t is not None]
        if all(t.device.type == "cpu" for t in present):
            host = [t.item() for t in present]
        else:   # one transfer for both
            host = torch.stack([t.detach().reshape(()).float().to(present[0].device)
                                for t in present]).cpu().tolist() if present else []
        it = iter(host)
        values = [None if t is None else next(it) for t in (loss, norm)]
        spikes = [h.judge(step, v) is not None for h, v in zip(self.history, values)]
        return any(spikes)


_REMEDIES = {
    "loss": ("inspect the batch of that step (corrupt samples, wrong labels, an outlier "
             "sequence), lower the learning rate or lengthen warm-up, clip the gradient norm "
             "(max_grad_norm); with Adam, a lower beta2 (0.95) or a larger eps damps such "
             "spikes; on_spike='skip' skips the spiking steps"),
    "grad_norm": ("clip the gradient norm (max_grad_norm=1.0) if you do not, inspect the "
                  "batch of that step (outliers, corrupt samples), lower the learning rate "
                  "or lengthen warm-up; on_spike='skip' skips the spiking steps"),
}
_WHAT = {"loss": "loss", "grad_norm": "gradient norm (global, before clipping)"}


class SpikeCheck(Check):
    name = "spike"
    error = DivergenceError
    modes = ("off", "warn", "raise", "skip")
    defaults = {
        "factor": 10.0,      # a value above factor x the median of the last `window` steps
        "window": 50,        # steps in the running median
        "min_history": 10,   # finite values needed before anything is judged
        "floor": 0.5,        # ... and above floor x the median of the run's first `window`
        "above_max": 3.0,    # ... and above this x the largest non-spike of the last `window`
    }

    def __init__(self, mode, options, guard):
        super().__init__(mode, options, guard)
        window, least = int(self.opt["window"]), int(self.opt["min_history"])
        if window < 2 or not 1 <= least <= window:
            raise ValueError(f"check 'spike': need window >= 2 and 1 <= min_history <= window, "
                             f"got window={window}, min_history={least}")
        if not self.opt["factor"] > 1:
            raise ValueError(f"check 'spike': factor must be > 1, got {self.opt['factor']!r}")
        self.opt["window"], self.opt["min_history"] = window, least
        self._history = {s: self._new_history() for s in SERIES}
        # Only for "skip", made by the guard: HostSpikeGate or DeviceSpikeRing.
        self.ring = None

    def _new_history(self) -> SpikeHistory:
        return SpikeHistory(self.opt["window"], self.opt["min_history"],
                            float(self.opt["factor"]), float(self.opt["floor"]),
                            float(self.opt["above_max"]))

    def make_gate(self, device, on_host: bool):
        """The per-step decision for "skip", where the guard gates (see the module doc)."""
        if on_host:
            self.ring = HostSpikeGate(self._new_history)
        else:
            self.ring = DeviceSpikeRing(self.opt["window"], self.opt["min_history"],
                                        float(self.opt["factor"]), float(self.opt["floor"]),
                                        float(self.opt["above_max"]), device)
        return self.ring

    def on_window(self, w) -> List[Finding]:
        # Per series: the first spike of the window and the count. In "skip" mode the
        # gate decided on the device with the same statistics; the host judges the same
        # values here to say which series spiked, and w.skipped says what was done.
        seen = {s: [] for s in SERIES}
        for k, step in enumerate(w.steps):
            values = {"loss": w.loss[k], "grad_norm": w.grad_norm[k]}
            if w.scaler_skipped[k]:
                values["grad_norm"] = None   # a GradScaler overflow is not the model's norm
            for s in SERIES:
                median = self._history[s].judge(step, values[s])
                if median is not None:
                    seen[s].append((step, values[s], median, w.skipped[k]))
        findings: List[Finding] = []
        for s in SERIES:
            if not seen[s]:
                continue
            step, v, median, skipped = seen[s][0]
            more = (f"; {len(seen[s])} spiking steps in steps {w.steps[0]}-{w.steps[-1]}"
                    if len(seen[s]) > 1 else "")
            fate = (" The update of that step was skipped (on_spike='skip'; optimizer state "
                    "untouched); skipped steps are counted in g.history / g.report()."
                    if skipped and self.mode == "skip" else "")
            remedies = _REMEDIES[s]
            if s == "grad_norm" and self.guard.max_grad_norm:
                remedies = remedies.replace("clip the gradient norm (max_grad_norm=1.0) if you "
                                            "do not, ", "")   # clipping bounds the update already
            findings.append(Finding(
                f"{s.replace('_', '-')}-spike",
                f"{_WHAT[s]} spike at step {step}: {v:.4g}, {v / median:.3g} x the median "
                f"{median:.4g} of the previous {self.opt['window']} steps (threshold "
                f"{self.opt['factor']:g} x){more}.{fate} Remedies: {remedies}.",
                step=step,
                error=DivergenceError if s == "loss" else ExplodingGradientError))
        return findings
