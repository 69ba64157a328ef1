"""All rules by code, and selection of rule sets by code or prefix (ruff style)."""

from __future__ import annotations

import importlib
from typing import Dict, Iterable, List, Optional

from trainlint.rules.base import Rule

# One module per rule under trainlint/rules/; the order here is the order of `trainlint rules`.
RULE_MODULES = (
    "tl101_missing_zero_grad",
    "tl201_softmax_before_cross_entropy",
    "tl301_eval_without_eval_mode",
    "tl302_eval_without_no_grad",
    "tl401_unshuffled_train_loader",
    "tl402_leaky_normalization",
)


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
        for mod_name in RULE_MODULES:
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
    codes = list(all_rules())
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
    chosen = set(expand(select)) if select is not None else set(all_rules())
    chosen |= set(expand(extend_select))
    chosen -= set(expand(ignore))
    return frozenset(chosen)
