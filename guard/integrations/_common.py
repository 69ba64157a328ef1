"""What the framework integrations share; imports torch only."""
from __future__ import annotations

import warnings
from typing import Any, Callable, Optional

import torch
from torch import nn

_MISSING = object()


def unwrap_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    """The real ``torch.optim.Optimizer`` behind a framework's wrapper
    (Lightning's ``LightningOptimizer``, accelerate's ``AcceleratedOptimizer``)."""
    opt, seen = optimizer, set()
    while id(opt) not in seen:
        seen.add(id(opt))
        inner = getattr(opt, "optimizer", None)
        if inner is None:
            inner = getattr(opt, "_optimizer", None)
        if isinstance(inner, torch.optim.Optimizer):
            opt = inner
        else:
            break
    if not isinstance(opt, torch.optim.Optimizer):
        raise TypeError(f"cannot find the torch optimizer inside {type(optimizer).__name__}")
    return opt


def find_loss_module(module: nn.Module) -> Optional[nn.Module]:
    """The one loss module (``nn.CrossEntropyLoss()`` ...) held by ``module``,
    if there is exactly one; the guard hooks it to see the logits."""
    found = {id(m): m for m in module.modules()
             if isinstance(m, nn.modules.loss._Loss)}
    return next(iter(found.values())) if len(found) == 1 else None


class StepWrapper:
    """An instance-level ``step`` on the torch optimizer, removed on exit.

    * A closure (Lightning passes one: forward, backward and its own clipping
      run *inside* ``optimizer.step(closure)``) is evaluated first, so that
      the guard's step pre-hook sees this step's gradients, then the real
      ``step()`` runs without it -- what Lightning's own mixed-precision
      plugin does for ``GradScaler``. LBFGS, which calls its closure many
      times, is left alone.
    * An exception raised inside the step (a guard error included) calls
      ``on_error`` before it propagates, so the guard detaches even when the
      framework calls no callback on failure.
    """

    def __init__(self, optimizer: torch.optim.Optimizer,
                 on_error: Callable[[BaseException], None]):
        self.optimizer = optimizer
        self.on_error = on_error
        self.active = True
        self._prev = optimizer.__dict__.get("step", _MISSING)
        self._inner = optimizer.step          # bound method or an earlier instance patch
        self._multi_closure = isinstance(optimizer, torch.optim.LBFGS)
        wrapper = self._step
        optimizer.step = wrapper
        self._installed = wrapper

    def _step(self, closure=None, **kwargs):
        if not self.active:
            return self._inner(closure, **kwargs) if closure is not None \
                else self._inner(**kwargs)
        try:
            if closure is None or self._multi_closure:
                return self._inner(closure, **kwargs) if closure is not None \
                    else self._inner(**kwargs)
            with torch.enable_grad():
                loss = closure()
            self._inner(**kwargs)
            return loss
        except BaseException as exc:
            self.on_error(exc)
            raise

    def remove(self) -> None:
        self.active = False
        if self.optimizer.__dict__.get("step") is self._installed:
            if self._prev is _MISSING:
                del self.optimizer.__dict__["step"]
            else:
                self.optimizer.step = self._prev


def framework_note(message: str, stacklevel: int = 3) -> None:
    """A configuration note (not a finding: never a GuardWarning), attributed to the
    framework code that called the callback's hook (``stacklevel`` counts from here)."""
    warnings.warn(message, UserWarning, stacklevel=stacklevel)


