"""Notebooks: positions (cell, line), magics, cross-cell analysis, fixes written back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainlint import notebook


def nb_json(cells, language="python") -> str:
    """A notebook as nbformat writes it: indent=1, sorted keys, non-ASCII kept, trailing newline."""
    out = []
    for kind, src in cells:
        cell = {"cell_type": kind, "metadata": {}, "source": src.splitlines(keepends=True)}
        if kind == "code":
            cell.update(execution_count=1, outputs=[{"name": "stdout", "output_type": "stream", "text": ["hé\n"]}])
        out.append(cell)
    nb = {"cells": out, "metadata": {"kernelspec": {"language": language, "name": "python3"}}, "nbformat": 4, "nbformat_minor": 5}
    return json.dumps(nb, sort_keys=True, indent=1, ensure_ascii=False) + "\n"


CELLS = [
    ("markdown", "# Title\n"),
    ("code", "%matplotlib inline\nimport os\n"),
    ("markdown", "Some text\n"),
    ("code", "!pip install x\nfiles = !ls\nos?\nfor i in range(3):\n    flagme()\n"),
]


def lint(run_cli, tmp_path, cells, *args):
    (tmp_path / "nb.ipynb").write_text(nb_json(cells), encoding="utf-8")
    return run_cli("nb.ipynb", "--no-cache", *args)


def test_positions_are_cell_and_line_in_cell(run_cli, tmp_path, test_rules):
    r = lint(run_cli, tmp_path, CELLS, "--format", "json")
    [f] = json.loads(r.stdout)
    assert (f["path"], f["cell"], f["line"], f["column"], f["end_line"], f["end_column"]) == ("nb.ipynb", 4, 5, 5, 5, 13)
    r = lint(run_cli, tmp_path, CELLS)
    assert r.stdout.splitlines()[0] == "nb.ipynb:cell 4:line 5:5: TL990 [test-flag-me] flagme() called, use fixed()"


def test_magics_do_not_break_parsing(run_cli, tmp_path):
    cells = [("code", "%%time\nx = 1\n"), ("code", "%%bash\nfor f in *; do\n  echo $f\ndone\n"),
             ("code", "  !echo indented\nif True:\n    %time y = 2\nhelp??\n"), ("code", "")]
    r = lint(run_cli, tmp_path, cells)
    assert r.exit_code == 0, r.stdout


def test_continuation_lines_are_never_magics():
    src = "x = (1\n     % 2)\ny = \"\"\"\n!not a shell line\nwhy?\n\"\"\"\nz = 1 + \\\n    2\n!ls\n"
    nb = notebook.load(nb_json([("code", src)]))
    body = nb.text.splitlines()[1:]
    assert body == src.splitlines()[:-1] + ["pass  # [magic]"]
    import ast

    ast.parse(nb.text)


def test_syntax_error_in_a_cell(run_cli, tmp_path):
    r = lint(run_cli, tmp_path, [("markdown", "x"), ("code", "x = 1\n"), ("code", "%ls\ny = (\n")], "--format", "json")
    [f] = json.loads(r.stdout)
    assert f["code"] == "TL000" and f["cell"] == 3 and f["line"] == 2


def test_cross_cell_analysis_sees_one_module(tmp_path, test_rules):
    from trainlint.engine import lint_text

    nb = notebook.load(nb_json([("code", "def helper():\n    return 1\n"), ("code", "for i in r:\n    insertme()\n")]))
    findings = [notebook.map_finding(nb, f) for f in lint_text(nb.text, "nb.ipynb").findings]
    assert [(f.code, f.cell, f.line) for f in findings] == [("TL993", 2, 1)]


def test_noqa_in_a_cell(run_cli, tmp_path, test_rules):
    r = lint(run_cli, tmp_path, [("code", "flagme()  # noqa: TL990\nflagme()\n")], "--format", "json")
    assert [(f["cell"], f["line"]) for f in json.loads(r.stdout)] == [(1, 2)]


def test_non_python_notebook_is_skipped(run_cli, tmp_path, test_rules):
    (tmp_path / "r.ipynb").write_text(nb_json([("code", "flagme()\nx <- 1\n")], language="R"))
    assert run_cli("r.ipynb").exit_code == 0


def test_invalid_notebook_is_tl000(run_cli, tmp_path):
    (tmp_path / "bad.ipynb").write_text("{not json")
    (tmp_path / "empty.ipynb").write_text("{}")
    r = run_cli(".", "--format", "json")
    got = [(f["path"], f["code"], f["message"].split(":")[0]) for f in json.loads(r.stdout)]
    assert got == [("bad.ipynb", "TL000", "cannot read notebook"), ("empty.ipynb", "TL000", "cannot read notebook")]


def test_fix_writes_cells_back_keeping_outputs_and_format(run_cli, tmp_path, test_rules):
    cells = [
        ("markdown", "# Title é\n"),
        ("code", "%matplotlib inline\nflagme()"),  # no trailing newline in the stored source
        ("code", "import os\n"),
        ("code", "!nvidia-smi\nfor i in range(3):\n    !echo in loop\n    insertme()\n    flagme()  # keep"),
    ]
    r = lint(run_cli, tmp_path, cells, "--fix")
    assert r.exit_code == 0, r.stdout + r.stderr
    after = (tmp_path / "nb.ipynb").read_text(encoding="utf-8")
    expected_cells = [
        cells[0],
        ("code", "%matplotlib inline\nfixed()"),
        cells[2],
        ("code", "!nvidia-smi\nfor i in range(3):\n    cleared()\n    !echo in loop\n    insertme()\n    fixed()  # keep"),
    ]
    # Byte for byte what nbformat would write: outputs, metadata, key order, indent, newline.
    assert after == nb_json(expected_cells)
    assert "Found 3 findings (3 fixed, 0 remaining)." in r.stdout
    # Idempotent: a second run changes nothing.
    r = run_cli("nb.ipynb", "--fix", "--no-cache")
    assert (tmp_path / "nb.ipynb").read_text(encoding="utf-8") == after and r.exit_code == 0


def test_fix_keeps_string_sources_and_indent(run_cli, tmp_path, test_rules):
    nb = {"cells": [{"cell_type": "code", "source": "x = 1\nflagme()\n", "metadata": {}, "outputs": [], "execution_count": None}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 4}
    (tmp_path / "s.ipynb").write_text(json.dumps(nb, indent=2))  # no trailing newline, indent 2
    run_cli("s.ipynb", "--fix")
    nb["cells"][0]["source"] = "x = 1\nfixed()\n"
    assert (tmp_path / "s.ipynb").read_text() == json.dumps(nb, indent=2)


def test_diff_for_notebooks_is_per_cell(run_cli, tmp_path, test_rules):
    r = lint(run_cli, tmp_path, CELLS, "--diff")
    assert r.exit_code == 1
    assert r.stdout.splitlines()[:2] == ["--- nb.ipynb:cell 4", "+++ nb.ipynb:cell 4"]
    assert "-    flagme()" in r.stdout and "+    fixed()" in r.stdout
    assert json.loads((tmp_path / "nb.ipynb").read_text()) == json.loads(nb_json(CELLS))


def test_map_back_is_refused_when_separators_are_lost(tmp_path):
    nb = notebook.load(nb_json([("code", "x = 1\n"), ("code", "y = 2\n")]))
    broken = nb.text.replace("# trainlint-cell: 2\n", "")
    with pytest.raises(notebook.NotebookError):
        notebook.write_back(nb, broken)
    assert notebook.write_back(nb, nb.text) is None  # nothing changed: nothing to write


def test_line_map_counts_magic_lines():
    nb = notebook.load(nb_json([("markdown", "m\n"), ("code", "%time x = 1\n\n!ls\ny = 2\n")]))
    lines = nb.text.splitlines()
    assert lines[0] == "# trainlint-cell: 2"
    assert lines[1] == "pass  # [magic]" and lines[3] == "pass  # [magic]"
    assert nb.position(5) == (2, 4)  # `y = 2` is line 4 of cell 2


def test_cell_indented_at_its_start_is_dedented_as_ipython_does(run_cli, tmp_path, test_rules):
    """IPython's leading_indent runs ` import os\n x = 1` fine: no TL000, and findings keep
    the cell's own columns."""
    cells = [("code", " import os\n for i in range(3):\n     flagme()\n")]
    r = lint(run_cli, tmp_path, cells, "--format", "json")
    [f] = json.loads(r.stdout)
    assert (f["code"], f["cell"], f["line"], f["column"], f["end_column"]) == ("TL990", 1, 3, 6, 14)


