"""Shared fixtures.

`test_rules` registers tiny rules (codes TL99x) so the linter's CLI, reports,
notebooks, fixes and cache can be tested whatever the real rules find today.
"""

from __future__ import annotations

import pytest


def _make_test_rules():
    import libcst as cst

    from trainlint.rules.base import Replacement, Report, Rule

    def calls_named(module, name):
        found = []

        class V(cst.CSTVisitor):
            def visit_Call(self, node):
                if isinstance(node.func, cst.Name) and node.func.value == name:
                    found.append(node)

        module.visit(V())
        return found

    class FlagMe(Rule):
        """## What it does
        Test rule: finds calls to `flagme()`.

        ## Why is this bad?
        It is a test.

        ## Example
        ```python
        flagme()
        ```

        ## Use instead
        ```python
        fixed()
        ```
        """

        code = "TL990"
        name = "test-flag-me"
        severity = "warning"
        fixable = "safe"

        def check(self, ctx):
            for call in calls_named(ctx.module, "flagme"):
                new = call.with_changes(func=cst.Name("fixed"))
                yield Report(call, "flagme() called, use fixed()", Replacement(call, new, "safe", "rename"))

    class InfoMe(Rule):
        """## What it does
        Test rule: finds calls to `infome()` (severity info, no fix)."""

        code = "TL991"
        name = "test-info"
        severity = "info"

        def check(self, ctx):
            for call in calls_named(ctx.module, "infome"):
                yield Report(call, "infome() called: 50% sure, really")

    class UnsafeMe(Rule):
        """## What it does
        Test rule: finds `unsafeme()`, with an unsafe fix."""

        code = "TL992"
        name = "test-unsafe"
        severity = "error"
        fixable = "unsafe"

        def check(self, ctx):
            for call in calls_named(ctx.module, "unsafeme"):
                new = call.with_changes(func=cst.Name("was_unsafe"))
                yield Report(call, "unsafeme() called", Replacement(call, new, "unsafe"))

    class InsertLine(Rule):
        """## What it does
        Test rule: a `for` loop calling `insertme()` gets `cleared()` as its first statement
        (a fix that inserts a line, like TL101's)."""

        code = "TL993"
        name = "test-insert-line"
        severity = "error"
        fixable = "safe"

        def check(self, ctx):
            loops = []

            class V(cst.CSTVisitor):
                def visit_For(self, node):
                    loops.append(node)

            ctx.module.visit(V())
            for loop in loops:
                if not calls_named(loop, "insertme"):
                    continue
                if "cleared" in ctx.module.code_for_node(loop):
                    continue
                stmt = cst.SimpleStatementLine([cst.Expr(cst.Call(cst.Name("cleared")))])
                body = loop.body.with_changes(body=[stmt, *loop.body.body])
                yield Report(loop, "loop calls insertme() without cleared()", Replacement(loop, loop.with_changes(body=body), "safe"))

    return [FlagMe, InfoMe, UnsafeMe, InsertLine]


@pytest.fixture
def test_rules(monkeypatch):
    """The real rules plus TL990-TL993 (see above), for this test only."""
    from trainlint import registry

    rules = dict(registry.all_rules())
    for cls in _make_test_rules():
        rules[cls.code] = cls()
    monkeypatch.setattr(registry, "_RULES", dict(sorted(rules.items())))
    return rules


@pytest.fixture
def run_cli(tmp_path, monkeypatch):
    """Run `trainlint ARGS` in-process (click's CliRunner) with tmp_path as the current folder.

    Every run is checked for the house rule: no traceback, whatever the input.
    """
    from click.testing import CliRunner

    from trainlint.cli import cli

    monkeypatch.chdir(tmp_path)

    def run(*args, input=None):
        result = CliRunner().invoke(cli, [str(a) for a in args], input=input)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        assert "Traceback" not in result.output
        return result

    return run


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than a few seconds (still part of the suite)")
