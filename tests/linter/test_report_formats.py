"""Output formats: text, JSON (SPEC's objects), SARIF 2.1.0 (schema-valid), GitHub annotations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainlint.finding import Edit, Fix, Finding
from trainlint.report import Summary, render

DATA = Path(__file__).parent / "data"

SPEC_KEYS = ["path", "line", "column", "end_line", "end_column", "cell", "code", "name", "severity", "message", "fix"]


def finding(**kw) -> Finding:
    base = dict(path="train.py", line=12, column=9, end_line=12, end_column=30, code="TL990",
                name="test-flag-me", severity="warning", message="flagme() called, use fixed()")
    base.update(kw)
    return Finding(**base)


@pytest.fixture
def sample(test_rules):
    fix = Fix("safe", (Edit(12, 9, 12, 30, "fixed()"),), "rename")
    return [
        finding(fix=fix),
        finding(path="sub dir/nb.ipynb", line=4, column=1, end_line=4, end_column=9, cell=3,
                code="TL991", name="test-info", severity="info", message="infome() called: 50% sure, really"),
        finding(path="b.py", line=1, column=11, end_line=1, end_column=11, code="TL000",
                name="syntax-error", severity="error", message="file does not parse: expected ':'"),
    ]


# -- text ------------------------------------------------------------------------------


def test_text_lines_and_summary(sample):
    out = render("text", sample, Summary())
    assert out.splitlines() == [
        "train.py:12:9: TL990 [test-flag-me] flagme() called, use fixed()",
        "sub dir/nb.ipynb:cell 3:line 4:1: TL991 [test-info] infome() called: 50% sure, really",
        "b.py:1:11: TL000 [syntax-error] file does not parse: expected ':'",
        "Found 3 findings.",
        "[*] 1 fixable with the `--fix` option.",
    ]


def test_text_summary_variants():
    assert render("text", [], Summary()) == "All checks passed!\n"
    assert render("text", [], Summary(quiet=True)) == ""
    one = [finding()]
    assert render("text", one, Summary()).splitlines()[-1] == "Found 1 finding."
    assert render("text", one, Summary(fix_mode=True, fixed=2)).splitlines()[-1] == "Found 3 findings (2 fixed, 1 remaining)."
    unsafe = [finding(fix=Fix("unsafe", ())), finding(line=13, fix=Fix("safe", ()))]
    assert render("text", unsafe, Summary()).splitlines()[-1] == "[*] 1 fixable with the `--fix` option (1 more with `--unsafe-fixes`)."


def test_statistics_text(sample):
    out = render("text", sample + [finding(line=20)], Summary(statistics=True, quiet=True))
    assert out.splitlines() == ["2  TL990  [*] test-flag-me", "1  TL000      syntax-error", "1  TL991      test-info"]


# -- json ------------------------------------------------------------------------------


def test_json_objects_are_exactly_the_spec(sample):
    data = json.loads(render("json", sample, Summary()))
    assert [list(d) for d in data] == [SPEC_KEYS] * 3
    assert data[0] == {
        "path": "train.py", "line": 12, "column": 9, "end_line": 12, "end_column": 30, "cell": None,
        "code": "TL990", "name": "test-flag-me", "severity": "warning", "message": "flagme() called, use fixed()",
        "fix": {"applicability": "safe", "edits": [{"line": 12, "column": 9, "end_line": 12, "end_column": 30, "content": "fixed()"}]},
    }
    assert data[1]["cell"] == 3 and data[1]["fix"] is None
    assert {d["severity"] for d in data} <= {"error", "warning", "info"}


def test_json_empty_is_an_empty_array():
    assert json.loads(render("json", [], Summary())) == []


# -- sarif -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sarif_validator():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((DATA / "sarif-schema-2.1.0.json").read_text(encoding="utf-8"))
    return jsonschema.Draft4Validator(schema, format_checker=jsonschema.FormatChecker())


def test_sarif_is_valid_against_the_oasis_schema(sample, sarif_validator, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    log = json.loads(render("sarif", sample, Summary(root=tmp_path)))
    errors = sorted(sarif_validator.iter_errors(log), key=lambda e: list(e.absolute_path))
    assert not errors, [f"{list(e.absolute_path)}: {e.message}" for e in errors]
    # The schema must be able to fail: a result without a message is rejected.
    broken = json.loads(json.dumps(log))
    del broken["runs"][0]["results"][0]["message"]
    assert list(sarif_validator.iter_errors(broken))


def test_sarif_has_what_github_code_scanning_needs(sample, tmp_path, monkeypatch, test_rules):
    monkeypatch.chdir(tmp_path)
    log = json.loads(render("sarif", sample, Summary(root=tmp_path)))
    assert log["version"] == "2.1.0"
    [run] = log["runs"]
    driver = run["tool"]["driver"]
    assert driver["name"] == "trainlint" and driver["version"] and driver["informationUri"].startswith("https://")
    ids = [r["id"] for r in driver["rules"]]
    assert ids == list(test_rules)
    rule = driver["rules"][ids.index("TL990")]
    assert rule["name"] == "test-flag-me"
    assert rule["shortDescription"]["text"] == "Test rule: finds calls to `flagme()`."
    assert rule["fullDescription"]["text"] and "## Why is this bad?" in rule["help"]["text"]
    assert rule["defaultConfiguration"]["level"] == "warning"
    levels = {r["id"]: r["defaultConfiguration"]["level"] for r in driver["rules"]}
    assert levels["TL000"] == "error" and levels["TL991"] == "note"

    first, nb, syntax = run["results"]
    assert first["ruleId"] == "TL990" and driver["rules"][first["ruleIndex"]]["id"] == "TL990"
    assert first["level"] == "warning" and first["message"]["text"] == "flagme() called, use fixed()"
    loc = first["locations"][0]["physicalLocation"]
    assert loc["artifactLocation"] == {"uri": "train.py", "uriBaseId": "%SRCROOT%"}
    assert loc["region"] == {"startLine": 12, "startColumn": 9, "endLine": 12, "endColumn": 30}
    assert nb["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "sub%20dir/nb.ipynb"
    assert nb["message"]["text"].startswith("cell 3, line 4: ") and nb["level"] == "note"
    assert nb["properties"] == {"cell": 3, "cellLine": 4, "cellColumn": 1}
    assert syntax["level"] == "error"
    assert run["originalUriBaseIds"]["%SRCROOT%"]["uri"] == tmp_path.as_uri() + "/"


def test_sarif_from_the_cli_validates(run_cli, tmp_path, sarif_validator, test_rules):
    (tmp_path / "a.py").write_text("flagme()\n")
    (tmp_path / "b.py").write_text("for x in y\n")
    r = run_cli(".", "--format", "sarif")
    assert r.exit_code == 1
    log = json.loads(r.stdout)
    assert not list(sarif_validator.iter_errors(log))
    assert [res["ruleId"] for res in log["runs"][0]["results"]] == ["TL990", "TL000"]


def _notebook(cells, as_list=True) -> str:
    """A notebook as Jupyter writes it: json.dumps(indent=1), non-ASCII kept, a final newline."""
    out = []
    for kind, src in cells:
        cell = {"cell_type": kind, "metadata": {}, "source": src.splitlines(keepends=True) if as_list else src}
        if kind == "code":
            cell.update(execution_count=None, outputs=[])
        out.append(cell)
    nb = {"cells": out, "metadata": {"kernelspec": {"language": "python", "name": "python3"}},
          "nbformat": 4, "nbformat_minor": 5}
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


@pytest.mark.parametrize("as_list", [True, False], ids=["source-as-lines", "source-as-one-string"])
def test_sarif_notebook_regions_point_into_the_ipynb_json(run_cli, tmp_path, sarif_validator, test_rules, as_list):
    cells = [
        ("markdown", "# Training\nflagme() in markdown is not code\n"),
        ("code", "import torch\n"),
        # Escapes before the call on its line (a quote, a tab, a non-ASCII letter) shift
        # the JSON columns away from the cell's.
        ("code", "%matplotlib inline\nx = 1\ns = \"é\\t\"; y = flagme()\nif x:\n    z = flagme(1,\n               2)"),
    ]
    raw = _notebook(cells, as_list)
    (tmp_path / "nb.ipynb").write_text(raw, encoding="utf-8")
    r = run_cli("nb.ipynb", "--format", "sarif", "--no-cache", "--select", "TL990")
    log = json.loads(r.stdout)
    assert not list(sarif_validator.iter_errors(log))
    first, second = log["runs"][0]["results"]
    assert first["properties"] == {"cell": 3, "cellLine": 3, "cellColumn": 16}
    assert first["message"]["text"].startswith("cell 3, line 3: flagme()")
    json_lines = raw.splitlines()

    def span(region):
        line = json_lines[region["startLine"] - 1]
        assert region["endLine"] == region["startLine"]
        return line[region["startColumn"] - 1 : region["endColumn"] - 1]

    r1 = first["locations"][0]["physicalLocation"]["region"]
    r2 = second["locations"][0]["physicalLocation"]["region"]
    assert span(r1) == "flagme()"
    if as_list:
        # One JSON line per source line: the region is the line holding `s = "é\t"; y = flagme()`.
        assert json_lines[r1["startLine"] - 1] == '    "s = \\"é\\\\t\\"; y = flagme()\\n",'
        # A call over two source lines spans two JSON lines, ending after `2)`.
        assert r2["endLine"] == r2["startLine"] + 1
        assert json_lines[r2["startLine"] - 1][r2["startColumn"] - 1:].startswith("flagme(1,")
        assert json_lines[r2["endLine"] - 1][: r2["endColumn"] - 1].endswith("2)")
    else:
        # One JSON string for the whole cell: the region sits inside that one line.
        assert r1["startLine"] == r2["startLine"] == r2["endLine"]
        line = json_lines[r2["startLine"] - 1]
        assert line[r2["startColumn"] - 1 : r2["endColumn"] - 1] == "flagme(1,\\n               2)"


def test_ipynb_positions_handle_escapes_and_surrogates():
    from trainlint.report.ipynb_positions import load

    raw = '{"cells": [{"cell_type": "code", "source": ["a = \\"\\ud83d\\ude00\\u00e9\\"; b = 1\\n", "c = 2"]}]}'
    pos = load(raw)
    # cell 1 line 1 column 11 is `b`: after `a = "😀é"; ` (the emoji and é written as escapes)
    assert raw[pos.position(1, 1, 11)[1] - 1] == "b"
    assert raw[pos.position(1, 2, 1)[1] - 1] == "c"
    assert pos.position(1, 3, 1) is None and pos.position(2, 1, 1) is None
    assert load("{not json") is None


# -- github ----------------------------------------------------------------------------


def test_github_annotations(sample):
    lines = render("github", sample, Summary()).splitlines()
    assert lines[0] == (
        "::warning file=train.py,line=12,col=9,endLine=12,endColumn=30,"
        "title=TL990 test-flag-me::TL990 flagme() called, use fixed()"
    )
    # info -> notice; notebooks: no line (it would point into the JSON), cell in the message; % escaped.
    assert lines[1] == (
        "::notice file=sub dir/nb.ipynb,title=TL991 test-info::"
        "TL991 cell 3, line 4, column 1: infome() called: 50%25 sure, really"
    )
    assert lines[2].startswith("::error file=b.py,line=1,col=11,")


def test_github_multi_line_findings_omit_columns():
    f = finding(line=3, column=5, end_line=6, end_column=2)
    assert render("github", [f], Summary()).startswith("::warning file=train.py,line=3,endLine=6,title=")
    one = render("github", [finding(line=3, column=5, end_line=3, end_column=9)], Summary())
    assert "line=3,col=5,endLine=3,endColumn=9," in one


def test_github_escaping():
    from trainlint.report.github import escape_data, escape_property

    assert escape_data("a%b\r\nc:d,e") == "a%25b%0D%0Ac:d,e"
    assert escape_property("a%b\r\nc:d,e") == "a%25b%0D%0Ac%3Ad%2Ce"
    f = finding(path="we:ird,name.py", message="two\nlines")
    line = render("github", [f], Summary()).strip()
    assert "file=we%3Aird%2Cname.py," in line and line.endswith("::TL990 two%0Alines")


def test_report_modules_are_imported_only_when_used(tmp_path):
    import subprocess
    import sys

    (tmp_path / "a.py").write_text("x = 1\n")
    code = (
        "import sys\nfrom trainlint.cli import main\n"
        "try:\n    main(['a.py', '--no-cache'])\nexcept SystemExit:\n    pass\n"
        "bad = [m for m in ('trainlint.report.sarif', 'trainlint.report.json_format', 'trainlint.report.github') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


# -- text output: source, colour, output file ---------------------------------------------


def test_show_source_python_notebook_and_stdin(run_cli, tmp_path, test_rules):
    (tmp_path / "t.py").write_text("if x:\n\ty = flagme(1,\n\t    2)\n")
    r = run_cli("t.py", "--no-cache")
    # A tab before the span stays a tab; a span over several lines is underlined to the line's end.
    assert r.stdout.splitlines()[:6] == [
        "t.py:2:6: TL990 [test-flag-me] flagme() called, use fixed()",
        "  |", "2 | \ty = flagme(1,", "  | \t    ^^^^^^^^^", "  |", "",
    ]
    nb = {"cells": [{"cell_type": "markdown", "metadata": {}, "source": ["# t"]},
                    {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [],
                     "source": ["%matplotlib inline\n", "a = 1\n", "b = flagme()"]}],
          "metadata": {"language_info": {"name": "python"}}, "nbformat": 4, "nbformat_minor": 5}
    (tmp_path / "nb.ipynb").write_text(json.dumps(nb, indent=1))
    r = run_cli("nb.ipynb", "--no-cache")
    assert r.stdout.splitlines()[:5] == [
        "nb.ipynb:cell 2:line 3:5: TL990 [test-flag-me] flagme() called, use fixed()",
        "  |", "3 | b = flagme()", "  |     ^^^^^^^^", "  |",
    ]
    r = run_cli("-", "--stdin-filename", "in.py", input="x = 1\nflagme()\n")
    assert "2 | flagme()\n  | ^^^^^^^^\n" in r.stdout
    # Off on the command line, or in the configuration.
    assert "|" not in run_cli("t.py", "--no-show-source").stdout
    (tmp_path / "pyproject.toml").write_text("[tool.trainlint]\nshow-source = false\n")
    assert "|" not in run_cli("t.py").stdout
    assert "| \ty = flagme" in run_cli("t.py", "--show-source").stdout


def test_output_file(run_cli, tmp_path, test_rules):
    (tmp_path / "a.py").write_text("flagme()\n")
    r = run_cli("a.py", "-o", "reports/out.json", "--format", "json")
    assert r.exit_code == 1 and r.stdout == ""
    [f] = json.loads((tmp_path / "reports" / "out.json").read_text())
    assert f["code"] == "TL990"
    r = run_cli("a.py", "--output-file", "out.txt", "--color", "always")
    assert r.stdout == ""
    text = (tmp_path / "out.txt").read_text()
    assert click_unstyle(text).startswith("a.py:1:1: TL990") and "\x1b[" in text  # `always` means always
    assert "\x1b[" not in (run_cli("a.py", "-o", "out2.txt"), (tmp_path / "out2.txt").read_text())[1]
    # --diff goes to the file too.
    run_cli("a.py", "--diff", "-o", "fix.diff")
    assert "+fixed()" in (tmp_path / "fix.diff").read_text()
    (tmp_path / "ro").mkdir()
    r = run_cli("a.py", "-o", "ro")
    assert r.exit_code == 2 and len(r.stderr.splitlines()) == 1


def test_color_choice_and_environment(run_cli, tmp_path, test_rules, monkeypatch):
    (tmp_path / "a.py").write_text("flagme()\n")
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    assert "\x1b[" not in run_cli("a.py").stdout  # not a terminal
    always = run_cli("a.py", "--color", "always").stdout
    assert "\x1b[31m\x1b[1mTL990" not in always and "\x1b[" in always  # warnings are yellow
    assert "\x1b[33m\x1b[1mTL990\x1b[0m" in always
    assert click_unstyle(always) == run_cli("a.py", "--color", "never").stdout
    monkeypatch.setenv("FORCE_COLOR", "1")
    assert "\x1b[" in run_cli("a.py").stdout
    monkeypatch.setenv("NO_COLOR", "1")
    assert "\x1b[" not in run_cli("a.py").stdout
    assert "\x1b[" in run_cli("a.py", "--color", "always").stdout
    # Machine formats never get colour.
    assert "\x1b[" not in run_cli("a.py", "--color", "always", "--format", "json").stdout


def click_unstyle(text: str) -> str:
    import click

    return click.unstyle(text)


def _run_on_terminal(args, cwd, env_extra=None):
    """Run the real CLI with stdout AND stderr on a pseudo-terminal; (exit code, what the terminal got)."""
    pty = pytest.importorskip("pty")
    import os
    import select
    import subprocess
    import sys

    master, slave = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "TERM": "xterm", **(env_extra or {})}
    env.pop("NO_COLOR", None) if "NO_COLOR" not in (env_extra or {}) else None
    env.pop("FORCE_COLOR", None)
    p = subprocess.Popen([sys.executable, "-m", "trainlint", *args], cwd=cwd, stdin=subprocess.DEVNULL,
                         stdout=slave, stderr=slave, env=env)
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], 60)
        if not ready:
            break
        try:
            data = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return p.wait(timeout=60), b"".join(chunks).decode("utf-8", "replace")


@pytest.mark.slow
def test_terminal_gets_colour_and_a_progress_bar(tmp_path):
    for i in range(120):
        (tmp_path / f"m{i:03}.py").write_text("for x in y\n" if i == 7 else "x = 1\n")
    code, seen = _run_on_terminal([".", "--no-cache", "-j", "1"], tmp_path)
    assert code == 1
    assert "Linting" in seen and "120/120" in seen  # the bar, finished
    assert "\x1b[1mm007.py:1:11\x1b[0m" in seen  # colour on a terminal by default
    code, seen = _run_on_terminal([".", "--no-cache", "-j", "1"], tmp_path, {"NO_COLOR": "1"})
    assert "\x1b[1m" not in seen and "m007.py:1:11: TL000" in seen
    # Few files, or --quiet: no bar.
    code, seen = _run_on_terminal(["m007.py", "m008.py", "--no-cache"], tmp_path)
    assert "Linting" not in seen
    code, seen = _run_on_terminal([".", "--no-cache", "-q", "-j", "1"], tmp_path)
    assert "Linting" not in seen


def test_no_progress_bar_off_a_terminal(run_cli, tmp_path):
    for i in range(120):
        (tmp_path / f"m{i:03}.py").write_text("x = 1\n")
    r = run_cli(".", "--no-cache", "-j", "1")
    assert r.exit_code == 0 and r.stderr == ""
