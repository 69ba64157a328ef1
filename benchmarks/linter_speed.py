#!/usr/bin/env python3
"""How fast is trainlint next to the other libcst-based linters? Run by hand, never in CI.

    python benchmarks/linter_speed.py --torchfix-venv ~/scratch/tools-venv \\
        --corpus ~/src/nanoGPT --corpus ~/src/pytorch-examples --runs 5

What it does, in one run:

1. Builds a corpus in a temporary folder outside the repository: the `.py` files of
   each `--corpus DIR`, plus the files of wheels unpacked from PyPI (`pip download
   --no-deps`; by default timm and a training-related slice of transformers).
   Nobody's code is committed: the corpus lives and dies in the temp folder
   (or in `--work-dir`, kept, when given).
2. Times subprocesses of the real command lines on the same folder, each after one
   untimed warm-up run (bytecode compiled, files in the OS cache), as the median of
   `--runs` runs: `trainlint check --no-cache` (cold), `trainlint check` with a
   filled `--cache-dir` (warm), a bare `libcst.parse_module` of every file
   (benchmarks/_libcst_parse.py), `torchfix` and `fixit lint` from a scratch venv
   (`--torchfix-venv`, created and installed from PyPI when missing), and every tool
   on one file (the pre-commit case).
3. With `--large-corpus DIR...`: lints a big tree once with trainlint (cold, default
   jobs and --jobs 1) and reports files, exit code, wall time, peak RSS and any
   internal error, next to the peak RSS on the small corpus: memory must stay flat.

Peak RSS is the largest resident set of any one process of the run (the command and
the children it waited for: `os.wait4`). Prints markdown tables.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

HERE = Path(__file__).resolve().parent
DEFAULT_PACKAGES = "timm==1.0.31,transformers==5.23.0"
# transformers is 2,800+ files of model definitions; its training code is this slice.
TRANSFORMERS_SLICE = (
    "transformers/trainer*.py",
    "transformers/training_args*.py",
    "transformers/optimization*.py",
    "transformers/modeling_utils.py",
    "transformers/data/data_collator.py",
    "transformers/models/bert/modeling_bert.py",
    "transformers/models/gpt2/modeling_gpt2.py",
    "transformers/models/llama/modeling_llama.py",
    "transformers/models/vit/modeling_vit.py",
    "transformers/models/t5/modeling_t5.py",
)
SKIP_DIRS = {".git", "__pycache__", ".venv", "venv", "site-packages", "build", "dist", "node_modules"}


# --------------------------------------------------------------------------- corpus


def _copy_tree(src: Path, dst: Path) -> int:
    n = 0
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
        for name in sorted(filenames):
            if name.endswith(".py"):
                s = Path(dirpath) / name
                t = dst / s.relative_to(src)
                t.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(s, t)
                n += 1
    return n


def _find_wheel(wheel_dir: Path, spec: str) -> Optional[Path]:
    name, _, version = spec.partition("==")
    norm = re.sub(r"[-_.]+", "_", name).lower()
    for whl in sorted(wheel_dir.glob("*.whl")):
        parts = whl.name.split("-")
        if re.sub(r"[-_.]+", "_", parts[0]).lower() == norm and (not version or parts[1] == version):
            return whl
    return None


def _get_wheel(wheel_dir: Path, spec: str) -> Path:
    whl = _find_wheel(wheel_dir, spec)
    if whl is None:
        wheel_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(wheel_dir), spec]
        print(f"$ {' '.join(cmd)}", file=sys.stderr)
        subprocess.run(cmd, check=True)
        whl = _find_wheel(wheel_dir, spec)
        if whl is None:
            sys.exit(f"pip download gave no wheel for {spec}")
    return whl


def _unpack_wheel(whl: Path, dst: Path) -> int:
    slice_ = TRANSFORMERS_SLICE if whl.name.lower().startswith("transformers-") else ("*",)
    n = 0
    with zipfile.ZipFile(whl) as zf:
        for info in zf.infolist():
            name = info.filename
            if not name.endswith(".py") or ".dist-info/" in name:
                continue
            if not any(fnmatch.fnmatchcase(name, pat) for pat in slice_):
                continue
            target = dst / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(zf.read(info))
            n += 1
    return n


def build_corpus(dest: Path, folders: Sequence[str], packages: Sequence[str], wheel_dir: Path) -> List[str]:
    """Fill `dest` with the corpus; one line of provenance per source."""
    notes = []
    for folder in folders:
        src = Path(folder).resolve()
        n = _copy_tree(src, dest / src.name)
        notes.append(f"{src.name}: {n} files")
    for spec in packages:
        whl = _get_wheel(wheel_dir, spec)
        n = _unpack_wheel(whl, dest / whl.name[: -len(".whl")])
        what = "training slice" if whl.name.lower().startswith("transformers-") else "all modules"
        notes.append(f"{whl.name} ({what}): {n} files")
    return notes


def corpus_files(root: Path) -> List[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        out.extend(Path(dirpath) / f for f in sorted(filenames) if f.endswith(".py"))
    return out


def count_lines(files: Sequence[Path]) -> int:
    n = 0
    for f in files:
        with open(f, "rb") as fh:
            n += sum(1 for _ in fh)
    return n


# --------------------------------------------------------------------------- timing


@dataclass
class Sample:
    wall: float
    cpu: float
    rss_mb: float
    rc: int
    stderr: str


@dataclass
class Result:
    label: str
    samples: List[Sample] = field(default_factory=list)
    note: str = ""

    @property
    def ok(self) -> bool:
        return bool(self.samples)

    def wall(self) -> float:
        return statistics.median(s.wall for s in self.samples)

    def wall_min(self) -> float:
        return min(s.wall for s in self.samples)

    def cpu(self) -> float:
        return statistics.median(s.cpu for s in self.samples)

    def rss(self) -> float:
        return max(s.rss_mb for s in self.samples)


def _env() -> Dict[str, str]:
    env = dict(os.environ)
    # An installed package has its bytecode compiled; let every tool write (and then use) it.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.setdefault("NO_COLOR", "1")
    return env


def run_once(cmd: Sequence[str], cwd: Optional[Path] = None) -> Sample:
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=_env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        _, status, ru = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        stderr = err.read().decode("utf-8", "replace")
    # ru_maxrss is in KiB on Linux: the largest of the process and its waited-for children.
    return Sample(wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024, proc.returncode, stderr)


@dataclass
class Spec:
    label: str
    cmd: List[str]
    runs: int
    ok_codes: tuple = (0, 1)
    warmup: Optional[List[str]] = None  # default: the command itself


def measure(specs: Sequence[Spec], cwd: Optional[Path] = None) -> List[Result]:
    """Warm each command up once, then time them in rounds (one run of each per round).

    The warm-up compiles each tool's bytecode and brings its modules into the OS cache;
    it is a run on one file (`Spec.warmup`), to save a long run, except where the
    run itself must come first (the warm cache's fill).

    Interleaving spreads any drift in the machine's load over all tools alike.
    """
    results = [Result(s.label) for s in specs]
    for spec, res in zip(specs, results):
        print(f"# {spec.label}: {' '.join(spec.cmd)}", file=sys.stderr)
        s = run_once(spec.warmup or spec.cmd, cwd)
        if s.rc not in spec.ok_codes:
            res.note = f"exit {s.rc}: {' '.join(s.stderr.strip().splitlines()[-1:])}"
            print(f"  FAILED {res.note}", file=sys.stderr)
    for r in range(max((s.runs for s in specs), default=0)):
        for spec, res in zip(specs, results):
            if r >= spec.runs or res.note:
                continue
            s = run_once(spec.cmd, cwd)
            print(f"  {spec.label}: {s.wall:7.2f} s wall  {s.cpu:7.2f} s cpu  {s.rss_mb:6.0f} MB  exit {s.rc}", file=sys.stderr)
            if s.rc not in spec.ok_codes:
                res.note = f"exit {s.rc}: {' '.join(s.stderr.strip().splitlines()[-1:])}"
            res.samples.append(s)
    return results


# --------------------------------------------------------------------------- report


def _fmt(x: float) -> str:
    return f"{x:.2f}" if x < 100 else f"{x:.0f}"


def table(results: List[Result], base: Optional[Result], cold: Optional[Result]) -> str:
    head = "| run | wall, median (s) | min (s) | CPU (s) | peak RSS (MB) | × bare libcst parse | trainlint (first row) is faster by |"
    lines = [head, "|" + "---|" * 7]
    for r in results:
        if not r.ok:
            lines.append(f"| {r.label} | failed: {r.note} | | | | | |")
            continue
        ratio = f"{r.wall() / base.wall():.2f}×" if base and base.ok else "-"
        # How much slower than trainlint cold: meaningful for the other tools only.
        other = not r.label.startswith("trainlint")
        speed = f"{r.wall() / cold.wall():.1f}×" if cold and cold.ok and other else "-"
        lines.append(
            f"| {r.label} | {_fmt(r.wall())} | {_fmt(r.wall_min())} | {_fmt(r.cpu())} | {r.rss():.0f} | {ratio} | {speed} |"
        )
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", action="append", default=[], metavar="DIR", help="a folder of Python files to include (repeatable)")
    ap.add_argument(
        "--packages",
        default=None,
        help=f"comma-separated wheels to unpack into the corpus (default: {DEFAULT_PACKAGES} when no --corpus is given, else none; '' for none)",
    )
    ap.add_argument("--wheel-dir", default=None, help="where wheels are found or downloaded to (default: inside the work dir)")
    ap.add_argument("--work-dir", default=None, help="keep the corpus and caches here (default: a temp folder, removed)")
    ap.add_argument("--runs", type=int, default=5, help="timed runs per measurement (median reported)")
    ap.add_argument("--slow-runs", type=int, default=None, help="timed runs for torchfix and fixit on the corpus (default: --runs)")
    ap.add_argument("--tools", default="trainlint,libcst,torchfix,fixit", help="which to time (comma-separated)")
    ap.add_argument(
        "--torchfix-venv", default=None,
        help="a venv with torchfix and fixit, outside the repository; created and installed there if missing "
        "(default: tools-venv in the work dir)",
    )
    ap.add_argument("--trainlint", default=None, help="the trainlint command (default: the one beside this Python)")
    ap.add_argument("--one-file", default=None, help="the file for the pre-commit case (default: a train.py of the corpus)")
    ap.add_argument(
        "--plain-file", default=None,
        help="a file no rule can fire on, for the pre-commit case (default: the first such file of the corpus with 50+ lines)",
    )
    ap.add_argument("--large-corpus", action="append", default=[], metavar="DIR", help="big trees to lint once for memory and robustness")
    ap.add_argument("--large-jobs", default="0", help="--jobs values for the large runs, comma-separated (default: 0, all cores)")
    args = ap.parse_args(argv)

    tools = {t.strip() for t in args.tools.split(",") if t.strip()}
    packages = args.packages if args.packages is not None else ("" if args.corpus else DEFAULT_PACKAGES)
    packages = [p.strip() for p in packages.split(",") if p.strip()]
    slow_runs = args.slow_runs or args.runs
    bindir = Path(sys.executable).parent
    trainlint = [args.trainlint] if args.trainlint else [str(bindir / "trainlint")]

    tmp = None
    if args.work_dir:
        work = Path(args.work_dir).resolve()
        work.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="trainlint-bench-")
        work = Path(tmp.name)
    try:
        venv_bin = None
        if tools & {"torchfix", "fixit"}:
            venv_bin = tools_venv(Path(args.torchfix_venv) if args.torchfix_venv else work / "tools-venv")
        for t in ("torchfix", "fixit"):
            if t in tools and (venv_bin is None or not (venv_bin / t).exists()):
                print(f"{t}: not installed, skipped", file=sys.stderr)
                tools.discard(t)
        corpus = work / "corpus"
        if corpus.exists():
            shutil.rmtree(corpus)
        corpus.mkdir()
        notes = build_corpus(corpus, args.corpus, packages, Path(args.wheel_dir) if args.wheel_dir else work / "wheels")
        files = corpus_files(corpus)
        n_lines = count_lines(files)
        list_file = work / "files.txt"
        list_file.write_text("".join(f"{f}\n" for f in files), encoding="utf-8")
        one = Path(args.one_file).resolve() if args.one_file else next((f for f in files if f.name == "train.py"), files[0])
        plain = Path(args.plain_file).resolve() if args.plain_file else plain_file(files)

        cache_dir = work / "cache"
        shutil.rmtree(cache_dir, ignore_errors=True)  # the warm-up run of "warm" fills it
        specs: List[Spec] = []
        if "trainlint" in tools:
            one_cold = [*trainlint, "check", str(one), "--no-cache"]
            specs += [
                Spec("trainlint, cold (`--no-cache`)", [*trainlint, "check", str(corpus), "--no-cache"], args.runs, warmup=one_cold),
                Spec("trainlint, cold, `--jobs 1`", [*trainlint, "check", str(corpus), "--no-cache", "--jobs", "1"], args.runs, warmup=one_cold),
                # Its warm-up run on the corpus fills the cache: the timed runs all hit.
                Spec("trainlint, warm (cache)", [*trainlint, "check", str(corpus), "--cache-dir", str(cache_dir)], args.runs),
            ]
        if "libcst" in tools:
            one_list = work / "one.txt"
            one_list.write_text(f"{one}\n", encoding="utf-8")
            parse = [sys.executable, str(HERE / "_libcst_parse.py")]
            specs.append(Spec("bare `libcst.parse_module`, 1 process", [*parse, str(list_file)], args.runs, (0,), [*parse, str(one_list)]))
        if "torchfix" in tools:
            specs.append(Spec("TorchFix 0.7.0", [str(venv_bin / "torchfix"), str(corpus)], slow_runs, warmup=[str(venv_bin / "torchfix"), str(one)]))
        if "fixit" in tools:
            specs.append(
                Spec("Fixit 2.2.1 (`fixit lint`)", [str(venv_bin / "fixit"), "lint", str(corpus)], slow_runs, (0, 1, 2, 3), [str(venv_bin / "fixit"), "lint", str(one)])
            )
        results = measure(specs, cwd=work)
        by_label = {r.label: r for r in results}
        cold = by_label.get("trainlint, cold (`--no-cache`)")
        warm = by_label.get("trainlint, warm (cache)")
        base = by_label.get("bare `libcst.parse_module`, 1 process")

        one_runs = max(args.runs, 10)
        one_specs: List[Spec] = []
        if "trainlint" in tools:
            one_specs += [
                Spec("trainlint, `--no-cache`", [*trainlint, "check", str(one), "--no-cache"], one_runs),
                Spec("trainlint, warm cache", [*trainlint, "check", str(one), "--cache-dir", str(cache_dir)], one_runs),
            ]
            if plain is not None:
                one_specs.append(Spec(f"trainlint, `--no-cache`, on `{plain.name}` ({count_lines([plain])} lines, no rule applies)", [*trainlint, "check", str(plain), "--no-cache"], one_runs))
            one_specs += [
                Spec("`python -c 'import libcst'`", [sys.executable, "-c", "import libcst"], one_runs, (0,)),
            ]
        if "torchfix" in tools:
            one_specs.append(Spec("TorchFix 0.7.0", [str(venv_bin / "torchfix"), str(one)], one_runs))
        if "fixit" in tools:
            one_specs.append(Spec("Fixit 2.2.1", [str(venv_bin / "fixit"), "lint", str(one)], one_runs, (0, 1, 2, 3)))
        one_results = measure(one_specs, cwd=work)

        large_rows = []
        if args.large_corpus:
            large_rows = large_runs(trainlint, args.large_corpus, corpus, work, [j.strip() for j in args.large_jobs.split(",") if j.strip()])

        print(f"\n## Corpus: {len(files)} files, {n_lines:,} lines\n")
        for n in notes:
            print(f"- {n}")
        print(f"\nMachine: {machine()}. Medians of {args.runs} runs ({slow_runs} for TorchFix and Fixit on the corpus) after one warm-up run each (on one file; for the warm cache, the run that fills it), interleaved (one run of each tool per round).\n")
        print(table(results, base, cold))
        if cold and cold.ok and warm and warm.ok:
            print(f"\nWarm cache vs cold: {cold.wall() / warm.wall():.1f}× faster.")
        print(f"\n## One file (pre-commit): {one.name}, {count_lines([one])} lines\n")
        print(table(one_results, None, one_results[0] if one_results else None))
        if large_rows:
            print("\n## Memory and robustness (trainlint, cold, one run each)\n")
            print("| tree | files | `--jobs` | exit | wall (s) | peak RSS (MB) | internal errors / tracebacks |")
            print("|---|---|---|---|---|---|---|")
            for row in large_rows:
                print("| " + " | ".join(str(c) for c in row) + " |")
        return 0
    finally:
        if tmp is not None:
            tmp.cleanup()


OTHER_LINTERS = ("torchfix==0.7.0", "fixit==2.2.1")


def tools_venv(path: Path) -> Optional[Path]:
    """The bin folder of a venv holding TorchFix and Fixit: `path` as it is when it has
    them, else created there and installed from PyPI (neither needs torch). None when
    that fails (offline): those tools are then skipped."""
    bin_dir = path / "bin"
    if all((bin_dir / t).exists() for t in ("torchfix", "fixit")):
        return bin_dir
    print(f"# installing {' '.join(OTHER_LINTERS)} into {path}", file=sys.stderr)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
        subprocess.run([str(bin_dir / "pip"), "install", "-q", *OTHER_LINTERS], check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"# could not install them: {exc}", file=sys.stderr)
        return None
    return bin_dir


def plain_file(files: Sequence[Path]) -> Optional[Path]:
    """The first file of 50+ lines that no rule's pre-check lets through (a module that is
    not training code: what most commits touch)."""
    sys.path.insert(0, str(HERE.parent))
    from trainlint.precheck import CATALOGUE, applicable

    for f in files:
        text = f.read_text(encoding="utf-8", errors="replace")
        if text.count("\n") >= 50 and not applicable(CATALOGUE, text, str(f)):
            return f
    return None


def machine() -> str:
    cpus = os.cpu_count()
    model = ""
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    version = ".".join(map(str, sys.version_info[:3]))
    return f"{cpus} vCPU ({model or 'unknown CPU'}), Python {version}"


def _count_discovered(paths: Sequence[str]) -> int:
    from trainlint.discovery import discover

    return len(discover(paths, root=Path.cwd(), respect_gitignore=False).files)


def large_runs(trainlint: List[str], trees: Sequence[str], small: Path, work: Path, jobs: Sequence[str]) -> List[list]:
    """Lint the small and the large corpus once each: exit code, crashes, peak RSS."""
    # A site-packages or a pyenv-installed standard library is often inside a git
    # repository that ignores it (.venv/, versions/): lint it anyway.
    config = work / "large.toml"
    config.write_text("respect-gitignore = false\n", encoding="utf-8")
    rows = []
    for label, paths in (("benchmark corpus", [str(small)]), ("large: " + " + ".join(trees), list(trees))):
        n = _count_discovered(paths)
        for j in jobs:
            cmd = [*trainlint, "check", *paths, "--no-cache", "--jobs", j, "--config", str(config)]
            print(f"# {label} --jobs {j}: {n} files", file=sys.stderr)
            s = run_once(cmd, cwd=work)
            bad = [ln for ln in s.stderr.splitlines() if "internal error" in ln or "Traceback" in ln]
            shown = "none" if not bad else f"{len(bad)}: " + "; ".join(bad[:5])
            rows.append([label, n, j if j != "0" else "all cores", s.rc, f"{s.wall:.1f}", f"{s.rss_mb:.0f}", shown])
            print(f"  exit {s.rc}, {s.wall:.1f} s, {s.rss_mb:.0f} MB, {shown}", file=sys.stderr)
            if bad:
                (work / f"large-stderr-{j}.txt").write_text(s.stderr, encoding="utf-8")
    return rows


if __name__ == "__main__":
    sys.exit(main())
