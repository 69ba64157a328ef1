"""The persistent cache: hits, misses, invalidation, location, damage, size bound, concurrency."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
from pathlib import Path

import pytest

from trainlint import cache as cache_mod
from trainlint.cache import Cache
from trainlint.finding import Edit, Fix, Finding


@pytest.fixture
def no_engine(monkeypatch):
    """Make linting impossible: a run that still succeeds was served from the cache."""
    import trainlint.engine

    def boom(*a, **k):
        raise AssertionError("the engine ran: cache miss")

    monkeypatch.setattr(trainlint.engine, "lint_text", boom)


def entries(folder: Path):
    return sorted(p for p in (folder / f"v{cache_mod.FORMAT}").rglob("*") if p.is_file())


def test_second_run_is_served_from_the_cache(run_cli, tmp_path, test_rules, monkeypatch):
    (tmp_path / "a.py").write_text("flagme()\n")
    (tmp_path / "b.py").write_text("for x in y\n")
    first = run_cli(".", "--format", "json")
    assert len(entries(tmp_path / ".trainlint_cache")) == 2
    import trainlint.engine

    monkeypatch.setattr(trainlint.engine, "lint_text", lambda *a, **k: (_ for _ in ()).throw(AssertionError("miss")))
    second = run_cli(".", "--format", "json")
    assert second.stdout == first.stdout and second.exit_code == first.exit_code == 1
    # The cached findings carry their fixes (JSON shows them).
    assert json.loads(second.stdout)[0]["fix"]["applicability"] == "safe"


def test_changed_content_is_a_miss(run_cli, tmp_path, test_rules):
    p = tmp_path / "a.py"
    p.write_text("flagme()\n")
    assert run_cli("a.py").exit_code == 1
    p.write_text("x = 1\n")
    assert run_cli("a.py").exit_code == 0


def test_selection_and_linter_code_are_part_of_the_key(run_cli, tmp_path, test_rules, monkeypatch):
    (tmp_path / "a.py").write_text("flagme()\ninfome()\n")
    run_cli("a.py")
    r = run_cli("a.py", "--select", "TL991", "--format", "json")
    assert [f["code"] for f in json.loads(r.stdout)] == ["TL991"]
    n = len(entries(tmp_path / ".trainlint_cache"))
    monkeypatch.setattr(cache_mod, "_stamp", "a-new-trainlint")  # e.g. an edited rule
    run_cli("a.py")
    assert len(entries(tmp_path / ".trainlint_cache")) == n + 1


def test_code_stamp_changes_with_the_source(tmp_path, monkeypatch):
    monkeypatch.setattr(cache_mod, "_stamp", None)
    a = cache_mod.code_stamp()
    monkeypatch.setattr(cache_mod, "_stamp", None)
    monkeypatch.setattr(cache_mod, "__version__", "99.0")
    assert cache_mod.code_stamp() != a


def test_no_cache_and_cache_dir(run_cli, tmp_path):
    (tmp_path / "a.py").write_text("x = 1\n")
    run_cli("a.py", "--no-cache")
    assert not (tmp_path / ".trainlint_cache").exists()
    run_cli("a.py", "--cache-dir", "elsewhere")
    assert len(entries(tmp_path / "elsewhere")) == 1
    assert (tmp_path / "elsewhere" / "CACHEDIR.TAG").is_file()
    assert (tmp_path / "elsewhere" / ".gitignore").read_text().strip().endswith("*")


def test_default_cache_is_beside_the_config(run_cli, tmp_path):
    (tmp_path / "proj" / "pkg").mkdir(parents=True)
    (tmp_path / "proj" / "pyproject.toml").write_text("[tool.trainlint]\n")
    (tmp_path / "proj" / "pkg" / "a.py").write_text("x = 1\n")
    run_cli("proj/pkg")
    assert entries(tmp_path / "proj" / ".trainlint_cache")
    assert not (tmp_path / ".trainlint_cache").exists()


def test_fix_is_not_skipped_by_a_cache_hit_and_result_is_cached(run_cli, tmp_path, test_rules, monkeypatch):
    p = tmp_path / "a.py"
    p.write_text("flagme()\ninfome()\n")
    run_cli("a.py")  # cached, with a fixable finding
    r = run_cli("a.py", "--fix")
    assert p.read_text() == "fixed()\ninfome()\n"
    assert "(1 fixed, 1 remaining)" in r.stdout
    import trainlint.engine

    monkeypatch.setattr(trainlint.engine, "lint_text", lambda *a, **k: (_ for _ in ()).throw(AssertionError("miss")))
    r = run_cli("a.py", "--fix")  # the written file's result was cached: no lint, nothing to fix
    assert r.exit_code == 1 and "a.py:2:1: TL991" in r.stdout


def test_damaged_entry_is_a_miss(tmp_path):
    c = Cache(tmp_path / "c")
    key = c.key(b"x", "a.py", "python", frozenset({"TL000"}))
    f = Finding("a.py", 1, 2, 1, 5, "TL990", "n", "warning", "m", None, Fix("safe", (Edit(1, 2, 1, 5, "y"),), "d"))
    c.put(key, [f])
    assert c.get(key, "a.py") == [f]
    c._file(key).write_bytes(b"\x00garbage")
    assert c.get(key, "a.py") is None
    assert not c._file(key).exists()


def test_unwritable_cache_does_not_fail_the_run(run_cli, tmp_path):
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "blocker").write_text("a file where the cache folder should be")
    r = run_cli("a.py", "--cache-dir", "blocker/cache")
    assert r.exit_code == 0


def test_size_is_bounded_oldest_go_first(tmp_path):
    import os

    c = Cache(tmp_path / "c", max_entries=10)
    keys = [c.key(str(i).encode(), "a.py", "python", frozenset()) for i in range(15)]
    for i, k in enumerate(keys):
        c.put(k, [])
        os.utime(c._file(k), ns=(i * 10**9, i * 10**9))
    c.get(keys[0], "a.py")  # used now: the least recently used go first, not this one
    assert c.prune() == 6
    left = {p.name for p in entries(tmp_path / "c")}
    assert len(left) == 9 and keys[0] in left and keys[1] not in left and keys[14] in left


def _hammer(args):
    folder, worker = args
    c = Cache(Path(folder))
    for i in range(200):
        k = c.key(str(i % 20).encode(), "a.py", "python", frozenset())
        c.put(k, [Finding("a.py", i % 20 + 1, 1, 1, 1, "TL000", "syntax-error", "error", "m" * 100)])
        got = c.get(k, "a.py")
        assert got is not None and got[0].line == i % 20 + 1
    return worker


def test_concurrent_writers_never_see_half_an_entry(tmp_path):
    ctx = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    with ctx.Pool(4) as pool:
        assert sorted(pool.map(_hammer, [(str(tmp_path / "c"), w) for w in range(4)])) == [0, 1, 2, 3]
    assert len(entries(tmp_path / "c")) == 20  # no temp files left behind


def test_all_hits_never_import_the_engine(tmp_path):
    (tmp_path / "a.py").write_text("import torch\nx = torch.zeros(1)\n")
    (tmp_path / "b.py").write_text("for x in y\n")
    code = (
        "import sys\nfrom trainlint.cli import main\n"
        "try:\n    main(['.'])\nexcept SystemExit as e:\n    assert e.code == 1, e.code\n"
        "print(sorted(m for m in ('trainlint.engine', 'trainlint.fixes') if m in sys.modules))\n"
    )
    run = lambda: subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)  # noqa: E731
    first, second = run(), run()
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert first.stdout.splitlines()[-1] != "[]"  # the first run lints...
    assert second.stdout.splitlines()[-1] == "[]"  # ...the second is all hits
    assert first.stdout.splitlines()[:-1] == second.stdout.splitlines()[:-1]
