"""guard -- a runtime guard for PyTorch training loops.

    from guard import TrainingGuard

    with TrainingGuard(model, optimizer, loss_fn=criterion, max_grad_norm=1.0) as g:
        ...   # your own training loop
    print(g.report())

Public names: :class:`TrainingGuard`, :class:`GuardWarning`, the errors
(:class:`GuardError` and its subclasses) and the sanity tools
:func:`overfit_one_batch` and :func:`lr_find`. See the README's guard section.
"""
try:   # the linter installs without PyTorch; the guard needs the extra
    import numpy  # noqa: F401
    import torch  # noqa: F401
except ModuleNotFoundError as _exc:   # pragma: no cover - depends on the environment
    if _exc.name not in ("numpy", "torch"):
        raise
    raise ImportError(
        f"the trainlint guard needs PyTorch and NumPy ({_exc.name!r} is not installed): "
        'pip install "trainlint[guard]"', name=_exc.name) from None

from .errors import (DivergenceError, ExplodingGradientError, GuardError, GuardWarning,
                     InitError, InitialLossError, NoUpdateError, NonFiniteError,
                     VanishingGradientError)
from .guard import TrainingGuard
from .sanity import LRFinderResult, OverfitResult, lr_find, overfit_one_batch

__all__ = [
    "TrainingGuard",
    "GuardError", "InitError", "InitialLossError", "NonFiniteError",
    "ExplodingGradientError", "VanishingGradientError", "NoUpdateError",
    "DivergenceError", "GuardWarning",
    "overfit_one_batch", "lr_find", "OverfitResult", "LRFinderResult",
]
