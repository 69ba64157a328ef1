"""Apply rules' fixes (libcst node replacements) to a module, keeping everything else byte for byte."""

from __future__ import annotations

import ast
from typing import Dict, List, Sequence, Tuple

import libcst as cst

from trainlint.rules.base import Replacement


class _Replacer(cst.CSTTransformer):
    def __init__(self, replacements: Dict[int, cst.CSTNode]):
        self.replacements = replacements
        self.applied = 0

    def on_leave(self, original_node, updated_node):
        new = self.replacements.get(id(original_node))
        if new is not None:
            self.applied += 1
            return new
        return updated_node


def _overlaps(outer: cst.CSTNode, inner: cst.CSTNode) -> bool:
    if outer is inner:
        return True
    found = False

    class _Find(cst.CSTVisitor):
        def on_visit(self, node):
            nonlocal found
            if node is inner:
                found = True
            return not found

    outer.visit(_Find())
    return found


def apply_replacements(module: cst.Module, fixes: Sequence[Replacement]) -> Tuple[str, int]:
    """The fixed source and how many fixes were applied.

    Overlapping fixes: the first wins, the rest wait for the next run (`--fix` loops).
    A result that does not parse is thrown away: a fix never writes broken code.
    """
    chosen: List[Replacement] = []
    for f in fixes:
        if any(_overlaps(c.old, f.old) or _overlaps(f.old, c.old) for c in chosen):
            continue
        chosen.append(f)
    replacer = _Replacer({id(f.old): f.new for f in chosen})
    new_module = module.visit(replacer)
    new_text = new_module.code
    try:
        ast.parse(new_text)
    except SyntaxError:
        return module.code, 0
    return new_text, replacer.applied
