"""Lint many files: cache look-ups, the fix loop, a process pool for the rest, atomic writes.

- Files are read (and hashed for the cache) in the main process; only cache misses
  are linted, so a run where every file hits never imports libcst.
- `--jobs 1`, or fewer than `POOL_MIN_FILES` misses, lints in-process: the
  pre-commit case (a few changed files) pays no pool start-up.
- The pool keeps the input order (`Pool.imap`), so output never depends on `--jobs`.
- Files are read lazily, as the workers ask for more: memory stays flat with the
  number of files (only their findings are kept), 20 000 files as well as 20.
"""

from __future__ import annotations

import collections
import io
import itertools
import os
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Deque, Dict, FrozenSet, Iterable, Iterator, List, Optional, Tuple

from trainlint.finding import Finding
from trainlint.torch_requirement import cache_key_part

if TYPE_CHECKING:  # pragma: no cover
    from trainlint.cache import Cache
    from trainlint.config import Settings
    from trainlint.discovery import SourceFile

MAX_FIX_PASSES = 5
POOL_MIN_FILES = 4

# An unreadable or undecodable file is reported as TL000, like a file that does not parse
# (ruff reports these as a finding too, E902): the run goes on with the other files.
SYNTAX_CODE, SYNTAX_NAME = "TL000", "syntax-error"


@dataclass
class Task:
    display: str
    kind: str  # "python" or "notebook"
    content: bytes
    selected: FrozenSet[str]
    fix_mode: Optional[str] = None  # None, "safe" or "unsafe"
    # Project-wide facts (analysis/project.py): where the file is on disk, the linted root,
    # and the cache folder the other modules' summaries are kept in. No path: facts off.
    path: Optional[str] = None
    root: Optional[str] = None
    cache_dir: Optional[str] = None


@dataclass
class Outcome:
    display: str
    findings: List[Finding] = field(default_factory=list)
    fixed: int = 0
    new_content: Optional[bytes] = None  # the fixed file, when a fix changed it
    changes: List[Tuple[str, str, str]] = field(default_factory=list)  # (label, old, new) for --diff
    error: Optional[str] = None  # an internal error: reported, exit code 2
    warning: Optional[str] = None
    cached: bool = False
    deps: Dict[str, Optional[str]] = field(default_factory=dict)  # see FileResult.deps
    # Set by `lint_files`, for caching after a write.
    path: Optional[Path] = None
    kind: str = "python"
    selected: FrozenSet[str] = frozenset()


def file_error(display: str, message: str) -> Finding:
    return Finding(display, 1, 1, 1, 1, SYNTAX_CODE, SYNTAX_NAME, "error", message)


class SourceError(ValueError):
    pass


def decode_python(content: bytes) -> Tuple[str, str]:
    """Source text and encoding as Python reads it: UTF-8, a BOM, or a PEP 263 coding line.

    Bytes are decoded as they are (no newline translation) so a fix writes back the
    file's own line endings.
    """
    import tokenize

    problem = None
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(content).readline)
    except SyntaxError as exc:
        # A bad coding line, or undecodable bytes in the first two lines: say which.
        encoding, problem = "utf-8", str(getattr(exc, "msg", exc))
    try:
        text = content.decode(encoding)
    except UnicodeDecodeError as exc:
        label = "UTF-8" if encoding in ("utf-8", "utf-8-sig") else encoding
        raise SourceError(f"cannot read file: not valid {label} ({exc.reason} at byte {exc.start})") from None
    except LookupError:
        raise SourceError(f"cannot read file: unknown encoding {encoding!r}") from None
    if problem:
        raise SourceError(f"cannot read file: {problem}")
    return text, encoding


def _project(task: Task):
    if task.path is None:
        return None
    from trainlint.analysis.project import project_for

    return project_for(task.root, task.cache_dir)


def _lint(text: str, task: Task, deps: Dict[str, Optional[str]], **kw):
    from trainlint.engine import lint_text

    r = lint_text(text, task.display, task.selected, project=_project(task), real_path=task.path, **kw)
    deps.update(r.deps)
    return r


def _fix_loop(text: str, task: Task, deps: Dict[str, Optional[str]]):
    """Lint and fix until nothing changes (at most MAX_FIX_PASSES): (remaining findings, text, fixes)."""
    unsafe = task.fix_mode == "unsafe"
    fixed = 0
    for _ in range(MAX_FIX_PASSES):
        r = _lint(text, task, deps, fix=True, unsafe_fixes=unsafe)
        if r.fixed_text is None or r.fixed_text == text:
            return r.findings, text, fixed
        text, fixed = r.fixed_text, fixed + r.fixed_count
    return _lint(text, task, deps).findings, text, fixed


