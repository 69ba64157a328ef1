"""guard -- a runtime guard for PyTorch training loops.

    from guard import TrainingGuard

    with TrainingGuard(model, optimizer, loss_fn=criterion, max_grad_norm=1.0) as g:
        ...   # your own training loop
    print(g.report())

Public names: :class:`TrainingGuard`, :class:`GuardWarning` and the errors
(:class:`GuardError` and its subclasses). See the README's guard section.
"""
from .errors import (DivergenceError, ExplodingGradientError, GuardError, GuardWarning,
                     InitError, InitialLossError, NoUpdateError, NonFiniteError,
                     VanishingGradientError)
from .guard import TrainingGuard

__all__ = [
    "TrainingGuard",
    "GuardError", "InitError", "InitialLossError", "NonFiniteError",
    "ExplodingGradientError", "VanishingGradientError", "NoUpdateError",
    "DivergenceError", "GuardWarning",
]
