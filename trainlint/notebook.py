"""Jupyter notebooks: one Python text for all code cells, and the way back.

The rules see the notebook as one module (a model defined in cell 2 and trained
in cell 5 is analysed together). The text is built so that:

- every code cell starts with a separator comment line, `# trainlint-cell: N`
  (N = 1-based index among ALL cells, markdown included); fixes replace
  statements, never these comments, so the fixed text splits back into cells;
- IPython syntax (line magics `%x`, `!cmd`, `x = !cmd`, help `obj?`) becomes
  `pass  # [magic]` on the same line, with the same indentation, so lines do not
  shift and the code still parses; the original lines are put back on write;
- a cell magic whose body is not Python (`%%bash`, `%%html`, ...) turns the whole
  cell into comments; Python cell magics (`%%time`, `%%capture`, ...) keep the body;
- a cell whose first line is indented loses that indentation on every line that has it,
  as IPython's `leading_indent` input transform does before running it (columns map back);
- a cell that does not parse on its own (an exercise's `nn.Sequential(<YOUR CODE>)`, a
  `Model(???)` placeholder) turns into comments like a non-Python cell and is reported as
  TL000 on its own line (`cell_syntax_findings`): the other cells are linted without it, as
  the kernel would run them.

Positions map back to (cell, line within the cell), lines counted in the cell's
own source, magic lines included.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field, replace
from typing import Dict, List, Optional, Tuple

from trainlint.finding import Edit, Finding

SEPARATOR = "# trainlint-cell: {}"
_SEPARATOR_RE = re.compile(r"^# trainlint-cell: (\d+)\r?\n?$")
MAGIC = "pass  # [magic]"
_MAGIC_RE = re.compile(r"^(\s*)pass  # \[magic\](\r?\n)?$")

# Cell magics whose body is Python (IPython's and ruff's list).
PYTHON_CELL_MAGICS = frozenset(
    {"time", "timeit", "capture", "debug", "prun", "python", "python3", "pypy", "writefile_python"}
)
_ASSIGN_MAGIC_RE = re.compile(r"^\s*[\w.\[\], ]+=\s*[!%]")


class NotebookError(ValueError):
    """The notebook cannot be read as one (bad JSON, no cells) or its fixes cannot be written back."""


@dataclass
class _Cell:
    index: int  # 0-based among all cells
    original: List[str]  # the source lines as stored (keepends)
    neutral: str  # the lines as the linter sees them, newline-terminated
    magics: List[Tuple[str, str]] = field(default_factory=list)  # (original line, indent given), in order
    opaque: bool = False  # a non-Python cell magic: never rewritten
    leading: str = ""  # the first line's indentation, removed as IPython does
    dedented: List[bool] = field(default_factory=list)  # per source line: `leading` was removed


@dataclass
class Notebook:
    data: dict
    raw_text: str
    cells: List[_Cell]
    text: str  # what the rules see
    line_map: List[Tuple[int, int]]  # text line (0-based) -> (cell number 1-based, cell line 1-based)
    column_shift: List[int] = field(default_factory=list)  # text line (0-based) -> columns removed
    # Cells left out because they do not parse: (line, column, end line, end column, message),
    # positions in `text` (1-based), for TL000.
    cell_errors: List[Tuple[int, int, int, int, str]] = field(default_factory=list)

    def position(self, line: int) -> Tuple[Optional[int], int]:
        """(cell, line within the cell) of a 1-based line of `text`."""
        if 1 <= line <= len(self.line_map):
            cell, cline = self.line_map[line - 1]
            return cell, max(cline, 1)
        return None, line

    def shift(self, line: int) -> int:
        """Columns to add back on a 1-based line of `text` (a dedented cell's indentation)."""
        return self.column_shift[line - 1] if 1 <= line <= len(self.column_shift) else 0


def _source_lines(cell: dict) -> List[str]:
    src = cell.get("source", "")
    if isinstance(src, list):
        src = "".join(s for s in src if isinstance(s, str))
    if not isinstance(src, str):
        return []
    return src.splitlines(keepends=True)


def _is_line_magic(line: str) -> bool:
    stripped = line.lstrip()
    if not stripped:
        return False
    if stripped[0] in "%!?":
        return True
    if _ASSIGN_MAGIC_RE.match(line):
        return True
    # `obj?` / `obj??`: help. A `#` on the line could hide a `?` in a comment: leave it.
    return "#" not in stripped and stripped.rstrip().endswith("?")


class _Continuation:
    """Tracks open brackets, triple-quoted strings and backslashes across a cell's lines.

    A line that continues a statement is never a magic, even if it starts with `%` (the
    `% b` line of a bracketed `a % b` split over two lines): like IPython, which looks
    for magics at the start of a statement only.
    """

    def __init__(self) -> None:
        self.depth = 0
        self.triple: Optional[str] = None
        self.backslash = False

    @property
    def inside(self) -> bool:
        return self.depth > 0 or self.triple is not None or self.backslash

    def feed(self, line: str) -> None:
        i, n = 0, len(line)
        while i < n:
            if self.triple is not None:
                end = line.find(self.triple, i)
                if end < 0:
                    break
                self.triple, i = None, end + 3
                continue
            c = line[i]
            if c == "#":
                n = i  # a comment: the rest of the line does not count
                break
            if c in "\"'":
                if line.startswith(c * 3, i):
                    self.triple, i = c * 3, i + 3
                    continue
                j = i + 1
                while j < n and line[j] != c:
                    j += 2 if line[j] == "\\" else 1
                i = j + 1
                continue
            if c in "([{":
                self.depth += 1
            elif c in ")]}":
                self.depth = max(0, self.depth - 1)
            i += 1
        self.backslash = self.triple is None and line[:n].rstrip().endswith("\\")


_LEADING_INDENT = re.compile(r"^[ \t]+")


def _neutralise(index: int, original: List[str]) -> _Cell:
    # IPython's leading_indent: an indented first line takes that indentation off every
    # line that starts with it.
    m = _LEADING_INDENT.match(original[0]) if original else None
    leading = m.group(0) if m else ""
    dedented = [bool(leading) and ln.startswith(leading) for ln in original]
    lines = [ln[len(leading):] if d else ln for ln, d in zip(original, dedented)]
    first = next((ln for ln in lines if ln.strip()), "")
    out: List[str] = []
    magics: List[str] = []
    opaque = False
    if first.lstrip().startswith("%%"):
        name = first.lstrip()[2:].split(None, 1)[0] if first.lstrip()[2:].strip() else ""
        opaque = name not in PYTHON_CELL_MAGICS
    prev_indent, prev_opens = "", False  # the last code line: for a magic's `pass` to fit in
    cont = _Continuation()
    for ln in lines:
        body = ln.rstrip("\r\n")
        if opaque:
            out.append("# " + body if body.strip() else "")
        elif not cont.inside and _is_line_magic(body):
            own = body[: len(body) - len(body.lstrip())]
            if prev_opens:
                indent = own if len(own) > len(prev_indent) else prev_indent + "    "
            else:
                indent = own if len(own) <= len(prev_indent) else prev_indent
            magics.append((body, indent))
            out.append(indent + MAGIC)
            # The `pass` is a statement: it opens the block's body, later lines align to it.
            prev_indent, prev_opens = indent, False
        else:
            starts_statement = not cont.inside
            cont.feed(body)
            out.append(body)
            if not starts_statement:
                continue
            code = body.split("#", 1)[0].rstrip()
            if code:
                prev_indent, prev_opens = body[: len(body) - len(body.lstrip())], code.endswith(":")
    neutral = "".join(s + "\n" for s in out)
    return _Cell(index, original, neutral, magics, opaque, leading, dedented)


def _is_python(data: dict) -> bool:
    meta = data.get("metadata") or {}
    lang = ((meta.get("language_info") or {}).get("name") or (meta.get("kernelspec") or {}).get("language") or "python")
    return str(lang).lower() == "python"


def load(raw_text: str) -> Optional[Notebook]:
    """Parse a notebook. None for a notebook in another language (nothing to lint)."""
    try:
        data = json.loads(raw_text)
    except ValueError as exc:
        raise NotebookError(f"notebook is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("cells"), list):
        raise NotebookError("notebook has no 'cells' list")
    if not _is_python(data):
        return None
    cells: List[_Cell] = []
    for i, cell in enumerate(data["cells"]):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        cells.append(_neutralise(i, _source_lines(cell)))
    errors: Dict[int, SyntaxError] = {}
    if _parse_error("".join(c.neutral for c in cells)) is not None:
        # Only then look cell by cell (most notebooks parse: one parse of the whole text).
        for c in cells:
            err = _parse_error(c.neutral)
            if err is not None:
                errors[c.index] = err
                c.neutral = _commented(c.neutral)
                c.opaque = True  # never rewritten by a fix
    parts: List[str] = []
    line_map: List[Tuple[int, int]] = []
    shifts: List[int] = []
    cell_errors: List[Tuple[int, int, int, int, str]] = []
    for c in cells:
        i = c.index
        parts.append(SEPARATOR.format(i + 1) + "\n")
        line_map.append((i + 1, 1))
        shifts.append(0)
        parts.append(c.neutral)
        n_lines = c.neutral.count("\n")
        if i in errors:
            cell_errors.append(_error_position(errors[i], len(line_map) + 1, n_lines))
        line_map.extend((i + 1, n) for n in range(1, n_lines + 1))
        shifts.extend(len(c.leading) if k < len(c.dedented) and c.dedented[k] else 0 for k in range(n_lines))
    return Notebook(data, raw_text, cells, "".join(parts), line_map, shifts, cell_errors)


def _parse_error(code: str) -> Optional[SyntaxError]:
    """Why Python cannot parse `code` (None when it can)."""
    try:
        ast.parse(code)
    except SyntaxError as exc:
        return exc
    except (ValueError, RecursionError, MemoryError) as exc:  # null bytes, absurd nesting
        return SyntaxError(str(exc) or type(exc).__name__)
    return None


def _commented(neutral: str) -> str:
    """The cell's lines as comments, line for line (positions keep their meaning)."""
    return "".join(("# " + ln if ln.strip() else "") + "\n" for ln in neutral.split("\n")[:-1])


def _error_position(exc: SyntaxError, first: int, n_lines: int) -> Tuple[int, int, int, int, str]:
    """(line, column, end line, end column, message) in the combined text of a cell's syntax
    error; `first` is the text line of the cell's first line."""
    line = min(max(exc.lineno or 1, 1), max(n_lines, 1))
    col = max(exc.offset or 1, 1) if exc.lineno == line else 1
    end_line = min(max(exc.end_lineno or line, line), max(n_lines, 1))
    end_col = max(exc.end_offset or col, 1) if exc.end_lineno == end_line else col
    if end_line == line and end_col < col:
        end_col = col
    return first + line - 1, col, first + end_line - 1, end_col, exc.msg or str(exc) or "invalid syntax"


def cell_syntax_findings(nb: Notebook, path: str) -> List[Finding]:
    """TL000 for each cell left out because it does not parse, in `text` positions (map them
    with `map_finding`)."""
    from trainlint.registry import SyntaxErrorRule

    rule = SyntaxErrorRule
    return [
        Finding(path, line, col, end_line, end_col, rule.code, rule.name, rule.severity,
                f"cell does not parse: {msg}; the notebook's other cells are linted without it")
        for line, col, end_line, end_col, msg in nb.cell_errors
    ]


def map_finding(nb: Notebook, f: Finding) -> Finding:
    """A finding on the combined text -> the same finding on (cell, line in cell)."""
    cell, line = nb.position(f.line)
    end_cell, end_line = nb.position(f.end_line)
    col = f.column + nb.shift(f.line)
    end_col = f.end_column + nb.shift(f.end_line)
    if end_cell != cell:
        end_line, end_col = line, col
    fix = f.fix
    if fix is not None:
        edits = []
        for e in fix.edits:
            _, el = nb.position(e.line)
            _, eel = nb.position(e.end_line)
            edits.append(Edit(el, e.column + nb.shift(e.line), eel, e.end_column + nb.shift(e.end_line), e.content))
        fix = replace(fix, edits=tuple(edits))
    return replace(f, line=line, column=col, end_line=end_line, end_column=end_col, cell=cell, fix=fix)


def split_cells(nb: Notebook, text: str) -> Dict[int, str]:
    """The combined (fixed) text cut back into cell texts, by cell index (0-based)."""
    chunks: Dict[int, List[str]] = {}
    order: List[int] = []
    current: Optional[int] = None
    preamble: List[str] = []
    for ln in text.splitlines(keepends=True):
        m = _SEPARATOR_RE.match(ln)
        if m:
            current = int(m.group(1)) - 1
            order.append(current)
            chunks[current] = []
        elif current is None:
            preamble.append(ln)  # a fix inserted code above the first cell: it belongs to it
        else:
            chunks[current].append(ln)
    if order != [c.index for c in nb.cells]:
        raise NotebookError("fixed code no longer splits into the notebook's cells")
    if preamble and order:
        chunks[order[0]] = preamble + chunks[order[0]]
    return {i: "".join(lines) for i, lines in chunks.items()}


def _restore(cell: _Cell, text: str) -> List[str]:
    """Put the magic lines back into a fixed cell text; the cell's new source lines."""
    magics = iter(cell.magics)
    out: List[str] = []
    for ln in text.splitlines(keepends=True):
        m = _MAGIC_RE.match(ln)
        if m:
            item = next(magics, None)
            if item is None:
                raise NotebookError("fixed code no longer matches the notebook's magic lines")
            orig, given = item
            # Unmoved: the line as it was. Re-indented by a fix (wrapped in a block): shift it too.
            line = orig if m.group(1) == given else m.group(1) + orig.lstrip()
            out.append(line + "\n")
        else:
            out.append(ln)
    if next(magics, None) is not None:
        raise NotebookError("a fix removed a magic line")
    if cell.leading:  # give back the indentation IPython's leading_indent takes off
        if not all(cell.dedented[k] for k, ln in enumerate(cell.original) if ln.strip()):
            raise NotebookError("cannot write fixes back into a cell indented unevenly at its start")
        out = [cell.leading + ln if ln.strip() else ln for ln in out]
    # The combined text ends every cell with a newline; the stored source may not.
    if out and cell.original and not cell.original[-1].endswith("\n") and out[-1].endswith("\n"):
        out[-1] = out[-1][:-1]
    if not cell.original and out == []:
        return []
    return out


def _json_style(raw_text: str) -> Tuple[Optional[int], bool]:
    """The indentation the file was written with (nbformat: 1) and whether it ends with a newline."""
    indent: Optional[int] = None
    lines = raw_text.splitlines()
    if len(lines) > 1:
        second = lines[1]
        indent = len(second) - len(second.lstrip(" "))
    return indent, raw_text.endswith("\n")


def cell_changes(nb: Notebook, fixed_text: str) -> List[Tuple[int, str, str]]:
    """(cell number, old source, new source) for every cell a fix changed."""
    new_cells = split_cells(nb, fixed_text)
    changes = []
    for cell in nb.cells:
        if cell.opaque:
            continue
        new_text = new_cells.get(cell.index, "")
        if new_text == cell.neutral:
            continue
        new_lines = _restore(cell, new_text)
        if new_lines != cell.original:
            changes.append((cell.index + 1, "".join(cell.original), "".join(new_lines)))
    return changes


def write_back(nb: Notebook, fixed_text: str) -> Optional[str]:
    """The notebook's new JSON text with fixed cells, outputs and metadata untouched; None if unchanged."""
    changes = cell_changes(nb, fixed_text)
    if not changes:
        return None
    for number, _old, new_source in changes:
        cell = nb.data["cells"][number - 1]
        lines = new_source.splitlines(keepends=True)
        cell["source"] = lines if isinstance(cell.get("source"), list) else new_source
    indent, trailing_newline = _json_style(nb.raw_text)
    out = json.dumps(nb.data, indent=indent, ensure_ascii=False)
    return out + "\n" if trailing_newline else out
