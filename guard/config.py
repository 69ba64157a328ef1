"""Parsing and validation of the ``checks=`` argument.

``checks`` maps a check name to a mode (``"off"``, ``"warn"``, ``"raise"``,
``"skip"`` for ``finite``) or to a dict ``{"mode": ..., <threshold>: value}``
that also overrides the check's thresholds, e.g.
``checks={"gradient-norm": {"mode": "raise", "exploding": 1e4}}``.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Tuple

from .checks import CHECKS

#: Defaults of the contract: ``finite`` raises (or follows ``on_nonfinite``),
#: ``optimizer`` notes (``"info"``), every other check warns.
DEFAULT_MODES = {name: "warn" for name in CHECKS}
DEFAULT_MODES["optimizer"] = "info"   # recipe notes in report(), not warnings


def parse_checks(checks: Optional[Mapping[str, Any]], on_nonfinite: str,
                 on_spike: str = "warn") -> Dict[str, Tuple[str, Dict[str, Any]]]:
    """Return ``{check name: (mode, threshold overrides)}`` for every check."""
    modes = dict(DEFAULT_MODES)
    modes["finite"] = on_nonfinite
    modes["spike"] = on_spike
    options: Dict[str, Dict[str, Any]] = {name: {} for name in CHECKS}
    for name, value in (checks or {}).items():
        if name not in CHECKS:
            raise ValueError(f"unknown check {name!r}; known checks: {', '.join(CHECKS)}")
        if isinstance(value, Mapping):
            value = dict(value)
            mode = value.pop("mode", modes[name])
            unknown = set(value) - set(CHECKS[name].defaults)
            if unknown:
                raise ValueError(
                    f"unknown option(s) {sorted(unknown)} for check {name!r}; "
                    f"known: {sorted(CHECKS[name].defaults)}")
            options[name] = value
        elif value is None or value is False:
            mode = "off"
        else:
            mode = value
        modes[name] = mode
    for name, mode in modes.items():
        if mode not in CHECKS[name].modes:
            raise ValueError(f"check {name!r}: mode must be one of {CHECKS[name].modes}, "
                             f"got {mode!r}")
    return {name: (modes[name], options[name]) for name in CHECKS}
