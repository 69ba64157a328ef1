"""A persistent cache of lint results, one small file per (file content, rule set, linter) key.

- The key hashes the file's bytes, its reported path, the codes selected for it, what
  the findings read from other files (the project's resolved torch pin, for TL602),
  the trainlint version, a stamp of the linter's own source files (so an edited
  rule never serves stale results, even without a version bump) and the Python
  version (marshal's format).
- Entries are written to a temporary file and renamed into place: concurrent
  runs never see half an entry; an unreadable entry is a miss.
- Hits refresh the entry's mtime; when the cache grows past `max_entries` the
  oldest entries are removed (least recently used first).
- Values are stored with `marshal` (builtin, no import cost, fast for tuples of
  str/int) — never `pickle`: a cache file is data, not code.
- A result that used facts of other project modules (analysis/project.py) is stored with
  those files' content hashes and served only while they are unchanged; the modules'
  summaries are cached too, under their own content (`get_summary`/`put_summary`).
"""

from __future__ import annotations

import hashlib
import marshal
import os
import sys
from pathlib import Path
from typing import Dict, FrozenSet, List, Optional, Tuple

from trainlint import __version__
from trainlint.finding import Edit, Fix, Finding

FORMAT = "2"
MAX_ENTRIES = 10_000
_TAG = "Signature: 8a477f597d28d172789f06886806bc55\n# This folder is a cache made by trainlint.\n"

_stamp: Optional[str] = None


