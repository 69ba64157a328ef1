"""`# noqa` where Python allows a comment, and `--add-noqa` writing them for every current finding."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainlint.engine import lint_text
from trainlint.suppression import comment_lines, physical_lines



def nb_json(cells) -> str:
    """A notebook as nbformat writes it (indent=1, sorted keys, trailing newline), with an output per code cell."""
    out = []
    for kind, src in cells:
        cell = {"cell_type": kind, "metadata": {}, "source": src.splitlines(keepends=True)}
        if kind == "code":
            cell.update(execution_count=1, outputs=[{"name": "stdout", "output_type": "stream", "text": ["hé\n"]}])
        out.append(cell)
    nb = {"cells": out, "metadata": {"kernelspec": {"language": "python", "name": "python3"}}, "nbformat": 4, "nbformat_minor": 5}
    return json.dumps(nb, sort_keys=True, indent=1, ensure_ascii=False) + "\n"


def test_comment_lines_skip_string_insides_and_continuations():
    text = 'x = f("""a\nb""", 1)\ny = 1 + \\\n  2\nz = 3  # c \\\nw = \\\n \\\n 4\n'
    # A line ending inside a string or with a backslash takes its comment on the next line that can.
    assert comment_lines(text) == {1: 2, 3: 4, 6: 8, 7: 8}
    assert comment_lines("x = (\n") == {}  # does not tokenize: nothing moves


def test_physical_lines_count_as_python_does():
    # A form feed is no line break to Python (str.splitlines would cut there).
    assert physical_lines("a\x0cb\r\nc\rd\n") == ["a\x0cb", "c", "d"]


def test_noqa_where_the_string_ends_suppresses(test_rules):
    src = 'x = flagme("""a\nb""")\ny = flagme("""a\nb""")  # noqa: TL990\nz = flagme("""a  # noqa\nb""")\n'
    # Only the first call is left: the second's noqa is where its string ends; the third's
    # "noqa" is string content, not a comment.
    assert [f.line for f in lint_text(src, "t.py", frozenset({"TL990"})).findings] == [1, 5]


def write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8"))
    return path


SOURCE = (
    "a = flagme()\n"
    "b = infome()  # noqa: TL990\n"
    "c = flagme(infome())  # noqa: TL991\r\n"
    'd = flagme("""x\n'
    'y""")\n'
    "e = flagme(1) + \\\n"
    "    2\n"
    "u = flagme()  # noqa\n"
    "v = (flagme(),\n"
    "     infome())\n"
)


def test_add_noqa_then_nothing_is_reported(run_cli, tmp_path, test_rules):
    p = write(tmp_path / "a.py", SOURCE)
    write(tmp_path / "bad.py", "for x in y\n")  # TL000 cannot be suppressed: left alone
    before = run_cli(".", "--no-cache", "--format", "json", "--select", "TL990,TL991")
    assert len(json.loads(before.stdout)) == 7
    r = run_cli(".", "--add-noqa", "--select", "TL990,TL991")
    assert r.exit_code == 0 and r.stdout == ""
    assert r.stderr == "Added 7 noqa directives to 1 file.\n"
    assert p.read_bytes().decode() == (
        "a = flagme()  # noqa: TL990\n"
        "b = infome()  # noqa: TL990, TL991\n"
        "c = flagme(infome())  # noqa: TL991, TL990\r\n"
        'd = flagme("""x\n'
        'y""")  # noqa: TL990\n'
        "e = flagme(1) + \\\n"
        "    2  # noqa: TL990\n"
        "u = flagme()  # noqa\n"
        "v = (flagme(),  # noqa: TL990\n"
        "     infome())  # noqa: TL991\n"
    )
    # The directives do suppress: a re-run (no cache) finds only the syntax error...
    after = run_cli(".", "--no-cache", "--format", "json", "--select", "TL000,TL990,TL991")
    assert [f["code"] for f in json.loads(after.stdout)] == ["TL000"]
    # ...and a second --add-noqa adds nothing.
    again = run_cli(".", "--add-noqa", "--no-cache", "--select", "TL990,TL991")
    assert again.stderr == "Added 0 noqa directives.\n"
    assert p.read_bytes().decode().count("noqa") == 8


def test_add_noqa_in_a_notebook(run_cli, tmp_path, test_rules):
    cells = [("markdown", "# T\n"), ("code", "%matplotlib inline\nx = flagme()\nfor i in range(2):\n    flagme()")]
    nb = tmp_path / "nb.ipynb"
    nb.write_text(nb_json(cells), encoding="utf-8")
    r = run_cli("nb.ipynb", "--add-noqa", "--select", "TL990")
    assert r.exit_code == 0 and "Added 2 noqa directives to 1 file." in r.stderr
    data = json.loads(nb.read_text(encoding="utf-8"))
    assert data["cells"][1]["source"] == [
        "%matplotlib inline\n", "x = flagme()  # noqa: TL990\n", "for i in range(2):\n", "    flagme()  # noqa: TL990",
    ]
    assert data["cells"][1]["outputs"][0]["text"] == ["hé\n"]  # outputs untouched
    assert nb.read_text(encoding="utf-8").startswith('{\n "cells": [\n  {')  # nbformat's layout kept
    assert run_cli("nb.ipynb", "--no-cache", "--select", "TL990").exit_code == 0


@pytest.mark.parametrize(
    "args, message",
    [
        (("a.py", "--add-noqa", "--fix"), "--add-noqa cannot be used with --fix"),
        (("a.py", "--add-noqa", "--diff"), "--add-noqa cannot be used with --diff"),
        (("-", "--add-noqa"), "--add-noqa writes files: it cannot read standard input"),
    ],
)
def test_add_noqa_misuse(run_cli, tmp_path, args, message):
    write(tmp_path / "a.py", "flagme()\n")
    r = run_cli(*args, input="x = 1\n")
    assert r.exit_code == 2 and r.stderr == f"trainlint: error: {message}\n"
    assert (tmp_path / "a.py").read_text() == "flagme()\n"
