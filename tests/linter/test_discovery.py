"""Which files get linted: walking, .gitignore, excludes, explicit files, --force-exclude, order."""

from __future__ import annotations

from pathlib import Path

from trainlint.discovery import discover


def touch(root: Path, *names: str) -> None:
    for n in names:
        p = root / n
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("x = 1\n" if not n.endswith(".ipynb") else '{"cells": []}', encoding="utf-8")


def found(tmp_path, paths=(".",), **kw):
    kw.setdefault("root", tmp_path)
    d = discover(list(paths), cwd=tmp_path, **kw)
    return [f.display for f in d.files]


def test_walk_finds_py_and_ipynb_sorted(tmp_path):
    touch(tmp_path, "b.py", "a.py", "z/nb.ipynb", "z/readme.md", "z/data.json", "m/c.py", "setup.cfg")
    assert found(tmp_path) == ["a.py", "b.py", "m/c.py", "z/nb.ipynb"]
    d = discover(["."], root=tmp_path, cwd=tmp_path)
    assert [f.kind for f in d.files] == ["python", "python", "python", "notebook"]
    assert all(f.path.is_absolute() for f in d.files)


def test_default_excludes(tmp_path):
    touch(tmp_path, "ok.py", ".venv/lib/x.py", "venv/x.py", "build/x.py", "dist/x.py", ".git/x.py",
          "__pycache__/x.py", "node_modules/x.py", ".tox/x.py", "lib/site-packages/pkg/x.py",
          ".ipynb_checkpoints/nb-checkpoint.ipynb", ".trainlint_cache/x.py")
    assert found(tmp_path) == ["ok.py"]


def test_explicit_folder_inside_an_excluded_one_is_linted(tmp_path):
    touch(tmp_path, "env/lib/site-packages/pkg/mod.py", "env/lib/site-packages/pkg/build/gen.py")
    assert found(tmp_path, ["env/lib/site-packages/pkg"]) == ["env/lib/site-packages/pkg/mod.py"]
    assert found(tmp_path, ["env/lib/site-packages/pkg/mod.py"]) == ["env/lib/site-packages/pkg/mod.py"]


def test_gitignore_nested_and_negated(tmp_path):
    (tmp_path / ".git").mkdir()
    touch(tmp_path, "keep.py", "gen_a.py", "sub/gen_b.py", "sub/gen_keep.py", "sub/local.py", "sub/deep/x.py", "out/y.py")
    (tmp_path / ".gitignore").write_text("gen_*.py\nout/\n")
    (tmp_path / "sub" / ".gitignore").write_text("!gen_keep.py\nlocal.py\ndeep/\n")
    assert found(tmp_path) == ["keep.py", "sub/gen_keep.py"]
    # Walking a subfolder still honours the parent's .gitignore (up to the repository root).
    assert found(tmp_path, ["sub"]) == ["sub/gen_keep.py"]


def test_gitignore_does_not_apply_to_named_files(tmp_path):
    touch(tmp_path, "gen_a.py")
    (tmp_path / ".gitignore").write_text("gen_*.py\n")
    assert found(tmp_path) == []
    assert found(tmp_path, ["gen_a.py"]) == ["gen_a.py"]
    assert found(tmp_path, ["gen_a.py"], force_exclude=True) == ["gen_a.py"]  # force-exclude: excludes only


def test_gitignore_can_be_switched_off(tmp_path):
    touch(tmp_path, "gen_a.py")
    (tmp_path / ".gitignore").write_text("gen_*.py\n")
    assert found(tmp_path, respect_gitignore=False) == ["gen_a.py"]


def test_exclude_patterns(tmp_path):
    touch(tmp_path, "examples/bad_1.py", "examples/good.py", "pkg/examples/bad_2.py", "pkg/x_pb2.py", "pkg/y.py")
    # Anchored (has a slash) vs by name anywhere.
    assert found(tmp_path, exclude=["examples/bad_*", "*_pb2.py"]) == ["examples/good.py", "pkg/examples/bad_2.py", "pkg/y.py"]
    assert found(tmp_path, exclude=["examples"]) == ["pkg/x_pb2.py", "pkg/y.py"]


def test_named_files_and_force_exclude(tmp_path):
    touch(tmp_path, "examples/bad_1.py", "build/gen.py", "script")
    # Named files are linted whatever the excludes or the extension...
    assert found(tmp_path, ["examples/bad_1.py", "build/gen.py", "script"], exclude=["examples/"]) == [
        "build/gen.py", "examples/bad_1.py", "script"]
    # ...unless --force-exclude (pre-commit passes every changed file by name).
    assert found(tmp_path, ["examples/bad_1.py", "build/gen.py", "script"], exclude=["examples/"], force_exclude=True) == ["script"]
    assert found(tmp_path, ["examples"], exclude=["examples/"], force_exclude=True) == []


