"""What every check shares: the finding it reports and its base class.

A check never warns or raises by itself. It returns :class:`Finding` objects
and the guard decides, in one place, what to do with them (mode, once per
cause, and later: agreement between ranks). That keeps the checks pure
functions of the numbers they are shown, which is what the tests exercise.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Type

from ..errors import GuardError


@dataclass
class Finding:
    """One pathology seen by a check."""

    cause: str                       # short stable id, the unit of "once per cause"
    message: str                     # what was seen, where, and the usual remedies
    step: Optional[int] = None       # optimizer step, None for checks on entry
    param: Optional[str] = None      # first offending parameter / layer name
    error: Optional[Type[GuardError]] = None   # overrides the check's error class


class Check:
    """Base class. Subclasses set ``name``, ``error``, ``modes`` and ``defaults``
    and override the ``on_*`` methods they need; each returns a list of findings."""

    name: str = ""
    error: Type[GuardError] = GuardError
    modes = ("off", "warn", "raise")
    defaults: Dict[str, Any] = {}

    def __init__(self, mode: str, options: Dict[str, Any], guard: Any):
        self.mode = mode
        self.opt = dict(self.defaults)
        self.opt.update(options)
        self.guard = guard

    # Each hook is called by the guard at a well-defined moment.
    def on_enter(self) -> List[Finding]:            # before any hook is attached
        return []

    def on_window(self, window) -> List[Finding]:   # every check_every steps and at exit
        return []
