from pathlib import Path

from trainlint.docs import END, START, readme_section, rules_table
from trainlint.registry import all_rules

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_rule_table_matches_registry():
    text = README.read_text(encoding="utf-8")
    section = text[text.index(START) : text.index(END) + len(END)]
    assert section == readme_section(), "README rule table is stale: run `python -m trainlint.docs`"


def test_table_lists_every_rule_once():
    table = rules_table()
    for code, rule in all_rules().items():
        assert table.count(f"| {code} | {rule.name} |") == 1
