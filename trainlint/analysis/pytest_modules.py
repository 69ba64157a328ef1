"""Is this file a test module (pytest or unittest), judged by what it contains?

Several rules exempt tests: a test builds a deterministic loader, a model in an odd mode or
a checkpoint without an optimizer on purpose. A file *name* is not enough to tell: training
repositories have scripts named `test_on_image.py` (loading a checkpoint from argparse)
and library modules named `test_time_pool.py`. A file is a test module when it
- imports pytest, or
- defines a `unittest.TestCase` subclass (or any `...TestCase`: absltest, torch's own), or
- is named as pytest collects it (`test_*.py`, `*_test.py`, `tests.py`, `conftest.py`) and
  defines a test function: a `test_*` function (module level or in a `Test*` class) that
  the module never calls itself and that takes fixtures or asserts (a bare `assert`, or an
  `assert_*`/`assertEqual`-style call).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import libcst as cst

from trainlint.analysis.facts import FunctionInfo, walk

if TYPE_CHECKING:  # pragma: no cover
    from trainlint.analysis.context import FileContext

TEST_FRAMEWORK_ROOTS = frozenset({"pytest"})


def pytest_named(path: str) -> bool:
    """A file name pytest (or Django's runner) collects as tests."""
    base = path.replace("\\", "/").rsplit("/", 1)[-1]
    return (base.startswith("test_") and base.endswith(".py")) or base.endswith("_test.py") or base in ("tests.py", "conftest.py")


def is_test_module(ctx: "FileContext") -> bool:
    roots = {q.split(".", 1)[0] for q in ctx.imports.alias.values()}
    if roots & TEST_FRAMEWORK_ROOTS:
        return True
    if any(_is_test_case(ctx, cls) for cls in ctx.facts.classes.values()):
        return True
    if not pytest_named(ctx.path):
        return False
    return any(is_test_function(ctx, fn) for fn in ctx.facts.functions)


def _is_test_case(ctx: "FileContext", cls) -> bool:
    return any(b.rsplit(".", 1)[-1].endswith("TestCase") for b in ctx.base_qualnames(cls))


def is_test_function(ctx: "FileContext", fn: FunctionInfo) -> bool:
    """A `test_*` function a test runner calls (not the module itself) and that tests
    something: it takes fixtures/parameters or asserts."""
    if not fn.name.startswith("test") or fn.parent is not None:
        return False
    if fn.cls is not None:
        if not (fn.cls.name.startswith("Test") or _is_test_case(ctx, fn.cls)):
            return False
    elif not fn.name.startswith("test_"):
        return False
    if ctx.callers(fn):
        return False  # called by the module itself: a script's own step, not a test
    params = [p for p in fn.params if p not in ("self", "cls")]
    return bool(params) or _asserts(fn)


def _asserts(fn: FunctionInfo) -> bool:
    for node in walk(fn.node.body):
        if isinstance(node, cst.Assert):
            return True
        if isinstance(node, cst.Call):
            f = node.func
            name = f.attr.value if isinstance(f, cst.Attribute) else f.value if isinstance(f, cst.Name) else ""
            if name.startswith("assert"):  # assert_close, assertEqual, assert_allclose
                return True
    return False
