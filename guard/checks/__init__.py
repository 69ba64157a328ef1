"""The guard's checks, one module each. ``CHECKS`` maps the public check names
(the keys of ``TrainingGuard(checks=...)``) to their classes, in the order in
which a window of steps is judged (finite first: a NaN explains everything else)."""
from .base import Check, Finding
from .data import DataCheck
from .divergence import DivergenceCheck
from .finite import FiniteCheck
from .gradient_norm import GradientNormCheck
from .init import InitCheck
from .initial_loss import InitialLossCheck
from .optimizer import OptimizerCheck
from .spike import SpikeCheck
from .update import UpdateCheck

CHECKS = {
    "init": InitCheck,
    "initial-loss": InitialLossCheck,
    "finite": FiniteCheck,
    "gradient-norm": GradientNormCheck,
    "spike": SpikeCheck,
    "update": UpdateCheck,
    "divergence": DivergenceCheck,
    "data": DataCheck,
    "optimizer": OptimizerCheck,
}

__all__ = ["CHECKS", "Check", "Finding"]
