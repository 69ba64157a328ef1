"""Lint one source text: pre-check, parse, analyse once, run the rules, suppress, fix.

Speed matters here (the linter runs on every commit):
- a text pre-check skips files that contain nothing any selected rule looks for;
- libcst parses each file once and one traversal builds the facts all rules share
  (`analysis.context.FileContext`), with names resolved from the module's own imports
  rather than libcst's (slow) scope and qualified-name providers;
- positions are computed only for files that have findings.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Dict, FrozenSet, Iterable, List, Optional, Sequence

import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider

from trainlint.finding import Edit, Fix, Finding
from trainlint.registry import all_rules
from trainlint.rules.base import Replacement, Report, Rule
from trainlint.suppression import file_disabled_codes, noqa_codes, suppressed


@dataclass
class FileResult:
    findings: List[Finding] = field(default_factory=list)
    # The fixed source when fixes were asked for and at least one applied, else None.
    fixed_text: Optional[str] = None
    fixed_count: int = 0


def rules_for(selected: Optional[Iterable[str]]) -> List[Rule]:
    rules = all_rules()
    if selected is None:
        return [r for c, r in rules.items() if c != "TL000"]
    return [rules[c] for c in rules if c in selected and c != "TL000"]


def _syntax_error(text: str, path: str) -> Optional[Finding]:
    """TL000 as Python itself sees it: only where `ast.parse` fails too."""
    try:
        ast.parse(text, filename=path)
    except SyntaxError as exc:
        line = exc.lineno or 1
        col = exc.offset or 1
        rule = all_rules()["TL000"]
        return Finding(
            path=path,
            line=line,
            column=max(col, 1),
            end_line=exc.end_lineno or line,
            end_column=max(exc.end_offset or col, 1),
            code=rule.code,
            name=rule.name,
            severity=rule.severity,
            message=f"file does not parse: {exc.msg or type(exc).__name__}",
        )
    except (ValueError, RecursionError, MemoryError) as exc:  # e.g. null bytes
        rule = all_rules()["TL000"]
        return Finding(path, 1, 1, 1, 1, rule.code, rule.name, rule.severity, f"file does not parse: {str(exc) or type(exc).__name__ + ' (too deeply nested)'}")
    return None


def lint_text(
    text: str,
    path: str,
    selected: Optional[FrozenSet[str]] = None,
    *,
    fix: bool = False,
    unsafe_fixes: bool = False,
) -> FileResult:
    """Lint `text` (the source of `path`) with the selected codes (None: all rules)."""
    result = FileResult()
    want_syntax = selected is None or "TL000" in selected
    disabled = file_disabled_codes(text)
    rules = [r for r in rules_for(selected) if not suppressed(r.code, disabled)]
    rules = [r for r in rules if not r.triggers or any(t in text for t in r.triggers)]
    if not rules:
        if want_syntax and not suppressed("TL000", disabled):
            err = _syntax_error(text, path)
            if err:
                result.findings.append(err)
        return result

    try:
        module = cst.parse_module(text)
    except (cst.ParserSyntaxError, RecursionError, ValueError, MemoryError):
        if want_syntax and not suppressed("TL000", disabled):
            err = _syntax_error(text, path)
            if err:
                result.findings.append(err)
        # libcst failed where Python did not: nothing to analyse, nothing to report.
        return result

    from trainlint.analysis.context import FileContext  # imported late: keeps `rules` listing fast

    reports: List[tuple] = []
    try:
        ctx = FileContext(module, text, path)
    except RecursionError:
        # Pathologically deep code (thousands of nested operators): nothing to say about it.
        return result
    for rule in rules:
        try:
            for rep in rule.check(ctx):
                reports.append((rule, rep))
        except RecursionError:
            # Pathologically deep code: the rule gives up on this file rather than crash.
            continue
    if not reports:
        return result

    positions = MetadataWrapper(module, unsafe_skip_copy=True).resolve(PositionProvider)
    lines = text.splitlines()
    seen = set()
    applied: List[Replacement] = []
    for rule, rep in reports:
        rng = positions.get(rep.node)
        if rng is None:
            continue
        start, end = rng.start, rng.end
        key = (rule.code, start.line, start.column)
        if key in seen:
            continue
        seen.add(key)
        line_text = lines[start.line - 1] if 0 < start.line <= len(lines) else ""
        if suppressed(rule.code, noqa_codes(line_text)):
            continue
        finding_fix = None
        if rep.fix is not None:
            new = rep.fix.new
            parts = new.nodes if isinstance(new, cst.FlattenSentinel) else [new]
            new_code = "".join(module.code_for_node(n) for n in parts)
            old_rng = positions.get(rep.fix.old)
            if old_rng is not None:
                finding_fix = Fix(
                    applicability=rep.fix.applicability,
                    edits=(
                        Edit(
                            old_rng.start.line,
                            old_rng.start.column + 1,
                            old_rng.end.line,
                            old_rng.end.column + 1,
                            new_code,
                        ),
                    ),
                    description=rep.fix.description,
                )
                if fix and (rep.fix.applicability == "safe" or unsafe_fixes):
                    applied.append(rep.fix)
        result.findings.append(
            Finding(
                path=path,
                line=start.line,
                column=start.column + 1,
                end_line=end.line,
                end_column=end.column + 1,
                code=rule.code,
                name=rule.name,
                severity=rule.severity,
                message=rep.message,
                fix=finding_fix,
            )
        )
    if applied:
        from trainlint.fixes import apply_replacements

        new_text, count = apply_replacements(module, applied)
        if count and new_text != text:
            result.fixed_text = new_text
            result.fixed_count = count
    result.findings.sort(key=Finding.sort_key)
    return result