def _lint_python(task: Task) -> Outcome:
    try:
        text, encoding = decode_python(task.content)
    except SourceError as exc:
        return Outcome(task.display, [file_error(task.display, str(exc))])
    deps: Dict[str, Optional[str]] = {}
    if task.fix_mode is None:
        return Outcome(task.display, _lint(text, task, deps).findings, deps=deps)
    findings, new_text, fixed = _fix_loop(text, task, deps)
    out = Outcome(task.display, findings, fixed, deps=deps)
    if new_text != text:
        out.new_content = new_text.encode(encoding)
        out.changes = [(task.display, text, new_text)]
    return out


def _lint_notebook(task: Task) -> Outcome:
    from trainlint import notebook

    try:
        raw = task.content.decode("utf-8-sig")
        nb = notebook.load(raw)
    except UnicodeDecodeError as exc:
        return Outcome(task.display, [file_error(task.display, f"cannot read notebook: not valid UTF-8 ({exc.reason} at byte {exc.start})")])
    except notebook.NotebookError as exc:
        return Outcome(task.display, [file_error(task.display, f"cannot read notebook: {exc}")])
    if nb is None:  # not a Python notebook
        return Outcome(task.display)

    def mapped(findings):
        return [notebook.map_finding(nb, f) for f in _cell_errors(nb, task) + findings]

    deps: Dict[str, Optional[str]] = {}
    if task.fix_mode is None:
        return Outcome(task.display, mapped(_lint(nb.text, task, deps).findings), deps=deps)
    findings, new_text, fixed = _fix_loop(nb.text, task, deps)
    out = Outcome(task.display, mapped(findings), fixed, deps=deps)
    if new_text != nb.text:
        try:
            changes = notebook.cell_changes(nb, new_text)
            new_json = notebook.write_back(nb, new_text)
        except notebook.NotebookError as exc:
            # Never write a notebook whose cells cannot be told apart: report, fix nothing.
            out = Outcome(task.display, mapped(_lint(nb.text, task, deps).findings), deps=deps)
            out.warning = f"{task.display}: fixes not applied: {exc}"
            return out
        if new_json is not None:
            out.new_content = new_json.encode("utf-8")
            out.changes = [(f"{task.display}:cell {n}", old, new) for n, old, new in changes]
    return out


def _cell_errors(nb, task: Task) -> List[Finding]:
    """TL000 for the notebook cells that do not parse (left out of the linted text), when
    TL000 is selected and not disabled for the file."""
    from trainlint import notebook
    from trainlint.suppression import file_disabled_codes, suppressed

    if not nb.cell_errors or (task.selected is not None and "TL000" not in task.selected):
        return []
    if suppressed("TL000", file_disabled_codes(nb.text)):
        return []
    return notebook.cell_syntax_findings(nb, task.display)


def lint_task(task: Task) -> Outcome:
    """Lint one file's content (runs in a worker process when there is a pool)."""
    try:
        if task.kind == "notebook":
            return _lint_notebook(task)
        return _lint_python(task)
    except Exception as exc:  # a bug in a rule must not hide the other files' results
        if os.environ.get("TRAINLINT_DEBUG"):
            raise
        return Outcome(task.display, error=f"{type(exc).__name__}: {exc}")


# Files handed to a worker at a time: small enough to balance the load at the end of a
# run and to keep few file contents in flight, large enough that IPC costs nothing.
POOL_CHUNK = 4


def run_tasks(tasks: Iterable[Task], jobs: int) -> List[Outcome]:
    """Lint tasks, in order; a process pool when there are enough of them."""
    return list(iter_outcomes(tasks, jobs))


def iter_outcomes(tasks: Iterable[Task], jobs: int, most: Optional[int] = None) -> Iterator[Outcome]:
    """Lint tasks lazily, in order; a process pool when there are enough of them.

    `most`: an upper bound on the number of tasks, to start no more workers than files.
    """
    tasks = iter(tasks)
    if jobs <= 1:
        return map(lint_task, tasks)
    head = list(itertools.islice(tasks, POOL_MIN_FILES))
    if len(head) < POOL_MIN_FILES:
        return map(lint_task, head)
    return _pool_map(itertools.chain(head, tasks), min(jobs, most) if most else jobs)


