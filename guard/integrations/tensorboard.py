"""TensorBoard logging of a :class:`guard.TrainingGuard`'s history.

    from guard.integrations.tensorboard import log_history

    with TrainingGuard(model, optimizer, loss_fn=criterion) as g:
        ...
    log_history(g, "runs/exp1")          # or an existing SummaryWriter

One scalar series per field of ``g.history``, indexed by the optimizer step:
``loss``, ``grad_norm`` (before clipping), ``applied_grad_norm`` (after
clipping), ``update_ratio`` (on sampled steps), ``lr`` (one series per
param group when there are several), and the cumulative counts
``skipped_steps``, ``nonfinite_steps`` and ``scaler_skipped_steps``.
Missing values (no loss seen, no update sampled) are not written. The
report (findings included) is written once as text under ``<prefix>report``.

To log while training, :class:`HistoryWriter` writes the records not yet
written each time :meth:`HistoryWriter.write` is called -- reading
``g.history`` inside the ``with`` block reads the pending steps back (one
host-device sync), so call it every few hundred steps, not every step.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Iterable, List, Optional, Tuple

_FIELDS = ("loss", "grad_norm", "applied_grad_norm", "update_ratio")
_COUNTS = (("skipped", "skipped_steps"), ("nonfinite", "nonfinite_steps"),
           ("scaler_skipped", "scaler_skipped_steps"))


def _summary_writer_class():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise ImportError(
            "TensorBoard logging of the guard's history needs the tensorboard package "
            "(torch.utils.tensorboard imports it): pip install tensorboard") from exc
    return SummaryWriter


def _writer(writer_or_log_dir) -> Tuple[Any, bool]:
    """(writer, owned): a SummaryWriter-like object is used as it is; a path
    gets a new SummaryWriter that the caller closes."""
    if hasattr(writer_or_log_dir, "add_scalar"):
        return writer_or_log_dir, False
    return _summary_writer_class()(log_dir=str(writer_or_log_dir)), True


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def history_scalars(records: Iterable[Dict[str, Any]], prefix: str = "guard/",
                    counts: Optional[Dict[str, int]] = None) -> List[Tuple[str, float, int]]:
    """``(tag, value, step)`` triples for ``records`` (entries of ``g.history``).
    ``counts`` carries the cumulative counters from one call to the next."""
    counts = counts if counts is not None else {}
    out: List[Tuple[str, float, int]] = []
    for rec in records:
        step = int(rec["step"])
        for f in _FIELDS:
            v = rec.get(f)
            if _finite(v):
                out.append((prefix + f, float(v), step))
        lr = rec.get("lr")
        if isinstance(lr, (list, tuple)):
            for i, v in enumerate(lr):
                if _finite(v):
                    out.append((f"{prefix}lr/group{i}", float(v), step))
        elif _finite(lr):
            out.append((prefix + "lr", float(lr), step))
        for flag, name in _COUNTS:
            counts[name] = counts.get(name, 0) + (1 if rec.get(flag) else 0)
            out.append((prefix + name, float(counts[name]), step))
    return out


def log_history(guard, writer_or_log_dir, prefix: str = "guard/", *,
                report: bool = True) -> int:
    """Write ``guard.history`` as TensorBoard scalars; return how many steps
    were written.

    Args:
        guard: a :class:`guard.TrainingGuard` (after or inside its ``with`` block).
        writer_or_log_dir: a ``torch.utils.tensorboard.SummaryWriter`` (or any
            object with ``add_scalar``, e.g. Lightning's
            ``TensorBoardLogger.experiment``), or a log directory.
        prefix: tag prefix (``"guard/"``).
        report: also write ``guard.report()`` as text.
    """
    writer, owned = _writer(writer_or_log_dir)
    try:
        records = guard.history
        for tag, value, step in history_scalars(records, prefix):
            writer.add_scalar(tag, value, step)
        if report and hasattr(writer, "add_text"):
            last = int(records[-1]["step"]) if records else 0
            writer.add_text(prefix + "report", "```\n" + guard.report() + "\n```", last)
        if hasattr(writer, "flush"):
            writer.flush()
    finally:
        if owned:
            writer.close()
    return len(records)


class HistoryWriter:
    """Incremental TensorBoard writer for a guard's history during training.

        writer = HistoryWriter(g, "runs/exp1")
        for step, batch in enumerate(loader):
            ...
            if step % 200 == 0:
                writer.write()
        writer.close()            # writes the rest and the report

    ``write()`` reads ``g.history`` (one host-device sync inside the ``with``
    block) and writes only the steps not written before.
    """

    def __init__(self, guard, writer_or_log_dir, prefix: str = "guard/"):
        self.guard = guard
        self.prefix = prefix
        self.writer, self._owned = _writer(writer_or_log_dir)
        self._done = 0
        self._counts: Dict[str, int] = {}

    def write(self) -> int:
        """Write the steps recorded since the last call; return how many."""
        records = self.guard.history
        new = records[self._done:]
        for tag, value, step in history_scalars(new, self.prefix, self._counts):
            self.writer.add_scalar(tag, value, step)
        self._done = len(records)
        return len(new)

    def close(self, report: bool = True) -> None:
        self.write()
        if report and hasattr(self.writer, "add_text"):
            self.writer.add_text(self.prefix + "report",
                                 "```\n" + self.guard.report() + "\n```", self._done)
        if hasattr(self.writer, "flush"):
            self.writer.flush()
        if self._owned:
            self.writer.close()

    def __enter__(self) -> "HistoryWriter":
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False


__all__ = ["log_history", "HistoryWriter", "history_scalars"]
