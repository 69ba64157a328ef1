"""All rules by code, and selection of rule sets by code or prefix (ruff style)."""

from __future__ import annotations

import importlib
import os
import re
from typing import Dict, Iterable, List, Optional

from trainlint.rules.base import Rule

_RULES_DIR = os.path.join(os.path.dirname(__file__), "rules")
_RULE_FILE = re.compile(r"^(tl\d{3})_\w+\.py$")


def rule_modules() -> Dict[str, str]:
    """Code -> module name, read from the file names in trainlint/rules/ (`tl101_missing_zero_grad.py`).

    Selecting rules needs only their codes: reading the folder instead of importing every
    rule keeps a run that the cache answers free of libcst and the analysis layer.
    """
    global _MODULES
    if _MODULES is None:
        found = {}
        for name in sorted(os.listdir(_RULES_DIR)):
            m = _RULE_FILE.match(name)
            if m:
                found[m.group(1).upper()] = name[:-3]
        _MODULES = found
    return _MODULES


_MODULES: Optional[Dict[str, str]] = None


def rule_codes() -> List[str]:
    """Every code, TL000 included, in catalogue order."""
    if _RULES is not None:  # already imported (or extended, e.g. by tests): the source of truth
        return list(_RULES)
    return ["TL000", *rule_modules()]


class SyntaxErrorRule(Rule):
    """## What it does
    Reports a file that does not parse as Python.

    ## Why is this bad?
    Nothing else in the file can be checked, and the code will not run.

    ## Example
    ```python
    for batch in loader
        train(batch)
    ```

    ## Use instead
    ```python
    for batch in loader:
        train(batch)
    ```
    """

    code = "TL000"
    name = "syntax-error"
    severity = "error"


_RULES: Optional[Dict[str, Rule]] = None


def all_rules() -> Dict[str, Rule]:
    """Code -> rule instance, TL000 included, in catalogue order."""
    global _RULES
    if _RULES is None:
        rules: Dict[str, Rule] = {"TL000": SyntaxErrorRule()}
        for mod_name in rule_modules().values():
            mod = importlib.import_module(f"trainlint.rules.{mod_name}")
            rule_cls = mod.RULE
            rules[rule_cls.code] = rule_cls()
        _RULES = dict(sorted(rules.items()))
    return _RULES


def get_rule(code: str) -> Optional[Rule]:
    return all_rules().get(code.upper())


class UnknownCodeError(ValueError):
    pass


def expand(selectors: Iterable[str]) -> List[str]:
    """Codes matched by selectors like `TL101`, `TL1`, `TL` or `ALL`."""
    codes = rule_codes()
    out: List[str] = []
    for sel in selectors:
        sel = sel.strip().upper()
        if not sel:
            continue
        if sel == "ALL":
            matched = codes
        else:
            matched = [c for c in codes if c.startswith(sel)]
        if not matched:
            raise UnknownCodeError(f"unknown rule code or prefix: {sel!r}")
        out.extend(c for c in matched if c not in out)
    return out


def resolve_selection(
    select: Optional[Iterable[str]] = None,
    ignore: Iterable[str] = (),
    extend_select: Iterable[str] = (),
) -> frozenset:
    """The selected codes: `select` replaces the default (all), extend adds, ignore removes."""
    chosen = set(expand(select)) if select is not None else set(rule_codes())
    chosen |= set(expand(extend_select))
    chosen -= set(expand(ignore))
    return frozenset(chosen)
