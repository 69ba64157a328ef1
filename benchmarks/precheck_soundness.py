"""Lint a real corpus with and without the text pre-check: the findings must be identical.

The pre-check (`trainlint/precheck.py`) skips parsing a file when no selected rule can fire
on it; each entry is meant to be a necessary condition of its rule. The rule tests prove it
on the rules' own examples; this script proves it on real code and reports how much of the
corpus the pre-check lets through. Run by hand (every file is parsed once more), e.g.

    python benchmarks/precheck_soundness.py path/to/site-packages/timm path/to/nanoGPT

Python files and notebooks (`.ipynb`, their code cells as one module) are read.

Exit status 1 when any file's findings differ.
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing
import os
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trainlint import notebook  # noqa: E402
from trainlint.analysis.project import Project  # noqa: E402
from trainlint.engine import lint_text  # noqa: E402
from trainlint.precheck import CATALOGUE, applicable  # noqa: E402


def python_files(roots: Sequence[str]) -> List[str]:
    out = []
    for root in roots:
        if os.path.isfile(root):
            out.append(root)
            continue
        for folder, _, names in os.walk(root):
            out.extend(os.path.join(folder, n) for n in sorted(names) if n.endswith((".py", ".ipynb")))
    return sorted(out)


PROJECT = Project()  # modules found from each file's own folder and package


def check_one(path: str):
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
        if path.endswith(".ipynb"):  # the rules see a notebook's code cells as one module
            nb = notebook.load(text)
            if nb is None:
                return path, None
            text = nb.text
    except (OSError, UnicodeDecodeError, ValueError):
        return path, None
    codes = applicable(CATALOGUE, text, path)
    # With project-wide facts on, as the CLI lints: a file's findings may depend on the
    # other modules of its project (a softmax-ending model imported from models.py).
    with_precheck = [(f.code, f.line, f.column) for f in lint_text(text, path, project=PROJECT).findings]
    without = [(f.code, f.line, f.column) for f in lint_text(text, path, precheck=False, project=PROJECT).findings]
    return path, (len(text), codes, with_precheck, without)


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="+", help="files or folders of Python code")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args(argv)

    files = python_files(args.paths)
    start = time.perf_counter()
    total_bytes = passed_bytes = passed_files = findings = 0
    gates = collections.Counter()
    differing = []
    with multiprocessing.Pool(args.jobs) as pool:
        for path, res in pool.imap_unordered(check_one, files, chunksize=8):
            if res is None:
                continue
            size, codes, with_precheck, without = res
            total_bytes += size
            findings += len(without)
            if codes:
                passed_files += 1
                passed_bytes += size
                gates.update(codes)
            if with_precheck != without:
                differing.append((path, with_precheck, without))
    for path, a, b in differing:
        print(f"DIFFERS {path}\n  with pre-check:    {a}\n  without pre-check: {b}")
    print(f"{len(files)} files, {findings} findings without the pre-check, {len(differing)} files differ "
          f"({time.perf_counter() - start:.0f} s)")
    print(f"parsed with the pre-check: {passed_files} files ({passed_files / max(len(files), 1):.0%}), "
          f"{passed_bytes / max(total_bytes, 1):.0%} of the bytes")
    print("files each rule lets through: " + ", ".join(f"{c} {n}" for c, n in gates.most_common()))
    return 1 if differing else 0


if __name__ == "__main__":
    sys.exit(main())
