"""ruff-like text: `path:line:col: CODE [name] message`, then a summary line.

Notebook findings read `nb.ipynb:cell 3:line 4:9: CODE [name] message`.
"""

from __future__ import annotations

from collections import Counter
from typing import List

from trainlint.finding import Finding
from trainlint.report import Summary


def location(f: Finding) -> str:
    if f.cell is not None:
        return f"{f.path}:cell {f.cell}:line {f.line}:{f.column}"
    return f"{f.path}:{f.line}:{f.column}"


def format_finding(f: Finding) -> str:
    return f"{location(f)}: {f.code} [{f.name}] {f.message}"


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
    lines = statistics(findings) if s.statistics else [format_finding(f) for f in findings]
    if not s.quiet:
        lines += summary_lines(findings, s)
    return "\n".join(lines) + "\n" if lines else ""
