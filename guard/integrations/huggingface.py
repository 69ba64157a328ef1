"""Hugging Face ``transformers`` integration: :class:`GuardTrainerCallback`.

    from transformers import Trainer
    from guard.integrations.huggingface import GuardTrainerCallback

    guard_cb = GuardTrainerCallback()
    trainer = Trainer(model=model, args=args, train_dataset=ds, callbacks=[guard_cb])
    trainer.train()
    print(guard_cb.guard.report())

The callback runs a :class:`guard.TrainingGuard` around ``Trainer.train``:

* ``on_train_begin`` enters it with the model and the real
  ``torch.optim.Optimizer`` (accelerate's ``AcceleratedOptimizer`` unwrapped);
  ``on_train_end`` leaves it. The Trainer calls no callback when training
  fails, so the callback also leaves the guard when an exception goes through
  ``optimizer.step()`` (a guard error included) or through the model's
  forward; for anything else, call :meth:`GuardTrainerCallback.close` in a
  ``finally`` (or use :func:`guarded_train`).
* The training loss is read from the model's output (``outputs.loss`` or
  ``outputs["loss"]``) through a forward hook, once per micro-batch and before
  the optimizer step, so every guard step gets its own loss. For the
  initial-loss check, the first training batch's ``logits`` and ``labels``
  (integer class labels) are handed once to a cross-entropy loss module that
  the guard watches.
* Clipping: when ``args.max_grad_norm > 0`` (the Trainer's default is 1.0)
  the Trainer clips and the guard does not clip again; the guard then measures
  the gradients at the end of each backward pass (before the Trainer clips), so
  exploding norms are reported as they were -- except under fp16, DDP or
  sharding, where it sees the clipped norms.
* Stopping: with ``patience``, the guard's early stopping reads the metric
  ``monitor`` (default ``args.metric_for_best_model`` or ``eval_loss``) from
  each evaluation and sets ``control.should_training_stop``. When the
  Trainer has an ``EarlyStoppingCallback``, that callback alone stops the
  run; the guard only tracks ``best_metric``.
* Guard errors (``NonFiniteError`` ...) propagate out of ``trainer.train()``.
"""
from __future__ import annotations

import sys
from typing import Any, Mapping, Optional

import torch
from torch import nn

from ._common import CallbackOptions, framework_note, unwrap_optimizer

try:
    from transformers import TrainerCallback
except ImportError as exc:   # pragma: no cover - exercised only without transformers
    raise ImportError("guard.integrations.huggingface needs transformers: "
                      "pip install transformers accelerate") from exc


def _output_field(output, name):
    if isinstance(output, Mapping):
        return output.get(name)
    return getattr(output, name, None)


def _feed_initial_loss(ce: nn.CrossEntropyLoss, logits, labels) -> None:
    """Call ``ce`` -- the loss module the guard watches for the initial-loss
    check, which needs the logits -- once on the first training batch."""
    if not isinstance(logits, torch.Tensor) or not isinstance(labels, torch.Tensor) \
            or not logits.is_floating_point() or labels.is_floating_point():
        return   # regression or multi-label targets: no log(C) reference
    if logits.dim() == labels.dim() + 1 and logits.shape[:-1] == labels.shape \
            and logits.shape[-1] >= 2:
        keep = labels.reshape(-1) != ce.ignore_index     # -100, as in HF models
        if keep.any():
            ce(logits.reshape(-1, logits.shape[-1])[keep], labels.reshape(-1)[keep])


