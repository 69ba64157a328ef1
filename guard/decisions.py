"""The one place where the guard turns measurements into control flow.

Every decision that changes what the training loop does -- skip a step, stop
early, raise -- goes through a ``Decisions`` object. In a single process the
decisions are local and these methods are the identity. A distributed reducer
(``guard/distributed.py``, later) subclasses this and makes every rank take
the same decision -- an ``all_reduce(MAX)`` of the device flag, of the host
flag, and of the findings -- so that no rank blocks at the next collective.
"""
from __future__ import annotations

from typing import List

import torch


class Decisions:
    """Single-process decisions (the identity)."""

    def device_any(self, flag: torch.Tensor) -> torch.Tensor:
        """Agree on a per-step flag that stays on the device (skip this update?)."""
        return flag

    def host_any(self, flag: bool) -> bool:
        """Agree on a host decision (stop early? this step is non-finite?)."""
        return flag

    def findings(self, findings: List) -> List:
        """Agree on the findings of a window before anything is raised."""
        return findings
