"""The `trainlint` command line: commands, options, exit codes, bad input, stdin, fixes."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

SYNTAX_ERROR = "for x in y\n    pass\n"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# -- commands ---------------------------------------------------------------------------


def test_bare_path_means_check(run_cli, tmp_path):
    write(tmp_path / "bad.py", SYNTAX_ERROR)
    bare = run_cli("bad.py", "--no-cache")
    explicit = run_cli("check", "bad.py", "--no-cache")
    assert bare.exit_code == explicit.exit_code == 1
    assert bare.stdout == explicit.stdout
    assert "bad.py:1:11: TL000 [syntax-error]" in bare.stdout


def test_no_findings_exit_0(run_cli, tmp_path):
    write(tmp_path / "ok.py", "x = 1\n")
    r = run_cli("ok.py")
    assert r.exit_code == 0
    assert "All checks passed!" in r.stdout


def test_rules_lists_every_registered_rule(run_cli, test_rules):
    r = run_cli("rules")
    assert r.exit_code == 0
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["code", "name", "severity", "default", "fixable"]
    assert [ln.split()[0] for ln in lines[1:]] == list(test_rules)
    row = next(ln for ln in lines if ln.startswith("TL990")).split()
    assert row == ["TL990", "test-flag-me", "warning", "on", "safe"]


def test_rules_json(run_cli, test_rules):
    rows = json.loads(run_cli("rules", "--format", "json").stdout)
    assert {"code": "TL991", "name": "test-info", "severity": "info", "default": True, "fixable": None} in rows


def test_rule_prints_docs(run_cli, test_rules):
    r = run_cli("rule", "tl990")
    assert r.exit_code == 0
    assert r.stdout.startswith("TL990 test-flag-me")
    # Dedented: the docstring's sections start at column 0.
    assert "\n## Why is this bad?\n" in r.stdout


def test_rule_says_when_its_fix_applies(run_cli):
    out = run_cli("rule", "TL201").stdout
    assert "Fixable: unsafe (when: see *Fix* below)." in out
    fix = out.split("\n## Fix\n", 1)[1]
    assert "only use" in fix and "without a fix" in fix


def test_rule_unknown_code(run_cli):
    r = run_cli("rule", "TL999")
    assert r.exit_code == 2
    assert "unknown rule code 'TL999'" in r.stderr


def test_version(run_cli):
    from trainlint import __version__

    r = run_cli("--version")
    assert r.exit_code == 0 and __version__ in r.stdout


# -- exit codes and bad input ------------------------------------------------------------


def test_syntax_error_among_good_files_others_still_linted(run_cli, tmp_path, test_rules):
    write(tmp_path / "a.py", "flagme()\n")
    write(tmp_path / "b.py", SYNTAX_ERROR)
    write(tmp_path / "c.py", "x = 1\nflagme()\n")
    r = run_cli(".", "--select", "TL000,TL990", "--no-show-source")
    assert r.exit_code == 1
    assert r.stdout.splitlines()[:3] == [
        "a.py:1:1: TL990 [test-flag-me] flagme() called, use fixed()",
        "b.py:1:11: TL000 [syntax-error] file does not parse: expected ':'",
        "c.py:2:1: TL990 [test-flag-me] flagme() called, use fixed()",
    ]
    assert "Found 3 findings." in r.stdout


def test_missing_path_is_an_error_but_others_are_linted(run_cli, tmp_path):
    write(tmp_path / "bad.py", SYNTAX_ERROR)
    r = run_cli("nope.py", "bad.py")
    assert r.exit_code == 2
    assert r.stderr.strip() == "trainlint: error: nope.py: no such file or folder"
    assert "bad.py:1:11: TL000" in r.stdout


def test_folder_without_python_files(run_cli, tmp_path):
    # Named on the command line and nothing to lint there: an error, never a silent pass.
    write(tmp_path / "docs" / "readme.md", "# hi\n")
    r = run_cli("docs")
    assert r.exit_code == 2
    assert r.stderr == (
        "trainlint: error: no Python files or notebooks found under the given paths: no .py or .ipynb files there\n"
    )
    assert "All checks passed" not in r.stdout
    # The implicit `.` with nothing in it only warns (as ruff does).
    r = run_cli("check")
    assert r.exit_code == 0
    assert r.stderr.startswith("trainlint: warning: no Python files or notebooks found")


def test_nothing_linted_says_why(run_cli, tmp_path):
    (tmp_path / ".git").mkdir()
    write(tmp_path / ".gitignore", "gen/\n")
    write(tmp_path / "gen" / "a.py", "x = 1\n")
    write(tmp_path / "vendor" / "b.py", "x = 1\n")
    r = run_cli(".", "--exclude", "vendor")
    assert r.exit_code == 2
    assert "1 file or folder skipped by the exclude patterns" in r.stderr
    assert "1 file or folder skipped by .gitignore (--no-respect-gitignore lints them)" in r.stderr
    r = run_cli(".", "--exclude", "vendor", "--no-respect-gitignore")
    assert r.exit_code == 0 and r.stderr == ""
    # Named, the gitignored folder itself is walked (as ruff does).
    assert run_cli("gen").exit_code == 0
    # pre-commit naming only excluded files: exit 0, with the reason.
    r = run_cli("vendor/b.py", "--exclude", "vendor", "--force-exclude")
    assert r.exit_code == 0
    assert "1 path given excluded by the exclude patterns (--force-exclude)" in r.stderr
    assert run_cli("vendor/b.py", "--exclude", "vendor", "--force-exclude", "-q").stderr == ""


def test_respect_gitignore_config_key(run_cli, tmp_path):
    write(tmp_path / ".gitignore", "gen_*.py\n")
    write(tmp_path / "gen_a.py", SYNTAX_ERROR)
    write(tmp_path / "ok.py", "x = 1\n")
    assert run_cli(".", "--no-cache").exit_code == 0
    write(tmp_path / "pyproject.toml", "[tool.trainlint]\nrespect-gitignore = false\n")
    assert run_cli(".", "--no-cache").exit_code == 1
    # The command line wins over the configuration.
    assert run_cli(".", "--no-cache", "--respect-gitignore").exit_code == 0


def test_fifo_named_is_an_error(run_cli, tmp_path):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    os.mkfifo(tmp_path / "pipe")
    r = run_cli("pipe")
    assert r.exit_code == 2
    assert r.stderr == "trainlint: error: pipe: not a regular file or folder\n"


def test_non_utf8_file_is_reported_as_tl000(run_cli, tmp_path):
    (tmp_path / "latin.py").write_bytes(b"x = '\xe9t\xe9'\n")
    write(tmp_path / "ok.py", "x = 1\n")
    r = run_cli(".", "--output-format", "json")
    assert r.exit_code == 1
    [f] = json.loads(r.stdout)
    assert f["path"] == "latin.py" and f["code"] == "TL000"
    assert "not valid UTF-8" in f["message"] and "byte 5" in f["message"]


def test_pep263_coding_line_is_honoured(run_cli, tmp_path):
    (tmp_path / "latin.py").write_bytes(b"# -*- coding: latin-1 -*-\nx = '\xe9t\xe9'\n")
    assert run_cli("latin.py").exit_code == 0


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file_is_reported(run_cli, tmp_path):  # pragma: no cover - depends on the user
    p = write(tmp_path / "secret.py", "x = 1\n")
    p.chmod(0)
    try:
        r = run_cli("secret.py")
    finally:
        p.chmod(0o644)
    assert r.exit_code == 1
    assert "secret.py:1:1: TL000 [syntax-error] cannot read file: Permission denied" in r.stdout


def test_unreadable_file_is_reported_even_as_root(run_cli, tmp_path, monkeypatch):
    # Root ignores file modes, so simulate the OS refusing the read.
    write(tmp_path / "secret.py", "x = 1\n")
    write(tmp_path / "ok.py", "x = 1\n")
    real = Path.read_bytes

    def deny(self):
        if self.name == "secret.py":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", deny)
    r = run_cli(".", "--no-cache")
    assert r.exit_code == 1
    assert r.stdout.splitlines()[0] == "secret.py:1:1: TL000 [syntax-error] cannot read file: Permission denied"


def test_broken_pyproject_exit_2(run_cli, tmp_path):
    write(tmp_path / "pyproject.toml", "[tool.trainlint\nselect = [\n")
    write(tmp_path / "a.py", "x = 1\n")
    r = run_cli("a.py")
    assert r.exit_code == 2
    assert r.stderr.startswith("trainlint: error: cannot parse ")
    assert len(r.stderr.strip().splitlines()) == 1


def test_unknown_code_in_select_exit_2(run_cli, tmp_path):
    write(tmp_path / "a.py", "x = 1\n")
    r = run_cli("a.py", "--select", "TL9999")
    assert r.exit_code == 2
    assert "--select: unknown rule code or prefix: 'TL9999'" in r.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (("a.py", "--fix", "--diff"), "--fix and --diff cannot be used together"),
        (("a.py", "--stdin-filename", "x.py"), "--stdin-filename names the code read from standard input: give '-'"),
    ],
)
def test_option_misuse_is_a_one_line_usage_error(run_cli, tmp_path, args, message):
    write(tmp_path / "a.py", "flagme()\n")
    r = run_cli(*args)
    assert r.exit_code == 2
    assert r.stderr == f"trainlint: error: {r.stderr.split('error: ', 1)[1]}" and message in r.stderr
    assert len(r.stderr.splitlines()) == 1 and r.stdout == ""
    assert (tmp_path / "a.py").read_text() == "flagme()\n"


def test_diff_with_fix_from_the_config_is_fine(run_cli, tmp_path, test_rules):
    # `fix = true` in the configuration and `--diff` on the command line: the diff wins.
    write(tmp_path / "pyproject.toml", "[tool.trainlint]\nfix = true\n")
    write(tmp_path / "a.py", "flagme()\n")
    r = run_cli("a.py", "--diff", "--no-cache")
    assert r.exit_code == 1 and "+fixed()" in r.stdout
    assert (tmp_path / "a.py").read_text() == "flagme()\n"
    # `--stdin-filename` with '-' or no path reads standard input.
    assert run_cli("-", "--stdin-filename", "x.py", "--no-fix", input="flagme()\n").exit_code == 1
    assert run_cli("--stdin-filename", "x.py", "--no-fix", input="x = 1\n").exit_code == 0


def test_unknown_option_is_a_usage_error(run_cli):
    r = run_cli("check", "--no-such-option", ".")
    assert r.exit_code == 2


def test_internal_error_in_a_rule_exit_2_without_traceback(run_cli, tmp_path, test_rules, monkeypatch):
    def boom(self, ctx):
        raise RuntimeError("rule exploded")

    monkeypatch.setattr(type(test_rules["TL990"]), "check", boom)
    write(tmp_path / "a.py", "flagme()\n")
    write(tmp_path / "b.py", SYNTAX_ERROR)
    r = run_cli(".", "--no-cache")
    assert r.exit_code == 2
    assert "trainlint: error: a.py: internal error: RuntimeError: rule exploded" in r.stderr
    assert "b.py:1:11: TL000" in r.stdout  # the other file's result still comes


def test_exit_zero(run_cli, tmp_path):
    write(tmp_path / "bad.py", SYNTAX_ERROR)
    r = run_cli("bad.py", "--exit-zero")
    assert r.exit_code == 0
    assert "TL000" in r.stdout


def test_quiet_prints_findings_only(run_cli, tmp_path):
    write(tmp_path / "bad.py", SYNTAX_ERROR)
    write(tmp_path / "ok.py", "x = 1\n")
    r = run_cli(".", "-q")
    # The findings (with their source, the default) and no summary line.
    assert r.stdout.splitlines() == [
        "bad.py:1:11: TL000 [syntax-error] file does not parse: expected ':'",
        "  |", "1 | for x in y", "  |           ^", "  |", "",
    ]
    assert run_cli(".", "-q", "--no-show-source").stdout == (
        "bad.py:1:11: TL000 [syntax-error] file does not parse: expected ':'\n")
    assert run_cli("ok.py", "--quiet").stdout == ""


def test_statistics(run_cli, tmp_path, test_rules):
    write(tmp_path / "a.py", "flagme()\nflagme()\ninfome()\n")
    write(tmp_path / "b.py", SYNTAX_ERROR)
    r = run_cli(".", "--statistics")
    assert r.exit_code == 1
    lines = r.stdout.splitlines()
    assert lines[:3] == ["2  TL990  [*] test-flag-me", "1  TL000      syntax-error", "1  TL991      test-info"]
    stats = json.loads(run_cli(".", "--statistics", "--format", "json").stdout)
    assert stats[0] == {"code": "TL990", "name": "test-flag-me", "count": 2, "fixable": True}


# -- selection -------------------------------------------------------------------------


def test_select_ignore_extend_select_and_prefixes(run_cli, tmp_path, test_rules):
    write(tmp_path / "a.py", "flagme()\ninfome()\nunsafeme()\n")

    def codes(*args):
        r = run_cli("a.py", "--format", "json", "--no-cache", *args)
        return sorted(f["code"] for f in json.loads(r.stdout))

    assert codes() == ["TL990", "TL991", "TL992"]
    assert codes("--select", "TL990") == ["TL990"]
    assert codes("--select", "TL99", "--ignore", "TL991") == ["TL990", "TL992"]
    assert codes("--select", "TL990", "--extend-select", "TL992") == ["TL990", "TL992"]
    assert codes("--ignore", "TL99") == []
    assert codes("--select", "TL990 TL991") == ["TL990", "TL991"]


def test_per_file_ignores_cli(run_cli, tmp_path, test_rules):
    write(tmp_path / "src" / "a.py", "flagme()\ninfome()\n")
    write(tmp_path / "tests" / "test_a.py", "flagme()\ninfome()\n")
    r = run_cli(".", "--format", "json", "--per-file-ignores", "tests/*:TL990,TL991 src/a.py:TL991")
    got = sorted((f["path"], f["code"]) for f in json.loads(r.stdout))
    assert got == [("src/a.py", "TL990")]


def test_noqa_and_disable_file(run_cli, tmp_path, test_rules):
    write(tmp_path / "a.py", "flagme()  # noqa: TL990\nflagme()  # noqa\nflagme()  # noqa: TL1\nflagme()\n")
    write(tmp_path / "b.py", "# trainlint: disable-file=TL990\nflagme()\ninfome()\n")
    r = run_cli(".", "--format", "json", "--select", "TL99")
    got = [(f["path"], f["line"], f["code"]) for f in json.loads(r.stdout)]
    assert got == [("a.py", 3, "TL990"), ("a.py", 4, "TL990"), ("b.py", 3, "TL991")]


# -- stdin -----------------------------------------------------------------------------


def test_stdin_with_filename(run_cli, tmp_path, test_rules):
    r = run_cli("-", "--stdin-filename", "pkg/train.py", input="x = 1\nflagme()\n")
    assert r.exit_code == 1
    assert r.stdout.startswith("pkg/train.py:2:1: TL990 [test-flag-me]")


def test_stdin_without_filename(run_cli):
    r = run_cli("-", input=SYNTAX_ERROR)
    assert r.exit_code == 1
    assert r.stdout.startswith("-:1:11: TL000")


def test_stdin_fix_prints_fixed_source(run_cli, test_rules):
    r = run_cli("-", "--fix", "--stdin-filename", "t.py", input="flagme()\nunsafeme()\n")
    assert r.stdout == "fixed()\nunsafeme()\n"
    assert "t.py:2:1: TL992" in r.stderr
    assert r.exit_code == 1


def test_stdin_force_exclude(run_cli, tmp_path, test_rules):
    write(tmp_path / "pyproject.toml", '[tool.trainlint]\nexclude = ["gen/"]\n')
    r = run_cli("-", "--force-exclude", "--stdin-filename", "gen/x.py", input="flagme()\n")
    assert r.exit_code == 0 and r.stdout == ""


def test_stdin_notebook(run_cli, test_rules):
    nb = {"cells": [{"cell_type": "markdown", "source": ["# t"], "metadata": {}},
                    {"cell_type": "code", "source": ["%pip install x\n", "flagme()\n"], "metadata": {}, "outputs": [], "execution_count": None}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    r = run_cli("-", "--stdin-filename", "nb.ipynb", "--format", "json", input=json.dumps(nb))
    [f] = json.loads(r.stdout)
    assert (f["path"], f["cell"], f["line"], f["column"]) == ("nb.ipynb", 2, 2, 1)


# -- fixes -----------------------------------------------------------------------------


def test_fix_writes_safe_fixes_and_reports_the_rest(run_cli, tmp_path, test_rules):
    p = write(tmp_path / "a.py", "# keep me\nflagme()  # and me\nunsafeme()\n")
    p.chmod(0o754)
    r = run_cli("a.py", "--fix")
    assert p.read_text() == "# keep me\nfixed()  # and me\nunsafeme()\n"
    assert stat.S_IMODE(p.stat().st_mode) == 0o754
    # The source shown is the fixed file's.
    assert r.stdout.splitlines() == ["a.py:3:1: TL992 [test-unsafe] unsafeme() called",
                                     "  |", "3 | unsafeme()", "  | ^^^^^^^^^^", "  |", "",
                                     "Found 2 findings (1 fixed, 1 remaining)."]
    assert r.exit_code == 1
    assert not [x for x in tmp_path.iterdir() if x.name.endswith(".tmp")]


def test_unsafe_fixes_and_exit_0_when_all_fixed(run_cli, tmp_path, test_rules):
    p = write(tmp_path / "a.py", "flagme()\nunsafeme()\n")
    r = run_cli("a.py", "--fix", "--unsafe-fixes")
    assert p.read_text() == "fixed()\nwas_unsafe()\n"
    assert r.exit_code == 0
    assert "Found 2 findings (2 fixed, 0 remaining)." in r.stdout


def test_fix_loop_reaches_a_fixed_point(run_cli, tmp_path, test_rules):
    # Overlapping fixes are applied one per pass; the loop runs until nothing changes.
    p = write(tmp_path / "a.py", "for i in r:\n    flagme(flagme())\n    insertme()\n")
    run_cli("a.py", "--fix")
    once = p.read_text()
    assert "flagme" not in once and once.count("cleared()") == 1
    r = run_cli("a.py", "--fix")
    assert p.read_text() == once
    assert r.exit_code == 0


def test_fix_keeps_crlf_and_encoding(run_cli, tmp_path, test_rules):
    p = tmp_path / "a.py"
    p.write_bytes(b"# -*- coding: latin-1 -*-\r\nx = '\xe9'\r\nflagme()\r\n")
    run_cli("a.py", "--fix")
    assert p.read_bytes() == b"# -*- coding: latin-1 -*-\r\nx = '\xe9'\r\nfixed()\r\n"


def test_fix_never_writes_unchanged_files(run_cli, tmp_path, test_rules):
    p = write(tmp_path / "a.py", "infome()\n")
    before = p.stat().st_mtime_ns
    os.utime(p, ns=(before - 10**9, before - 10**9))
    r = run_cli("a.py", "--fix")
    assert p.stat().st_mtime_ns == before - 10**9
    assert r.exit_code == 1


def test_diff_prints_and_writes_nothing(run_cli, tmp_path, test_rules):
    p = write(tmp_path / "a.py", "x = 1\nflagme()\n")
    r = run_cli("a.py", "--diff")
    assert p.read_text() == "x = 1\nflagme()\n"
    assert r.exit_code == 1
    assert r.stdout.splitlines() == ["--- a.py", "+++ a.py", "@@ -1,2 +1,2 @@", " x = 1", "-flagme()", "+fixed()"]
    assert "Would fix 1 finding." in r.stderr
    write(tmp_path / "b.py", "infome()\n")
    r = run_cli("b.py", "--diff")
    assert r.exit_code == 0 and r.stdout == ""


def test_fix_from_config(run_cli, tmp_path, test_rules):
    write(tmp_path / "pyproject.toml", "[tool.trainlint]\nfix = true\n")
    p = write(tmp_path / "a.py", "flagme()\n")
    run_cli("a.py")
    assert p.read_text() == "fixed()\n"
    p.write_text("flagme()\n")
    run_cli("a.py", "--no-fix")
    assert p.read_text() == "flagme()\n"


# -- parallel --------------------------------------------------------------------------


def test_jobs_output_equals_jobs_1(run_cli, tmp_path, test_rules):
    for i in range(12):
        body = "flagme()\n" * (i % 3) + ("infome()\n" if i % 2 else "") + (SYNTAX_ERROR if i == 7 else "")
        write(tmp_path / f"pkg{i % 3}" / f"m{i:02d}.py", body)
    one = run_cli(".", "--no-cache", "--jobs", "1", "--format", "json")
    two = run_cli(".", "--no-cache", "--jobs", "2", "--format", "json")
    assert one.exit_code == two.exit_code == 1
    assert one.stdout == two.stdout
    paths = [f["path"] for f in json.loads(one.stdout)]
    assert paths == sorted(paths) and len(paths) == 17


def test_runner_uses_pool_only_when_worth_it(monkeypatch):
    from trainlint import runner

    started = []
    import multiprocessing

    real = multiprocessing.get_context

    def spy(method=None):
        started.append(method)
        return real(method)

    monkeypatch.setattr(multiprocessing, "get_context", spy)
    tasks = [runner.Task(f"f{i}.py", "python", b"x = 1\n", frozenset({"TL000"})) for i in range(3)]
    assert [o.findings for o in runner.run_tasks(tasks, jobs=8)] == [[], [], []]
    assert runner.run_tasks(tasks * 2, jobs=1)[0].findings == []
    assert started == []  # few files, or --jobs 1: in-process
    runner.run_tasks(tasks * 2, jobs=2)
    assert len(started) == 1


# -- the real console script -------------------------------------------------------------


def test_console_script_and_module(tmp_path):
    write(tmp_path / "bad.py", SYNTAX_ERROR)
    exe = Path(sys.executable).with_name("trainlint")
    for cmd in ([str(exe)], [sys.executable, "-m", "trainlint"]):
        p = subprocess.run([*cmd, "bad.py", "--no-cache"], cwd=tmp_path, capture_output=True, text=True)
        assert p.returncode == 1, p.stderr
        assert p.stdout.startswith("bad.py:1:11: TL000")


def test_linter_never_imports_torch(tmp_path):
    write(tmp_path / "t.py", "import torch\nfor x in y:\n    torch.zeros(1)\n")
    code = (
        "import sys\nfrom trainlint.cli import main\n"
        "try:\n    main(['t.py', '--no-cache', '--format', 'json'])\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def test_runner_reads_files_lazily_and_keeps_order():
    # Memory stays flat with the number of files: tasks are pulled as they are linted.
    from trainlint import runner

    pulled = []

    def tasks(n):
        for i in range(n):
            pulled.append(i)
            yield runner.Task(f"f{i}.py", "python", b"x = (\n" if i % 7 == 0 else b"x = 1\n", frozenset({"TL000"}))

    it = runner.iter_outcomes(tasks(50), jobs=1)
    next(it)
    assert pulled == [0]
    pulled.clear()
    outs = list(runner.iter_outcomes(tasks(50), jobs=2, most=50))
    assert [o.display for o in outs] == [f"f{i}.py" for i in range(50)]
    assert [bool(o.findings) for o in outs] == [i % 7 == 0 for i in range(50)]


def test_profiler_gets_its_profile_and_exit_handlers_run(tmp_path):
    # The CLI ends with a fast exit (os._exit) only when nothing waits for it: under
    # cProfile the profile is written after the program returns, so it must return.
    write(tmp_path / "bad.py", SYNTAX_ERROR)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    p = subprocess.run([sys.executable, "-m", "cProfile", "-o", "out.prof", "-m", "trainlint", "bad.py", "--no-cache"],
                       cwd=tmp_path, capture_output=True, text=True, env=env)
    assert "TL000" in p.stdout, p.stderr  # (cProfile swallows the program's exit code)
    import pstats

    stats = pstats.Stats(str(tmp_path / "out.prof"))
    assert any(func[2] == "run_check" for func in stats.stats)  # the profile saw the CLI run
    # `python -m trainlint` itself does take the fast exit (spied on through sitecustomize).
    spy = tmp_path / "spy"
    spy.mkdir()
    (spy / "sitecustomize.py").write_text(
        "import os, sys\n_real = os._exit\n"
        "def _spy(code):\n    sys.stderr.write('fast exit\\n'); sys.stderr.flush(); _real(code)\n"
        "os._exit = _spy\n")
    spy_env = {**env, "PYTHONPATH": os.pathsep.join([str(spy), env["PYTHONPATH"]])}
    p = subprocess.run([sys.executable, "-m", "trainlint", "bad.py", "--no-cache", "-q"], cwd=tmp_path,
                       capture_output=True, text=True, env=spy_env)
    assert p.returncode == 1 and p.stderr == "fast exit\n"
    p = subprocess.run([sys.executable, "-m", "cProfile", "-o", "out2.prof", "-m", "trainlint", "bad.py", "--no-cache", "-q"],
                       cwd=tmp_path, capture_output=True, text=True, env=spy_env)
    assert "fast exit" not in p.stderr and (tmp_path / "out2.prof").exists()
    # atexit handlers run before the fast exit, and the exit code survives it.
    code = ("import atexit, sys\natexit.register(lambda: print('handler ran'))\n"
            "sys.argv = ['trainlint', 'bad.py', '--no-cache', '-q']\nfrom trainlint.cli import main\nmain()\n")
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert p.returncode == 1, p.stderr
    assert p.stdout.endswith("handler ran\n") and p.stdout.startswith("bad.py:1:11: TL000")


def test_help_lists_every_option(run_cli):
    from trainlint.cli import check

    top, sub = run_cli("--help").stdout, run_cli("check", "--help").stdout
    options = [o for p in check.params if p.param_type_name == "option" for o in (*p.opts, *p.secondary_opts)]
    assert {"--no-respect-gitignore", "--show-source", "--no-show-source", "-o", "--output-file", "--color",
            "--add-noqa"} <= set(options)
    for opt in options:
        assert opt in sub, opt
        assert opt in top, opt
