"""Ecosystem check: lint a pinned corpus of real training code and compare with judged findings.

Run by hand (never in CI):

    python benchmarks/ecosystem/check.py --cache DIR [--mirror DIR] [--repo NAME ...]
        [--rules CODES] [--update-baseline] [--strict] [--show new|unjudged|all]

- `corpus.toml` pins every code base (a GitHub repository at a full commit sha, or a PyPI
  sdist/wheel at a version); `--cache DIR` (outside this repository) receives the files.
- `baseline.tsv` holds one line per finding the linter reported when it was last updated,
  with a verdict (true / false / debatable / unjudged) and a one-line reason.
- A finding is matched to the baseline by a fingerprint that survives line shifts: a hash
  of the rule code, the file's path, the whitespace-normalised text of the finding's first
  line and an occurrence index (the n-th finding of that code on that same text in that file).

The pure parts (fingerprints, comparison, precision) are unit-tested in
tests/benchmarks/test_ecosystem.py; the rest shells out to git, pip and trainlint.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - older Pythons use the backport
    import tomli as tomllib

HERE = Path(__file__).resolve().parent
PROJECT_ROOT = HERE.parents[1]
CORPUS = HERE / "corpus.toml"
BASELINE = HERE / "baseline.tsv"

VERDICTS = ("true", "false", "debatable", "unjudged")
BASELINE_COLUMNS = ("repo", "path", "line", "code", "fingerprint", "verdict", "reason")
# Files the linter reads (sources, notebooks) or may read for context (configuration,
# dependency pins); nothing else of a repository is copied into the cache.
_KEEP_SUFFIXES = (".py", ".ipynb")
_KEEP_NAMES = ("pyproject.toml", "setup.cfg", ".gitignore")
_SHA = re.compile(r"^[0-9a-f]{40}$")
_MARKER = ".ecosystem-source"


# --------------------------------------------------------------------------- corpus


@dataclass(frozen=True)
class Entry:
    name: str
    kind: str  # "github" | "pypi"
    source: str  # owner/repo, or the PyPI project name
    pin: str  # commit sha, or version
    subpaths: Tuple[str, ...] = ()
    package: str = "sdist"  # PyPI: "sdist" or "wheel"
    shape: str = ""
    exclude: Tuple[str, ...] = ()  # files left out (paths in the project), e.g. ones a mirror lacks


    @property
    def stamp(self) -> str:
        sub = ",".join(self.subpaths)
        left_out = ",".join(self.exclude)
        return f"{self.kind}:{self.source}@{self.pin}:{self.package if self.kind == 'pypi' else ''}:{sub}:{left_out}"


class CorpusError(ValueError):
    pass


def parse_corpus(data: dict) -> List[Entry]:
    """The `[[project]]` tables of corpus.toml, checked (names unique, shas full)."""
    entries: List[Entry] = []
    seen = set()
    for i, raw in enumerate(data.get("project", [])):
        name = raw.get("name")
        if not name or not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*$", name):
            raise CorpusError(f"project #{i + 1}: missing or bad name {name!r}")
        if name in seen:
            raise CorpusError(f"project {name}: name used twice")
        seen.add(name)
        subpaths = tuple(raw.get("subpaths", ()))
        exclude = tuple(raw.get("exclude", ()))
        if any(p.startswith("/") or ".." in Path(p).parts for p in subpaths + exclude):
            raise CorpusError(f"project {name}: subpaths and exclude must stay inside the project")
        if "github" in raw:
            sha = raw.get("commit", "")
            if not _SHA.match(sha):
                raise CorpusError(f"project {name}: commit must be a full 40-hex sha, got {sha!r}")
            if not re.match(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$", raw["github"]):
                raise CorpusError(f"project {name}: github must be owner/repo")
            entries.append(Entry(name, "github", raw["github"], sha, subpaths, shape=raw.get("shape", ""), exclude=exclude))
        elif "pypi" in raw:
            version = raw.get("version", "")
            package = raw.get("package", "sdist")
            if not version or package not in ("sdist", "wheel"):
                raise CorpusError(f"project {name}: pypi needs a version and package sdist|wheel")
            entries.append(Entry(name, "pypi", raw["pypi"], version, subpaths, package, raw.get("shape", ""), exclude))
        else:
            raise CorpusError(f"project {name}: needs `github` + `commit` or `pypi` + `version`")
    return entries


def load_corpus(path: Path = CORPUS) -> List[Entry]:
    with open(path, "rb") as fh:
        return parse_corpus(tomllib.load(fh))


# --------------------------------------------------------------------------- fingerprints


def normalise(text: str) -> str:
    """A flagged line as the fingerprint sees it: indentation and runs of spaces do not count."""
    return " ".join(text.split())


@dataclass
class Finding:
    repo: str
    path: str
    code: str
    line: int
    column: int = 1
    cell: Optional[int] = None
    text: str = ""  # the finding's first line, as written
    message: str = ""
    fingerprint: str = ""

    @property
    def where(self) -> str:
        return f"cell {self.cell}:{self.line}" if self.cell is not None else str(self.line)


def fingerprint(code: str, path: str, text: str, occurrence: int) -> str:
    raw = "\0".join((code, path, normalise(text), str(occurrence)))
    return hashlib.sha1(raw.encode("utf-8")).hexdigest()[:16]


def assign_fingerprints(findings: Iterable[Finding]) -> List[Finding]:
    """Give each finding its fingerprint; findings of one code on the same text in one file
    are told apart by their order in the file (cell, line, column)."""
    ordered = sorted(findings, key=lambda f: (f.repo, f.path, f.code, f.cell or 0, f.line, f.column))
    seen: Counter = Counter()
    for f in ordered:
        key = (f.repo, f.path, f.code, normalise(f.text))
        f.fingerprint = fingerprint(f.code, f.path, f.text, seen[key])
        seen[key] += 1
    return ordered


# --------------------------------------------------------------------------- baseline


@dataclass
class Judged:
    repo: str
    path: str
    line: str
    code: str
    fingerprint: str
    verdict: str
    reason: str


def read_baseline(text: str) -> List[Judged]:
    rows: List[Judged] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#") or line.startswith("repo\t"):
            continue
        cols = line.split("\t")
        if len(cols) != len(BASELINE_COLUMNS):
            raise ValueError(f"baseline line {n}: {len(cols)} columns, expected {len(BASELINE_COLUMNS)}")
        row = Judged(*cols)
        if row.verdict not in VERDICTS:
            raise ValueError(f"baseline line {n}: verdict {row.verdict!r} is not one of {', '.join(VERDICTS)}")
        rows.append(row)
    return rows


def _clean(text: str) -> str:
    return " ".join(text.replace("\t", " ").split())


def write_baseline(rows: Iterable[Judged]) -> str:
    out = ["\t".join(BASELINE_COLUMNS)]
    for r in sorted(rows, key=lambda r: (r.repo, r.path, _line_key(r.line), r.code, r.fingerprint)):
        out.append("\t".join((r.repo, r.path, r.line, r.code, r.fingerprint, r.verdict, _clean(r.reason))))
    return "\n".join(out) + "\n"


def _line_key(line: str) -> Tuple[int, int]:
    nums = [int(x) for x in re.findall(r"\d+", line)] or [0]
    return (nums[0], nums[-1]) if len(nums) > 1 else (0, nums[0])


@dataclass
class Comparison:
    matched: List[Tuple[Finding, Judged]] = field(default_factory=list)
    new: List[Finding] = field(default_factory=list)
    vanished: List[Judged] = field(default_factory=list)


def compare(findings: Sequence[Finding], baseline: Sequence[Judged], repos: Optional[set] = None,
            codes: Optional[set] = None) -> Comparison:
    """Match findings to baseline rows by (repo, fingerprint). Baseline rows of repos or
    rules that were not linted this run (`repos`, `codes`: None means all) are left out, so
    a partial run reports nothing as vanished that it did not look for."""
    index: Dict[Tuple[str, str], Judged] = {}
    for row in baseline:
        if repos is not None and row.repo not in repos:
            continue
        if codes is not None and row.code not in codes:
            continue
        index[(row.repo, row.fingerprint)] = row
    result = Comparison()
    for f in findings:
        row = index.pop((f.repo, f.fingerprint), None)
        if row is None:
            result.new.append(f)
        else:
            result.matched.append((f, row))
    result.vanished = sorted(index.values(), key=lambda r: (r.repo, r.path, r.code))
    return result


def updated_baseline(cmp: Comparison, baseline: Sequence[Judged], repos: Optional[set], codes: Optional[set]) -> List[Judged]:
    """The baseline after this run: matched rows keep their verdicts (with the current line),
    new findings come in `unjudged`, vanished rows go; rows outside the run stay as they were."""
    rows: List[Judged] = []
    for row in baseline:
        outside = (repos is not None and row.repo not in repos) or (codes is not None and row.code not in codes)
        if outside:
            rows.append(row)
    for f, row in cmp.matched:
        rows.append(Judged(f.repo, f.path, f.where, f.code, f.fingerprint, row.verdict, row.reason))
    for f in cmp.new:
        rows.append(Judged(f.repo, f.path, f.where, f.code, f.fingerprint, "unjudged", ""))
    return rows


# --------------------------------------------------------------------------- precision


@dataclass
class Tally:
    true: int = 0
    false: int = 0
    debatable: int = 0
    unjudged: int = 0

    def add(self, verdict: str) -> None:
        setattr(self, verdict, getattr(self, verdict) + 1)

    @property
    def judged(self) -> int:
        return self.true + self.false + self.debatable

    @property
    def total(self) -> int:
        return self.judged + self.unjudged

    @property
    def precision(self) -> Optional[float]:
        """true / (true + false): debatable findings left out."""
        n = self.true + self.false
        return self.true / n if n else None

    @property
    def strict_precision(self) -> Optional[float]:
        """true / (true + false + debatable): debatable findings counted as false."""
        return self.true / self.judged if self.judged else None


# TL000 reports a file that does not parse (Python 2 code, templates): not a rule's
# judgement, so it is counted apart and left out of the precision figures.
NOT_A_RULE = {"TL000"}


def tally(verdicts: Iterable[Tuple[str, str]]) -> Tuple[Dict[str, Tally], Tally]:
    """Per-rule and overall tallies of (code, verdict) pairs; TL000 is not in the overall."""
    per_rule: Dict[str, Tally] = defaultdict(Tally)
    overall = Tally()
    for code, verdict in verdicts:
        per_rule[code].add(verdict)
        if code not in NOT_A_RULE:
            overall.add(verdict)
    return dict(sorted(per_rule.items())), overall


def _pct(x: Optional[float]) -> str:
    return "–" if x is None else f"{x:.2f}"


def markdown_table(per_rule: Dict[str, Tally], overall: Tally) -> str:
    lines = [
        "| rule | findings | true | false | debatable | unjudged | precision | precision, debatable as false |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for code, t in per_rule.items():
        if code in NOT_A_RULE:
            continue
        lines.append(f"| {code} | {t.total} | {t.true} | {t.false} | {t.debatable} | {t.unjudged} | "
                     f"{_pct(t.precision)} | {_pct(t.strict_precision)} |")
    o = overall
    lines.append(f"| **all** | **{o.total}** | **{o.true}** | **{o.false}** | **{o.debatable}** | **{o.unjudged}** | "
                 f"**{_pct(o.precision)}** | **{_pct(o.strict_precision)}** |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- getting code


def _run(cmd: Sequence[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), check=True, **kw)


def _kept(path: str) -> bool:
    name = path.rsplit("/", 1)[-1]
    return path.endswith(_KEEP_SUFFIXES) or name in _KEEP_NAMES or (name.startswith("requirements") and name.endswith(".txt"))


def _git_dir_candidates(mirror: Path, source: str) -> List[Path]:
    base = mirror / source.replace("/", "+")
    return [base / "repo" / ".git", base / "repo", base, Path(str(base) + ".git")]


def _has_commit(git_dir: Path, sha: str) -> bool:
    if not git_dir.is_dir():
        return False
    r = subprocess.run(["git", "--git-dir", str(git_dir), "cat-file", "-e", sha + "^{commit}"],
                       capture_output=True)
    return r.returncode == 0


def export_tree(git_dir: Path, sha: str, dest: Path, subpaths: Sequence[str], exclude: Sequence[str] = ()) -> Tuple[int, int]:
    """Write the kept files of commit `sha` under `dest`; blobs absent from a partial mirror
    are skipped (and counted) rather than failing the whole export."""
    ls = _run(["git", "--git-dir", str(git_dir), "ls-tree", "-r", "-z", "--full-tree", sha, "--", *subpaths],
              capture_output=True).stdout.decode("utf-8", "surrogateescape")
    blobs = []
    for item in ls.split("\0"):
        if not item:
            continue
        meta, path = item.split("\t", 1)
        mode, kind, obj = meta.split()
        if kind == "blob" and mode != "120000" and _kept(path) and path not in exclude:
            blobs.append((obj, path))
    proc = subprocess.Popen(["git", "--git-dir", str(git_dir), "cat-file", "--batch"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    out, _ = proc.communicate("".join(obj + "\n" for obj, _ in blobs).encode())
    written = missing = 0
    pos = 0
    for obj, path in blobs:
        end = out.index(b"\n", pos)
        header = out[pos:end].decode().split()
        pos = end + 1
        if len(header) < 3 or header[1] != "blob":
            missing += 1
            continue
        size = int(header[2])
        data = out[pos:pos + size]
        pos += size + 1
        target = dest / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        written += 1
    return written, missing


def _fetch_github(entry: Entry, work: Path) -> Path:
    """A shallow fetch of exactly the pinned commit (GitHub serves any reachable sha)."""
    git_dir = work / (entry.source.replace("/", "+") + ".git")
    if not git_dir.exists():
        _run(["git", "init", "--bare", "-q", str(git_dir)])
    if not _has_commit(git_dir, entry.pin):
        _run(["git", "--git-dir", str(git_dir), "fetch", "-q", "--depth", "1",
              f"https://github.com/{entry.source}.git", entry.pin])
    return git_dir


def _unpack(archive: Path, dest: Path) -> None:
    tmp = dest.with_name(dest.name + ".unpack")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if archive.name.endswith((".whl", ".zip")):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if not info.is_dir() and _kept(info.filename) and ".." not in Path(info.filename).parts:
                    target = tmp / info.filename
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(zf.read(info))
    else:
        with tarfile.open(archive) as tf:
            for m in tf.getmembers():
                if m.isfile() and _kept(m.name) and ".." not in Path(m.name).parts and not m.name.startswith("/"):
                    target = tmp / m.name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(tf.extractfile(m).read())
    # An sdist holds one top folder `name-version/`: lint from inside it.
    tops = list(tmp.iterdir())
    src = tops[0] if len(tops) == 1 and tops[0].is_dir() and archive.name.endswith((".tar.gz", ".zip", ".tgz")) else tmp
    shutil.move(str(src), str(dest))
    shutil.rmtree(tmp, ignore_errors=True)


def _fetch_pypi(entry: Entry, work: Path, dest: Path) -> None:
    dl = work / "pypi" / f"{entry.source}-{entry.pin}-{entry.package}"
    dl.mkdir(parents=True, exist_ok=True)
    if not any(dl.iterdir()):
        flag = "--no-binary=:all:" if entry.package == "sdist" else "--only-binary=:all:"
        _run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", flag, "-d", str(dl),
              f"{entry.source}=={entry.pin}"])
    archives = sorted(dl.iterdir())
    if not archives:
        raise RuntimeError(f"pip download brought nothing for {entry.source}=={entry.pin}")
    _unpack(archives[0], dest)


def materialise(entry: Entry, cache: Path, mirror: Optional[Path]) -> Tuple[Path, str]:
    """The entry's files under cache/<name>/ (reused when the marker says they are the pinned
    ones). Returns the folder and a note on what was done."""
    dest = cache / entry.name
    marker = dest / _MARKER
    if marker.exists() and marker.read_text().strip() == entry.stamp:
        return dest, "cached"
    shutil.rmtree(dest, ignore_errors=True)
    note = ""
    if entry.kind == "github":
        git_dir = None
        if mirror is not None:
            git_dir = next((g for g in _git_dir_candidates(mirror, entry.source) if _has_commit(g, entry.pin)), None)
        if git_dir is None:
            git_dir = _fetch_github(entry, cache / ".git-objects")
        dest.mkdir(parents=True)
        written, missing = export_tree(git_dir, entry.pin, dest, entry.subpaths, entry.exclude)
        note = f"{written} files" + (f", {missing} absent from the mirror" if missing else "")
    else:
        _fetch_pypi(entry, cache / ".downloads", dest)
        for rel in entry.exclude:
            (dest / rel).unlink(missing_ok=True)
        note = f"{entry.source}=={entry.pin} ({entry.package})"
    marker.write_text(entry.stamp + "\n")
    return dest, note


# --------------------------------------------------------------------------- linting


def _source_lines(root: Path, path: str, cell: Optional[int]) -> List[str]:
    try:
        text = (root / path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    if cell is None:
        return text.splitlines()
    try:
        cells = json.loads(text).get("cells", [])
        src = cells[cell - 1].get("source", "")
    except (ValueError, IndexError, AttributeError):
        return []
    return ("".join(src) if isinstance(src, list) else src).splitlines()


def lint(entry: Entry, root: Path, trainlint: Sequence[str], rules: Optional[str], jobs: int) -> List[Finding]:
    cmd = [*trainlint, "check", *(entry.subpaths if entry.kind == "pypi" and entry.subpaths else ["."]),
           "--output-format", "json", "--no-cache", "--exit-zero", "-q", "--jobs", str(jobs)]
    if rules:
        cmd += ["--select", rules]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"trainlint exited {proc.returncode} on {entry.name}: {proc.stderr.strip()[-500:]}")
    findings = []
    lines_of: Dict[Tuple[str, Optional[int]], List[str]] = {}
    for raw in json.loads(proc.stdout or "[]"):
        path = raw["path"].replace("\\", "/")
        if path.startswith("./"):
            path = path[2:]
        key = (path, raw.get("cell"))
        if key not in lines_of:
            lines_of[key] = _source_lines(root, path, raw.get("cell"))
        src = lines_of[key]
        text = src[raw["line"] - 1] if 0 < raw["line"] <= len(src) else ""
        findings.append(Finding(entry.name, path, raw["code"], raw["line"], raw.get("column", 1), raw.get("cell"),
                                text, raw.get("message", "")))
    return assign_fingerprints(findings)


# --------------------------------------------------------------------------- report


def _context(root: Path, f: Finding, around: int) -> str:
    src = _source_lines(root, f.path, f.cell)
    lo, hi = max(f.line - 1 - around, 0), min(f.line + around, len(src))
    return "\n".join(f"{'>' if i + 1 == f.line else ' '}{i + 1:5d}| {src[i]}" for i in range(lo, hi))


def report(cmp: Comparison, roots: Dict[str, Path], show: str, around: int, out=None) -> None:
    def p(*a):
        print(*a, file=out or sys.stdout)

    new_by_rule = Counter(f.code for f in cmp.new)
    gone_by_rule = Counter(r.code for r in cmp.vanished)
    codes = sorted(set(new_by_rule) | set(gone_by_rule))
    p("## Changes against the baseline\n")
    if not codes:
        p("No new and no vanished findings.\n")
    else:
        p("| rule | new | vanished | vanished true | vanished false |")
        p("|---|---|---|---|---|")
        for c in codes:
            gone = [r for r in cmp.vanished if r.code == c]
            p(f"| {c} | {new_by_rule[c]} | {gone_by_rule[c]} | {sum(r.verdict == 'true' for r in gone)} | "
              f"{sum(r.verdict == 'false' for r in gone)} |")
        p("")
    for r in cmp.vanished:
        p(f"vanished [{r.verdict}] {r.repo}: {r.path}:{r.line}: {r.code}  {r.reason}")
    shown = []
    if show in ("new", "unjudged", "all"):
        shown += [(f, "new") for f in cmp.new]
    if show in ("unjudged", "all"):
        shown += [(f, row.verdict) for f, row in cmp.matched if show == "all" or row.verdict == "unjudged"]
    for f, label in shown:
        p(f"\n[{label}] {f.repo}: {f.path}:{f.where}: {f.code} {f.message}\n    fingerprint {f.fingerprint}")
        if around and f.repo in roots:
            p(_context(roots[f.repo], f, around))


# --------------------------------------------------------------------------- main


def _codes_of(rules: Optional[str], seen: Iterable[str]) -> Optional[set]:
    """The codes a `--rules` selection covers, among those known (prefixes allowed)."""
    if not rules:
        return None
    wanted = [r.strip().upper() for r in rules.split(",") if r.strip()]
    if "ALL" in wanted:
        return None
    return {c for c in seen if any(c.startswith(w) for w in wanted)} | {w for w in wanted if re.match(r"^TL\d{3}$", w)}


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", required=True, type=Path, help="folder (outside this repository) for the corpus files")
    ap.add_argument("--mirror", type=Path, help="folder of bare git dirs named owner+repo (tried before the network)")
    ap.add_argument("--repo", action="append", help="only this corpus entry (repeatable)")
    ap.add_argument("--rules", help="only these rules (codes or prefixes, comma-separated): trainlint --select")
    ap.add_argument("--corpus", type=Path, default=CORPUS)
    ap.add_argument("--baseline", type=Path, default=BASELINE)
    ap.add_argument("--update-baseline", action="store_true",
                    help="rewrite the baseline: keep verdicts, add new findings as unjudged, drop vanished ones")
    ap.add_argument("--strict", action="store_true",
                    help="exit 1 when a finding is new (not in the baseline) or a true finding vanished")
    ap.add_argument("--show", choices=("none", "new", "unjudged", "all"), default="new",
                    help="findings to print with their code around them (default: new)")
    ap.add_argument("--context", type=int, default=6, help="lines of code shown around a printed finding")
    ap.add_argument("--trainlint", default=f"{shlex.quote(sys.executable)} -m trainlint",
                    help="command that runs trainlint (default: this Python, this checkout's code first)")
    ap.add_argument("--jobs", type=int, default=0, help="trainlint --jobs (0: all cores)")
    args = ap.parse_args(argv)

    cache = args.cache.resolve()
    if cache == PROJECT_ROOT or PROJECT_ROOT in cache.parents:
        # trainlint would read this repository's pyproject.toml for the corpus files.
        print("check.py: error: --cache must lie outside this repository", file=sys.stderr)
        return 2
    try:
        entries = load_corpus(args.corpus)
        baseline = read_baseline(args.baseline.read_text()) if args.baseline.exists() else []
    except (CorpusError, ValueError, OSError) as exc:
        print(f"check.py: error: {exc}", file=sys.stderr)
        return 2
    if args.repo:
        unknown = set(args.repo) - {e.name for e in entries}
        if unknown:
            print(f"check.py: error: not in the corpus: {', '.join(sorted(unknown))}", file=sys.stderr)
            return 2
        entries = [e for e in entries if e.name in args.repo]
    cache.mkdir(parents=True, exist_ok=True)
    trainlint = shlex.split(args.trainlint)

    findings: List[Finding] = []
    roots: Dict[str, Path] = {}
    for e in entries:
        try:
            root, note = materialise(e, cache, args.mirror.resolve() if args.mirror else None)
        except (subprocess.CalledProcessError, OSError, RuntimeError) as exc:
            print(f"check.py: error: cannot get {e.name} ({e.source}@{e.pin}): {exc}", file=sys.stderr)
            return 2
        try:
            found = lint(e, root, trainlint, args.rules, args.jobs)
        except (RuntimeError, OSError, ValueError) as exc:  # trainlint failed or printed no JSON
            print(f"check.py: error: {exc}", file=sys.stderr)
            return 2
        roots[e.name] = root
        print(f"{e.name}: {note}; {len(found)} findings", file=sys.stderr)
        findings += found

    repos = {e.name for e in entries} if args.repo else None
    codes = _codes_of(args.rules, {r.code for r in baseline} | {f.code for f in findings})
    cmp = compare(findings, baseline, repos, codes)
    report(cmp, roots, args.show, args.context)

    per_rule, overall = tally([(f.code, row.verdict) for f, row in cmp.matched] + [(f.code, "unjudged") for f in cmp.new])
    parse_failures = per_rule.get("TL000", Tally()).total
    print(f"\n## Precision ({len(entries)} code bases, {overall.total} findings"
          + (f"; {parse_failures} files or notebook cells that do not parse (TL000) not counted" if parse_failures else "") + ")\n")
    print(markdown_table(per_rule, overall))

    if args.update_baseline:
        args.baseline.write_text(write_baseline(updated_baseline(cmp, baseline, repos, codes)))
        print(f"\nbaseline written: {args.baseline}", file=sys.stderr)
    if args.strict and (cmp.new or any(r.verdict == "true" for r in cmp.vanished)):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
