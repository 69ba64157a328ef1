"""The repository is a pre-commit hook repository: prove it with the real `pre-commit try-repo`.

pre-commit clones the hook repository (it needs a git repository with a commit, so
the working tree is copied into a temporary one), installs it into a fresh virtual
environment from PyPI (libcst, click, pathspec) and runs the hook on the files named.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NO_NETWORK_SIGNS = (
    "Could not find a version that satisfies",
    "No matching distribution found",
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Network is unreachable",
)


def _pre_commit() -> list:
    exe = shutil.which("pre-commit") or str(Path(sys.executable).with_name("pre-commit"))
    if not Path(exe).exists():
        pytest.skip("pre-commit is not installed (pip install pre-commit)")
    return [exe]


def _git(cwd: Path, *args: str) -> None:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, env=env)


def _hook_repo(dest: Path) -> Path:
    """The working tree (tracked and untracked, not ignored files) as a fresh one-commit repository."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                            check=True, capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = REPO / rel
        if src.is_file() and not rel.startswith(("tests/", "benchmarks/")):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    _git(dest, "init", "-q")
    _git(dest, "add", "-A")
    _git(dest, "commit", "-q", "-m", "hook")
    return dest


def test_hook_definition_and_light_install():
    yaml = pytest.importorskip("yaml")  # PyYAML comes with pre-commit
    [hook] = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())
    assert hook["id"] == "trainlint" and hook["language"] == "python"
    assert hook["entry"].split()[0] == "trainlint" and "--force-exclude" in hook["entry"].split()
    assert hook["types_or"] == ["python", "jupyter"] and hook["require_serial"] is False
    # The hook environment installs the distribution's base dependencies: never PyTorch.
    if sys.version_info >= (3, 11):
        import tomllib

        deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
        assert not [d for d in deps if d.lower().startswith(("torch", "numpy"))]


def _try_repo(pre_commit, hook: Path, project: Path, home: Path, *files: str):
    env = {**os.environ, "PRE_COMMIT_HOME": str(home), "PRE_COMMIT_COLOR": "never"}
    return subprocess.run([*pre_commit, "try-repo", str(hook), "trainlint", "--files", *files],
                          cwd=project, capture_output=True, text=True, env=env, timeout=540)


@pytest.mark.slow
def test_pre_commit_try_repo(tmp_path):
    pre_commit = _pre_commit()
    hook = _hook_repo(tmp_path / "hook")
    project = tmp_path / "project"
    (project / "gen").mkdir(parents=True)
    (project / "pyproject.toml").write_text('[tool.trainlint]\nexclude = ["gen/"]\n')
    (project / "bad.py").write_text("for x in y\n    pass\n")
    (project / "good.py").write_text("import torch\nx = torch.zeros(3)\n")
    (project / "gen" / "generated.py").write_text("for x in y\n")  # excluded, even when named
    (project / "notes.txt").write_text("for x in y\n")  # not python: pre-commit does not pass it
    _git(project, "init", "-q")
    _git(project, "add", "-A")

    files = ("bad.py", "good.py", "gen/generated.py", "notes.txt")
    r = _try_repo(pre_commit, hook, project, tmp_path / "home", *files)
    out = r.stdout + r.stderr
    if r.returncode not in (0, 1) and any(s in out for s in NO_NETWORK_SIGNS):
        pytest.skip("no network: pre-commit could not install the hook environment from PyPI")
    assert r.returncode == 1, out
    assert "trainlint" in out and "Failed" in out
    assert "bad.py:1:11: TL000 [syntax-error] file does not parse: expected ':'" in out
    assert "generated.py" not in out and "notes.txt" not in out

    r = _try_repo(pre_commit, hook, project, tmp_path / "home", "good.py", "gen/generated.py")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Passed" in r.stdout


@pytest.mark.slow
def test_pre_commit_run_pins_a_tag(tmp_path):
    """The README's configuration: `repo:` the repository, `rev:` a tag you pin.

    The hook repository gets a tag, then a later commit that breaks the hook: pre-commit
    must run the tagged version (a clone at `rev`), not the branch's head.
    """
    pre_commit = _pre_commit()
    hook = _hook_repo(tmp_path / "hook")
    _git(hook, "tag", "v0.0.1-test")
    hooks_yaml = hook / ".pre-commit-hooks.yaml"
    hooks_yaml.write_text(hooks_yaml.read_text().replace("entry: trainlint check", "entry: trainlint-missing check"))
    _git(hook, "commit", "-q", "-am", "after the tag: a broken hook")

    project = tmp_path / "project"
    project.mkdir()
    (project / ".pre-commit-config.yaml").write_text(
        f"repos:\n  - repo: {hook.as_posix()}\n    rev: v0.0.1-test\n    hooks:\n      - id: trainlint\n"
    )
    (project / "bad.py").write_text("for x in y\n    pass\n")
    (project / "good.py").write_text("import torch\nx = torch.zeros(3)\n")
    _git(project, "init", "-q")
    _git(project, "add", "-A")
    env = {**os.environ, "PRE_COMMIT_HOME": str(tmp_path / "home"), "PRE_COMMIT_COLOR": "never"}

    def run(*files):
        return subprocess.run([*pre_commit, "run", "--files", *files], cwd=project,
                              capture_output=True, text=True, env=env, timeout=540)

    r = run("good.py")
    out = r.stdout + r.stderr
    if r.returncode not in (0, 1) and any(s in out for s in NO_NETWORK_SIGNS):
        pytest.skip("no network: pre-commit could not install the hook environment from PyPI")
    assert r.returncode == 0 and "Passed" in r.stdout, out
    r = run("bad.py", "good.py")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "bad.py:1:11: TL000 [syntax-error] file does not parse: expected ':'" in r.stdout
    assert "trainlint-missing" not in r.stdout + r.stderr