def code_stamp() -> str:
    """A hash of the linter's source files (names, sizes, mtimes): changes whenever the code does."""
    global _stamp
    if _stamp is None:
        h = hashlib.sha256(f"{__version__}|{FORMAT}|{sys.version_info[:2]}".encode())
        pkg = Path(__file__).resolve().parent
        for dirpath, dirnames, filenames in os.walk(pkg):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            for name in sorted(filenames):
                if name.endswith(".py"):
                    try:
                        st = os.stat(os.path.join(dirpath, name))
                    except OSError:
                        continue
                    h.update(f"{dirpath}/{name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
        _stamp = h.hexdigest()
    return _stamp


def _to_tuple(f: Finding) -> tuple:
    fix = None
    if f.fix is not None:
        edits = tuple((e.line, e.column, e.end_line, e.end_column, e.content) for e in f.fix.edits)
        fix = (f.fix.applicability, f.fix.description, edits)
    return (f.line, f.column, f.end_line, f.end_column, f.cell, f.code, f.name, f.severity, f.message, fix)


def _from_tuple(path: str, t: tuple) -> Finding:
    line, column, end_line, end_column, cell, code, name, severity, message, fix = t
    fix_obj = None
    if fix is not None:
        applicability, description, edits = fix
        fix_obj = Fix(applicability, tuple(Edit(*e) for e in edits), description)
    return Finding(path, line, column, end_line, end_column, code, name, severity, message, cell, fix_obj)


class Cache:
    def __init__(self, directory: Path, max_entries: int = MAX_ENTRIES):
        self.root = Path(directory)
        self.dir = self.root / f"v{FORMAT}"
        # Module summaries (analysis/project.py) apart from lint results; pruned with them.
        self.summary_dir = self.root / f"summaries-v{FORMAT}"
        self.max_entries = max_entries
        self.writes = 0
        self.hits = 0
        self.misses = 0

    def key(self, content: bytes, path: str, kind: str, selected: FrozenSet[str], project: str = "") -> str:
        """`project`: what the findings depend on beyond the file (the resolved torch pin
        from the project's metadata, see `torch_requirement.cache_key_part`)."""
        h = hashlib.sha256()
        h.update(code_stamp().encode())
        h.update(f"\0{path}\0{kind}\0{','.join(sorted(selected))}\0{project}\0".encode())
        h.update(content)
        return h.hexdigest()

    def _file(self, key: str, folder: Optional[Path] = None) -> Path:
        return (folder or self.dir) / key[:2] / key

    def get(self, key: str, path: str) -> Optional[List[Finding]]:
        entry = self.get_entry(key, path)
        return entry[0] if entry is not None else None

    def get_entry(self, key: str, path: str) -> Optional[Tuple[List[Finding], Dict[str, Optional[str]]]]:
        """The findings stored under `key` and the other files they depend on (path -> hash)."""
        data = self._read(key)
        if data is None:
            self.misses += 1
            return None
        try:
            rows, deps = marshal.loads(data)
            findings = [_from_tuple(path, t) for t in rows]
            deps = dict(deps)
        except Exception:  # a damaged entry is a miss, and goes
            self.misses += 1
            self._drop(key)
            return None
        self.hits += 1
        return findings, deps

    def put(self, key: str, findings: List[Finding], deps: Optional[Dict[str, Optional[str]]] = None) -> None:
        self._write(key, marshal.dumps(([_to_tuple(f) for f in findings], dict(deps or {}))))

    # -- module summaries (analysis/project.py), keyed by the module's content alone ----------
    def summary_key(self, content: bytes) -> str:
        h = hashlib.sha256()
        h.update(code_stamp().encode())
        h.update(b"\0summary\0")
        h.update(content)
        return h.hexdigest()

    def get_summary(self, content: bytes) -> Optional[dict]:
        key = self.summary_key(content)
        data = self._read(key, self.summary_dir)
        if data is None:
            return None
        try:
            summary = marshal.loads(data)
        except Exception:
            self._drop(key, self.summary_dir)
            return None
        return summary if isinstance(summary, dict) else None

    def put_summary(self, content: bytes, summary: dict) -> None:
        try:
            data = marshal.dumps(summary)
        except ValueError:  # not plain data: never cache what could not be read back
            return
        self._write(self.summary_key(content), data, self.summary_dir)

    # -- files ---------------------------------------------------------------------------
    def _read(self, key: str, folder: Optional[Path] = None) -> Optional[bytes]:
        f = self._file(key, folder)
        try:
            data = f.read_bytes()
        except OSError:
            return None
        try:
            os.utime(f)  # least recently *used* goes first when pruning
        except OSError:
            pass
        return data

    def _drop(self, key: str, folder: Optional[Path] = None) -> None:
        try:
            self._file(key, folder).unlink()
        except OSError:
            pass

    def _write(self, key: str, data: bytes, folder: Optional[Path] = None) -> None:
        import tempfile

        target = self._file(key, folder)
        try:
            if not self.root.exists():
                self._create_root()
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                os.replace(tmp, target)
            except BaseException:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise
            self.writes += 1
        except OSError:
            # A read-only or full disk only costs speed: the run goes on uncached.
            pass

    def _create_root(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        # Keep the cache out of git and out of backups, like pytest's and ruff's caches.
        for name, text in ((".gitignore", "# Created by trainlint\n*\n"), ("CACHEDIR.TAG", _TAG)):
            p = self.root / name
            if not p.exists():
                p.write_text(text, encoding="utf-8")

    def entries(self) -> List[os.DirEntry]:
        out: List[os.DirEntry] = []
        shards = []
        for folder in (self.dir, self.summary_dir):
            try:
                shards.extend(e for e in os.scandir(folder) if e.is_dir())
            except OSError:
                continue
        for shard in shards:
            try:
                out.extend(e for e in os.scandir(shard.path) if e.is_file() and not e.name.startswith(".tmp-"))
            except OSError:
                continue
        return out

    def prune(self) -> int:
        """Drop the least recently used entries beyond `max_entries` (down to 90%); how many went."""
        if not self.writes:
            return 0
        entries = self.entries()
        if len(entries) <= self.max_entries:
            return 0
        stamped = []
        for e in entries:
            try:
                stamped.append((e.stat().st_mtime_ns, e.path))
            except OSError:
                continue
        stamped.sort()
        removed = 0
        for _, p in stamped[: len(stamped) - int(self.max_entries * 0.9)]:
            try:
                os.unlink(p)
                removed += 1
            except OSError:
                pass
        return removed
