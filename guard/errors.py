"""Errors and the warning class the guard emits.

Every error and every warning carries the same structured fields, so a test
or a training script can tell *what* fired without parsing the message:

* ``check`` -- the check's name (``"gradient-norm"``, ``"finite"``, ...)
* ``cause`` -- a short id of the cause within the check (``"exploding"``, ...)
* ``step``  -- the optimizer step it refers to (``None`` for checks on entry)
* ``param`` -- the first offending parameter or layer name, when there is one
"""
from __future__ import annotations

from typing import Optional


class _Finding:
    """Mixin holding the structured fields of a finding."""

    def _set_fields(self, check, cause, step, param):
        self.check: Optional[str] = check
        self.cause: Optional[str] = cause
        self.step: Optional[int] = step
        self.param: Optional[str] = param


class GuardError(_Finding, RuntimeError):
    """Base class of every error the guard raises."""

    def __init__(self, message: str = "", *, check: Optional[str] = None,
                 cause: Optional[str] = None, step: Optional[int] = None,
                 param: Optional[str] = None):
        super().__init__(message)
        self._set_fields(check, cause, step, param)


class InitError(GuardError):
    """Weights or first-forward activations show a broken initialisation."""


class InitialLossError(GuardError):
    """The loss at step 0 is far from what an untrained model should give."""


class NonFiniteError(GuardError):
    """NaN or Inf in the loss, the gradients or the parameters."""


class ExplodingGradientError(GuardError):
    """The gradient norm grew above the exploding threshold."""


class VanishingGradientError(GuardError):
    """The gradient norm (globally or in the first layers) vanished."""


class NoUpdateError(GuardError):
    """Trainable parameters that receive no gradient, are not in the optimizer,
    do not change, or change at an unhealthy rate."""


class DivergenceError(GuardError):
    """The smoothed loss rose far above its best, or made no progress."""


class GuardWarning(_Finding, UserWarning):
    """What a check in ``"warn"`` mode emits (once per cause)."""

    def __init__(self, message: str = "", *, check: Optional[str] = None,
                 cause: Optional[str] = None, step: Optional[int] = None,
                 param: Optional[str] = None):
        super().__init__(message)
        self._set_fields(check, cause, step, param)


__all__ = [
    "GuardError", "InitError", "InitialLossError", "NonFiniteError",
    "ExplodingGradientError", "VanishingGradientError", "NoUpdateError",
    "DivergenceError", "GuardWarning",
]
