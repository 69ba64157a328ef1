"""The engine on inputs that break naive linters: deep nesting, huge files, odd syntax."""

import ast

import pytest

from trainlint.engine import lint_text


def test_too_deeply_nested_code_is_tl000_with_a_message():
    src = "x = " + "-" * 20000 + "1\n"
    with pytest.raises((SyntaxError, MemoryError, RecursionError)):
        ast.parse(src)
    [finding] = lint_text(src, "deep.py").findings
    assert finding.code == "TL000" and finding.message.strip() != "file does not parse:"


def test_deep_but_valid_expression_never_crashes():
    # 190 nested calls: close to what Python accepts; the analysis may give up but must not raise.
    src = "import torch\nloss = " + "f(" * 190 + "1" + ")" * 190 + "\nloss.backward()\n"
    ast.parse(src)
    result = lint_text(src, "deep_ok.py")
    assert all(f.code != "TL000" for f in result.findings)


@pytest.mark.parametrize(
    "src",
    [
        "match x:\n    case [1, *rest]:\n        pass\n",
        "async def f(loader):\n    async for b in loader:\n        await b\n",
        "while (n := next(it, None)) is not None:\n    pass\n",
        "def f[T](x: T) -> T:\n    return x\n",
        "",
        "\ufeffimport torch\r\nx = 1\r\n",
    ],
)
def test_modern_and_odd_syntax_lints_cleanly(src):
    try:
        ast.parse(src)
    except SyntaxError:
        pytest.skip("not valid on this Python")
    assert lint_text(src, "odd.py").findings == []


def test_unvalidated_parse_builds_the_same_tree_and_validation_comes_back():
    import libcst as cst

    from trainlint.engine import parse_unvalidated

    src = "import torch\n\n@dec(x)\nasync def f(a, /, *b, c=1, **d) -> int:\n    return [y async for y in a if (y := y)]  # c\n"
    fast = parse_unvalidated(src)
    assert fast.code == src
    assert fast.deep_equals(cst.parse_module(src))
    with pytest.raises(cst.CSTValidationError):
        cst.Name("not an identifier")  # nodes built after the parse (fixes) are validated again


def test_unvalidated_parse_still_rejects_bad_syntax():
    import libcst as cst

    from trainlint.engine import parse_unvalidated

    with pytest.raises(cst.ParserSyntaxError):
        parse_unvalidated("def f(:\n")
    with pytest.raises(cst.CSTValidationError):
        cst.Name("")
