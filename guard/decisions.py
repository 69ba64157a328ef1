"""The one place where the guard turns measurements into control flow.

Every decision that changes what the training loop does -- skip a step, stop
early, raise -- goes through a ``Decisions`` object. In a single process the
decisions are local and these methods are the identity. A distributed reducer
(``guard/distributed.py``) subclasses this and makes every rank take
the same decision -- an ``all_reduce(MAX)`` of the device flag, of the host
flag, and of the findings -- so that no rank blocks at the next collective.
:func:`make_decisions` picks the one that fits.
"""
from __future__ import annotations

from typing import List

import torch


class Decisions:
    """Single-process decisions (the identity)."""

    collective = False    # True: a decision is a collective, every rank must take it
    world_size = 1
    rank = 0
    is_writer = True      # this rank writes reports (to_json, plot)

    def device_any(self, flag: torch.Tensor) -> torch.Tensor:
        """Agree on a per-step flag that stays on the device (skip this update?)."""
        return flag

    def host_any(self, flag: bool) -> bool:
        """Agree on a host decision (stop early? this step is non-finite?)."""
        return flag

    def findings(self, findings: List) -> List:
        """Agree on the findings of a window before anything is raised."""
        return self.agree([findings])[0]

    def agree(self, groups: List[List]) -> List[List]:
        """Agree on several lists of findings at once (one per check of a read-back)."""
        return groups

    def sync_module(self, module) -> None:
        """Make every rank hold the same weights (after restoring the best ones)."""

    def global_norm(self, local_norm: torch.Tensor, norm_type: float = 2.0) -> torch.Tensor:
        """The global gradient norm from this process's (shard) norm."""
        return local_norm


def make_decisions(process_group=None) -> Decisions:
    """The :class:`Decisions` for this process: agreed between ranks under an
    initialised ``torch.distributed`` with more than one rank (in
    ``process_group``, default: the world), the identity otherwise."""
    from .distributed import make_decisions as _make
    return _make(process_group)
