"""Which PyTorch versions a project allows, read from its metadata files (never imported).

Since PyTorch 2.6 `torch.load` defaults to `weights_only=True`, so whether a `torch.load`
without the argument is unsafe depends on the torch the project installs (TL602). Starting
from the linted file's folder and going up, the first folder whose metadata names torch
decides:
- `pyproject.toml`: `[project]` dependencies, optional dependencies and `requires-python`,
  PEP 735 `[dependency-groups]`, Poetry's `[tool.poetry.dependencies]` (and groups);
- `setup.cfg`: `[options] install_requires` / `python_requires`, `[options.extras_require]`;
- `setup.py`: literal `install_requires` / `extras_require` / `python_requires` of the
  `setup()` call (read with `ast`, never run);
- `requirements*.txt` (and `requirements/*.txt`), following `-r` includes in the folder.
The walk stops at the repository root (a `.git` entry), at a package root (a folder with
pyproject.toml, setup.cfg or setup.py) and at the home folder. A malformed file counts as
absent. Results are cached per folder for the process; `TorchPin.key` goes into the lint
cache's key, so a changed pin never serves stale findings.
"""

from __future__ import annotations

import ast
import configparser
import os
import re
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Tuple

# PyTorch 2.6: torch.load's weights_only default became True.
SAFE_DEFAULT = (2, 6)
# The first torch with wheels for a Python version, for projects that pin only Python.
_TORCH_FOR_PYTHON = {(3, 14): (2, 9)}
_MAX_BYTES = 1 << 20  # metadata files are small; anything bigger is not one
_PROJECT_FILES = ("pyproject.toml", "setup.cfg", "setup.py")

_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*)$")
_SPECIFIER = re.compile(r"(~=|===|==|!=|<=|>=|<|>)\s*([0-9][0-9A-Za-z.*+!-]*)")
_URL_VERSION = re.compile(r"torch-(\d+(?:\.\d+)+)")


@dataclass(frozen=True)
class TorchPin:
    """`state`: "new" (every torch the project allows loads weights-only by default),
    "old" (it allows an older torch), "unknown" (no pin found). `source` says where."""

    state: str
    source: str = ""

    @property
    def key(self) -> str:
        return f"{self.state}:{self.source}"


UNKNOWN = TorchPin("unknown")


def version_tuple(text: str) -> Optional[Tuple[int, ...]]:
    parts = []
    for piece in text.split("."):
        m = re.match(r"\d+", piece)
        if m is None:
            break
        parts.append(int(m.group()))
        if m.end() != len(piece):
            break  # `0rc1`, `0+cu124`: the rest is not a release number
    return tuple(parts) if parts else None


def lower_bound(spec: str) -> Optional[Tuple[int, ...]]:
    """The lowest version a PEP 440 specifier set (or a Poetry constraint) admits; None when
    it has no lower bound."""
    spec = spec.split(";", 1)[0].strip()
    if not spec or spec == "*":
        return None
    if spec[0] in "^~" and spec[:2] != "~=":  # Poetry: ^2.6, ~2.6
        return version_tuple(spec[1:].strip())
    if spec[0].isdigit():  # Poetry: a bare version means ==
        return version_tuple(spec.rstrip(".*"))
    best: Optional[Tuple[int, ...]] = None
    for op, ver in _SPECIFIER.findall(spec):
        if op in ("<", "<=", "!="):
            continue
        v = version_tuple(ver.rstrip(".*"))
        if v is not None and (best is None or v > best):
            best = v
    return best


def _requirement_state(line: str) -> Optional[str]:
    """"new"/"old" for a requirement on torch, None for anything else."""
    m = _REQUIREMENT.match(line)
    if m is None or m.group(1).lower() != "torch":
        return None
    rest = m.group(3).strip()
    if rest.startswith("@"):  # a direct URL: the wheel's name carries the version
        found = _URL_VERSION.search(rest)
        low = version_tuple(found.group(1)) if found else None
    else:
        low = lower_bound(rest)
    return "new" if low is not None and low >= SAFE_DEFAULT else "old"


