"""The README's rule table, generated from the registry so it cannot drift.

`python -m trainlint.docs` rewrites the part of README.md between the rules markers;
a test fails when the README is out of date.
"""

from __future__ import annotations

import sys
from pathlib import Path

from trainlint.registry import all_rules

START, END = "<!-- rules:start -->", "<!-- rules:end -->"


def rules_table() -> str:
    lines = [
        "| code | name | severity | fixable | what it finds |",
        "|---|---|---|---|---|",
    ]
    for code, rule in all_rules().items():
        summary = rule.summary().replace("|", "\\|")
        lines.append(f"| {code} | {rule.name} | {rule.severity} | {rule.fixable or '-'} | {summary} |")
    return "\n".join(lines)


def readme_section() -> str:
    return (
        f"{START}\n## Rules\n\nAll rules are on by default. `trainlint rule CODE` prints a rule's full "
        f"documentation (what it does, why it is bad, an example and what to write instead).\n"
        f"Fixable: *safe* fixes are applied by `--fix`, *unsafe* ones also need `--unsafe-fixes`.\n\n"
        f"{rules_table()}\n{END}"
    )


def update_readme(path: Path) -> bool:
    text = path.read_text(encoding="utf-8")
    start, end = text.index(START), text.index(END) + len(END)
    new = text[:start] + readme_section() + text[end:]
    if new != text:
        path.write_text(new, encoding="utf-8")
        return True
    return False


if __name__ == "__main__":  # pragma: no cover
    readme = Path(sys.argv[1] if len(sys.argv) > 1 else "README.md")
    print("README updated" if update_readme(readme) else "README already up to date")