def test_fix_writes_back_into_a_cell_indented_at_its_start(run_cli, tmp_path, test_rules):
    cells = [("code", "  x = 1\n\n  flagme()\n")]
    r = lint(run_cli, tmp_path, cells, "--fix")
    assert r.exit_code == 0, r.stdout + r.stderr
    assert (tmp_path / "nb.ipynb").read_text(encoding="utf-8") == nb_json([("code", "  x = 1\n\n  fixed()\n")])


# An exercise notebook: one cell keeps a placeholder for the student's code.
EXERCISE = [
    ("markdown", "# Exercise\n"),
    ("code", "import torch\nflagme()\n"),
    ("code", "%time x = 1\nmodel = nn.Sequential(<YOUR CODE>)\n"),
    ("code", "def train():\n    flagme()\n"),
]


def test_cell_that_does_not_parse_is_tl000_and_the_others_are_linted(run_cli, tmp_path, test_rules):
    r = lint(run_cli, tmp_path, EXERCISE, "--format", "json")
    got = [(f["code"], f["cell"], f["line"], f["column"]) for f in json.loads(r.stdout)]
    # TL000 where Python stops in cell 3 (after its magic line); TL990 in cells 2 and 4.
    assert got == [("TL990", 2, 2, 1), ("TL000", 3, 2, 23), ("TL990", 4, 2, 5)]
    [tl000] = [f for f in json.loads(r.stdout) if f["code"] == "TL000"]
    assert tl000["message"].startswith("cell does not parse: invalid syntax")


