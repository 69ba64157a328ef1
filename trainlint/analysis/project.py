"""Project-wide facts: what other modules of the linted project define, read from disk.

A rule that meets `Net()` imported with `from .models import Net` asks `ctx.project` for
the class: the import is resolved the way Python would find the module (relative imports
from the file's package; absolute ones from the file's folder, the top of its package,
the linted root and its `src/`), the module is read and parsed -- never imported -- and
reduced to a small summary (`summarise`): for each class, what its `forward` returns
(softmax / sigmoid output, see analysis/values.py) and whether it holds a layer that
behaves differently in train and eval mode. A package's `__init__.py` that re-exports a
name (`from .net import Net`) is followed, two hops at most.

Summaries are plain dicts (str/bool/None), cached per file content in the lint cache, so
a one-file pre-commit run reads the other modules' summaries instead of parsing them.
Every file a lint result depended on (read, or looked for and absent) is recorded with
its content hash (`ProjectView.deps`); the cache serves that result again only while
those files are unchanged.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

from trainlint import precheck

if TYPE_CHECKING:  # pragma: no cover
    from trainlint.analysis.context import FileContext
    from trainlint.cache import Cache

SUMMARY_VERSION = 1
MAX_REEXPORT_HOPS = 2
MAX_MODULE_BYTES = 2_000_000  # a generated or data module: not worth parsing for facts
# Roots that are never a project module: PyTorch and its family (see precheck.TORCH_ROOTS),
# and the standard library names a project module would shadow only by accident.
_EXTERNAL_ROOTS = frozenset(precheck.TORCH_ROOTS) | frozenset({
    "numpy", "np", "os", "sys", "math", "random", "json", "re", "time", "typing", "collections",
    "functools", "itertools", "pathlib", "argparse", "logging", "dataclasses", "abc", "copy",
})


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


def summarise(ctx: "FileContext") -> dict:
    """The facts other modules may ask about this one (JSON-able: str keys, str/bool/None)."""
    from trainlint.analysis.evaluation import Evaluation
    from trainlint.analysis.values import SIGMOID, SOFTMAX, _returns_output

    ev = Evaluation(ctx)
    classes: Dict[str, dict] = {}
    for name, cls in ctx.facts.classes.items():
        if cls.function is not None:
            continue  # a class defined inside a function cannot be imported
        entry: dict = {}
        forward = ctx.method(cls, "forward")
        for kind in (SOFTMAX, SIGMOID):
            why = None
            if forward is not None:
                try:
                    why = _returns_output(ctx, forward, kind, 0)
                except RecursionError:
                    why = None
            entry[kind.label] = why
        try:
            entry["mode_layers"] = bool(ev._class_has_mode_layers(cls, set()))
        except RecursionError:
            entry["mode_layers"] = True  # cannot tell: as if it had them
        classes[name] = entry
    # Module-level imports only, for `__init__.py` re-exports (`from .net import Net`).
    return {"v": SUMMARY_VERSION, "classes": classes, "imports": dict(ctx.imports.alias)}


def _read_summary(path: Path, data: bytes) -> dict:
    """Parse a module and summarise it; an empty summary when it cannot be read or parsed."""
    from trainlint.engine import parse_unvalidated
    from trainlint.runner import SourceError, decode_python

    empty = {"v": SUMMARY_VERSION, "classes": {}, "imports": {}}
    if len(data) > MAX_MODULE_BYTES:
        return empty
    try:
        text, _ = decode_python(data)
        module = parse_unvalidated(text)
        from trainlint.analysis.context import FileContext

        return summarise(FileContext(module, text, str(path)))
    except (SourceError, RecursionError, ValueError, MemoryError, SyntaxError):
        return empty
    except Exception as exc:  # libcst's ParserSyntaxError and anything odd: no facts
        if type(exc).__name__ == "ParserSyntaxError":
            return empty
        raise


class Project:
    """The modules of one linted project, read on demand and summarised once per process."""

    def __init__(self, root: Optional[Path] = None, cache: Optional["Cache"] = None) -> None:
        self.root = Path(root).resolve() if root is not None else None
        self.cache = cache
        # content hash -> summary: a module is parsed once per process, and an edited
        # module (a long-lived process, a test) is never served its old summary.
        self._summaries: Dict[str, dict] = {}

    def module(self, path: Path) -> Tuple[Optional[str], Optional[dict]]:
        """(content hash, summary) of the module file at `path`; (None, None) when there is none."""
        try:
            data = path.read_bytes() if path.is_file() else None
        except OSError:
            data = None
        if data is None:
            return None, None
        h = content_hash(data)
        summary = self._summaries.get(h)
        if summary is None:
            summary = self.cache.get_summary(data) if self.cache is not None else None
            if summary is None:
                summary = _read_summary(path, data)
                if self.cache is not None:
                    self.cache.put_summary(data, summary)
            self._summaries[h] = summary
        return h, summary

    def search_roots(self, file: Path) -> List[Path]:
        """Where an absolute import from `file` may be found: its folder (a script's
        `sys.path[0]`), the folder above its top-most package, the linted root and its src/."""
        roots = [file.parent]
        top = file.parent
        while (top / "__init__.py").is_file() and top.parent != top:
            top = top.parent
        roots.append(top)
        if self.root is not None:
            roots.extend([self.root, self.root / "src"])
        out: List[Path] = []
        for r in roots:
            if r not in out and r.is_dir():
                out.append(r)
        return out

    def view(self, path: str) -> "ProjectView":
        return ProjectView(self, Path(os.path.abspath(path)))


class ProjectView:
    """The project as one file sees it: its imports resolved to other modules' summaries."""

    def __init__(self, project: Project, path: Path) -> None:
        self.project = project
        self.path = path
        self.deps: Dict[str, Optional[str]] = {}  # every file consulted -> its hash (None: absent)
        self._roots: Optional[List[Path]] = None
        self._seen: Dict[str, Tuple[Optional[str], Optional[dict]]] = {}

    def _module(self, path: Path) -> Optional[dict]:
        key = str(path)
        known = self._seen.get(key)
        if known is None:
            known = self._seen[key] = self.project.module(path)
            self.deps[key] = known[0]
        return known[1]

    def _module_file(self, base: Path, parts: List[str]) -> Optional[Tuple[Path, dict]]:
        """`base/a/b.py` or `base/a/b/__init__.py` (`parts` empty: `base/__init__.py`)."""
        if parts:
            candidates = [base.joinpath(*parts[:-1], parts[-1] + ".py"), base.joinpath(*parts, "__init__.py")]
        else:
            candidates = [base / "__init__.py"]
        for c in candidates:
            summary = self._module(c)
            if summary is not None:
                return c, summary
        return None

    def class_summary(self, qualname: Optional[str]) -> Optional[Tuple[dict, str]]:
        """The summary of the project class `qualname` (as the file's imports spell it:
        `.models.Net`, `models.net.Net`), and where it is defined; None when it is not a
        class of a project module that can be found."""
        if not qualname:
            return None
        return self._resolve(qualname, self.path, 0)

    def _resolve(self, qualname: str, importer: Path, hops: int) -> Optional[Tuple[dict, str]]:
        level = len(qualname) - len(qualname.lstrip("."))
        parts = qualname[level:].split(".") if qualname[level:] else []
        if not parts:
            return None
        name, mod = parts[-1], parts[:-1]
        if level:
            base = importer.parent
            for _ in range(level - 1):
                base = base.parent
            bases = [base]
        else:
            if mod and mod[0] in _EXTERNAL_ROOTS or not mod:
                return None
            if importer == self.path:
                if self._roots is None:
                    self._roots = self.project.search_roots(self.path)
                bases = self._roots
            else:
                bases = self.project.search_roots(importer)
        for base in bases:
            found = self._module_file(base, mod)
            if found is None:
                continue
            file, summary = found
            # The first module found is the one Python would import: stop here either way.
            cls = summary.get("classes", {}).get(name)
            if cls is not None:
                return cls, self._display(file)
            again = summary.get("imports", {}).get(name)
            if again and hops < MAX_REEXPORT_HOPS:
                return self._resolve(again, file, hops + 1)
            return None
        return None

    def _display(self, file: Path) -> str:
        root = self.project.root
        try:
            return str(file.relative_to(root)) if root is not None else file.name
        except ValueError:
            return file.name


def deps_unchanged(deps: Dict[str, Optional[str]]) -> bool:
    """Every file a cached result depended on is as it was (absent ones still absent)."""
    for path, h in deps.items():
        try:
            data = Path(path).read_bytes()
        except OSError:
            data = None
        if (content_hash(data) if data is not None else None) != h:
            return False
    return True


_PROJECTS: Dict[Tuple[Optional[str], Optional[str]], Project] = {}


def project_for(root: Optional[str], cache_dir: Optional[str]) -> Project:
    """One Project per (root, cache) per process: a worker keeps its summaries across files."""
    key = (root, cache_dir)
    p = _PROJECTS.get(key)
    if p is None:
        cache = None
        if cache_dir is not None:
            from trainlint.cache import Cache

            cache = Cache(Path(cache_dir))
        p = _PROJECTS[key] = Project(Path(root) if root else None, cache)
    return p
