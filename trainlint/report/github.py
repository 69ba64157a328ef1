"""GitHub Actions workflow commands: one `::error file=...,line=...::message` line per finding.

Severity error -> `error`, warning -> `warning`, info -> `notice`. Escaping follows
the Actions toolkit (`@actions/core` command.ts): data escapes `%`, CR and LF;
property values additionally `:` and `,`. A finding spanning several lines gets
`line`/`endLine` only: GitHub's docs say to omit `col`/`endColumn` then.
Notebook findings carry no line (a line of the .ipynb JSON would point nowhere
useful): the cell and line go into the message.
"""

from __future__ import annotations

from typing import List

from trainlint.finding import Finding
from trainlint.report import Summary

LEVELS = {"error": "error", "warning": "warning", "info": "notice"}


def escape_data(s: str) -> str:
    return s.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(s: str) -> str:
    return escape_data(s).replace(":", "%3A").replace(",", "%2C")


def format_finding(f: Finding) -> str:
    props = [("file", f.path)]
    message = f"{f.code} {f.message}"  # SPEC: the annotation text starts with the code
    if f.cell is None and f.end_line != f.line:
        # GitHub: give `col`/`endColumn` only for an annotation on one line.
        props += [("line", f.line), ("endLine", f.end_line)]
    elif f.cell is None:
        props += [("line", f.line), ("col", f.column), ("endLine", f.end_line), ("endColumn", f.end_column)]
    else:
        message = f"{f.code} cell {f.cell}, line {f.line}, column {f.column}: {f.message}"
    props.append(("title", f"{f.code} {f.name}"))
    joined = ",".join(f"{k}={escape_property(str(v))}" for k, v in props)
    return f"::{LEVELS.get(f.severity, 'error')} {joined}::{escape_data(message)}"


def render(findings: List[Finding], s: Summary) -> str:
    return "".join(format_finding(f) + "\n" for f in findings)
