"""Every rule's own VALID and INVALID examples (Fixit style), run through the real engine.

In an INVALID example, lines ending in `# !` mark where findings must be reported
(when no line is marked, at least one finding is required).
"""

import ast
import textwrap

import pytest

from trainlint.engine import lint_text
from trainlint.registry import all_rules

RULES = [r for c, r in all_rules().items() if c != "TL000"]
MARK = "# !"


def _cases(kind):
    for rule in RULES:
        for i, src in enumerate(getattr(rule, kind)):
            yield pytest.param(rule, textwrap.dedent(src), id=f"{rule.code}-{kind.lower()}-{i}")


def _lint(rule, src):
    result = lint_text(src, "train.py", frozenset({rule.code, "TL000"}))
    assert not [f for f in result.findings if f.code == "TL000"], "example does not parse"
    return [f for f in result.findings if f.code == rule.code]


@pytest.mark.parametrize("rule,src", list(_cases("VALID")))
def test_valid_example_is_silent(rule, src):
    found = _lint(rule, src)
    assert found == [], [(f.line, f.message) for f in found]


@pytest.mark.parametrize("rule,src", list(_cases("INVALID")))
def test_invalid_example_is_reported(rule, src):
    found = _lint(rule, src)
    marked = {i for i, line in enumerate(src.splitlines(), 1) if line.rstrip().endswith(MARK)}
    assert found, "expected a finding"
    if marked:
        assert {f.line for f in found} == marked
    for f in found:
        assert f.severity == rule.severity and f.name == rule.name and f.message


@pytest.mark.parametrize("rule", RULES, ids=[r.code for r in RULES])
def test_rule_has_docs_and_examples(rule):
    doc = rule.doc()
    for heading in ("What it does", "Why is this bad", "Example", "Use instead"):
        assert heading in doc, f"{rule.code} docs lack '{heading}'"
    assert len(rule.VALID) >= 2 and len(rule.INVALID) >= 2
    assert rule.triggers, "a rule without triggers defeats the pre-check"
    for src in (*rule.VALID, *rule.INVALID):
        ast.parse(textwrap.dedent(src))


@pytest.mark.parametrize("rule,src", list(_cases("INVALID")))
def test_precheck_never_hides_a_finding(rule, src):
    """Each INVALID example contains one of the rule's trigger strings."""
    assert any(t in src for t in rule.triggers)
