"""TL602 and the project's torch pin: read from metadata files, never from the linted code.

Since PyTorch 2.6 `torch.load` defaults to `weights_only=True`: a missing `weights_only` is
reported where the project allows an older torch, as `info` where its torch version cannot
be read, and not at all where it requires torch >= 2.6.
"""

import json
import textwrap

import pytest

from trainlint import torch_requirement
from trainlint.engine import lint_text
from trainlint.torch_requirement import lower_bound, torch_pin_for

LOAD_FROM_ARGV = """
import argparse
import torch
parser = argparse.ArgumentParser()
parser.add_argument("--ckpt")
args = parser.parse_args()
state = torch.load(args.ckpt, map_location="cpu")
"""


@pytest.fixture(autouse=True)
def fresh_pins():
    torch_requirement.clear_cache()
    yield
    torch_requirement.clear_cache()


def project(tmp_path, files):
    """A repository (a `.git` folder stops the walk) with these metadata files."""
    (tmp_path / ".git").mkdir()
    for name, text in files.items():
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text))
    src = tmp_path / "src" / "train.py"
    src.parent.mkdir(exist_ok=True)
    src.write_text(LOAD_FROM_ARGV)
    return src


def tl602(path, src=LOAD_FROM_ARGV):
    return [f for f in lint_text(textwrap.dedent(src), str(path)).findings if f.code == "TL602"]


@pytest.mark.parametrize(
    "spec,low",
    [(">=2.6", (2, 6)), (">=2.6.0,<3", (2, 6, 0)), ("==2.1.2+cu118", (2, 1, 2)), ("~=2.7", (2, 7)), ("<2.6", None),
     ("^2.6", (2, 6)), ("~2.4", (2, 4)), ("2.6.*", (2, 6)), ("*", None), ("", None), (">1.13, !=2.0.0", (1, 13)),
     (">=2.6; python_version >= '3.9'", (2, 6)), ("==2.6.0rc1", (2, 6, 0))],
)
def test_lower_bound(spec, low):
    assert lower_bound(spec) == low


@pytest.mark.parametrize(
    "files,state",
    [
        ({"requirements.txt": "numpy\ntorch>=2.6.0\n"}, "new"),
        ({"requirements.txt": "torch==2.1.0  # cuda 11.8\n"}, "old"),
        ({"requirements.txt": "torch\n"}, "old"),  # unpinned: an older torch is allowed
        ({"requirements.txt": "torchvision>=0.21\n"}, "unknown"),  # not torch itself
        ({"requirements.txt": "-r requirements/base.txt\n", "requirements/base.txt": "torch>=2.7\n"}, "new"),
        ({"requirements-dev.txt": "torch>=2.6\n", "requirements.txt": "torch>=1.13\n"}, "old"),  # any install path
        ({"pyproject.toml": "[project]\nname='x'\ndependencies=['torch>=2.6,<3']\n"}, "new"),
        ({"pyproject.toml": "[project]\nname='x'\n[project.optional-dependencies]\ngpu=['torch>=2.0']\n"}, "old"),
        ({"pyproject.toml": "[dependency-groups]\ntrain=['torch>=2.8']\n"}, "new"),
        ({"pyproject.toml": "[tool.poetry.dependencies]\npython='^3.10'\ntorch='^2.6'\n"}, "new"),
        ({"pyproject.toml": "[tool.poetry.dependencies]\ntorch={version='>=1.12', source='pytorch'}\n"}, "old"),
        ({"pyproject.toml": "[project]\nname='x'\nrequires-python='>=3.14'\n"}, "new"),  # no torch for 3.14 before 2.9
        ({"pyproject.toml": "[project]\nname='x'\nrequires-python='>=3.10'\n"}, "unknown"),
        ({"setup.cfg": "[options]\ninstall_requires =\n    numpy\n    torch>=2.6\n"}, "new"),
        ({"setup.cfg": "[options.extras_require]\ntrain =\n    torch==1.13.1\n"}, "old"),
        ({"setup.py": "from setuptools import setup\nREQS = ['torch>=2.6']\nsetup(name='x', install_requires=REQS)\n"}, "new"),
        ({"setup.py": "import setuptools\nsetuptools.setup(extras_require={'t': ['torch>=1.8']})\n"}, "old"),
        ({"setup.py": "from setuptools import setup\nsetup(install_requires=open('r.txt').read().split())\n"}, "unknown"),
        ({"requirements.txt": "torch @ https://download.pytorch.org/whl/cu121/torch-2.1.0%2Bcu121-cp310-linux_x86_64.whl\n"}, "old"),
        ({}, "unknown"),
    ],
)
def test_the_pin_is_read_from_the_project_metadata(tmp_path, files, state):
    src = project(tmp_path, files)
    assert torch_pin_for(str(src)).state == state