def _python_state(spec: Optional[str]) -> Optional[str]:
    low = lower_bound(spec) if isinstance(spec, str) else None
    if low is None:
        return None
    for py, torch in _TORCH_FOR_PYTHON.items():
        if low >= py and torch >= SAFE_DEFAULT:
            return "new"
    return None


# -- readers: each returns (torch requirement strings, requires-python or None) -------------
def _read(path: str) -> Optional[str]:
    try:
        if os.path.getsize(path) > _MAX_BYTES:
            return None
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return None


def _strings(value) -> List[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        return [v for v in value if isinstance(v, str)]
    return []


def _pyproject(text: str) -> Tuple[List[str], Optional[str]]:
    try:
        import tomllib  # type: ignore[import-not-found]
    except ImportError:  # Python < 3.11
        import tomli as tomllib  # type: ignore[no-redef]
    data = tomllib.loads(text)
    reqs: List[str] = []
    project = data.get("project") if isinstance(data.get("project"), dict) else {}
    reqs += _strings(project.get("dependencies"))
    extras = project.get("optional-dependencies")
    if isinstance(extras, dict):
        for group in extras.values():
            reqs += _strings(group)
    groups = data.get("dependency-groups")
    if isinstance(groups, dict):
        for group in groups.values():
            reqs += _strings(group)
    python = project.get("requires-python") if isinstance(project.get("requires-python"), str) else None
    poetry = data.get("tool", {}).get("poetry", {}) if isinstance(data.get("tool"), dict) else {}
    if isinstance(poetry, dict):
        tables = [poetry.get("dependencies"), poetry.get("dev-dependencies")]
        if isinstance(poetry.get("group"), dict):
            tables += [g.get("dependencies") for g in poetry["group"].values() if isinstance(g, dict)]
        for table in tables:
            if not isinstance(table, dict):
                continue
            for name, constraint in table.items():
                if isinstance(constraint, dict):
                    constraint = constraint.get("version", "")
                if not isinstance(constraint, str):
                    continue
                if name.lower() == "torch":
                    reqs.append(_poetry_requirement(constraint))
                elif name.lower() == "python" and python is None:
                    python = _poetry_python(constraint)
    return reqs, python


def _poetry_requirement(constraint: str) -> str:
    c = constraint.strip()
    if c[:1] in "^~" and c[:2] != "~=" or c[:1].isdigit():
        low = lower_bound(c)
        return "torch>=" + ".".join(map(str, low)) if low else "torch"
    return "torch" + ("" if c == "*" else c)


def _poetry_python(constraint: str) -> str:
    low = lower_bound(constraint.strip())
    return ">=" + ".".join(map(str, low)) if low else ""


def _setup_cfg(text: str) -> Tuple[List[str], Optional[str]]:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(text)
    reqs: List[str] = []
    python = None
    if parser.has_section("options"):
        reqs += parser.get("options", "install_requires", fallback="").splitlines()
        python = parser.get("options", "python_requires", fallback=None)
    if parser.has_section("options.extras_require"):
        for _, value in parser.items("options.extras_require"):
            reqs += value.splitlines()
    return reqs, python


def _setup_py(text: str) -> Tuple[List[str], Optional[str]]:
    tree = ast.parse(text)
    lists: Dict[str, ast.AST] = {}
    for node in tree.body:  # `REQUIRES = [...]` at module level, used as `install_requires=REQUIRES`
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            lists[node.targets[0].id] = node.value
    reqs: List[str] = []
    python = None
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        if name != "setup":
            continue
        for kw in node.keywords:
            value = lists.get(kw.value.id, kw.value) if isinstance(kw.value, ast.Name) else kw.value
            if kw.arg == "install_requires":
                reqs += _literal_strings(value)
            elif kw.arg == "extras_require" and isinstance(value, ast.Dict):
                for v in value.values:
                    reqs += _literal_strings(lists.get(v.id, v) if isinstance(v, ast.Name) else v)
            elif kw.arg == "python_requires" and isinstance(value, ast.Constant) and isinstance(value.value, str):
                python = value.value
    return reqs, python


def _literal_strings(node: ast.AST) -> List[str]:
    if isinstance(node, (ast.List, ast.Tuple)):
        return [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
    return []


def _requirements_txt(path: str, folder: str, seen: set) -> List[str]:
    real = os.path.realpath(path)
    if real in seen or len(seen) > 20:
        return []
    seen.add(real)
    text = _read(path)
    if text is None:
        return []
    out: List[str] = []
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(("-r ", "--requirement ", "-c ", "--constraint ")):
            target = line.split(None, 1)[1].strip() if len(line.split(None, 1)) > 1 else ""
            inner = os.path.normpath(os.path.join(os.path.dirname(path), target))
            if target and os.path.dirname(inner).startswith(folder):
                out += _requirements_txt(inner, folder, seen)
            continue
        if line.startswith("-"):
            continue  # --index-url, -e ., --extra-index-url ...
        out.append(line)
    return out


def _folder_files(folder: str) -> List[str]:
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return []
    found = [n for n in names if n in _PROJECT_FILES or (n.startswith("requirements") and n.endswith(".txt"))]
    sub = os.path.join(folder, "requirements")
    if "requirements" in names and os.path.isdir(sub):
        try:
            found += [os.path.join("requirements", n) for n in sorted(os.listdir(sub)) if n.endswith(".txt")]
        except OSError:
            pass
    return found


def _folder_pin(folder: str) -> Optional[TorchPin]:
    """What this folder's own metadata says about torch (None: nothing)."""
    states: List[Tuple[str, str]] = []
    python_states: List[Tuple[str, str]] = []
    seen: set = set()
    for name in _folder_files(folder):
        path = os.path.join(folder, name)
        try:
            if name.endswith(".txt"):
                reqs, python = _requirements_txt(path, folder, seen), None
            else:
                text = _read(path)
                if text is None:
                    continue
                reader = {"pyproject.toml": _pyproject, "setup.cfg": _setup_cfg, "setup.py": _setup_py}[name]
                reqs, python = reader(text)
        except Exception:  # noqa: BLE001 - a malformed metadata file counts as absent, never a crash
            continue
        for req in reqs:
            state = _requirement_state(req)
            if state is not None:
                shown = req.split(";", 1)[0].strip()
                if shown.lower() == "torch":
                    shown = "torch, no version"
                states.append((state, f"{name.replace(os.sep, '/')}: {shown}"))
        py = _python_state(python)
        if py is not None:
            python_states.append((py, f"{name}: requires-python {python}"))
    if states:
        # One install path that allows an older torch is enough for the unsafe default.
        old = [s for s in states if s[0] == "old"]
        return TorchPin("old", old[0][1]) if old else TorchPin("new", states[0][1])
    if python_states:
        return TorchPin(*python_states[0])
    return None


_cache: Dict[str, TorchPin] = {}


def torch_pin_for(path: str) -> TorchPin:
    """The torch pin that governs the file at `path` (a file name, relative to the current
    folder or absolute; "-" for standard input: the current folder)."""
    try:
        folder = os.getcwd() if path in ("-", "") else os.path.dirname(os.path.abspath(path))
        return _pin_of(folder)
    except (OSError, ValueError):  # a vanished current folder, a path with a NUL byte
        return UNKNOWN


def _pin_of(folder: str) -> TorchPin:
    found = _cache.get(folder)
    if found is not None:
        return found
    chain: List[str] = []
    pin = UNKNOWN
    current = folder
    home = os.path.expanduser("~")
    for _ in range(64):
        if current in _cache:
            pin = _cache[current]
            break
        chain.append(current)
        own = _folder_pin(current) if os.path.isdir(current) else None
        if own is not None:
            pin = own
            break
        if _is_root(current) or current == home:
            break
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    for f in chain:
        _cache[f] = pin
    return pin


def _is_root(folder: str) -> bool:
    return any(os.path.exists(os.path.join(folder, n)) for n in (".git", *_PROJECT_FILES))


def clear_cache() -> None:
    _cache.clear()


# Rules whose findings depend on the project's torch pin, not only on the file's text.
PIN_DEPENDENT_CODES = frozenset({"TL602"})


def cache_key_part(path: str, selected: Iterable[str]) -> str:
    """What the lint cache must add to a file's key: the resolved pin, when a selected rule
    reads it (a pin changed in requirements.txt must not serve the old findings)."""
    if PIN_DEPENDENT_CODES.isdisjoint(selected):
        return ""
    return torch_pin_for(path).key
