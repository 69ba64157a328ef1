"""Every rule's own VALID and INVALID examples (Fixit style), run through the real engine.

In an INVALID example, lines ending in `# !` mark where findings must be reported
(when no line is marked, at least one finding is required).
"""

import ast
import textwrap

import pytest

from trainlint.engine import lint_text
from trainlint.precheck import CATALOGUE
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
        assert f.severity in (rule.severity, *rule.severities) and f.name == rule.name and f.message


@pytest.mark.parametrize("rule", RULES, ids=[r.code for r in RULES])
def test_rule_has_docs_and_examples(rule):
    doc = rule.doc()
    for heading in ("What it does", "Why is this bad", "Example", "Use instead"):
        assert heading in doc, f"{rule.code} docs lack '{heading}'"
    assert len(rule.VALID) >= 2 and len(rule.INVALID) >= 2
    assert rule.code in CATALOGUE, "a rule without a pre-check entry makes every file parse"
    for src in (*rule.VALID, *rule.INVALID):
        ast.parse(textwrap.dedent(src))


@pytest.mark.parametrize("rule,src", list(_cases("INVALID")))
def test_precheck_passes_every_invalid_example(rule, src):
    assert CATALOGUE[rule.code].passes(src, "train.py")


@pytest.mark.parametrize("rule,src", [*_cases("VALID"), *_cases("INVALID")])
def test_precheck_never_changes_the_findings(rule, src):
    """All rules over every example, with and without the pre-check: the same findings."""
    with_precheck = lint_text(src, "train.py")
    without = lint_text(src, "train.py", precheck=False)
    assert with_precheck.findings == without.findings
