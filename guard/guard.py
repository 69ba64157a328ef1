"""TrainingGuard: the context manager that watches a training loop.

How it stays out of the way
---------------------------
* It attaches only through PyTorch's hooks: an optimizer step pre-hook and
  post-hook, a forward hook on ``loss_fn`` (when it is an ``nn.Module``) and,
  for the first forward pass only, forward hooks on the model's leaf modules.
  On exit every handle is removed, so the hook dicts are exactly as before --
  also when the body raises.
* Steady-state steps cause no host-device synchronisation. Before each step the
  pre-hook measures all gradient norms with one fused multi-tensor op
  (``torch._foreach_norm``), clips on the device, and appends the 0-d result
  tensors to a list. Every ``check_every`` steps (and at exit) the list is
  read back in one go and the checks judge the numbers.
* The costly measurements (parameter movement for the update check) are
  sampled, and use a fixed set of at most 32 elements per parameter tensor,
  picked at random once (seeded) so that they spread over rows and columns.

When the guard must skip or refuse an update
--------------------------------------------
``on_nonfinite="raise"`` / ``"skip"`` need a per-step decision ("gate"):

* ``"host"``: parameters on the CPU (a host read costs nothing there), or
  ``check_every=1``, or ``"skip"`` with a non-fused optimizer on an
  accelerator (the documented cost of that opt-in policy: one sync per step).
  The flag is read before the step; "raise" raises before the update, "skip"
  hides the gradients from the optimizer for that step (every PyTorch
  optimizer leaves a parameter without ``.grad`` and its state untouched).
* ``"device"``: a fused optimizer (``Adam/AdamW/SGD(fused=True)``) on an
  accelerator. The flag is handed to the fused kernel as ``found_inf`` -- the
  mechanism GradScaler uses -- so the update is skipped on the device with no
  sync; "raise" keeps the flag latched until the next read-back raises.
* ``"deferred"``: "raise" with a non-fused optimizer on an accelerator: the
  flag is only read back every ``check_every`` steps (no sync); the error is
  exact about the step but the update has been applied. Use a fused optimizer
  or ``check_every=1`` for a guaranteed clean stop.
"""
from __future__ import annotations

import math
import os
import sys
import warnings
from typing import Any, Dict, List, Mapping, Optional

import numpy as np
import torch
from torch import nn

from .checks import CHECKS
from .checks.early_stopping import EarlyStopping
from .checks.init import ActivationProbe
from .checks.initial_loss import describe_loss_call
from .config import parse_checks
from .decisions import make_decisions
from .distributed import is_sharded, local_tensor
from .errors import GuardWarning
from .report import History, format_report, to_json
from .window import UpdateSample, Window, nanmedian

_UNSET = object()
_SAMPLE_ELEMENTS = 32   # elements per tensor read to measure parameter movement


def _sample_indices(numel: int, gen: torch.Generator) -> torch.Tensor:
    """Up to ``_SAMPLE_ELEMENTS`` distinct flat indices of a tensor, a seeded random
    pick. A regular stride can fall into the tensor's layout: for Linear(784, 128)
    the stride numel/32 is a multiple of the row length, so every sample lies in
    input column 0 -- a pixel that is always 0 on MNIST, whose weights never move
    -- and a stride made coprime with the row only walks along the first columns.
    A random pick spreads over rows and columns (and channels, kernel positions)."""
    if numel <= _SAMPLE_ELEMENTS:
        return torch.arange(numel)
    if numel <= 64 * _SAMPLE_ELEMENTS:
        pick = torch.randperm(numel, generator=gen)[:_SAMPLE_ELEMENTS]
    else:   # no permutation of a huge tensor: draw twice as many, keep the distinct
        distinct = torch.unique(torch.randint(numel, (2 * _SAMPLE_ELEMENTS,), generator=gen))
        pick = distinct[torch.randperm(len(distinct), generator=gen)[:_SAMPLE_ELEMENTS]]
    return pick.sort().values


_INTERNAL_DIRS = (os.path.dirname(os.path.abspath(__file__)),
                  os.path.dirname(os.path.abspath(torch.__file__)))


