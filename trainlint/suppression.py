"""`# noqa` comments and `# trainlint: disable-file=` directives."""

from __future__ import annotations

import re
from typing import Dict, FrozenSet, List, Optional

_NOQA = re.compile(r"#\s*noqa(?::\s*(?P<codes>[A-Za-z]+[0-9]*(?:[\s,]+[A-Za-z]+[0-9]*)*))?", re.I)
_DISABLE_FILE = re.compile(r"#\s*trainlint:\s*disable-file(?:\s*=\s*(?P<codes>[A-Za-z0-9 ,]+))?", re.I)

ALL = frozenset({"*"})


def _codes(raw: Optional[str]) -> FrozenSet[str]:
    if not raw:
        return ALL
    return frozenset(c.upper() for c in re.split(r"[\s,]+", raw.strip()) if c)


def noqa_codes(line: str) -> Optional[FrozenSet[str]]:
    """Codes a `# noqa` on this physical line suppresses (ALL for a bare noqa), or None."""
    if "noqa" not in line.lower():
        return None
    m = _NOQA.search(line)
    if not m:
        return None
    return _codes(m.group("codes"))


def file_disabled_codes(text: str) -> FrozenSet[str]:
    """Codes disabled for the whole file by `# trainlint: disable-file=TL101,TL2`."""
    if "trainlint:" not in text:
        return frozenset()
    out = set()
    for m in _DISABLE_FILE.finditer(text):
        out |= _codes(m.group("codes"))
    return frozenset(out)


def suppressed(code: str, codes: Optional[FrozenSet[str]]) -> bool:
    """Whether `code` is covered by a set of codes or prefixes (ALL covers everything)."""
    if not codes:
        return False
    if "*" in codes:
        return True
    return any(code.startswith(c) for c in codes)


_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def physical_lines(text: str) -> List[str]:
    """The lines as Python counts them (`str.splitlines` also breaks at form feeds and the like)."""
    lines = _LINE_BREAK.split(text)
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def comment_lines(text: str) -> Dict[int, int]:
    """Lines whose end cannot take a comment -> the first line after them that can (1-based).

    A line that ends inside a multi-line string, or with a backslash continuation, cannot
    end with `# noqa`; the directive for a finding there belongs where the string (or the
    continued line) ends, as in ruff. Lines not in the result take their own comments.
    """
    import io
    import tokenize

    blocked = set()
    fstring_starts: List[int] = []
    comment_on = set()
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            kind = tokenize.tok_name.get(tok.type, "")
            if tok.type == tokenize.COMMENT:
                comment_on.add(tok.start[0])
            elif kind == "FSTRING_START":  # Python 3.12+: f-strings come in pieces
                fstring_starts.append(tok.start[0])
            elif kind == "FSTRING_END" and fstring_starts:
                blocked.update(range(fstring_starts.pop(), tok.end[0]))
            elif tok.type == tokenize.STRING and tok.end[0] > tok.start[0]:
                blocked.update(range(tok.start[0], tok.end[0]))
    except (tokenize.TokenError, SyntaxError, ValueError):
        return {}
    for number, line in enumerate(physical_lines(text), start=1):
        if line.rstrip().endswith("\\") and number not in comment_on:
            blocked.add(number)
    moved: Dict[int, int] = {}
    for number in sorted(blocked, reverse=True):
        moved[number] = moved.get(number + 1, number + 1)
    return moved


class NoqaLines:
    """The `# noqa` codes in force for a finding starting on a line (read lazily, per file)."""

    def __init__(self, text: str):
        self.lines = physical_lines(text)
        self._text = text
        self._moved: Optional[Dict[int, int]] = None

    def codes(self, line: int) -> Optional[FrozenSet[str]]:
        own = noqa_codes(self.lines[line - 1]) if 0 < line <= len(self.lines) else None
        if own is None and "noqa" not in self._text.lower():
            return None  # no noqa anywhere: nothing to tokenize for
        if self._moved is None:
            self._moved = comment_lines(self._text)
        target = self._moved.get(line)
        if target is None:
            return own
        # The line ends inside a string (or continues): a "# noqa" on it is string text,
        # the directive that counts is where the string or the continued line ends.
        return noqa_codes(self.lines[target - 1]) if 0 < target <= len(self.lines) else None
