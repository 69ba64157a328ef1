"""Lint one source text: pre-check, parse, analyse once, run the rules, suppress, fix.

Speed matters here (the linter runs on every commit):
- a text pre-check (`trainlint.precheck`) skips files that contain nothing any selected
  rule looks for, before libcst or any rule is imported;
- libcst parses each file once and one traversal builds the facts all rules share
  (`analysis.context.FileContext`), with names resolved from the module's own imports
  rather than libcst's (slow) scope and qualified-name providers;
- positions are computed only for files that have findings.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Dict, FrozenSet, Iterable, List, Optional, Tuple

from trainlint.finding import Edit, Fix, Finding
from trainlint.precheck import applicable
from trainlint.registry import SyntaxErrorRule, all_rules, rule_codes
from trainlint.rules.base import Replacement, Rule
from trainlint.suppression import NoqaLines, file_disabled_codes, suppressed

if TYPE_CHECKING:  # pragma: no cover
    import libcst as cst

    from trainlint.analysis.project import Project
    from trainlint.rules.base import Report


@dataclass
class FileResult:
    findings: List[Finding] = field(default_factory=list)
    # The fixed source when fixes were asked for and at least one applied, else None.
    fixed_text: Optional[str] = None
    fixed_count: int = 0
    # Other project files whose facts the result used (path -> content hash, None: absent).
    deps: Dict[str, Optional[str]] = field(default_factory=dict)


def _syntax_error(text: str, path: str) -> Optional[Finding]:
    """TL000 as Python itself sees it: only where `ast.parse` fails too."""
    try:
        ast.parse(text, filename=path)
    except SyntaxError as exc:
        line = exc.lineno or 1
        col = exc.offset or 1
        rule = SyntaxErrorRule
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
        rule = SyntaxErrorRule
        return Finding(path, 1, 1, 1, 1, rule.code, rule.name, rule.severity, f"file does not parse: {str(exc) or type(exc).__name__ + ' (too deeply nested)'}")
    return None


def parse_unvalidated(text: str) -> "cst.Module":
    """`libcst.parse_module` without libcst's per-node validation.

    libcst validates every node as it is constructed (`CSTNode.__post_init__` calls
    `_validate`), about a seventh of the parse time; a tree that libcst's own parser built
    from source it accepted needs none of it (libcst says as much beside that call: "It might
    make more sense to move validation work into the visitor, which would allow us to avoid
    validating the tree when parsing a file"). Validation is switched off only for the
    parse, so the nodes fixes build are checked as usual. (The switch is process-wide: a
    caller that lints from several threads at once may see some of its other nodes built
    unchecked meanwhile, never validation left off.)
    """
    import libcst as cst
    from libcst._nodes.base import CSTNode

    validating = CSTNode.__dict__.get("__post_init__")
    if validating is None or validating is _skip_validation:
        # A libcst that no longer validates this way, or another thread's parse has it off
        # (and will switch it back): parse as is.
        return cst.parse_module(text)
    CSTNode.__post_init__ = _skip_validation  # type: ignore[method-assign]
    try:
        return cst.parse_module(text)
    finally:
        CSTNode.__post_init__ = validating  # type: ignore[method-assign]


def _skip_validation(self: object) -> None:
    return None


def _called_from_torch(codes: List[str], passing: List[str], text: str, path: str, view) -> List[str]:
    """`passing`, and the codes of PROJECT_CALLED this module passes when another module of
    the project that imports PyTorch may call one of its evaluation functions."""
    from trainlint.precheck import PROJECT_CALLED, eval_function_names

    extra = {c for c in codes if c not in passing and c in PROJECT_CALLED and PROJECT_CALLED[c].passes(text, path)}
    if not extra or not view.called_from_torch(eval_function_names(text)):
        return passing
    return [c for c in codes if c in passing or c in extra]


def lint_text(
    text: str,
    path: str,
    selected: Optional[FrozenSet[str]] = None,
    *,
    fix: bool = False,
    unsafe_fixes: bool = False,
    precheck: bool = True,
    project: Optional["Project"] = None,
    real_path: Optional[str] = None,
) -> FileResult:
    """Lint `text` (the source of `path`) with the selected codes (None: all rules).

    `precheck=False` parses every file (to verify the pre-check loses no finding).
    `project`: read facts of the other modules of the project (`real_path`, default `path`,
    locates the file on disk); without it, classes imported from elsewhere stay unknown."""
    result = FileResult()
    want_syntax = selected is None or "TL000" in selected
    disabled = file_disabled_codes(text)
    codes = [c for c in rule_codes() if c != "TL000" and (selected is None or c in selected) and not suppressed(c, disabled)]
    view = project.view(real_path or path) if project is not None else None
    if precheck:
        passing = applicable(codes, text, path)
        if view is not None and len(passing) < len(codes):
            passing = _called_from_torch(codes, passing, text, path, view)
            result.deps = dict(view.deps)
        codes = passing
    if not codes:
        if want_syntax and not suppressed("TL000", disabled):
            err = _syntax_error(text, path)
            if err:
                result.findings.append(err)
        return result

    import libcst as cst  # imported here: a run whose files all fail the pre-check never needs it
    from libcst.metadata import MetadataWrapper, PositionProvider

    rules = [all_rules()[c] for c in codes]
    try:
        module = parse_unvalidated(text)
    except (cst.ParserSyntaxError, RecursionError, ValueError, MemoryError):
        if want_syntax and not suppressed("TL000", disabled):
            err = _syntax_error(text, path)
            if err:
                result.findings.append(err)
        # libcst failed where Python did not: nothing to analyse, nothing to report.
        return result

    from trainlint.analysis.context import FileContext  # imported late: keeps `rules` listing fast

    reports: List[Tuple[Rule, Report]] = []
    try:
        ctx = FileContext(module, text, path)
    except RecursionError:
        # Pathologically deep code (thousands of nested operators): nothing to say about it.
        return result
    if view is not None:
        ctx.project = view
    for rule in rules:
        try:
            for rep in rule.check(ctx):
                reports.append((rule, rep))
        except RecursionError:
            # Pathologically deep code: the rule gives up on this file rather than crash.
            continue
    if ctx.project is not None:
        result.deps = dict(ctx.project.deps)
        if not path.endswith(".ipynb"):
            project.remember(text, ctx)  # type: ignore[union-attr]
    if not reports:
        return result

    positions = MetadataWrapper(module, unsafe_skip_copy=True).resolve(PositionProvider)
    noqa = NoqaLines(text)
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
        if suppressed(rule.code, noqa.codes(start.line)):
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
                severity=rep.severity if rep.severity in rule.severities else rule.severity,
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