def _user_stacklevel() -> int:
    """The stacklevel that points a warning at the user's line (the
    ``optimizer.step()`` or ``loss_fn(...)`` call), not at a hook inside
    guard or torch."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(_INTERNAL_DIRS):
        frame, level = frame.f_back, level + 1
    return level


class _Step:
    """What the pre-hook recorded for one step; tensors stay on the device."""

    __slots__ = ("step", "loss", "total", "applied", "per", "present", "bad", "scaler_inf",
                 "gate", "host_checked", "host_bad", "host_skipped", "lr")

    def __init__(self, step, loss, lr):
        self.step, self.loss, self.lr = step, loss, lr
        self.total = self.per = self.present = self.bad = self.scaler_inf = self.gate = None
        self.applied = None   # the norm at the step, when `total` was observed before a clip
        self.host_checked = self.host_bad = self.host_skipped = False


class TrainingGuard:
    """Watch a PyTorch training loop and enforce the practitioner's checklist.

    Use it as a context manager around your own loop::

        with TrainingGuard(model, optimizer, loss_fn=criterion, max_grad_norm=1.0,
                           patience=10) as g:
            for epoch in range(epochs):
                for x, y in loader:
                    optimizer.zero_grad()
                    loss = criterion(model(x), y)
                    loss.backward()
                    optimizer.step()          # the guard clips and checks here
                if g.early_stop(val_loss):
                    break
        print(g.report())

    Args:
        model: the ``nn.Module`` being trained (a ``torch.compile``'d module works).
        optimizer: its optimizer; one ``optimizer.step()`` is one guard step.
        loss_fn: the loss module (e.g. ``nn.CrossEntropyLoss()``); its calls are
            observed through a forward hook. ``None`` or a plain function: call
            :meth:`observe_loss` with the loss to enable the loss-based checks.
        max_grad_norm: clip gradients to this global L2 norm before each step
            (after ``GradScaler.unscale_``).
        clip_value: clip every gradient element to ``[-clip_value, clip_value]``.
        patience, min_delta, mode, restore_best: early stopping, see :meth:`early_stop`.
        on_nonfinite: ``"raise"`` (default), ``"skip"`` or ``"warn"``; the same as
            ``checks={"finite": ...}``, which wins if both are given.
        checks: ``{check name: mode}`` with modes ``"off"``, ``"warn"``, ``"raise"``
            (``"skip"`` for ``finite``), or ``{name: {"mode": ..., threshold: value}}``.
            Names: ``init``, ``initial-loss``, ``gradient-norm``, ``finite``,
            ``update``, ``divergence``. Defaults: ``finite`` raises, others warn.
        check_every: steps between host reads of the on-device numbers (50).
        process_group: under ``torch.distributed``, the group whose ranks agree on
            every decision (default: the world, when initialised with > 1 rank).
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, *,
                 loss_fn=None, max_grad_norm: Optional[float] = None,
                 clip_value: Optional[float] = None, patience: Optional[int] = None,
                 min_delta: float = 0.0, mode: str = "min", restore_best: bool = False,
                 on_nonfinite: str = "raise", checks: Optional[Mapping[str, Any]] = None,
                 check_every: int = 50, process_group=None):
        if not isinstance(model, nn.Module):
            raise TypeError("model must be an nn.Module")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError("optimizer must be a torch.optim.Optimizer")
        for name, v in (("max_grad_norm", max_grad_norm), ("clip_value", clip_value)):
            if v is not None and not (isinstance(v, (int, float)) and v > 0):
                raise ValueError(f"{name} must be a positive number or None, got {v!r}")
        if not isinstance(check_every, int) or check_every < 1:
            raise ValueError(f"check_every must be a positive int, got {check_every!r}")
        if on_nonfinite not in ("raise", "skip", "warn"):
            raise ValueError(f"on_nonfinite must be 'raise', 'skip' or 'warn', "
                             f"got {on_nonfinite!r}")
        self.model = model
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.max_grad_norm = None if max_grad_norm is None else float(max_grad_norm)
        self.clip_value = None if clip_value is None else float(clip_value)
        self.check_every = check_every
        # A torch.compile'd module wraps the real one: names, submodules and
        # state_dict keys come from the original.
        orig = getattr(model, "_orig_mod", None)
        self.root: nn.Module = orig if isinstance(orig, nn.Module) else model
        self._checks = {name: CHECKS[name](mode, opts, self)
                        for name, (mode, opts) in parse_checks(checks, on_nonfinite).items()}
        self._early = EarlyStopping(patience, min_delta, mode, restore_best)
        self._decisions = make_decisions(process_group)
        self._sharded = is_sharded(self.root)   # FSDP: each rank holds a shard
        self._history = History()
        self._events: List[Dict[str, Any]] = []
        self.notes: List[str] = []   # what the guard could not measure, shown by report()
        self._event_index: Dict[tuple, int] = {}
        self.step = 0                 # optimizer steps seen so far
        self._entered = self._active = False
        self._on_meta = False         # parameters on the meta device: nothing to measure yet
        self._handles: list = []
        self._probe: Optional[ActivationProbe] = None
        self._first_forward: list = []   # distributed: first-forward findings, agreed at step 0
        self._pending: List[_Step] = []
        self._observed: Optional[tuple] = None   # (step, norms) from observe_gradients()
        self._pending_updates: list = []
        self._hook_losses: List[torch.Tensor] = []
        self._user_losses: List[torch.Tensor] = []
        self._loss_meta: Any = None
        self._stashed: Optional[list] = None
        self._found_inf_prev: Any = _UNSET
        self._found_inf_set = False
        self._snapshot = None
        self._sample_idx: Optional[List[torch.Tensor]] = None
        self._force_gate: Optional[str] = None   # tests: exercise the accelerator paths on CPU
        self._gate: Optional[str] = None
        self.param_names: List[str] = []
        self.layer_grad_norm: Optional[np.ndarray] = None     # latest window, per parameter
        self.layer_update_ratio: Optional[np.ndarray] = None  # latest sampled step

    # ------------------------------------------------------------------ public
    @property
    def stopped(self) -> bool:
        """Whether :meth:`early_stop` has decided to stop."""
        return self._early.stopped

    @property
    def best_metric(self) -> Optional[float]:
        """The best metric passed to :meth:`early_stop` so far."""
        return self._early.best

    @property
    def history(self) -> List[Dict[str, Any]]:
        """One record per optimizer step: ``step``, ``loss`` (mean over the
        step's micro-batches), ``grad_norm`` (global, before clipping),
        ``applied_grad_norm`` (after clipping by norm), ``update_ratio`` (median
        over weight matrices, on sampled steps), ``nonfinite``, ``skipped`` (by
        the guard), ``scaler_skipped`` (by a GradScaler) and ``lr``.
        Inside the ``with`` block, reading it first reads back pending steps
        (one host-device sync)."""
        if self._active and not self._decisions.collective:
            self._read_back()
        return self._history.records()

    def observe_loss(self, loss) -> None:
        """Hand the training loss of a (micro-)batch to the guard.

        Needed only when ``loss_fn`` is not an ``nn.Module`` (``None`` or a plain
        function such as ``F.cross_entropy``): the loss feeds the finite,
        divergence and history records. Call it once per backward, with the
        tensor you call ``backward()`` on (before dividing by an accumulation
        count) or a float. When both are available for a step, the observed
        loss wins over the one seen through ``loss_fn``. The initial-loss check
        needs the logits and therefore a hooked loss module.
        """
        if isinstance(loss, torch.Tensor):
            v = loss.detach()
            v = (v.float().mean() if v.dim() else v.float())
        else:
            v = torch.tensor(float(loss), dtype=torch.float32)
        self._user_losses.append(v)
        self._observed = None   # a new micro-batch: an earlier observe_gradients() is stale

    def observe_gradients(self) -> None:
        """Measure this step's gradient norms now, between backward and a clipping
        that the guard does not do itself.

        When a framework clips (Lightning's ``gradient_clip_val``), the guard's
        own measurement at ``optimizer.step()`` sees the clipped gradients, and an
        exploding norm would read as the clip threshold. Called after backward
        and before that clipping, this makes the step's ``grad_norm`` (and the
        gradient-norm checks) use the norms the gradients really had. Costs one
        more norm pass on the device, no host sync. The Lightning callback calls
        it for you. The last call before the step counts; a training loss seen
        after it (the next micro-batch's, through ``loss_fn`` or
        ``observe_loss``) discards it, so call it after the last backward of the
        step.
        """
        if not self._active:
            return
        with torch.no_grad():
            _, measured = self._measure(self.optimizer)
        self._observed = (self.step, measured) if measured is not None else None

    def early_stop(self, metric) -> bool:
        """Record a validation metric; return ``True`` when training should stop.

        Stops once ``patience`` calls in a row brought no improvement larger than
        ``min_delta`` (``mode="min"``: lower is better, ``"max"``: higher). With
        ``restore_best=True`` the best weights (kept as one CPU copy) are loaded
        back into the model when the stop is decided. With ``patience=None`` it
        only tracks ``best_metric`` and never stops.
        """
        value = float(metric.detach().float().mean()) if isinstance(metric, torch.Tensor) \
            else float(metric)
        last_step = self.step - 1 if self.step else None
        stop = self._decisions.host_any(self._early.update(value, self.root, last_step))
        if stop and not self._early.stopped:
            self._early.stopped = True
            self._early.stop_step = last_step
            if self._early.restore_best:
                self._early.restore(self.root)
                if not self._sharded:   # DDP replicas: rank 0's best weights everywhere
                    self._decisions.sync_module(self.root)
        return stop

    def report(self) -> str:
        """A readable summary: steps, skipped steps, loss, gradient norms,
        early stopping, and every finding with its remedies."""
        if self._active and not self._decisions.collective:
            self._read_back()
        return format_report(self)

    def to_json(self, path) -> None:
        """Write the summary, the findings and the per-step history as JSON
        (under ``torch.distributed``: on rank 0 only)."""
        if not self._decisions.is_writer:
            return
        if self._active and not self._decisions.collective:
            self._read_back()
        to_json(self, path)

    def plot(self, path):
        """Plot loss, gradient norm (before and after clipping) and update ratio to
        ``path`` (needs matplotlib), with the findings, skipped steps and early
        stopping marked; returns the matplotlib ``Figure`` (``None`` on ranks other
        than 0 under ``torch.distributed``)."""
        if not self._decisions.is_writer:
            return None
        from .plot import plot_history
        if self._active and not self._decisions.collective:
            self._read_back()
        return plot_history(self._history, path, events=self._events, early=self._early,
                            max_grad_norm=self.max_grad_norm)

    # ------------------------------------------------------------ enter / exit
    def __enter__(self) -> "TrainingGuard":
        if self._entered:
            raise RuntimeError("a TrainingGuard is entered once; create a new one per run")
        self._entered = True
        self._collect_params()
        self._on_meta = self._meta_note()
        # Checks on entry run before any hook exists: raising here leaves nothing behind.
        for name in ("init", "update"):
            check = self._checks[name]
            # FSDP: each rank holds shards, not the layers' weights -- no init statistics.
            if check.mode != "off" and not (self._sharded and name == "init"):
                self._emit(check, check.on_enter())
        try:
            self._attach()
        except BaseException:
            self._detach()
            raise
        self._active = True
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            if exc_type is None:
                self._read_back(final=True)
            else:
                # The body failed already: record what happened, add no new error.
                try:
                    self._read_back(final=True, emit=False)
                except Exception:
                    pass
        finally:
            self._detach()
        return False

    # ----------------------------------------------------------------- set-up
    def _meta_note(self) -> bool:
        """Parameters on the meta device hold no data: nothing about them can be
        measured. Say so once (report()), and measure nothing per step until the
        model is materialised in place (the same parameter objects, e.g. ``to_empty()``
        with ``torch.__future__.set_swap_module_params_on_conversion(True)``)."""
        meta = [n for n, p in self.root.named_parameters() if p.is_meta]
        if not meta:
            return False
        more = f" (and {len(meta) - 3} more)" if len(meta) > 3 else ""
        self.notes.append(
            f"{len(meta)} parameter(s) on the meta device (no data yet): "
            f"{', '.join(meta[:3])}{more}. The init check skipped them, and steps taken "
            "while they are on the meta device are not measured. Materialise the model "
            "(to_empty() and an initialisation, or a checkpoint) before entering the guard "
            "for the full checks.")
        return True

    def _still_on_meta(self) -> bool:
        """While the model is on the meta device: True. Once it has been materialised in
        place (the same parameter objects), set up the device-dependent state again."""
        if any(p.is_meta for p in self._params):
            return True
        self._on_meta = False
        self._collect_params()
        return False

    def _collect_params(self) -> None:
        names = {id(p): n for n, p in self.root.named_parameters()}
        sparse = {id(p) for m in self.root.modules()
                  if isinstance(m, (nn.Embedding, nn.EmbeddingBag)) and m.sparse
                  for p in m.parameters(recurse=False)}
        params, pnames, seen = [], [], set()
        for gi, group in enumerate(self.optimizer.param_groups):
            for j, p in enumerate(group["params"]):
                if id(p) in seen or not p.requires_grad or id(p) in sparse:
                    continue   # sparse gradients are left to the optimizer
                seen.add(id(p))
                params.append(p)
                pnames.append(names.get(id(p), f"param_groups[{gi}][{j}]"))
        self._params: List[torch.Tensor] = params
        self.param_names = pnames
        self.weight_index = [i for i, p in enumerate(params) if p.dim() >= 2]
        self._unseen = set(range(len(params)))    # never had a .grad yet
        devices = {p.device for p in params}
        self._device = params[0].device if params else torch.device("cpu")
        self._multi_device = len(devices) > 1
        # Mixed precisions need one common dtype for the stacked norms.
        self._norm_dtype = None if len({p.dtype for p in params}) <= 1 and \
            (not params or params[0].dtype == torch.float32) else torch.float32
        self._fused = bool(getattr(self.optimizer, "_step_supports_amp_scaling", False))
        on_cpu = all(d.type == "cpu" for d in devices)
        finite = self._checks["finite"].mode
        if finite in ("raise", "skip"):
            if self._force_gate:
                self._gate = self._force_gate
            elif on_cpu or self.check_every == 1:
                self._gate = "host"
            elif self._fused:
                self._gate = "device"
            else:
                self._gate = "host" if finite == "skip" else "deferred"
        # A "raise" gradient-norm check is exact (it raises before the update of the
        # exploding step) where reading the norm costs nothing: CPU tensors, or
        # check_every=1 (a read every step anyway). On an accelerator it is judged at
        # the read-back, like everything else: no per-step sync.
        host_free = (on_cpu and self._force_gate in (None, "host")) or self.check_every == 1
        self._exact_norm = self._checks["gradient-norm"].mode == "raise" and host_free
        self._sample_every = max(2, self.check_every // 5)
        self.needs_full_norms = True   # cleared by the update check once all params moved
        self._sticky = None

    def _attach(self) -> None:
        opt = self.optimizer
        self._handles.append(opt.register_step_pre_hook(self._pre_step))
        self._handles.append(opt.register_step_post_hook(self._post_step))
        if isinstance(self.loss_fn, nn.Module):
            self._handles.append(self.loss_fn.register_forward_hook(self._on_loss,
                                                                    with_kwargs=True))
        if self._checks["init"].mode != "off":
            init = self._checks["init"]
            ActivationProbe.saturation_at = init.opt["saturation_at"]
            self._probe = ActivationProbe(self.root, self.model, self._on_first_forward)

    def _detach(self) -> None:
        self._active = False
        for h in self._handles:
            h.remove()
        self._handles = []
        if self._probe is not None:
            self._probe.remove()
            self._probe = None
        self._restore_step_state()

    # ------------------------------------------------------------------ hooks
    def _on_first_forward(self, records) -> None:
        self._probe = None
        init = self._checks["init"]
        if self._decisions.collective:
            # A first forward may run on one rank only (a sample prediction on rank
            # 0): agree at the first step instead, which every rank takes.
            self._first_forward = init.on_first_forward(records)
            return
        self._emit(init, init.on_first_forward(records))

    def _on_loss(self, module, args, kwargs, output) -> None:
        # Validation passes (no_grad, or a loss without graph) are not training losses.
        if not isinstance(output, torch.Tensor) or not output.requires_grad \
                or not torch.is_grad_enabled():
            return
        v = output.detach()
        v = v.float().mean() if v.dim() else v.float()
        self._hook_losses.append(v)
        self._observed = None   # a new micro-batch: an earlier observe_gradients() is stale
        if self._loss_meta is None:
            self._loss_meta = describe_loss_call(module, args, kwargs) or False

    def _take_loss(self) -> Optional[torch.Tensor]:
        src = self._user_losses or self._hook_losses
        self._user_losses, self._hook_losses = [], []
        if not src:
            return None
        if len(src) == 1:
            v = src[0]
        else:   # gradient accumulation: the step's loss is the mean of its micro-batches
            v = torch.stack([t.to(src[0].device) for t in src]).mean()
        return v if v.device == self._device else v.to(self._device)

    def _pre_step(self, optimizer, args, kwargs):
        step = self.step
        if self._on_meta and self._still_on_meta():
            self._take_loss()   # nothing on the meta device can be read back: count the step
            return None
        loss = self._take_loss()
        rec = _Step(step, loss, self._lrs())
        if step == 0 and self._decisions.collective and self._checks["init"].mode != "off":
            found, self._first_forward = self._first_forward, []
            self._emit(self._checks["init"], found)
        if step == 0 and loss is not None and self._loss_meta:
            self._initial_loss(loss)
        with torch.no_grad():
            grads, measured = self._measure(optimizer)
            if measured is not None:
                rec.per, rec.total, rec.present = measured
                rec.scaler_inf = getattr(optimizer, "found_inf", None)
                if grads:
                    self._clip(grads, rec.total, getattr(optimizer, "grad_scale", None))
            observed, self._observed = self._observed, None
            if observed is not None and observed[0] == step:
                # Measured before the framework clipped: the norms this step really had;
                # the one measured here is what the update applies.
                rec.applied = rec.total
                rec.per, rec.total, rec.present = observed[1]
            if self._gate is not None:
                self._gate_step(optimizer, rec, loss)
            if self._exact_norm and not rec.host_skipped and self._exploding_now(rec):
                # Judged now, before the update is applied: the error names this step
                # and the parameters are still those of the last step. The optimizer
                # gets back what the gate lent it (found_inf), as after a step.
                self._restore_step_state()
                self._pending.append(rec)
                self._read_back()   # raises ExplodingGradientError
                return None
            if self._checks["update"].mode != "off" and \
                    (step < 2 or step % self._sample_every == 0):
                self._snapshot_before(step)
        self._pending.append(rec)
        return None

    def _exploding_now(self, rec) -> bool:
        """The step's global norm is finite and above the exploding threshold (a host
        read: only where it is free, see ``_exact_norm``)."""
        if rec.total is None:
            return False
        if rec.scaler_inf is not None and bool(rec.scaler_inf.item()):
            return False   # a GradScaler overflow: skipped by the scaler, not an explosion
        norm = rec.total.item()
        return math.isfinite(norm) and norm > self._checks["gradient-norm"].opt["exploding"]

    def _measure(self, optimizer):
        """(this rank's gradients, (per-parameter norms, global norm, indices of the
        parameters that have a gradient or None for all)) on the device, unscaled;
        ``(grads, None)`` when no parameter has a gradient."""
        params = self._params
        grads = [p.grad for p in params if p.grad is not None]
        present = None
        if len(grads) != len(params):
            present = [i for i, p in enumerate(params) if p.grad is not None]
        if self._sharded:   # FSDP: norms of the shards, summed over ranks
            grads, per = self._sharded_norms(params)
            present = None
            self._unseen = set()   # a parameter without a shard here has one elsewhere
        elif not grads:
            return grads, None
        else:
            # In the gradients' own dtype: the clipping coefficient then matches them.
            per = self._norms(grads, as_float=False)
        if self._unseen:
            self._unseen = {i for i in self._unseen if params[i].grad is None}
        total = torch.linalg.vector_norm(per)
        # A GradScaler may hand a fused optimizer still-scaled gradients
        # (grad_scale set, unscaled inside the kernel): measure unscaled.
        scale = getattr(optimizer, "grad_scale", None)
        if scale is not None:
            inv = scale.to(per.device).float().reciprocal()
            per, total = per * inv, total * inv
        return grads, (per, total, present)

    def _sharded_norms(self, params):
        """FSDP: this rank's gradient shards (what clipping scales in place) and
        the true per-parameter norms -- sqrt of the shards' squared norms summed
        over ranks, one all_reduce of P numbers -- identical on every rank."""
        have = [i for i, p in enumerate(params)
                if p.grad is not None and local_tensor(p.grad).numel()]
        grads = [local_tensor(params[i].grad) for i in have]
        local = torch.zeros(len(params), device=self._device)
        if grads:
            norms = torch._foreach_norm(grads)
            local[torch.tensor(have, device=self._device)] = \
                torch.stack([n.to(self._device).float() for n in norms])
        return grads, self._decisions.global_norm(local)

    def _clip(self, grads, total, scale) -> None:
        if self.clip_value is not None:
            if scale is None:
                torch._foreach_clamp_min_(grads, -self.clip_value)
                torch._foreach_clamp_max_(grads, self.clip_value)
            else:   # still-scaled gradients: scale the bound, not the gradients
                bound = scale.float() * self.clip_value
                for g in grads:
                    torch.clamp_(g, min=-bound.to(g.dtype), max=bound.to(g.dtype))
        if self.max_grad_norm is not None:
            # Same arithmetic as clip_grads_with_norm_, clamped on the device: no sync.
            coef = torch.clamp(self.max_grad_norm / (total + 1e-6), max=1.0)
            if self._multi_device or self._norm_dtype is not None:
                for g in grads:
                    g.mul_(coef.to(device=g.device, dtype=g.dtype))
            else:
                torch._foreach_mul_(grads, coef)

    def _nonfinite_flag(self, rec, loss) -> torch.Tensor:
        """0-d bool on the device: a real NaN/Inf this step (not AMP overflow)."""
        if rec.total is None:
            return ~torch.isfinite(loss)
        if rec.scaler_inf is not None:
            # A GradScaler owns the gradients' finiteness: it skips the step itself
            # (normal in fp16 AMP), and scaled gradients may even overflow the norm.
            return ~torch.isfinite(loss) if loss is not None else \
                torch.zeros((), dtype=torch.bool, device=rec.total.device)
        # A gradient within a factor lr of float overflow makes an update such as
        # SGD's p - lr * g overflow although it is finite itself: treat it as
        # non-finite, so that the model is never overwritten with Inf.
        total = rec.total
        lr = self._max_lr()
        grads_bad = ~torch.isfinite(total * lr if lr > 1.0 else total)
        if loss is None:
            return grads_bad
        return grads_bad | ~torch.isfinite(loss)

    def _host_nonfinite(self, rec, loss) -> bool:
        """The same decision as _nonfinite_flag, on CPU tensors: two scalar reads
        are cheaper than four tiny tensor ops."""
        if loss is not None and not math.isfinite(loss.item()):
            return True
        if rec.total is None or rec.scaler_inf is not None:
            return False
        return not math.isfinite(rec.total.item() * max(1.0, self._max_lr()))

    def _gate_step(self, optimizer, rec, loss) -> None:
        if rec.total is None and loss is None:
            return
        if self._gate == "host":
            if self._device.type == "cpu" and not self._multi_device:
                is_bad = self._decisions.host_any(self._host_nonfinite(rec, loss))
            else:
                is_bad = bool(self._decisions.device_any(self._nonfinite_flag(rec, loss)))
            rec.host_checked, rec.host_bad = True, is_bad
            if not is_bad:
                return
            rec.host_skipped = True
            if self._checks["finite"].mode == "raise":
                # Read back now: the finite check names the step and the first
                # offending parameter and raises before the update is applied.
                self._pending.append(rec)
                self._read_back()   # raises NonFiniteError
            # skip: every PyTorch optimizer leaves a parameter without .grad (and
            # its state) untouched; the gradients come back in the post-hook.
            self._stashed = [(p, p.grad) for p in self._all_params()]
            for p, _ in self._stashed:
                p.grad = None
            rec.host_skipped = True
            return
        bad = self._nonfinite_flag(rec, loss)
        if self._gate != "deferred":   # deferred: agreed with the findings at read-back
            bad = self._decisions.device_any(bad)
        rec.bad = bad
        if self._gate == "device":
            flag = bad.float()
            if self._checks["finite"].mode == "raise":
                # Latched: no update until the read-back raises.
                self._sticky = flag if self._sticky is None else torch.maximum(self._sticky,
                                                                                flag)
                flag = self._sticky
            rec.gate = flag
            # A GradScaler may have set found_inf already: honour both, restore after.
            prev = getattr(optimizer, "found_inf", _UNSET)
            self._found_inf_prev, self._found_inf_set = prev, True
            if prev is not _UNSET and prev is not None:
                flag = torch.maximum(flag, prev.to(flag.device).float())
            optimizer.found_inf = flag

    def _post_step(self, optimizer, args, kwargs) -> None:
        self._restore_step_state()
        if self._snapshot is not None:
            with torch.no_grad():
                self._snapshot_after()
        self.step += 1
        if self.step % self.check_every == 0:
            self._read_back()

    def _restore_step_state(self) -> None:
        """Undo what the pre-hook did to the optimizer for this step."""
        if self._stashed is not None:
            for p, g in self._stashed:
                p.grad = g
            self._stashed = None
        if self._found_inf_set:
            self._found_inf_set = False
            if self._found_inf_prev is _UNSET:
                if "found_inf" in vars(self.optimizer):
                    del self.optimizer.found_inf
            else:
                self.optimizer.found_inf = self._found_inf_prev
            self._found_inf_prev = _UNSET

    def _all_params(self):
        seen = set()
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                if id(p) not in seen:
                    seen.add(id(p))
                    yield p

    def _max_lr(self) -> float:
        lrs = [g.get("lr") for g in self.optimizer.param_groups]
        return max((float(x) for x in lrs if isinstance(x, (int, float))), default=1.0)

    def _lrs(self):
        lrs = []
        for group in self.optimizer.param_groups:
            lr = group.get("lr")
            lrs.append(lr if isinstance(lr, (int, float)) else None)
        return lrs[0] if len(lrs) == 1 else lrs

    # ------------------------------------------------------- update sampling
    def _snapshot_before(self, step) -> None:
        params = self._local_params()
        if not params:
            return
        if self._sample_idx is None:
            # A fixed set of elements per tensor, a small constant: picked once.
            gen = torch.Generator().manual_seed(0)
            self._sample_idx = [_sample_indices(p.numel(), gen).to(p.device) for p in params]
        before = [torch.take(p, i) for p, i in zip(params, self._sample_idx)]
        # Whole-tensor norms (a full pass over the weights) only while the update
        # check still has a parameter it has not seen move.
        full = self._norms(params) if self.needs_full_norms else None
        self._snapshot = (step, before, full)

    def _snapshot_after(self) -> None:
        step, before, full_before = self._snapshot
        self._snapshot = None
        params = self._local_params()
        after = [torch.take(p, i) for p, i in zip(params, self._sample_idx)]
        delta = self._norms(torch._foreach_sub(after, before))
        weight = self._norms(after)
        full_after = self._norms(params) if full_before is not None else None
        if self._sharded:   # FSDP: the shards' norms summed over ranks, one all_reduce
            rows = [delta, weight] + ([full_before, full_after] if full_before is not None
                                      else [])
            rows = self._decisions.global_norm(torch.stack(rows)).unbind()
            delta, weight = rows[0], rows[1]
            if full_before is not None:
                full_before, full_after = rows[2], rows[3]
        self._pending_updates.append((step, delta, weight, full_before, full_after))

    def _local_params(self) -> List[torch.Tensor]:
        return [local_tensor(p) for p in self._params] if self._sharded else self._params

    def _norms(self, tensors, as_float: bool = True) -> torch.Tensor:
        """One L2 norm per tensor, stacked on the guard's device."""
        norms = torch._foreach_norm(tensors) if self._norm_dtype is None else \
            torch._foreach_norm(tensors, 2, dtype=self._norm_dtype)
        if self._multi_device:
            norms = [n.to(self._device) for n in norms]
        stacked = torch.stack(norms)
        return stacked.float() if as_float else stacked

    # --------------------------------------------------------- initial loss
    def _initial_loss(self, loss: torch.Tensor) -> None:
        check = self._checks["initial-loss"]
        if check.mode == "off":
            return
        self._emit(check, check.check(float(loss), self._loss_meta))   # one sync, at step 0

    # -------------------------------------------------------------- read-back
    def _read_back(self, final: bool = False, emit: bool = True) -> None:
        """Bring the pending per-step tensors to the host (one transfer per kind)
        and let the checks judge them."""
        if self._on_meta:
            return   # nothing was measured; judging "no gradient in N steps" would be wrong
        recs, self._pending = self._pending, []
        ups, self._pending_updates = self._pending_updates, []
        if not recs and not ups and not final:
            return
        with torch.no_grad():
            scalars: List[torch.Tensor] = []
            slots: Dict[int, Dict[str, int]] = {}
            for r in recs:
                s = {}
                for field in ("loss", "total", "applied", "bad", "scaler_inf", "gate"):
                    t = getattr(r, field)
                    if t is not None:
                        s[field] = len(scalars)
                        scalars.append(t.detach().reshape(()).float().to(self._device))
                slots[id(r)] = s
            host = torch.stack(scalars).cpu().tolist() if scalars else []
            per_list = [r.per for r in recs if r.per is not None]
            per_host = torch.cat(per_list).cpu().numpy() if per_list else None
            up_host = []
            if ups:
                nan = torch.full_like(ups[0][1], float("nan"))
                stacked = torch.stack([torch.stack([t if t is not None else nan for t in u[1:]])
                                       for u in ups]).cpu().numpy()
                up_host = [(u[0], stacked[k]) for k, u in enumerate(ups)]
            bad_params: List[str] = []
            if final or recs:
                bad_params = self._nonfinite_params()
        values = {id(r): {k: host[i] for k, i in slots[id(r)].items()} for r in recs}
        window, index = self._record_steps(recs, values, per_host)
        for step, arr in up_host:
            applied = True
            for k, r in enumerate(recs):
                if r.step == step:
                    applied = not (window.skipped[k] or window.scaler_skipped[k])
            sample = UpdateSample(step, arr[0], arr[1], arr[2], arr[3], applied)
            window.updates.append(sample)
            if applied and self.weight_index:
                ratios = sample.ratio[self.weight_index]
                ratios = ratios[np.isfinite(ratios)]
                if ratios.size:
                    idx = index.get(step)
                    if idx is not None:
                        self._history.set_ratio(idx, float(np.median(ratios)))
        window.nonfinite_params = bad_params
        window.final = final
        self._layer_summary(window)
        self._sticky = None   # a latched "raise" gate is raised right below
        if emit:
            checks = [self._checks[name] for name in
                      ("finite", "gradient-norm", "update", "divergence")
                      if self._checks[name].mode != "off"]
            # Agreed between ranks all at once: one reduction per read-back.
            found = self._decisions.agree([check.on_window(window) for check in checks])
            for check, findings in zip(checks, found):
                self._emit(check, findings, agreed=True)

    def _record_steps(self, recs, values, per_host):
        """Turn the host values of ``recs`` into history records and a Window;
        also return ``{step: history index}`` for this window."""
        P = len(self._params)
        w = Window()
        has_per = per_host is not None
        w.per_param = np.full((len(recs), P), np.nan) if has_per else None
        w.has_grad = np.zeros((len(recs), P), dtype=bool) if has_per else None
        index: Dict[int, int] = {}
        offset = 0
        for k, r in enumerate(recs):
            v = values[id(r)]
            if r.per is not None and has_per:
                n = len(r.present) if r.present is not None else P
                cols = r.present if r.present is not None else slice(None)
                w.per_param[k, cols] = per_host[offset:offset + n]
                w.has_grad[k, cols] = True
                offset += n
            loss, total = v.get("loss"), v.get("total")
            scaler = bool(v.get("scaler_inf", 0.0))
            if "bad" in v:
                bad = bool(v["bad"])
            elif r.host_checked:
                bad = r.host_bad
            else:   # no gate: decide here, on the host (a GradScaler owns the gradients)
                bad = (loss is not None and not math.isfinite(loss)) or \
                      (total is not None and not math.isfinite(total)
                       and "scaler_inf" not in v)
            # Refused by the guard: a real NaN/Inf (even if a GradScaler also skipped
            # it), or a latched "raise" gate; not a plain GradScaler overflow.
            skipped = r.host_skipped or (bool(v.get("gate", 0.0)) and (bad or not scaler))
            # The norm the update used: after a clip the guard does not do (measured at the
            # step when `total` was observed before it), then after the guard's own clip.
            applied = v.get("applied", total)
            if applied is not None and self.max_grad_norm is not None and math.isfinite(applied):
                applied = min(applied, self.max_grad_norm)
            w.steps.append(r.step)
            w.loss.append(loss)
            w.grad_norm.append(total)
            w.applied_grad_norm.append(applied)
            w.nonfinite.append(bad)
            w.scaler_skipped.append(scaler)
            w.skipped.append(skipped)
            index[r.step] = len(self._history)
            self._history.append(r.step, loss, total, applied, None, bad, skipped, scaler, r.lr)
        return w, index

    def _layer_summary(self, w: Window) -> None:
        """Per-parameter numbers of the latest window, for report() and to_json()."""
        if w.per_param is not None and len(w):
            rows = w.per_param[~np.asarray(w.nonfinite, dtype=bool)]
            if rows.size:
                with np.errstate(all="ignore"), warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)   # all-NaN columns
                    self.layer_grad_norm = nanmedian(rows, axis=0)
        applied = [u for u in w.updates if u.applied]
        if applied:
            self.layer_update_ratio = applied[-1].ratio

    def _nonfinite_params(self) -> List[str]:
        """Parameters holding NaN/Inf now (one fused pass, at read-back only)."""
        if not self._params or self._on_meta:
            return []
        # Max-abs norm: unlike the L2 norm it cannot overflow on large finite values.
        params = self._local_params()
        if self._sharded:   # an empty shard holds nothing non-finite
            params = [p if p.numel() else p.new_zeros(1) for p in params]
        norms = torch._foreach_norm(params, math.inf)
        if self._multi_device:
            norms = [n.to(self._device) for n in norms]
        ok = torch.isfinite(torch.stack([n.float() for n in norms])).cpu().tolist()
        return [n for n, good in zip(self.param_names, ok) if not good]

    # ---------------------------------------------------------------- emitting
    def _emit(self, check, findings, agreed: bool = False) -> None:
        """The single exit of every finding: once per cause, by the check's mode."""
        for f in (findings if agreed else self._decisions.findings(findings)):
            key = (check.name, f.cause)
            mode = "warn" if check.mode == "skip" else check.mode
            if key in self._event_index:
                self._events[self._event_index[key]]["count"] += 1
            else:
                self._event_index[key] = len(self._events)
                self._events.append({"check": check.name, "cause": f.cause, "step": f.step,
                                     "param": f.param, "message": f.message,
                                     "action": mode, "count": 1})
            fields = dict(check=check.name, cause=f.cause, step=f.step, param=f.param)
            if mode == "raise":
                raise (f.error or check.error)(f"[{check.name}] {f.message}", **fields)
            if self._events[self._event_index[key]]["count"] == 1:
                warnings.warn(GuardWarning(f"[{check.name}] {f.message}", **fields),
                              stacklevel=_user_stacklevel())
