"""`--output-format json`: a JSON array of the SPEC's finding objects (`Finding.to_dict`).

With `--statistics`: an array of `{"code", "name", "count", "fixable"}` instead.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import List

from trainlint.finding import Finding
from trainlint.report import Summary


def render(findings: List[Finding], s: Summary) -> str:
    if s.statistics:
        counts = Counter(f.code for f in findings)
        names = {f.code: f.name for f in findings}
        fixable = {f.code for f in findings if f.fix}
        rows = [
            {"code": code, "name": names[code], "count": n, "fixable": code in fixable}
            for code, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        ]
        return json.dumps(rows, indent=2) + "\n"
    return json.dumps([f.to_dict() for f in findings], indent=2, ensure_ascii=False) + "\n"