class GuardSession:
    """One guarded run inside a framework's trainer: enters a TrainingGuard,
    wraps the optimizer's ``step`` and leaves everything as it was on
    :meth:`close` (idempotent; also called on errors)."""

    def __init__(self, guard, optimizer: torch.optim.Optimizer):
        self.guard = guard
        self.optimizer = optimizer
        self.closed = False
        self.error: Optional[BaseException] = None
        self._wrapper: Optional[StepWrapper] = None
        self._extra_handles: list = []

    def open(self) -> "GuardSession":
        self.guard.__enter__()
        try:
            self._wrapper = StepWrapper(self.optimizer, self._on_error)
        except BaseException as exc:
            self.close(exc)
            raise
        return self

    def add_handle(self, handle) -> None:
        """A hook handle (``.remove()``) the integration registered itself."""
        self._extra_handles.append(handle)

    def _on_error(self, exc: BaseException) -> None:
        self.close(exc)

    def close(self, exc: Optional[BaseException] = None) -> None:
        """Exit the guard. With ``exc`` the run failed: the guard records what
        it has and adds no error of its own; without, its final checks run
        (and may raise, like leaving a ``with TrainingGuard`` block)."""
        if self.closed:
            return
        self.closed = True
        self.error = exc
        try:
            for h in self._extra_handles:
                h.remove()
            self._extra_handles = []
            if self._wrapper is not None:
                self._wrapper.remove()
        finally:
            if exc is None:
                self.guard.__exit__(None, None, None)
            else:
                self.guard.__exit__(type(exc), exc, exc.__traceback__)


class CallbackOptions:
    """What the framework callbacks share: the guard's options, the decisions of who
    clips and who stops early (the framework or the guard), and building the guard.

    ``framework`` names the framework in ``clipping`` / ``early_stopping`` and in
    notes: ``"lightning"`` or ``"trainer"``.
    """

    framework = ""       # "lightning" or "trainer"
    _note_prefix = ""    # the callback's class name, for notes
    _trainer_label = ""  # "trainer" / "Trainer", for notes

    def _set_options(self, *, loss_fn, max_grad_norm, clip_value, monitor, patience,
                     min_delta, mode, restore_best, on_nonfinite, checks, check_every,
                     tensorboard) -> None:
        self.loss_fn = loss_fn
        self.max_grad_norm = max_grad_norm
        self.clip_value = clip_value
        self.monitor = monitor
        self.patience = patience
        self.min_delta = min_delta
        self.mode = mode
        self.restore_best = restore_best
        self.on_nonfinite = on_nonfinite
        self.checks = checks
        self.check_every = check_every
        self.tensorboard = tensorboard
        #: the TrainingGuard of the last (or current) run
        self.guard = None
        #: who clips the gradients in the last run: the framework, "guard" or None
        self.clipping: Optional[str] = None
        #: who stops early in the last run: the framework, "guard" or None
        self.early_stopping: Optional[str] = None
        self._session: Optional[GuardSession] = None

    def _decide_clipping(self, framework_clips: Any, setting: str):
        """(max_grad_norm, clip_value) for the guard: none when the framework clips
        (``setting`` names its option in the note)."""
        if framework_clips:
            self.clipping = self.framework
            if self.max_grad_norm is not None or self.clip_value is not None:
                framework_note(f"{self._note_prefix}: the {self._trainer_label} already clips "
                               f"gradients ({setting}={framework_clips}); the guard does not "
                               "clip them again", stacklevel=4)
            return None, None
        self.clipping = "guard" if (self.max_grad_norm or self.clip_value) else None
        return self.max_grad_norm, self.clip_value

    def _decide_patience(self, framework_stops: bool, stopper: str, guard_stops: bool) -> Optional[int]:
        """The guard's patience: none when the framework's ``stopper`` callback stops
        the run (the guard then only tracks ``best_metric``)."""
        if framework_stops:
            self.early_stopping = self.framework
            if self.patience is not None:
                framework_note(f"{self._note_prefix}: {stopper} stops this run; the guard "
                               "only tracks best_metric", stacklevel=4)
            return None
        self.early_stopping = "guard" if guard_stops else None
        return self.patience

    def _new_guard(self, model, optimizer, *, loss_fn, max_grad_norm, clip_value,
                   patience, mode):
        from ..guard import TrainingGuard

        self.guard = TrainingGuard(
            model, optimizer, loss_fn=loss_fn, max_grad_norm=max_grad_norm,
            clip_value=clip_value, patience=patience, min_delta=self.min_delta, mode=mode,
            restore_best=self.restore_best, on_nonfinite=self.on_nonfinite,
            checks=self.checks, check_every=self.check_every)
        self._session = GuardSession(self.guard, optimizer).open()
        return self._session
