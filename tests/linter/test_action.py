"""The composite GitHub Action (action.yml): its shape, and its lint step run for real."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
yaml = pytest.importorskip("yaml")


def _action() -> dict:
    return yaml.safe_load((REPO / "action.yml").read_text(encoding="utf-8"))


def _step(action: dict, name: str) -> dict:
    [step] = [s for s in action["runs"]["steps"] if s.get("name") == name]
    return step


def test_action_is_a_composite_with_the_expected_inputs():
    action = _action()
    assert action["name"] == "trainlint" and action["description"]
    assert action["runs"]["using"] == "composite"
    inputs = action["inputs"]
    assert {"paths", "args", "upload-sarif"} <= set(inputs)
    assert inputs["paths"]["default"] == "." and inputs["upload-sarif"]["default"] == "true"
    assert all(spec.get("description") for spec in inputs.values())
    # Every `run` step names its shell (composite actions require it).
    assert all("shell" in s for s in action["runs"]["steps"] if "run" in s)

    install = _step(action, "Install trainlint")["run"]
    assert "pip install" in install and "$ACTION_PATH" in install and "torch" not in install
    assert _step(action, "Install trainlint")["env"]["ACTION_PATH"] == "${{ github.action_path }}"

    lint = _step(action, "Run trainlint")
    assert "--output-format sarif" in lint["run"] and "--output-file" in lint["run"]
    # Inputs come through the environment, never pasted into the script.
    assert "${{" not in lint["run"]
    assert lint["env"]["TRAINLINT_PATHS"] == "${{ inputs.paths }}" and lint["env"]["TRAINLINT_ARGS"] == "${{ inputs.args }}"

    upload = _step(action, "Upload SARIF to code scanning")
    assert upload["uses"].startswith("github/codeql-action/upload-sarif@")
    assert upload["with"]["sarif_file"] == "${{ inputs.sarif-file }}"
    assert "inputs.upload-sarif == 'true'" in upload["if"]
    # The report is uploaded before the step that fails the job on findings.
    names = [s.get("name") for s in action["runs"]["steps"]]
    assert names.index("Upload SARIF to code scanning") < names.index("Fail on findings")


def _run_lint_step(tmp_path: Path, paths: str, args: str = ""):
    """The action's lint script as the runner would run it: bash, inputs in the environment."""
    if shutil.which("bash") is None:
        pytest.skip("no bash")
    script = _step(_action(), "Run trainlint")["run"]
    out = tmp_path / "github_output"
    out.write_text("")
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    exe = bindir / "trainlint"
    exe.write_text(f"#!/bin/sh\nexec {sys.executable} -m trainlint \"$@\"\n")
    exe.chmod(0o755)
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": str(REPO), "GITHUB_OUTPUT": str(out),
           "TRAINLINT_PATHS": paths, "TRAINLINT_ARGS": args, "SARIF_FILE": "out dir/trainlint.sarif"}
    p = subprocess.run(["bash", "-e", "-c", script], cwd=tmp_path, capture_output=True, text=True, env=env)
    return p, out.read_text()


def test_lint_step_writes_sarif_and_reports_the_exit_code(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "bad.py").write_text("for x in y\n")
    (tmp_path / "ok.py").write_text("x = 1\n")
    p, outputs = _run_lint_step(tmp_path, "src ok.py", "--no-cache")
    assert p.returncode == 0, p.stderr  # findings: the upload still runs, a later step fails
    assert outputs == "exit-code=1\n"
    log = json.loads((tmp_path / "out dir" / "trainlint.sarif").read_text())
    assert [r["ruleId"] for r in log["runs"][0]["results"]] == ["TL000"]
    # A usage error stops the job at once.
    p, outputs = _run_lint_step(tmp_path, "missing_dir")
    assert p.returncode == 2 and outputs == "exit-code=2\n"
