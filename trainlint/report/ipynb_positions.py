"""Where a notebook cell's source line sits in the `.ipynb` file itself (for SARIF).

GitHub code scanning shows a SARIF region against the file as stored: for a notebook,
its JSON. A finding at (cell 3, line 4) must point at the JSON line that holds that
cell's fourth source line (nbformat writes `"source"` as a list, one string per line,
each on its own JSON line), at the column where the code's text is in that string.

`json` gives no positions, so this reads the JSON once more with a small scanner that
keeps, for each cell's `source`, the raw offsets of its string literals, and maps a
character of the decoded text to its offset in the raw literal (escapes such as
`\\"`, `\\n` or `\\u00e9` take several raw characters for one decoded one).
"""

from __future__ import annotations

import re
from bisect import bisect_right
from typing import Dict, List, Optional, Tuple

_WS = re.compile(r"[ \t\r\n]*")
_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?")
_SIMPLE_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


class _Literal:
    """One JSON string: its decoded text and the raw offset of each decoded character."""

    def __init__(self, text: str, offsets: List[int], end: int):
        self.text = text
        self.offsets = offsets  # raw offset of text[i]; len(text) maps to the closing quote
        self.end = end


class _Scanner:
    def __init__(self, raw: str):
        self.raw = raw
        self.sources: Dict[int, List[_Literal]] = {}  # cell index (0-based) -> its source strings

    def ws(self, i: int) -> int:
        return _WS.match(self.raw, i).end()

    def string(self, i: int) -> Tuple[_Literal, int]:
        raw = self.raw
        if raw[i] != '"':
            raise ValueError("string expected")
        i += 1
        chars: List[str] = []
        offsets: List[int] = []
        while True:
            c = raw[i]
            if c == '"':
                offsets.append(i)
                return _Literal("".join(chars), offsets, i + 1), i + 1
            if c == "\\":
                e = raw[i + 1]
                if e == "u":
                    code = int(raw[i + 2 : i + 6], 16)
                    width = 6
                    if 0xD800 <= code < 0xDC00 and raw[i + 6 : i + 8] == "\\u":  # a surrogate pair
                        low = int(raw[i + 8 : i + 12], 16)
                        code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                        width = 12
                    chars.append(chr(code))
                    offsets.append(i)
                    i += width
                    continue
                chars.append(_SIMPLE_ESCAPES[e])
                offsets.append(i)
                i += 2
                continue
            chars.append(c)
            offsets.append(i)
            i += 1

    def value(self, i: int, path: Tuple) -> int:
        i = self.ws(i)
        c = self.raw[i]
        if c == "{":
            i = self.ws(i + 1)
            if self.raw[i] == "}":
                return i + 1
            while True:
                key, i = self.string(self.ws(i))
                i = self.ws(i)
                if self.raw[i] != ":":
                    raise ValueError("':' expected")
                i = self.value(i + 1, path + (key.text,))
                i = self.ws(i)
                if self.raw[i] == ",":
                    i += 1
                    continue
                if self.raw[i] == "}":
                    return i + 1
                raise ValueError("',' or '}' expected")
        if c == "[":
            i = self.ws(i + 1)
            if self.raw[i] == "]":
                return i + 1
            n = 0
            while True:
                i = self.value(i, path + (n,))
                n += 1
                i = self.ws(i)
                if self.raw[i] == ",":
                    i += 1
                    continue
                if self.raw[i] == "]":
                    return i + 1
                raise ValueError("',' or ']' expected")
        if c == '"':
            lit, end = self.string(i)
            # ("cells", k, "source") or ("cells", k, "source", j)
            if len(path) >= 3 and path[0] == "cells" and isinstance(path[1], int) and path[2] == "source":
                self.sources.setdefault(path[1], []).append(lit)
            return end
        for word in ("true", "false", "null"):
            if self.raw.startswith(word, i):
                return i + len(word)
        m = _NUMBER.match(self.raw, i)
        if not m:
            raise ValueError("value expected")
        return m.end()


class NotebookPositions:
    """Map (cell, line in cell, column) to (line, column) of the `.ipynb` file, all 1-based."""

    def __init__(self, raw: str):
        scanner = _Scanner(raw)
        scanner.value(0, ())
        self._line_starts = [0] + [m.end() for m in re.finditer(r"\r\n|\r|\n", raw)]
        # Per cell: its source text, and the raw offset of each of its characters.
        self._cells: Dict[int, Tuple[str, List[int], int]] = {}
        for cell, literals in scanner.sources.items():
            text = "".join(lit.text for lit in literals)
            offsets = [o for lit in literals for o in lit.offsets[:-1]]
            self._cells[cell] = (text, offsets, literals[-1].offsets[-1] if literals else 0)

    def _raw_position(self, offset: int) -> Tuple[int, int]:
        line = bisect_right(self._line_starts, offset)
        return line, offset - self._line_starts[line - 1] + 1

    def position(self, cell: int, line: int, column: int) -> Optional[Tuple[int, int]]:
        entry = self._cells.get(cell - 1)
        if entry is None:
            return None
        text, offsets, closing = entry
        starts = [0] + [m.end() for m in re.finditer(r"\r\n|\r|\n", text)]
        if not 1 <= line <= len(starts):
            return None
        index = starts[line - 1] + column - 1
        line_end = starts[line] - 1 if line < len(starts) else len(text)
        index = min(max(index, starts[line - 1]), max(line_end, starts[line - 1]))
        raw = offsets[index] if index < len(offsets) else closing
        return self._raw_position(raw)


def load(raw: str) -> Optional[NotebookPositions]:
    try:
        return NotebookPositions(raw)
    except (ValueError, IndexError, KeyError):
        return None
