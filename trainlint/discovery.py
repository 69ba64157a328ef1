"""Which files a run lints: paths given, folders walked (.gitignore and excludes respected).

Exclude patterns use .gitignore syntax (pathspec): a pattern without a slash
(`.venv`, `*_pb2.py`) matches a file or folder of that name at any depth, one
with a slash (`examples/bad_*`) is anchored at the project root.

- Folders are walked in sorted order, symlinked folders are not followed.
- Default excludes (below) and the configured excludes prune the walk; so do
  .gitignore files: the walked folders' own and their parents' up to the
  repository root (the folder holding `.git`).
- A file named explicitly is always linted, whatever its extension, unless
  `--force-exclude` is given and an exclude pattern matches it (pre-commit passes
  every changed file by name). .gitignore never applies to named files.
- A folder named explicitly is walked even when it lies inside an excluded one
  (`trainlint .venv/lib/python3.11/site-packages/pkg`); excludes then apply below it.
  Likewise a .gitignore above it that ignores the folder (or a folder around it, as
  `.venv/` does) does not stop the walk, as in ruff; its other patterns (`*_pb2.py`)
  still apply below it.
- A named path that is neither a regular file nor a folder (a FIFO, a device) is an
  error: reading it could block, and skipping it silently would pass on nothing.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

# Like ruff's defaults: tool caches, virtual environments, build output, VCS folders.
DEFAULT_EXCLUDES = (
    ".bzr",
    ".direnv",
    ".eggs",
    ".git",
    ".git-rewrite",
    ".hg",
    ".ipynb_checkpoints",
    ".mypy_cache",
    ".nox",
    ".pants.d",
    ".pytest_cache",
    ".pytype",
    ".ruff_cache",
    ".svn",
    ".tox",
    ".trainlint_cache",
    ".venv",
    ".vscode",
    "__pycache__",
    "__pypackages__",
    "_build",
    "buck-out",
    "build",
    "dist",
    "node_modules",
    "site-packages",
    "venv",
)

SUFFIXES = {".py": "python", ".ipynb": "notebook"}

# Folders never holding code to lint: pruning them is not worth mentioning when a run
# finds nothing (every repository has a `.git`).
_UNREMARKABLE = frozenset(
    {".git", ".hg", ".svn", ".bzr", "__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache",
     ".trainlint_cache", ".ipynb_checkpoints", ".pytype", ".tox", ".nox"}
)


@dataclass(frozen=True)
class SourceFile:
    path: Path  # absolute
    display: str  # how reports name it: relative to the current folder when below it
    kind: str  # "python" or "notebook"


@dataclass
class Discovered:
    files: List[SourceFile]
    missing: List[str]  # paths given that do not exist
    warnings: List[str]  # folders that could not be read, and the like
    errors: List[str] = field(default_factory=list)  # named paths that cannot be linted (a FIFO)
    # What the walk left out, to say why a run found nothing: "gitignore", "exclude"
    # (folders and .py/.ipynb files pruned) and "force-exclude" (named paths).
    skipped: Counter = field(default_factory=Counter)


def kind_of(path: str) -> str:
    return "notebook" if path.lower().endswith(".ipynb") else "python"


def display_path(path: Path, cwd: Path) -> str:
    try:
        return path.relative_to(cwd).as_posix()
    except ValueError:
        return str(path)


def rel_to(path: Path, base: Path) -> Optional[str]:
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return None


def _spec(lines: Sequence[str]):
    import pathspec  # imported late: only runs that walk or exclude need it

    return pathspec.GitIgnoreSpec.from_lines(list(lines))


class _Ignores:
    """The .gitignore files in force for a folder, nearest last."""

    def __init__(self, specs: Tuple[Tuple[Path, object], ...] = ()):
        self.specs = specs

    def with_folder(self, folder: Path) -> "_Ignores":
        gi = folder / ".gitignore"
        if not gi.is_file():
            return self
        try:
            lines = gi.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return self
        return _Ignores(self.specs + ((folder, _spec(lines)),))

    def uncovering(self, folder: Path) -> "_Ignores":
        """These ignores without the patterns that ignore `folder` or a folder above it.

        For a folder named on the command line: the patterns that would prune the walk
        before it reaches the folder (`.venv/` for `.venv/lib/pkg`) do not apply inside it;
        the others (`gen_*.py`) do. Like ruff (the `ignore` crate never filters the root
        of a walk), and pathspec's git semantics (a folder pattern also matches every path
        below it) would otherwise skip all of the folder's files.
        """
        import pathspec

        specs = []
        for base, spec in self.specs:
            rel = rel_to(folder, base)
            if rel is None or rel == ".":
                specs.append((base, spec))
                continue
            parts = rel.split("/")
            chain = ["/".join(parts[: i + 1]) + "/" for i in range(len(parts))]
            kept = [p for p in spec.patterns if p.include is None or not any(p.match_file(c) for c in chain)]
            if len(kept) != len(spec.patterns):
                spec = pathspec.GitIgnoreSpec(kept)
            specs.append((base, spec))
        return _Ignores(tuple(specs))

    def ignored(self, path: Path, is_dir: bool) -> bool:
        # The nearest .gitignore with a matching pattern decides (negations included).
        for base, spec in reversed(self.specs):
            rel = rel_to(path, base)
            if rel is None:
                continue
            if is_dir:
                rel += "/"
            check = getattr(spec, "check_file", None)
            if check is not None:
                include = check(rel).include
                if include is not None:
                    return bool(include)
            elif spec.match_file(rel):
                return True
        return False


def _git_root(folder: Path) -> Optional[Path]:
    for f in (folder, *folder.parents):
        if (f / ".git").exists():
            return f
    return None


def _parent_ignores(folder: Path, root: Path) -> _Ignores:
    """The .gitignore files above `folder` (itself not included) up to the repository root."""
    top = _git_root(folder)
    if top is None:
        top = root if rel_to(folder, root) is not None else folder
    chain = [f for f in folder.parents if rel_to(f, top) is not None]  # nearest first
    ign = _Ignores()
    for f in reversed(chain):
        ign = ign.with_folder(f)
    return ign


class Excluder:
    def __init__(self, root: Path, patterns: Sequence[str]):
        self.root = root
        self.patterns = list(DEFAULT_EXCLUDES) + list(patterns)
        self._spec = None

    @property
    def spec(self):
        # Built on first use: linting named files without --force-exclude never needs it.
        if self._spec is None:
            self._spec = _spec(self.patterns)
        return self._spec

    def excluded(self, path: Path, is_dir: bool, base: Optional[Path] = None) -> bool:
        rel = rel_to(path, base or self.root)
        if rel == ".":
            return False  # the project root (or a named folder) itself
        if rel is None:
            # Outside the project: anchored patterns cannot apply, match the name alone.
            rel = path.name
        if is_dir:
            rel += "/"
        return self.spec.match_file(rel)


def discover(
    paths: Sequence[str],
    *,
    root: Path,
    exclude: Sequence[str] = (),
    force_exclude: bool = False,
    respect_gitignore: bool = True,
    cwd: Optional[Path] = None,
) -> Discovered:
    cwd = Path(cwd or os.getcwd())
    excluder = Excluder(root, exclude)
    found: Dict[Path, SourceFile] = {}
    missing: List[str] = []
    warnings: List[str] = []
    errors: List[str] = []
    skipped: Counter = Counter()

    def add(p: Path) -> None:
        if p not in found:
            found[p] = SourceFile(p, display_path(p, cwd), kind_of(p.name))

    for given in paths:
        p = Path(os.path.normpath(cwd / given))
        if p.is_file():
            if force_exclude and excluder.excluded(p, False):
                skipped["force-exclude"] += 1
                continue
            add(p)
        elif p.is_dir():
            if force_exclude and excluder.excluded(p, True):
                skipped["force-exclude"] += 1
                continue
            # A named folder inside an excluded one: match excludes below it, not above.
            base = p if (rel_to(p, root) is None or excluder.excluded(p, True)) else root
            ignores = _parent_ignores(p, root).uncovering(p) if respect_gitignore else _Ignores()
            _walk(p, base, excluder, ignores, respect_gitignore, add, warnings, skipped)
        elif p.exists():
            errors.append(f"{given}: not a regular file or folder")
        else:
            missing.append(given)
    files = sorted(found.values(), key=lambda s: s.display)
    return Discovered(files, missing, warnings, errors, skipped)


def _walk(folder: Path, base: Path, excluder: Excluder, ignores: _Ignores, use_gitignore: bool, add, warnings, skipped) -> None:
    if use_gitignore:
        ignores = ignores.with_folder(folder)
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        warnings.append(f"{folder}: cannot read folder: {exc.strerror or exc}")
        return
    for entry in entries:
        path = Path(entry.path)
        try:
            is_dir = entry.is_dir(follow_symlinks=False)
            is_file = not is_dir and entry.is_file()
        except OSError:
            continue
        if is_dir:
            if excluder.excluded(path, True, base):
                if entry.name not in _UNREMARKABLE:
                    skipped["exclude"] += 1
            elif ignores.ignored(path, True):
                skipped["gitignore"] += 1
            else:
                _walk(path, base, excluder, ignores, use_gitignore, add, warnings, skipped)
        elif is_file and os.path.splitext(entry.name)[1].lower() in SUFFIXES:
            if excluder.excluded(path, False, base):
                skipped["exclude"] += 1
            elif ignores.ignored(path, False):
                skipped["gitignore"] += 1
            else:
                add(path)
