"""PyTorch Lightning integration: :class:`GuardCallback`.

    import lightning.pytorch as pl           # or: import pytorch_lightning as pl
    from guard.integrations.lightning import GuardCallback

    guard_cb = GuardCallback(monitor="val_loss", patience=5)
    trainer = pl.Trainer(max_epochs=20, gradient_clip_val=1.0, callbacks=[guard_cb])
    trainer.fit(module, datamodule)
    print(guard_cb.guard.report())

The callback runs a :class:`guard.TrainingGuard` around the training loop:

* It is entered on ``on_train_start`` (after Lightning's sanity-check
  validation, so the first-forward checks see a training batch) with the
  LightningModule and the real ``torch.optim.Optimizer`` of the trainer (not
  Lightning's ``LightningOptimizer`` wrapper), and left on ``on_train_end`` --
  or on ``on_exception`` / teardown when the run fails, so every hook is gone
  after ``fit`` whatever happened.
* The training loss reaches the guard through ``on_before_backward`` (scaled
  back by ``accumulate_grad_batches``). A loss module held by the
  LightningModule (``self.criterion = nn.CrossEntropyLoss()``) is hooked as the
  guard's ``loss_fn``, which enables the initial-loss check.
* Lightning runs ``training_step`` and ``backward`` *inside*
  ``optimizer.step(closure)``; the callback evaluates that closure first, so
  the guard's step hooks see the current step's gradients.
* Clipping: when the trainer clips (``gradient_clip_val``), the guard does
  not clip again, and it measures the gradients in ``on_before_optimizer_step``
  (before Lightning clips), so exploding norms are reported as they were; the
  guard's ``max_grad_norm`` / ``clip_value`` apply only when Lightning does not
  clip.
* Stopping: with ``monitor`` and ``patience``, the guard's early stopping reads
  ``trainer.callback_metrics[monitor]`` after each validation and sets
  ``trainer.should_stop`` (agreed across ranks). When Lightning's own
  ``EarlyStopping`` callback is present, it alone stops the run; the guard
  only tracks ``best_metric``.
* Guard errors (``NonFiniteError`` ...) propagate out of ``trainer.fit``.
"""
from __future__ import annotations

import importlib
from typing import Any, Mapping, Optional

from torch import nn

from ._common import CallbackOptions, find_loss_module, framework_note, unwrap_optimizer


