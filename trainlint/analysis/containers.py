"""Dict displays: the entries of `{"train": a, "val": b}` / `dict(train=a, val=b)`, and what
`d["val"]` stands for when `d` is bound to such a display (transforms by split, data sets by
split, checkpoint dicts)."""

from __future__ import annotations

from typing import List, Optional, Tuple

import libcst as cst

from trainlint.analysis.facts import Site
from trainlint.analysis.names import dotted


def string_key(element: cst.DictElement) -> Optional[str]:
    k = element.key
    if isinstance(k, cst.SimpleString):
        v = k.evaluated_value
        return v if isinstance(v, str) else None
    return None


def dict_entries(node: cst.BaseExpression) -> Optional[List[Tuple[Optional[str], cst.BaseExpression]]]:
    """(key, value) pairs of a dict display or `dict(k=v, ...)` (key None when it is not a
    string literal); None for anything else and for displays with `**spread` entries."""
    if isinstance(node, cst.Dict):
        out = []
        for el in node.elements:
            if not isinstance(el, cst.DictElement):
                return None
            out.append((string_key(el), el.value))
        return out
    if isinstance(node, cst.Call) and dotted(node.func) == "dict":
        out = []
        for a in node.args:
            if a.keyword is None:
                return None
            out.append((a.keyword.value, a.value))
        return out
    return None


def subscript_key(expr: cst.Subscript) -> Optional[str]:
    """`"val"` for `d["val"]`; None for any other subscript."""
    if len(expr.slice) != 1 or not isinstance(expr.slice[0].slice, cst.Index):
        return None
    k = expr.slice[0].slice.value
    if isinstance(k, cst.SimpleString) and isinstance(k.evaluated_value, str):
        return k.evaluated_value
    return None


def dict_entry(ctx, expr: cst.Subscript, at: Site) -> List[Tuple[cst.BaseExpression, Site]]:
    """What `d["val"]` stands for: the "val" entry of every dict display `d` may be bound to
    (through names and `self.` attributes). Empty when the key is not a literal, `d` is not
    followed to displays only, or a display lacks the key."""
    key = subscript_key(expr)
    if key is None:
        return []
    out: List[Tuple[cst.BaseExpression, Site]] = []
    for value, site in ctx.resolve(expr.value, at):
        entries = dict_entries(value)
        if entries is None:
            return []
        found = [v for k, v in entries if k == key]
        if len(found) != 1:
            return []
        out.append((found[0], site))
    return out
