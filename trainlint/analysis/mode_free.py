"""Calls inside a model class that cannot depend on the model's train/eval mode.

`model.eval()` reaches the model's children and its `self.training` flag, nothing else. A
helper the class calls (`d2l.to_onehot(inputs, self.vocab_size)` in `forward`) whose code
cannot be seen computes the same thing in both modes when it is handed none of them: no
`self`, no `self.training`, no submodule, and its result does not become a child (it is
not made in `__init__`, not stored on `self`). Such a call does not make the class's
layers unknown.
"""

from __future__ import annotations

from typing import Optional

import libcst as cst

from trainlint.analysis.context import FileContext
from trainlint.analysis.facts import CallSite, ClassInfo, Site, walk
from trainlint.analysis.inputs import constructor_arguments
from trainlint.analysis.names import dotted

# Builtins that return a plain number or string, never a module.
_DATA_BUILTINS = {"int", "float", "len", "bool", "str", "round", "abs", "min", "max"}
_MAX_DEPTH = 4
# Methods that keep their argument in the object they are called on (a module, a list of them).
_STORING_METHODS = {
    "append", "extend", "insert", "add_module", "register_module", "register_buffer",
    "register_parameter", "update", "__setitem__", "setdefault",
}


def mode_free_helper_call(ctx: FileContext, cls: ClassInfo, call: CallSite) -> bool:
    """`call`, made in a method of `cls`, is a helper call its modes cannot reach."""
    chain = list(ctx.enclosing_function_chain(call.function))
    if not chain or any(f.name == "__init__" for f in chain):
        return False  # children are built in `__init__` (or at class level)
    if _stored_on_self(ctx, call):
        return False
    args = [a.value for a in call.node.args]  # type: ignore[attr-defined]
    return all(_free_of_self(ctx, cls, a, call, 0) for a in args)


def _rooted_at_self(expr: Optional[cst.BaseExpression]) -> bool:
    name = dotted(expr) if expr is not None else None
    return bool(name) and (name == "self" or name.startswith("self."))  # type: ignore[union-attr]


def _stored_on_self(ctx: FileContext, call: CallSite) -> bool:
    """The call's result becomes part of the model: `self.x = helper(...)`,
    `self.blocks.append(helper(...))`, `self.add_module("x", helper(...))`,
    `setattr(self, "x", helper(...))`."""
    node = call.node
    for a in ctx.facts.assigns:
        if a.function is not call.function or a.value is None:
            continue
        if any(_rooted_at_self(t.value if isinstance(t, (cst.Attribute, cst.Subscript)) else t) for t in a.targets):
            if any(n is node for n in walk(a.whole_value or a.value)):
                return True
    for c in ctx.calls_in(call.function):
        if c is call:
            continue
        # Only methods that keep what they are given: `self.fc(helper(x))` runs a child on
        # the result, it does not store it.
        to_self = (c.attr in _STORING_METHODS and _rooted_at_self(c.receiver)) or (
            dotted(c.func) == "setattr" and c.positional(0) is not None and _rooted_at_self(c.positional(0))
        )
        if to_self and any(n is node for a in c.node.args for n in walk(a.value)):  # type: ignore[attr-defined]
            return True
    return False


def _free_of_self(ctx: FileContext, cls: ClassInfo, expr: cst.BaseExpression, at: Site, depth: int) -> bool:
    """`expr` hands over nothing of the model: no `self`, no `self.training`, no attribute
    of `self` other than a plain number/string (`self.vocab_size`), followed through the
    method's local names."""
    if depth > _MAX_DEPTH:
        return False
    nodes = list(walk(expr))
    # `x.attr`: `attr` names no variable; `self.attr` is judged as a whole.
    attr_names = {id(n.attr) for n in nodes if isinstance(n, cst.Attribute)}
    self_bases = set()
    for node in nodes:
        if isinstance(node, cst.Attribute) and isinstance(node.value, cst.Name) and node.value.value == "self":
            self_bases.add(id(node.value))
            if node.attr.value == "training" or not _data_attribute(ctx, cls, node.attr.value, at, depth):
                return False
    for node in nodes:
        if not isinstance(node, cst.Name) or id(node) in attr_names or id(node) in self_bases:
            continue
        if node.value in ("self", "super"):
            return False
        for s in ctx.reaching(node.value, at):
            value = s.value if s.value is not None else s.whole_value
            if value is None or not _free_of_self(ctx, cls, value, s, depth + 1):
                return False
    return True


def _data_attribute(ctx: FileContext, cls: ClassInfo, attr: str, at: Site, depth: int) -> bool:
    """Every value `self.<attr>` gets in the class is a plain number or string: a literal,
    arithmetic on them, `len(...)`, or an `__init__` parameter every construction of the
    class passes one for."""
    sites = [s for s in ctx.self_attr_values(attr, at)]
    if not sites or any(s.op != "=" or s.value is None for s in sites):
        return False
    return all(_data(ctx, s.value, s, depth + 1) for s in sites)  # type: ignore[arg-type]


def _data(ctx: FileContext, expr: cst.BaseExpression, at: Site, depth: int) -> bool:
    if depth > _MAX_DEPTH:
        return False
    if isinstance(expr, (cst.Integer, cst.Float, cst.SimpleString, cst.ConcatenatedString)):
        return True
    if isinstance(expr, cst.Name) and expr.value in ("True", "False", "None"):
        return True
    if isinstance(expr, cst.BinaryOperation):
        return _data(ctx, expr.left, at, depth + 1) and _data(ctx, expr.right, at, depth + 1)
    if isinstance(expr, cst.UnaryOperation):
        return _data(ctx, expr.expression, at, depth + 1)
    if isinstance(expr, cst.IfExp):
        return _data(ctx, expr.body, at, depth + 1) and _data(ctx, expr.orelse, at, depth + 1)
    if isinstance(expr, cst.Call):
        return isinstance(expr.func, cst.Name) and expr.func.value in _DATA_BUILTINS and ctx.qualname(expr.func) is None
    if isinstance(expr, cst.Name):
        fn = at.function
        sites = ctx.reaching(expr.value, at)
        if not sites and fn is not None and fn.name == "__init__" and expr.value in fn.params:
            passed = constructor_arguments(ctx, fn, expr.value)
            return bool(passed) and all(_data(ctx, v, s, depth + 1) for v, s in passed)
        return bool(sites) and all(s.op == "=" and s.value is not None and _data(ctx, s.value, s, depth + 1) for s in sites)
    return False