def _import_lightning():
    """``lightning.pytorch`` if installed, else ``pytorch_lightning``."""
    for name in ("lightning.pytorch", "pytorch_lightning"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise ImportError(
        "guard.integrations.lightning needs PyTorch Lightning: pip install lightning "
        "(or pytorch-lightning)")


class _GuardCallbackLogic(CallbackOptions):
    """The callback's behaviour, independent of which Lightning package it is for."""

    _pl: Any = None   # the Lightning package the concrete class subclasses
    framework, _note_prefix, _trainer_label = "lightning", "GuardCallback", "trainer"

    def __init__(self, *, loss_fn: Any = "auto", max_grad_norm: Optional[float] = None,
                 clip_value: Optional[float] = None, monitor: Optional[str] = None,
                 patience: Optional[int] = None, min_delta: float = 0.0, mode: str = "min",
                 restore_best: bool = False, on_nonfinite: str = "raise",
                 checks: Optional[Mapping[str, Any]] = None, check_every: int = 50,
                 optimizer_index: int = 0, model: Optional[nn.Module] = None,
                 tensorboard: Any = None):
        """
        Args:
            loss_fn: the loss module to hook; ``"auto"`` (default) uses the
                LightningModule's only ``nn.modules.loss`` submodule if it has
                exactly one, ``None`` hooks none.
            max_grad_norm, clip_value: the guard's clipping, used only when the
                trainer does not clip (``gradient_clip_val`` unset).
            monitor: the logged metric for the guard's early stopping
                (``"val_loss"``); needs ``patience``.
            patience, min_delta, mode, restore_best, on_nonfinite, checks,
                check_every: as for :class:`guard.TrainingGuard`.
            optimizer_index: which of the trainer's optimizers to guard (0).
            model: the module whose forward runs the network, when the
                LightningModule's own ``forward`` is not called in
                ``training_step`` (default: the LightningModule, or its only
                child module when it does not override ``forward``).
            tensorboard: write the guard's history as TensorBoard scalars at the
                end of training: ``True`` into the trainer's TensorBoardLogger
                (if any), or a log directory / ``SummaryWriter``.
        """
        super().__init__()
        if monitor is not None and patience is None:
            raise ValueError("monitor needs patience (how many validations without "
                             "improvement before stopping)")
        self._set_options(
            loss_fn=loss_fn, max_grad_norm=max_grad_norm, clip_value=clip_value,
            monitor=monitor, patience=patience, min_delta=min_delta, mode=mode,
            restore_best=restore_best, on_nonfinite=on_nonfinite, checks=checks,
            check_every=check_every, tensorboard=tensorboard)
        self.optimizer_index = optimizer_index
        self.model = model
        self._accumulate = 1

    # ------------------------------------------------------------ helpers
    def _guard_model(self, pl_module) -> nn.Module:
        if self.model is not None:
            return self.model
        if type(pl_module).forward is self._pl.LightningModule.forward:
            # training_step cannot call self(x): the network is a child module.
            children = [m for m in pl_module.children()
                        if not isinstance(m, nn.modules.loss._Loss)
                        and any(True for _ in m.parameters())]
            if len(children) == 1:
                return children[0]
        return pl_module

    def _has_lightning_early_stopping(self, trainer) -> bool:
        es = getattr(self._pl.callbacks, "EarlyStopping", None)
        return es is not None and any(isinstance(cb, es) for cb in trainer.callbacks)

    # -------------------------------------------------------------- hooks
    def on_train_start(self, trainer, pl_module) -> None:
        self._close(RuntimeError("the previous fit did not finish"))
        optimizers = trainer.optimizers
        if not optimizers:
            framework_note("GuardCallback: the trainer has no optimizer; nothing to guard")
            return
        if self.optimizer_index >= len(optimizers):
            raise IndexError(f"GuardCallback: optimizer_index={self.optimizer_index} but the "
                             f"trainer has {len(optimizers)} optimizer(s)")
        try:
            optimizer = unwrap_optimizer(optimizers[self.optimizer_index])
        except TypeError as exc:   # e.g. a DeepSpeed optimizer
            framework_note(f"GuardCallback: {exc}; the guard is not attached")
            return

        max_grad_norm, clip_value = self._decide_clipping(
            getattr(trainer, "gradient_clip_val", None), "gradient_clip_val")
        patience = self._decide_patience(
            self._has_lightning_early_stopping(trainer), "Lightning's EarlyStopping callback",
            bool(self.monitor) and self.patience is not None)
        loss_fn = find_loss_module(pl_module) if self.loss_fn == "auto" else self.loss_fn
        self._accumulate = max(1, int(getattr(trainer, "accumulate_grad_batches", 1) or 1))
        self._new_guard(self._guard_model(pl_module), optimizer, loss_fn=loss_fn,
                        max_grad_norm=max_grad_norm, clip_value=clip_value,
                        patience=patience, mode=self.mode)

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        if self._session is None or self._session.closed:
            return
        # Automatic optimisation divides the loss by accumulate_grad_batches.
        scale = self._accumulate if pl_module.automatic_optimization else 1
        self.guard.observe_loss(loss.detach() * scale if scale != 1 else loss)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        # With automatic optimisation Lightning calls this after backward (and AMP
        # unscaling), before its clipping -- `gradient_clip_val` or an overridden
        # `configure_gradient_clipping`: measure here so the guard reports the unclipped
        # norm. (With manual optimisation it runs inside `opt.step()`, after the user's
        # `self.clip_gradients`: there, call `guard.observe_gradients()` before clipping.)
        if self.clipping != "guard" and self._session is not None and not self._session.closed \
                and pl_module.automatic_optimization:
            self.guard.observe_gradients()

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or self._session is None or self._session.closed \
                or self.monitor is None:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        stop = self.guard.early_stop(value)
        if self.early_stopping != "guard":
            return
        stop = trainer.strategy.reduce_boolean_decision(bool(stop), all=False)
        if stop:
            trainer.should_stop = True

    def on_train_end(self, trainer, pl_module) -> None:
        if self._session is None or self._session.closed:
            return
        self._close(None)
        self._write_tensorboard(trainer)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self._close(exception)

    def teardown(self, trainer, pl_module, stage: str) -> None:
        # Reached without on_train_end only when fit stopped early by an error
        # that bypassed on_exception; leave nothing attached.
        if self._session is not None and not self._session.closed:
            self._close(RuntimeError("training ended without on_train_end"))

    def _close(self, exc: Optional[BaseException]) -> None:
        session, self._session = self._session, None
        if session is not None:
            session.close(exc)

    def _write_tensorboard(self, trainer) -> None:
        if not self.tensorboard:
            return
        from .tensorboard import log_history
        target = self.tensorboard
        if target is True:
            target = None
            for logger in getattr(trainer, "loggers", []) or []:
                exp = getattr(logger, "experiment", None)
                if hasattr(exp, "add_scalar"):
                    target = exp
                    break
            if target is None:
                framework_note("GuardCallback(tensorboard=True): the trainer has no "
                               "TensorBoard logger; pass a log directory instead")
                return
        log_history(self.guard, target)


def _make_class(pl):
    class GuardCallback(_GuardCallbackLogic, pl.Callback):
        pass
    GuardCallback._pl = pl
    GuardCallback.__doc__ = ("Run guard.TrainingGuard's checks inside a Lightning Trainer.\n"
                             + (_GuardCallbackLogic.__init__.__doc__ or ""))
    return GuardCallback


#: The callback for the installed Lightning (``lightning.pytorch`` first).
GuardCallback = _make_class(_import_lightning())


def __getattr__(name):
    # Both packages installed, training with the other one:
    # from guard.integrations.lightning import PLGuardCallback
    if name == "PLGuardCallback":
        cls = _make_class(importlib.import_module("pytorch_lightning"))
        cls.__name__ = cls.__qualname__ = "PLGuardCallback"
        globals()[name] = cls
        return cls
    raise AttributeError(name)


__all__ = ["GuardCallback"]
