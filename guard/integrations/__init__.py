"""Integrations of :class:`guard.TrainingGuard` with training frameworks.

Nothing heavy is imported here: each integration imports its framework only
when its own module is imported.

* ``guard.integrations.lightning`` -- :class:`GuardCallback`, a PyTorch
  Lightning ``Callback`` (``lightning`` or ``pytorch_lightning``).
* ``guard.integrations.huggingface`` -- :class:`GuardTrainerCallback`, a
  ``transformers.TrainerCallback``.
* ``guard.integrations.tensorboard`` -- :func:`log_history` and
  :class:`HistoryWriter`, the guard's per-step history as TensorBoard scalars.
"""