@pytest.mark.parametrize(
    "name,text",
    [
        ("pyproject.toml", "[project\ndependencies = ['torch>=2.6'"),
        ("setup.cfg", "install_requires = torch>=2.6\n[options\n"),
        ("setup.py", "setup(install_requires=['torch>=2.6'\n"),
        ("requirements.txt", "\x00\xff torch >= \n-r requirements.txt\n"),
        ("pyproject.toml", "[project]\ndependencies = 3\noptional-dependencies = 'x'\n"),
    ],
)
def test_malformed_metadata_counts_as_absent_and_never_crashes(tmp_path, name, text):
    src = project(tmp_path, {name: text})
    assert torch_pin_for(str(src)).state == "unknown"
    [finding] = tl602(src)
    assert finding.severity == "info"


def test_the_nearest_folder_decides_and_the_walk_stops_at_the_repository_root(tmp_path):
    (tmp_path / "requirements.txt").write_text("torch>=2.6\n")  # outside the repository
    repo = tmp_path / "repo"
    repo.mkdir()
    src = project(repo, {"examples/old/requirements.txt": "torch==1.13\n"})
    assert torch_pin_for(str(src)).state == "unknown"
    nested = repo / "examples" / "old" / "train.py"
    nested.write_text(LOAD_FROM_ARGV)
    assert torch_pin_for(str(nested)).state == "old"


def test_a_project_on_torch_2_6_or_later_gets_no_finding_for_a_missing_weights_only(tmp_path):
    src = project(tmp_path, {"pyproject.toml": "[project]\nname='x'\ndependencies=['torch>=2.6']\n"})
    assert tl602(src) == []
    # weights_only=False, and a pickle_module (which turns the default off), are still reported
    explicit = LOAD_FROM_ARGV.replace('map_location="cpu"', "weights_only=False")
    assert len(tl602(src, explicit)) == 1
    with_pickle = LOAD_FROM_ARGV.replace('map_location="cpu"', "pickle_module=dill")
    [f] = tl602(src, with_pickle)
    assert f.severity == "warning" and "pickle_module" in f.message


def test_a_project_allowing_older_torch_gets_a_warning_naming_its_pin(tmp_path):
    src = project(tmp_path, {"requirements.txt": "torch>=1.13\n"})
    [f] = tl602(src)
    assert f.severity == "warning"
    assert "requirements.txt: torch>=1.13" in f.message


def test_an_unreadable_version_gives_info_and_says_so(tmp_path):
    src = project(tmp_path, {})
    [f] = tl602(src)
    assert f.severity == "info"
    assert "torch version could not be read" in f.message


def test_a_saved_namespace_points_the_message_at_add_safe_globals(tmp_path):
    src = project(tmp_path, {"requirements.txt": "torch>=2.0\n"})
    code = LOAD_FROM_ARGV + 'torch.save({"model": model.state_dict(), "args": args}, "ckpt.pt")\n'
    [f] = tl602(src, code)
    assert "argparse.Namespace" in f.message and "add_safe_globals" in f.message
    plain = LOAD_FROM_ARGV + 'torch.save({"model": model.state_dict(), "args": vars(args)}, "ckpt.pt")\n'
    [g] = tl602(src, plain)
    assert "add_safe_globals" not in g.message


def test_reports_show_the_findings_own_severity(run_cli, tmp_path):
    (tmp_path / ".git").mkdir()
    (tmp_path / "train.py").write_text(LOAD_FROM_ARGV)
    rows = json.loads(run_cli("--no-cache", "--output-format", "json", "train.py").output)
    assert [(r["code"], r["severity"]) for r in rows] == [("TL602", "info")]
    sarif = json.loads(run_cli("--no-cache", "--output-format", "sarif", "train.py").output)
    assert [r["level"] for r in sarif["runs"][0]["results"]] == ["note"]
    assert run_cli("--no-cache", "--output-format", "github", "train.py").output.startswith("::notice ")
    (tmp_path / "requirements.txt").write_text("torch==2.2.0\n")
    rows = json.loads(run_cli("--no-cache", "--output-format", "json", "train.py").output)
    assert [(r["code"], r["severity"]) for r in rows] == [("TL602", "warning")]


def test_the_cache_never_serves_findings_of_an_older_pin(run_cli, tmp_path):
    (tmp_path / ".git").mkdir()
    (tmp_path / "train.py").write_text(LOAD_FROM_ARGV)
    (tmp_path / "requirements.txt").write_text("torch==2.2.0\n")
    args = ("--cache-dir", str(tmp_path / "cache"), "--output-format", "json", "train.py")
    assert [r["severity"] for r in json.loads(run_cli(*args).output)] == ["warning"]
    (tmp_path / "requirements.txt").write_text("torch>=2.6\n")  # same file content, new pin
    assert json.loads(run_cli(*args).output) == []
    (tmp_path / "requirements.txt").unlink()
    assert [r["severity"] for r in json.loads(run_cli(*args).output)] == ["info"]
    (tmp_path / "requirements.txt").write_text("torch==2.2.0\n")
    assert [r["severity"] for r in json.loads(run_cli(*args).output)] == ["warning"]