class GuardTrainerCallback(CallbackOptions, TrainerCallback):
    """Run guard.TrainingGuard's checks inside a ``transformers.Trainer``.

    Args:
        loss_fn: a loss module your model calls (the guard hooks it); by
            default the guard reads the loss from the model's output.
        max_grad_norm, clip_value: the guard's clipping, used only when the
            Trainer does not clip (``args.max_grad_norm`` 0 or None).
        monitor: evaluation metric for the guard's early stopping (default
            ``args.metric_for_best_model``, else ``"eval_loss"``); used with
            ``patience``.
        patience, min_delta, mode, restore_best, on_nonfinite, checks,
            check_every: as for :class:`guard.TrainingGuard`.
        initial_loss: hand the first batch's logits and labels to the
            initial-loss check (default ``True``).
        tensorboard: write the guard's history as TensorBoard scalars at the end
            of training: ``True`` into ``args.logging_dir``, or a log
            directory / ``SummaryWriter``.
    """

    framework, _note_prefix, _trainer_label = "trainer", "GuardTrainerCallback", "Trainer"

    def __init__(self, *, loss_fn: Optional[nn.Module] = None,
                 max_grad_norm: Optional[float] = None, clip_value: Optional[float] = None,
                 monitor: Optional[str] = None, patience: Optional[int] = None,
                 min_delta: float = 0.0, mode: str = "min", restore_best: bool = False,
                 on_nonfinite: str = "raise", checks: Optional[Mapping[str, Any]] = None,
                 check_every: int = 50, initial_loss: bool = True, tensorboard: Any = None):
        self._set_options(
            loss_fn=loss_fn, max_grad_norm=max_grad_norm, clip_value=clip_value,
            monitor=monitor, patience=patience, min_delta=min_delta, mode=mode,
            restore_best=restore_best, on_nonfinite=on_nonfinite, checks=checks,
            check_every=check_every, tensorboard=tensorboard)
        self.initial_loss = initial_loss
        self._probe: Optional[nn.CrossEntropyLoss] = None
        self._monitor: Optional[str] = None
        self._backward_callback_queued = False

    # --------------------------------------------------------------- hooks
    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        self.close(RuntimeError("the previous train() did not finish"))
        if model is None or optimizer is None:
            raise RuntimeError("GuardTrainerCallback: the Trainer passed no model/optimizer")
        try:
            optimizer = unwrap_optimizer(optimizer)
        except TypeError as exc:   # e.g. a DeepSpeed optimizer
            framework_note(f"GuardTrainerCallback: {exc}; the guard is not attached")
            return control

        max_grad_norm, clip_value = self._decide_clipping(args.max_grad_norm, "max_grad_norm")
        stateful = getattr(state, "stateful_callbacks", None) or {}
        patience = self._decide_patience(
            "EarlyStoppingCallback" in stateful, "the Trainer's EarlyStoppingCallback",
            self.patience is not None)
        monitor = self.monitor or getattr(args, "metric_for_best_model", None) or "eval_loss"
        self._monitor = monitor if monitor.startswith("eval_") else f"eval_{monitor}"
        if self.monitor is None and getattr(args, "greater_is_better", None) is not None \
                and self.mode == "min" and args.greater_is_better:
            mode = "max"
        else:
            mode = self.mode

        loss_fn = self.loss_fn
        self._probe = None
        if loss_fn is None and self.initial_loss:
            self._probe = loss_fn = nn.CrossEntropyLoss()
        session = self._new_guard(model, optimizer, loss_fn=loss_fn, max_grad_norm=max_grad_norm,
                                  clip_value=clip_value, patience=patience, mode=mode)
        session.add_handle(model.register_forward_hook(self._on_forward, with_kwargs=True,
                                                       always_call=True))
        if self.clipping == "trainer" and self._gradients_final_after_backward(args):
            self._backward_callback_queued = False
            for p in model.parameters():
                if p.requires_grad:
                    session.add_handle(p.register_post_accumulate_grad_hook(self._on_grad))
        return control

    # The Trainer clips between backward and on_pre_optimizer_step, with no callback in
    # between: the guard's own measurement at optimizer.step() would see clipped norms (an
    # exploding gradient pinned at max_grad_norm). So the callback measures at the end of
    # every backward pass instead -- the last one before the step is what the Trainer clips.
    def _gradients_final_after_backward(self, args) -> bool:
        """Whether the gradients right after backward are those the Trainer clips: not
        under fp16 (a GradScaler unscales them only inside the clipping), DDP (averaged
        after backward) or FSDP/DeepSpeed (sharded)."""
        return not getattr(args, "fp16", False) and getattr(args, "world_size", 1) == 1 \
            and not self.guard._sharded

    def _on_grad(self, param) -> None:
        if not self._backward_callback_queued:
            self._backward_callback_queued = True
            # Runs once when this backward pass is complete (how DDP finalises its reduction).
            torch.autograd.Variable._execution_engine.queue_callback(self._after_backward)

    def _after_backward(self) -> None:
        self._backward_callback_queued = False
        if self._session is not None and not self._session.closed:
            self.guard.observe_gradients()

    def on_step_begin(self, args, state, control, **kwargs):
        # A backward that raised never ran its queued callback: start the step clean.
        self._backward_callback_queued = False
        return control

    def _on_forward(self, module, args, kwargs, output) -> None:
        if self._session is None or self._session.closed:
            return
        exc = sys.exc_info()[1]
        if exc is not None:
            # The forward raised (a guard error from the first-forward checks
            # included): nothing calls on_train_end after this.
            self.close(exc)
            return
        if not (module.training and torch.is_grad_enabled()):
            return   # evaluation
        loss = _output_field(output, "loss")
        if loss is None and isinstance(output, (tuple, list)) and output \
                and "labels" in kwargs and isinstance(output[0], torch.Tensor) \
                and output[0].dim() == 0:
            loss = output[0]
        if self._probe is not None:
            probe, self._probe = self._probe, None
            logits = _output_field(output, "logits")
            labels = kwargs.get("labels")
            if logits is not None and labels is not None:
                _feed_initial_loss(probe, logits, labels)
        if isinstance(loss, torch.Tensor) and loss.requires_grad:
            self.guard.observe_loss(loss)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if self._session is None or self._session.closed or not metrics:
            return control
        value = metrics.get(self._monitor)
        if value is None:
            return control
        if self.guard.early_stop(value) and self.early_stopping == "guard":
            control.should_training_stop = True
        return control

    def on_train_end(self, args, state, control, **kwargs):
        if self._session is None:
            return control
        self.close()
        self._write_tensorboard(args)
        return control

    def close(self, exc: Optional[BaseException] = None) -> None:
        """Leave the guard now (idempotent). Call it in a ``finally`` around
        ``trainer.train()`` if training can fail outside the optimizer step
        and the model's forward (e.g. in the data loader)."""
        session, self._session = self._session, None
        if session is not None:
            session.close(exc)

    def _write_tensorboard(self, args) -> None:
        if not self.tensorboard:
            return
        from .tensorboard import log_history
        target = self.tensorboard
        if target is True:
            target = getattr(args, "logging_dir", None) or args.output_dir
        log_history(self.guard, target)


def guarded_train(trainer, callback: Optional[GuardTrainerCallback] = None, **train_kwargs):
    """``trainer.train(**train_kwargs)`` with a :class:`GuardTrainerCallback`
    (added if not given), which is left whatever happens. Returns
    ``(train_output, callback)``."""
    if callback is None:
        callback = GuardTrainerCallback()
    if callback not in trainer.callback_handler.callbacks:
        trainer.add_callback(callback)
    try:
        out = trainer.train(**train_kwargs)
    except BaseException as exc:
        callback.close(exc)
        raise
    callback.close()
    return out, callback


__all__ = ["GuardTrainerCallback", "guarded_train"]
