"""The source lines findings point at, for `--show-source` (read only when a report shows them).

Python files are decoded as the linter decodes them (BOM, PEP 263 coding line);
notebook findings take the line from their cell's own source. A file that cannot be
read or decoded any more shows no source, never an error.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Mapping, Optional


class SourceLines:
    """`line(finding)`: the text of the line a finding starts on, or None.

    `contents` maps a report path to the bytes the findings refer to when they are not
    (yet) what is on disk: standard input, a fixed file that could not be written.
    """

    def __init__(self, contents: Optional[Mapping[str, bytes]] = None, cwd: Optional[Path] = None):
        self._contents = dict(contents or {})
        self._cwd = Path(cwd or os.getcwd())
        self._files: Dict[str, Optional[List[str]]] = {}  # path -> lines (python)
        self._cells: Dict[str, Optional[List[List[str]]]] = {}  # path -> cells' lines (notebook)

    def _raw(self, path: str) -> Optional[bytes]:
        if path in self._contents:
            return self._contents[path]
        try:
            return (self._cwd / path).read_bytes()
        except (OSError, ValueError):
            return None

    def _python(self, path: str) -> Optional[List[str]]:
        if path not in self._files:
            from trainlint.runner import SourceError, decode_python

            raw = self._raw(path)
            lines = None
            if raw is not None:
                try:
                    lines = decode_python(raw)[0].splitlines()
                except SourceError:
                    lines = None
            self._files[path] = lines
        return self._files[path]

    def _notebook(self, path: str) -> Optional[List[List[str]]]:
        if path not in self._cells:
            import json

            raw = self._raw(path)
            cells = None
            try:
                data = json.loads(raw.decode("utf-8-sig")) if raw is not None else None
                if isinstance(data, dict) and isinstance(data.get("cells"), list):
                    cells = []
                    for cell in data["cells"]:
                        src = cell.get("source", "") if isinstance(cell, dict) else ""
                        if isinstance(src, list):
                            src = "".join(s for s in src if isinstance(s, str))
                        cells.append(src.splitlines() if isinstance(src, str) else [])
            except (ValueError, UnicodeDecodeError):
                cells = None
            self._cells[path] = cells
        return self._cells[path]

    def line(self, finding) -> Optional[str]:
        if finding.cell is not None:
            cells = self._notebook(finding.path)
            if not cells or not 1 <= finding.cell <= len(cells):
                return None
            lines = cells[finding.cell - 1]
        else:
            lines = self._python(finding.path)
        if not lines or not 1 <= finding.line <= len(lines):
            return None
        return lines[finding.line - 1]
