"""`--add-noqa`: write `# noqa: CODE` for every current finding (adopting the linter on old code).

- The directive goes on the line the finding starts on, where the linter reads it; when
  that line ends inside a multi-line string or with a backslash, on the first line after
  it that can take a comment (where the linter reads it too, see `suppression.comment_lines`).
- An existing `# noqa: X` on the line gets the new codes appended (`# noqa: X, TL201`);
  a bare `# noqa` already covers everything.
- Notebooks get the directives in their cells' sources; outputs and layout stay.
- TL000 (a file that does not parse or cannot be read) cannot be suppressed: left alone.
A second run adds nothing: every finding is then suppressed.
"""

from __future__ import annotations

import re
from typing import Dict, Iterable, List, Optional, Set, Tuple

from trainlint.finding import Finding
from trainlint.suppression import _NOQA, _codes, comment_lines, suppressed

UNSUPPRESSIBLE = frozenset({"TL000"})
_LINE = re.compile(r"([^\r\n]*)(\r\n|\r|\n|$)")


def _with_noqa(body: str, codes: Iterable[str]) -> Optional[str]:
    """The line (without its line break) with a noqa for `codes`; None when it already has one."""
    m = _NOQA.search(body) if "noqa" in body.lower() else None
    wanted = sorted(set(codes))
    if m is None:
        return f"{body.rstrip()}  # noqa: {', '.join(wanted)}"
    existing = m.group("codes")
    if not existing:
        return None  # a bare noqa covers every code
    have = _codes(existing)
    missing = [c for c in wanted if not suppressed(c, have)]
    if not missing:
        return None
    return body[: m.end("codes")] + ", " + ", ".join(missing) + body[m.end("codes"):]


def add_to_text(text: str, codes_by_line: Dict[int, Set[str]]) -> Tuple[str, int]:
    """`text` with noqa directives for {line: codes} (1-based lines); (new text, directives written)."""
    moved = comment_lines(text)
    targets: Dict[int, Set[str]] = {}
    for line, codes in codes_by_line.items():
        targets.setdefault(moved.get(line, line), set()).update(codes)
    pieces: List[str] = []
    written = 0
    # Split keeping each line's own break, so CRLF and CR files stay as they are.
    for number, m in enumerate(_LINE.finditer(text), start=1):
        body, brk = m.group(1), m.group(2)
        if not body and not brk:
            break
        if number in targets:
            new = _with_noqa(body, targets[number])
            if new is not None:
                body, written = new, written + 1
        pieces.append(body + brk)
    return "".join(pieces), written


def _codes_by_line(findings: Iterable[Finding], key) -> Dict[object, Set[str]]:
    out: Dict[object, Set[str]] = {}
    for f in findings:
        if f.code in UNSUPPRESSIBLE:
            continue
        out.setdefault(key(f), set()).add(f.code)
    return out


def add_to_python(content: bytes, findings: List[Finding]) -> Tuple[Optional[bytes], int]:
    """The file's new bytes (None: nothing to add) and the number of directives added."""
    from trainlint.runner import SourceError, decode_python

    wanted = _codes_by_line(findings, lambda f: f.line)
    if not wanted:
        return None, 0
    try:
        text, encoding = decode_python(content)
    except SourceError:
        return None, 0
    new_text, written = add_to_text(text, wanted)  # type: ignore[arg-type]
    if not written or new_text == text:
        return None, 0
    return new_text.encode(encoding), written


def add_to_notebook(content: bytes, findings: List[Finding]) -> Tuple[Optional[bytes], int]:
    """Like `add_to_python`, on the notebook's cells (findings carry their cell and line in it)."""
    from trainlint import notebook

    wanted_cells = _codes_by_line(findings, lambda f: (f.cell, f.line))
    if not wanted_cells:
        return None, 0
    nb = notebook.load(content.decode("utf-8-sig"))
    if nb is None:
        return None, 0
    # (cell, line in cell) -> line of the combined text; a cell's separator comes first and
    # shares its (cell, 1) key with the cell's first line, which overwrites it.
    line_of = {pos: i + 1 for i, pos in enumerate(nb.line_map)}
    text_lines = nb.text.split("\n")
    wanted: Dict[int, Set[str]] = {}
    for pos, codes in wanted_cells.items():
        line = line_of.get(pos)  # type: ignore[arg-type]
        # An IPython line (`pass  # [magic]` to the rules) is put back as it was: no room for a noqa.
        if line is not None and not notebook._MAGIC_RE.match(text_lines[line - 1]):
            wanted.setdefault(line, set()).update(codes)
    new_text, written = add_to_text(nb.text, wanted)
    if not written:
        return None, 0
    new_json = notebook.write_back(nb, new_text)
    if new_json is None:
        return None, 0
    return new_json.encode("utf-8"), written