def test_force_exclude_never_excludes_the_project_itself(tmp_path):
    proj = tmp_path / "build" / "proj"  # a project living under a folder named like a default exclude
    touch(proj, "a.py")
    d = discover(["."], root=proj, cwd=proj, force_exclude=True)
    assert [f.display for f in d.files] == ["a.py"]
    d = discover(["a.py"], root=proj, cwd=proj, force_exclude=True)
    assert [f.display for f in d.files] == ["a.py"]


def test_missing_paths_and_duplicates(tmp_path):
    touch(tmp_path, "a.py")
    d = discover(["a.py", "./a.py", ".", "nope.py", "nodir/"], root=tmp_path, cwd=tmp_path)
    assert [f.display for f in d.files] == ["a.py"]
    assert d.missing == ["nope.py", "nodir/"]


def test_paths_outside_cwd_are_shown_absolute(tmp_path):
    touch(tmp_path, "other/a.py", "here/b.py")
    d = discover([str(tmp_path / "other")], root=tmp_path / "here", cwd=tmp_path / "here")
    assert [f.display for f in d.files] == [str(tmp_path / "other" / "a.py")]


def test_symlinked_folders_are_not_followed(tmp_path):
    touch(tmp_path, "pkg/a.py")
    (tmp_path / "pkg" / "loop").symlink_to(tmp_path / "pkg", target_is_directory=True)
    assert found(tmp_path) == ["pkg/a.py"]


def test_cli_respects_gitignore_and_exclude(run_cli, tmp_path):
    touch(tmp_path, "ok.py")
    (tmp_path / "ignored.py").write_text("for x in y\n")
    (tmp_path / "excluded.py").write_text("for x in y\n")
    (tmp_path / ".gitignore").write_text("ignored.py\n")
    r = run_cli(".", "--exclude", "excluded.py")
    assert r.exit_code == 0, r.stdout


def test_named_folder_inside_a_gitignored_one_is_walked(tmp_path):
    # `trainlint .venv/lib/.../torch/optim` in a repository whose .gitignore lists `.venv/`:
    # the folder was asked for by name, so the pattern that hides it does not apply inside it,
    # but the .gitignore's other patterns still do.
    (tmp_path / ".git").mkdir()
    (tmp_path / ".gitignore").write_text("envs/\ngen_*.py\n")
    touch(tmp_path, "envs/lib/pkg/mod.py", "envs/lib/pkg/gen_x.py", "envs/lib/pkg/sub/deep.py", "top.py")
    assert found(tmp_path, ["envs/lib/pkg"]) == ["envs/lib/pkg/mod.py", "envs/lib/pkg/sub/deep.py"]
    assert found(tmp_path, ["envs"]) == ["envs/lib/pkg/mod.py", "envs/lib/pkg/sub/deep.py"]
    # Walking from above, the ignored folder is still pruned.
    assert found(tmp_path) == ["top.py"]
    assert found(tmp_path, ["envs/lib/pkg"], respect_gitignore=False) == [
        "envs/lib/pkg/gen_x.py", "envs/lib/pkg/mod.py", "envs/lib/pkg/sub/deep.py"]


def test_walk_counts_what_it_skipped(tmp_path):
    (tmp_path / ".git").mkdir()
    (tmp_path / ".gitignore").write_text("gen_*.py\nout/\n")
    touch(tmp_path, "gen_a.py", "out/x.py", "build/y.py", "skipme.py", "readme.md")
    d = discover(["."], root=tmp_path, cwd=tmp_path, exclude=["skipme.py"])
    assert d.files == []
    # `.git` is pruned too but is not worth a mention; `build` (a default exclude) is.
    assert d.skipped == {"gitignore": 2, "exclude": 2}
    d = discover(["gen_a.py"], root=tmp_path, cwd=tmp_path, exclude=["gen_*"], force_exclude=True)
    assert d.files == [] and d.skipped == {"force-exclude": 1}


def test_fifo_named_on_the_command_line_is_an_error(tmp_path):
    import os

    import pytest

    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    os.mkfifo(tmp_path / "pipe.py")
    touch(tmp_path, "a.py")
    d = discover(["pipe.py", "a.py"], root=tmp_path, cwd=tmp_path)
    assert d.errors == ["pipe.py: not a regular file or folder"]
    assert [f.display for f in d.files] == ["a.py"]
    # Walking a folder never opens a FIFO: only regular files are collected.
    assert found(tmp_path) == ["a.py"]