def test_cell_errors_follow_the_selection(run_cli, tmp_path, test_rules):
    r = lint(run_cli, tmp_path, EXERCISE, "--format", "json", "--select", "TL990")
    assert [(f["code"], f["cell"]) for f in json.loads(r.stdout)] == [("TL990", 2), ("TL990", 4)]
    r = lint(run_cli, tmp_path, EXERCISE, "--format", "json", "--select", "TL000")
    assert [(f["code"], f["cell"]) for f in json.loads(r.stdout)] == [("TL000", 3)]


def test_a_notebook_that_parses_is_not_split_up():
    # A notebook that parses as a whole is not split up: no cell error, text unchanged.
    nb = notebook.load(nb_json([("code", "x = (1,\n 2)\n"), ("code", "y = x\n")]))
    assert nb.cell_errors == [] and "# x = (1," not in nb.text


def test_fix_leaves_the_cell_that_does_not_parse_untouched(run_cli, tmp_path, test_rules):
    r = lint(run_cli, tmp_path, EXERCISE, "--fix")
    after = (tmp_path / "nb.ipynb").read_text(encoding="utf-8")
    expected = [EXERCISE[0], ("code", "import torch\nfixed()\n"), EXERCISE[2], ("code", "def train():\n    fixed()\n")]
    assert after == nb_json(expected)
    assert "TL000" in r.stdout and r.exit_code == 1


def test_dedented_cell_error_keeps_its_column(run_cli, tmp_path):
    # IPython's leading_indent takes the first line's indentation off; the column maps back.
    r = lint(run_cli, tmp_path, [("code", "x = 1\n"), ("code", "  y = 2\n  z = <YOUR CODE>\n")], "--format", "json")
    [f] = json.loads(r.stdout)
    assert (f["code"], f["cell"], f["line"], f["column"]) == ("TL000", 2, 2, 7)
