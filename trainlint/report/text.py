"""ruff-like text: `path:line:col: CODE [name] message`, then a summary line.

Notebook findings read `nb.ipynb:cell 3:line 4:9: CODE [name] message`.
With `--show-source` (the default, as ruff's `full` output) each finding is followed by
the line it starts on, a caret under what it points at, and a blank line:

    train.py:9:16: TL401 [unshuffled-train-loader] this DataLoader feeds training ...
      |
    9 | loader = DataLoader(ds, batch_size=32)
      |          ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
      |

Colour (`--color`) only styles: the text is the same with or without it.
"""

from __future__ import annotations

from collections import Counter
from typing import List, Optional

import click

from trainlint.finding import Finding
from trainlint.report import Summary


def location(f: Finding) -> str:
    if f.cell is not None:
        return f"{f.path}:cell {f.cell}:line {f.line}:{f.column}"
    return f"{f.path}:{f.line}:{f.column}"


_SEVERITY_COLOR = {"error": "red", "warning": "yellow", "info": "cyan"}


def format_finding(f: Finding, color: bool = False) -> str:
    if not color:
        return f"{location(f)}: {f.code} [{f.name}] {f.message}"
    code = click.style(f.code, fg=_SEVERITY_COLOR.get(f.severity, "red"), bold=True)
    return f"{click.style(location(f), bold=True)}: {code} [{f.name}] {f.message}"


def source_block(f: Finding, line: Optional[str], color: bool = False) -> List[str]:
    """The gutter, the source line and the carets under the finding's span (first line only)."""
    if line is None:
        return []
    line = line.rstrip("\r\n")
    start = max(f.column, 1)
    end = f.end_column if f.end_line == f.line else len(line) + 1
    width = max(1, min(end, len(line) + 1) - start)
    # Tabs before the span stay tabs, so the carets line up however the terminal sets them.
    pad = "".join("\t" if ch == "\t" else " " for ch in line[: start - 1])
    number = str(f.line)
    gutter = " " * len(number) + " |"
    carets = "^" * width
    if color:
        gutter = click.style(gutter, fg="blue", bold=True)
        number = click.style(number, fg="blue", bold=True)
        carets = click.style(carets, fg=_SEVERITY_COLOR.get(f.severity, "red"), bold=True)
    sep = click.style(" |", fg="blue", bold=True) if color else " |"
    return [gutter, f"{number}{sep} {line}".rstrip(), f"{gutter} {pad}{carets}", gutter, ""]


def _plural(n: int) -> str:
    return f"{n} finding" if n == 1 else f"{n} findings"


def _fixable(findings: List[Finding], unsafe: bool) -> int:
    return sum(1 for f in findings if f.fix and (unsafe or f.fix.applicability == "safe"))


def summary_lines(findings: List[Finding], s: Summary) -> List[str]:
    n = len(findings)
    if s.fix_mode and s.fixed:
        lines = [f"Found {_plural(n + s.fixed)} ({s.fixed} fixed, {n} remaining)."]
    elif n == 0:
        return ["All checks passed!"]
    else:
        lines = [f"Found {_plural(n)}."]
    if not s.fix_mode:
        safe = _fixable(findings, False)
        unsafe = _fixable(findings, True) - safe
        if safe and s.unsafe_fixes:
            lines.append(f"[*] {safe + unsafe} fixable with the `--fix` option.")
        elif safe:
            more = f" ({unsafe} more with `--unsafe-fixes`)" if unsafe else ""
            lines.append(f"[*] {safe} fixable with the `--fix` option{more}.")
        elif unsafe:
            lines.append(f"{unsafe} fixable with `--fix --unsafe-fixes`.")
    return lines


def statistics(findings: List[Finding]) -> List[str]:
    """One row per code, most frequent first: count, code, [*] if fixable, name."""
    counts = Counter(f.code for f in findings)
    names = {f.code: f.name for f in findings}
    fixable = {f.code for f in findings if f.fix}
    rows = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    width = max((len(str(c)) for _, c in rows), default=1)
    return [f"{count:>{width}}  {code}  {'[*]' if code in fixable else '   '} {names[code]}" for code, count in rows]


def render(findings: List[Finding], s: Summary) -> str:
    if s.statistics:
        lines = statistics(findings)
    else:
        lines = []
        for f in findings:
            lines.append(format_finding(f, s.color))
            if s.show_source and s.sources is not None:
                lines += source_block(f, s.sources.line(f), s.color)
    if not s.quiet:
        summary = summary_lines(findings, s)
        lines += [click.style(x, bold=True) for x in summary[:1]] + summary[1:] if s.color else summary
    return "\n".join(lines) + "\n" if lines else ""
