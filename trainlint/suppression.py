"""`# noqa` comments and `# trainlint: disable-file=` directives."""

from __future__ import annotations

import re
from typing import FrozenSet, Optional

_NOQA = re.compile(r"#\s*noqa(?::\s*(?P<codes>[A-Za-z]+[0-9]*(?:[\s,]+[A-Za-z]+[0-9]*)*))?", re.I)
_DISABLE_FILE = re.compile(r"#\s*trainlint:\s*disable-file(?:\s*=\s*(?P<codes>[A-Za-z0-9 ,]+))?", re.I)

ALL = frozenset({"*"})


def _codes(raw: Optional[str]) -> FrozenSet[str]:
    if not raw:
        return ALL
    return frozenset(c.upper() for c in re.split(r"[\s,]+", raw.strip()) if c)


def noqa_codes(line: str) -> Optional[FrozenSet[str]]:
    """Codes a `# noqa` on this physical line suppresses (ALL for a bare noqa), or None."""
    if "noqa" not in line.lower():
        return None
    m = _NOQA.search(line)
    if not m:
        return None
    return _codes(m.group("codes"))


def file_disabled_codes(text: str) -> FrozenSet[str]:
    """Codes disabled for the whole file by `# trainlint: disable-file=TL101,TL2`."""
    if "trainlint:" not in text:
        return frozenset()
    out = set()
    for m in _DISABLE_FILE.finditer(text):
        out |= _codes(m.group("codes"))
    return frozenset(out)


def suppressed(code: str, codes: Optional[FrozenSet[str]]) -> bool:
    """Whether `code` is covered by a set of codes or prefixes (ALL covers everything)."""
    if not codes:
        return False
    if "*" in codes:
        return True
    return any(code.startswith(c) for c in codes)
