"""Qualified names from the module's own imports (no libcst scope provider: it costs ~5x a parse).

`import torch.nn as nn` makes `nn.CrossEntropyLoss` read `torch.nn.CrossEntropyLoss`;
`from torch.nn import functional as F` makes `F.softmax` read `torch.nn.functional.softmax`.
Imports anywhere in the file count (function-level imports are common in scripts).
"""

from __future__ import annotations

from typing import Dict, List, Optional

import libcst as cst


def dotted(node: cst.CSTNode) -> Optional[str]:
    """`a.b.c` for a Name/Attribute chain, else None."""
    parts = []
    while isinstance(node, cst.Attribute):
        parts.append(node.attr.value)
        node = node.value
    if isinstance(node, cst.Name):
        parts.append(node.value)
        return ".".join(reversed(parts))
    return None


class Imports:
    """Local name -> fully qualified name, for the names bound by import statements."""

    def __init__(self) -> None:
        self.alias: Dict[str, str] = {}
        # Modules imported with `from m import *`, in order (".models" for a relative one).
        self.star: List[str] = []

    def add_import(self, node: cst.Import) -> None:
        for alias in node.names:
            full = dotted(alias.name)
            if not full:
                continue
            if alias.asname is not None and isinstance(alias.asname.name, cst.Name):
                self.alias[alias.asname.name.value] = full
            else:
                first = full.split(".", 1)[0]
                self.alias[first] = first

    def add_import_from(self, node: cst.ImportFrom) -> None:
        module = dotted(node.module) if node.module is not None else ""
        if module is None:
            return
        prefix = "." * len(node.relative)
        base = prefix + module
        if isinstance(node.names, cst.ImportStar):
            if base:
                self.star.append(base)
            return
        for alias in node.names:
            name = dotted(alias.name)
            if not name:
                continue
            local = name
            if alias.asname is not None and isinstance(alias.asname.name, cst.Name):
                local = alias.asname.name.value
            self.alias[local] = f"{base}.{name}" if base else name

    def qualify(self, node: cst.CSTNode) -> Optional[str]:
        """The qualified name of a Name/Attribute chain whose root is an imported name."""
        parts = []
        while isinstance(node, cst.Attribute):
            parts.append(node.attr.value)
            node = node.value
        if not isinstance(node, cst.Name):
            return None
        root = self.alias.get(node.value)
        if root is None:
            return None
        parts.append(root)
        return ".".join(reversed(parts))


class ExpressionFacts:
    def __init__(self) -> None:
        self.names: set = set()
        self.nodes: set = set()
        self.ops: set = set()


def expression_facts(expr: cst.CSTNode) -> ExpressionFacts:
    """Names, node ids and binary operators inside an expression (one small walk)."""
    from trainlint.analysis.facts import walk

    c = ExpressionFacts()
    for node in walk(expr):
        c.nodes.add(id(node))
        if isinstance(node, cst.Name):
            c.names.add(node.value)
        elif isinstance(node, cst.BinaryOperation):
            c.ops.add(type(node.operator).__name__)
    return c