def _pool_map(tasks: Iterator[Task], jobs: int) -> Iterator[Outcome]:
    import multiprocessing

    # Import libcst and the rules before forking: the workers share them instead of each
    # paying the import (the engine itself imports them only for a file that needs parsing).
    from trainlint.registry import all_rules

    all_rules()

    method = "fork" if sys.platform.startswith("linux") else "spawn"
    ctx = multiprocessing.get_context(method)
    with ctx.Pool(jobs) as pool:
        # imap pulls tasks from the iterator as workers free up (the pipe to them is
        # bounded), so files are read as they are needed, never all at once.
        yield from pool.imap(lint_task, tasks, chunksize=POOL_CHUNK)


def _has_applicable_fix(findings: List[Finding], fix_mode: str) -> bool:
    return any(f.fix is not None and (f.fix.applicability == "safe" or fix_mode == "unsafe") for f in findings)


def lint_files(
    files: List["SourceFile"],
    settings: "Settings",
    cache: Optional["Cache"],
    fix_mode: Optional[str] = None,
    progress: Optional[Callable[[int], None]] = None,
) -> List[Outcome]:
    """One outcome per file, in the order of `files`.

    `progress(n)`: called in this thread as results come, n = files finished so far.
    """
    from trainlint.analysis.project import deps_unchanged, new_run
    from trainlint.discovery import rel_to

    new_run()
    trees: Dict[str, Optional[str]] = {}  # project trees checked for cache hits, this run

    root = str(settings.root)
    cache_dir = str(cache.root) if cache is not None else None
    outcomes: List[Optional[Outcome]] = [None] * len(files)
    # (index, cache key, codes) of each task handed out, in order; `iter_outcomes` keeps that order.
    handed: Deque[Tuple[int, Optional[str], FrozenSet[str]]] = collections.deque()

    def tasks() -> Iterator[Task]:
        # With a pool this runs in its task-feeding thread: it only appends to `handed`
        # and fills slots of `outcomes` that nothing else touches.
        for i, sf in enumerate(files):
            try:
                content = sf.path.read_bytes()
            except OSError as exc:
                outcomes[i] = Outcome(sf.display, [file_error(sf.display, f"cannot read file: {exc.strerror or exc}")])
                continue
            selected = settings.selected_for(rel_to(sf.path, settings.root) or sf.path.name)
            key = None
            if cache is not None:
                key = cache.key(content, sf.display, sf.kind, selected, cache_key_part(str(sf.path), selected))
                entry = cache.get_entry(key, sf.display)
                if entry is not None:
                    hit, deps = entry
                    # A result that used other modules' facts holds only while they are unchanged.
                    if not (fix_mode and _has_applicable_fix(hit, fix_mode)) and (not deps or deps_unchanged(deps, trees)):
                        outcomes[i] = Outcome(sf.display, hit, cached=True, path=sf.path, kind=sf.kind, selected=selected, deps=deps)
                        continue
            handed.append((i, key, selected))
            yield Task(sf.display, sf.kind, content, selected, fix_mode, str(sf.path), root, cache_dir)

    for out in iter_outcomes(tasks(), settings.jobs, len(files)):
        i, key, selected = handed.popleft()
        out.path, out.kind, out.selected = files[i].path, files[i].kind, selected
        outcomes[i] = out
        # A fixed file is cached under its new content once written (see `cache_written`).
        if cache is not None and key is not None and out.error is None and out.new_content is None:
            cache.put(key, out.findings, out.deps)
        if progress is not None:
            progress(i + 1)  # results come in order: every file before this one is done
    if progress is not None:
        progress(len(files))
    return [o for o in outcomes if o is not None]


def cache_written(cache: Optional["Cache"], out: Outcome) -> None:
    """After a fix was written: the remaining findings are the new content's result."""
    if cache is not None and out.new_content is not None and out.error is None and out.warning is None:
        project = cache_key_part(str(out.path), out.selected) if out.path is not None else ""
        key = cache.key(out.new_content, out.display, out.kind, out.selected, project)
        cache.put(key, out.findings, out.deps)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace a file's content all at once (temp file in the same folder + rename), keeping its mode."""
    import tempfile

    target = Path(os.path.realpath(path))  # write through a symlink, don't replace it
    mode = stat.S_IMODE(os.stat(target).st_mode)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
