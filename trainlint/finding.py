"""The data every part of the linter exchanges: findings, fixes, edits."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

SEVERITIES = ("error", "warning", "info")


@dataclass(frozen=True)
class Edit:
    """Replace the text between two 1-based (line, column) positions with `content`.

    Columns count characters, end is exclusive; positions refer to the linted text
    (for notebooks, the cell's own text, see `cell`).
    """

    line: int
    column: int
    end_line: int
    end_column: int
    content: str

    def to_dict(self) -> dict:
        return {
            "line": self.line,
            "column": self.column,
            "end_line": self.end_line,
            "end_column": self.end_column,
            "content": self.content,
        }


@dataclass(frozen=True)
class Fix:
    applicability: str  # "safe" or "unsafe"
    edits: tuple = ()
    # The whole fixed source of the file the fix applies to (set by the engine);
    # fixes are applied as libcst tree rewrites, `edits` describe them for JSON.
    description: str = ""

    def to_dict(self) -> dict:
        return {"applicability": self.applicability, "edits": [e.to_dict() for e in self.edits]}


@dataclass
class Finding:
    path: str
    line: int
    column: int
    end_line: int
    end_column: int
    code: str
    name: str
    severity: str
    message: str
    cell: Optional[int] = None
    fix: Optional[Fix] = None

    def sort_key(self):
        return (self.path, self.cell or 0, self.line, self.column, self.code)

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "line": self.line,
            "column": self.column,
            "end_line": self.end_line,
            "end_column": self.end_column,
            "cell": self.cell,
            "code": self.code,
            "name": self.name,
            "severity": self.severity,
            "message": self.message,
            "fix": self.fix.to_dict() if self.fix else None,
        }
