"""[tool.trainlint]: found upwards from the paths, validated, overridden by the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainlint.config import CliOptions, ConfigError, find_config, load_config_file, parse_per_file_ignores, resolve


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def codes(result) -> list:
    return sorted({f["code"] for f in json.loads(result.stdout)})


def test_found_upwards_from_the_paths(tmp_path, test_rules):
    write(tmp_path / "pyproject.toml", '[tool.trainlint]\nselect = ["TL990"]\n')
    write(tmp_path / "pkg" / "sub" / "pyproject.toml", "[project]\nname = 'x'\n")  # no table: skipped
    cfg = find_config([str(tmp_path / "pkg" / "sub" / "a.py")])
    assert cfg.path == tmp_path / "pyproject.toml" and cfg.root == tmp_path
    assert cfg.values == {"select": ["TL990"]}


def test_no_config_means_cwd_root(tmp_path):
    cfg = find_config(["."], cwd=tmp_path)
    assert cfg.path is None and cfg.root == tmp_path and cfg.values == {}


def test_config_applies_and_cli_overrides(run_cli, tmp_path, test_rules):
    write(tmp_path / "pyproject.toml", '[tool.trainlint]\nselect = ["TL99"]\nignore = ["TL991"]\n')
    write(tmp_path / "src" / "a.py", "flagme()\ninfome()\nunsafeme()\n")
    assert codes(run_cli("src", "--format", "json")) == ["TL990", "TL992"]
    # --select replaces the configuration's selection, its ignores included.
    assert codes(run_cli("src", "--format", "json", "--select", "TL991")) == ["TL991"]
    # --ignore and --extend-select adjust it.
    assert codes(run_cli("src", "--format", "json", "--ignore", "TL992")) == ["TL990"]
    assert codes(run_cli("src", "--format", "json", "--extend-select", "TL991")) == ["TL990", "TL991", "TL992"]


def test_config_found_from_a_subfolder_path(run_cli, tmp_path, test_rules, monkeypatch):
    write(tmp_path / "proj" / "pyproject.toml", '[tool.trainlint]\nextend-select = []\nignore = ["TL990"]\n')
    write(tmp_path / "proj" / "pkg" / "a.py", "flagme()\ninfome()\n")
    r = run_cli("proj/pkg/a.py", "--format", "json")
    assert codes(r) == ["TL991"]


def test_output_format_and_per_file_ignores_from_config(run_cli, tmp_path, test_rules):
    write(
        tmp_path / "pyproject.toml",
        '[tool.trainlint]\noutput-format = "json"\n[tool.trainlint.per-file-ignores]\n"tests/*" = ["TL99"]\n"*.ipynb" = ["TL991"]\n',
    )
    write(tmp_path / "tests" / "t.py", "flagme()\n")
    write(tmp_path / "m.py", "flagme()\n")
    r = run_cli(".")
    assert [f["path"] for f in json.loads(r.stdout)] == ["m.py"]
    # --per-file-ignores on the command line replaces the table.
    r = run_cli(".", "--per-file-ignores", "m.py:TL990")
    assert [f["path"] for f in json.loads(r.stdout)] == ["tests/t.py"]


def test_exclude_from_config_and_cli(run_cli, tmp_path, test_rules):
    write(tmp_path / "pyproject.toml", '[tool.trainlint]\nexclude = ["gen/"]\nextend-exclude = ["*_pb2.py"]\n')
    write(tmp_path / "gen" / "a.py", "flagme()\n")
    write(tmp_path / "b_pb2.py", "flagme()\n")
    write(tmp_path / "c.py", "flagme()\n")
    paths = lambda r: [f["path"] for f in json.loads(r.stdout)]  # noqa: E731
    assert paths(run_cli(".", "--format", "json")) == ["c.py"]
    # --exclude replaces `exclude` (gen/ comes back), `extend-exclude` stays.
    assert paths(run_cli(".", "--format", "json", "--exclude", "c.py")) == ["gen/a.py"]


def test_explicit_config_file(run_cli, tmp_path, test_rules):
    write(tmp_path / "pyproject.toml", '[tool.trainlint]\nselect = ["TL990"]\n')
    write(tmp_path / "other.toml", 'select = ["TL991"]\n')
    write(tmp_path / "a.py", "flagme()\ninfome()\n")
    assert codes(run_cli("a.py", "--format", "json", "--config", "other.toml")) == ["TL991"]
    r = run_cli("a.py", "--config", "missing.toml")
    assert r.exit_code == 2 and "config file not found: missing.toml" in r.stderr


@pytest.mark.parametrize(
    "body, message",
    [
        ("selec = ['TL1']", "unknown key 'selec' in [tool.trainlint]"),
        ("select = 3", "'select' must be a list of strings"),
        ("fix = 'yes'", "'fix' must be true or false"),
        ("jobs = -1", "'jobs' must be a non-negative integer"),
        ("output-format = 'xml'", "'output-format' must be one of text, json, sarif, github"),
        ("select = ['TL9999']", "unknown rule code or prefix: 'TL9999'"),
        ("per-file-ignores = ['x']", "'per-file-ignores' must be a table"),
        # A string where a list is expected: refused, never split or taken as one pattern.
        ("select = 'TL1'", """'select' must be a list of strings, e.g. select = ["TL1"]"""),
        ("ignore = 'TL101,TL2'", "'ignore' must be a list of strings"),
        ("extend-select = 'TL4'", "'extend-select' must be a list of strings"),
        ("exclude = 'gen/'", """'exclude' must be a list of strings, e.g. exclude = ["gen/"]"""),
        ("extend-exclude = '*_pb2.py'", "'extend-exclude' must be a list of strings"),
        ("select = ['TL1', 2]", "'select' must be a list of strings"),
        ("[tool.trainlint.per-file-ignores]\n'tests/*' = 'TL101'", """per-file-ignores 'tests/*' must be a list of codes, e.g. "tests/*" = ["TL101"]"""),
    ],
)
def test_bad_values_exit_2_with_one_line(run_cli, tmp_path, body, message):
    write(tmp_path / "pyproject.toml", f"[tool.trainlint]\n{body}\n")
    write(tmp_path / "a.py", "x = 1\n")
    r = run_cli("a.py")
    assert r.exit_code == 2
    assert message in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("trainlint: error: ")


def test_snake_case_keys_are_accepted(tmp_path):
    p = write(tmp_path / "pyproject.toml", "[tool.trainlint]\nextend_select = ['TL1']\ncache_dir = 'c'\n")
    assert load_config_file(p).values == {"extend-select": ["TL1"], "cache-dir": "c"}


def test_cache_dir_relative_to_config_and_cli(tmp_path):
    cfg = load_config_file(write(tmp_path / "pyproject.toml", "[tool.trainlint]\ncache-dir = 'var/cache'\n"))
    assert resolve(cfg, CliOptions()).cache_dir == tmp_path / "var" / "cache"
    assert resolve(cfg, CliOptions(cache_dir=str(tmp_path / "x"))).cache_dir == tmp_path / "x"
    default = load_config_file(write(tmp_path / "sub" / "pyproject.toml", "[tool.trainlint]\n"))
    assert resolve(default, CliOptions()).cache_dir == tmp_path / "sub" / ".trainlint_cache"


def test_jobs_default_is_all_cores(tmp_path):
    from trainlint.config import default_jobs

    cfg = find_config(["."], cwd=tmp_path)
    assert resolve(cfg, CliOptions()).jobs == default_jobs() >= 1
    assert resolve(cfg, CliOptions(jobs=3)).jobs == 3


def test_parse_per_file_ignores():
    assert parse_per_file_ignores(["tests/*:TL101,TL2 scripts/x.py:TL4"]) == {
        "tests/*": ["TL101", "TL2"],
        "scripts/x.py": ["TL4"],
    }
    assert parse_per_file_ignores(["a.py:TL1,b.py:TL2", "a.py:TL3"]) == {"a.py": ["TL1", "TL3"], "b.py": ["TL2"]}
    with pytest.raises(ConfigError):
        parse_per_file_ignores(["TL101"])
    with pytest.raises(ConfigError):
        parse_per_file_ignores(["tests/*:"])


def test_repo_pyproject_is_valid():
    # The project's own [tool.trainlint] table must load (CI lints with it).
    root = Path(__file__).resolve().parents[2]
    cfg = load_config_file(root / "pyproject.toml")
    resolve(cfg, CliOptions())
