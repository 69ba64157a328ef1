"""Output formats. Each module has `render(findings, summary) -> str`; only the one asked for is imported."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import List

from trainlint.finding import Finding

_MODULES = {"text": "text", "json": "json_format", "sarif": "sarif", "github": "github"}


@dataclass
class Summary:
    """What the reports say besides the findings."""

    fixed: int = 0  # findings fixed by --fix in this run
    fix_mode: bool = False  # --fix was given
    unsafe_fixes: bool = False
    statistics: bool = False
    quiet: bool = False
    root: Path = Path(".")  # SARIF: the folder relative URIs start from


def render(fmt: str, findings: List[Finding], summary: Summary) -> str:
    module = importlib.import_module(f"trainlint.report.{_MODULES[fmt]}")
    return module.render(findings, summary)
