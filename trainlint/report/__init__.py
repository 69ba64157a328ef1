"""Output formats. Each module has `render(findings, summary) -> str`; only the one asked for is imported."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

from trainlint.finding import Finding

if TYPE_CHECKING:  # pragma: no cover
    from trainlint.report.source import SourceLines

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
    # Text only: the source line under each finding (read through `sources`), ANSI colour.
    show_source: bool = False
    sources: Optional["SourceLines"] = None
    color: bool = False


def render(fmt: str, findings: List[Finding], summary: Summary) -> str:
    module = importlib.import_module(f"trainlint.report.{_MODULES[fmt]}")
    return module.render(findings, summary)
