"""SARIF 2.1.0 for GitHub code scanning (validated in the tests against the OASIS schema).

- `tool.driver.rules` lists every rule (stable `ruleIndex`), with its docs as help.
- Result URIs are relative to the run's root (`%SRCROOT%`, the current folder),
  which is what code scanning expects from a checkout; files outside it get an
  absolute `file://` URI.
- Columns count Unicode code points (`columnKind`), as trainlint's do.
- Notebook findings: the region's line is the line within the cell; the cell is
  named in the message and in the result's properties.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, List
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


def build(findings: List[Finding], s: Summary) -> dict:
    from trainlint.registry import all_rules

    root = Path(os.path.abspath(s.root))
    rules = list(all_rules().values())
    index: Dict[str, int] = {r.code: i for i, r in enumerate(rules)}
    descriptors = [_rule_descriptor(r) for r in rules]
    results = []
    for f in findings:
        if f.code not in index:  # not in the registry (should not happen): describe it minimally
            index[f.code] = len(descriptors)
            descriptors.append({"id": f.code, "name": f.name, "shortDescription": {"text": f.name}})
        message = f.message if f.cell is None else f"cell {f.cell}: {f.message}"
        start_line, start_col = max(f.line, 1), max(f.column, 1)
        end_line = max(f.end_line, start_line)
        end_col = max(f.end_column, start_col) if end_line == start_line else max(f.end_column, 1)
        region = {"startLine": start_line, "startColumn": start_col, "endLine": end_line, "endColumn": end_col}
        result = {
            "ruleId": f.code,
            "ruleIndex": index[f.code],
            "level": LEVELS.get(f.severity, "warning"),
            "message": {"text": message},
            "locations": [{"physicalLocation": {"artifactLocation": _uri(f.path, root), "region": region}}],
        }
        if f.cell is not None:
            result["properties"] = {"cell": f.cell}
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
