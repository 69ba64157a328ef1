"""SARIF 2.1.0 for GitHub code scanning (validated in the tests against the OASIS schema).

- `tool.driver.rules` lists every rule (stable `ruleIndex`), with its docs as help.
- Result URIs are relative to the run's root (`%SRCROOT%`, the current folder),
  which is what code scanning expects from a checkout; files outside it get an
  absolute `file://` URI.
- Columns count Unicode code points (`columnKind`), as trainlint's do.
- Notebook findings: the region points into the `.ipynb` file as stored (its JSON),
  at the line and column where that cell's source line is written
  (`ipynb_positions`), since that is the file code scanning shows; the cell and the
  line within it are named in the message and in the result's properties. A notebook
  that cannot be read again falls back to the line within the cell.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, List, Optional
from urllib.parse import quote

from trainlint import __version__
from trainlint.finding import Finding
from trainlint.report import Summary

SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
INFORMATION_URI = "https://pypi.org/project/trainlint/"
LEVELS = {"error": "error", "warning": "warning", "info": "note"}


def _rule_descriptor(rule) -> dict:
    import inspect

    doc = inspect.cleandoc(rule.doc()) or rule.name
    summary = rule.summary() or rule.name
    return {
        "id": rule.code,
        "name": rule.name,
        "shortDescription": {"text": summary},
        "fullDescription": {"text": summary},
        "help": {"text": doc, "markdown": doc},
        "defaultConfiguration": {"level": LEVELS.get(rule.severity, "warning")},
        "properties": {"tags": ["pytorch", "training"], "fixable": rule.fixable or "no"},
    }


def _uri(path: str, root: Path) -> dict:
    p = Path(path)
    if not p.is_absolute():
        p = Path(os.path.normpath(Path.cwd() / p))
    try:
        rel = p.relative_to(root).as_posix()
        return {"uri": quote(rel), "uriBaseId": "%SRCROOT%"}
    except ValueError:
        return {"uri": p.as_uri()}


class _NotebookRegions:
    """Regions of notebook findings in the `.ipynb` files' own lines (each file read once)."""

    def __init__(self) -> None:
        self._files: Dict[str, object] = {}

    def _positions(self, path: str):
        if path not in self._files:
            from trainlint.report.ipynb_positions import load

            try:
                raw = Path(path).read_bytes().decode("utf-8-sig")
            except (OSError, UnicodeDecodeError):
                raw = None
            self._files[path] = load(raw) if raw is not None else None
        return self._files[path]

    def region(self, f: Finding) -> Optional[dict]:
        positions = self._positions(f.path)
        if positions is None:
            return None
        start = positions.position(f.cell, f.line, f.column)
        end = positions.position(f.cell, f.end_line, f.end_column)
        if start is None or end is None or end < start:
            return None
        return {"startLine": start[0], "startColumn": start[1], "endLine": end[0], "endColumn": max(end[1], 1)}


def build(findings: List[Finding], s: Summary) -> dict:
    from trainlint.registry import all_rules

    root = Path(os.path.abspath(s.root))
    rules = list(all_rules().values())
    index: Dict[str, int] = {r.code: i for i, r in enumerate(rules)}
    descriptors = [_rule_descriptor(r) for r in rules]
    results = []
    notebooks = _NotebookRegions()
    for f in findings:
        if f.code not in index:  # not in the registry (should not happen): describe it minimally
            index[f.code] = len(descriptors)
            descriptors.append({"id": f.code, "name": f.name, "shortDescription": {"text": f.name}})
        message = f.message if f.cell is None else f"cell {f.cell}, line {f.line}: {f.message}"
        start_line, start_col = max(f.line, 1), max(f.column, 1)
        end_line = max(f.end_line, start_line)
        end_col = max(f.end_column, start_col) if end_line == start_line else max(f.end_column, 1)
        region = {"startLine": start_line, "startColumn": start_col, "endLine": end_line, "endColumn": end_col}
        if f.cell is not None:
            region = notebooks.region(f) or region
        result = {
            "ruleId": f.code,
            "ruleIndex": index[f.code],
            "level": LEVELS.get(f.severity, "warning"),
            "message": {"text": message},
            "locations": [{"physicalLocation": {"artifactLocation": _uri(f.path, root), "region": region}}],
        }
        if f.cell is not None:
            result["properties"] = {"cell": f.cell, "cellLine": f.line, "cellColumn": f.column}
        results.append(result)
    return {
        "$schema": SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "trainlint",
                        "version": __version__,
                        "semanticVersion": __version__,
                        "informationUri": INFORMATION_URI,
                        "rules": descriptors,
                    }
                },
                "originalUriBaseIds": {"%SRCROOT%": {"uri": root.as_uri().rstrip("/") + "/"}},
                "columnKind": "unicodeCodePoints",
                "results": results,
            }
        ],
    }


def render(findings: List[Finding], s: Summary) -> str:
    return json.dumps(build(findings, s), indent=2, ensure_ascii=False) + "\n"
