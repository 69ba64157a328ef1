"""Every fixable rule, on its own examples: INVALID examples fixed by --fix (--unsafe-fixes)
parse, re-lint clean for that code and are unchanged by a second run; VALID examples are
never touched. Fixes keep the rest of the file byte for byte."""

import ast
import difflib
import textwrap

import pytest

from trainlint.engine import lint_text
from trainlint.registry import all_rules

FIXABLE = [r for c, r in all_rules().items() if r.fixable]


def _cases(kind):
    for rule in FIXABLE:
        for i, src in enumerate(getattr(rule, kind)):
            yield pytest.param(rule, textwrap.dedent(src), id=f"{rule.code}-{kind.lower()}-{i}")


def _fix(rule, src, passes=5):
    selected = frozenset({rule.code})
    for _ in range(passes):
        result = lint_text(src, "train.py", selected, fix=True, unsafe_fixes=True)
        if result.fixed_text is None:
            return src
        src = result.fixed_text
    return src


@pytest.mark.parametrize("rule,src", list(_cases("INVALID")))
def test_fix_repairs_invalid_example(rule, src):
    result = lint_text(src, "train.py", frozenset({rule.code}))
    fixable = [f for f in result.findings if f.fix is not None]
    if not fixable:
        pytest.skip("no fix offered for this example")
    fixed = _fix(rule, src)
    assert fixed != src
    ast.parse(fixed)
    remaining = [f for f in lint_text(fixed, "train.py", frozenset({rule.code})).findings if f.fix is not None]
    assert remaining == []
    assert _fix(rule, fixed) == fixed, "a second --fix must change nothing"
    # Only lines near the findings change.
    changed = {i for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, src.splitlines(), fixed.splitlines()).get_opcodes() if tag != "equal" for i in range(i1 + 1, i2 + 2)}
    finding_lines = {ln for f in fixable for e in f.fix.edits for ln in range(e.line - 1, e.end_line + 2)}
    assert changed <= finding_lines | {max(finding_lines) + 1}


@pytest.mark.parametrize("rule,src", list(_cases("VALID")))
def test_fix_never_touches_valid_example(rule, src):
    assert _fix(rule, src) == src


@pytest.mark.parametrize("rule", FIXABLE, ids=[r.code for r in FIXABLE])
def test_fixable_rule_offers_a_fix_on_some_example(rule):
    offered = [
        f
        for src in rule.INVALID
        for f in lint_text(textwrap.dedent(src), "train.py", frozenset({rule.code})).findings
        if f.fix is not None and f.fix.applicability == rule.fixable
    ]
    assert offered


def _fix_examples():
    for rule in FIXABLE:
        for i, (src, fixed) in enumerate(getattr(rule, "FIX_EXAMPLES", ())):
            yield pytest.param(rule, textwrap.dedent(src), fixed and textwrap.dedent(fixed), id=f"{rule.code}-fix-{i}")


@pytest.mark.parametrize("rule,src,expected", list(_fix_examples()))
def test_fix_examples(rule, src, expected):
    """A rule's FIX_EXAMPLES: (source, what --fix --unsafe-fixes makes of it, or None: reported, no fix)."""
    findings = lint_text(src, "train.py", frozenset({rule.code})).findings
    assert findings, "the example must be reported"
    if expected is None:
        assert all(f.fix is None for f in findings)
        assert _fix(rule, src) == src
        return
    assert any(f.fix is not None for f in findings)
    assert _fix(rule, src) == expected
    assert lint_text(expected, "train.py", frozenset({rule.code})).findings == []
