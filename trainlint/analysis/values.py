"""Where a value comes from: "is this tensor the output of a softmax?" across names,
`self.` attributes, parameters, helper functions, model classes and `nn.Sequential`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import FrozenSet, Optional, Tuple

import libcst as cst

from trainlint.analysis.context import MAX_DEPTH, FileContext
from trainlint.analysis.facts import FunctionInfo, Site
from trainlint.analysis.flags import Flags, bool_defaults, branch_taken, call_flags

# The flag values of one call of a function: (that function, its flags); see analysis/flags.py.
CallFlags = Optional[Tuple[FunctionInfo, Flags]]
_UNCONDITIONAL = ""  # `_conditional_source`: the use sees an assignment that always runs

# Tensor methods that keep "these are probabilities": `probs.float()`, `probs.squeeze(1)`.
_SHAPE_METHODS = {"float", "double", "half", "to", "type", "cuda", "cpu", "squeeze", "unsqueeze", "view", "reshape", "contiguous", "permute", "transpose", "flatten", "clone"}
# Their function spellings: `torch.squeeze(probs)`.
_SHAPE_FUNCS = {"torch.squeeze", "torch.unsqueeze", "torch.reshape", "torch.flatten", "torch.permute", "torch.transpose", "torch.clone"}


@dataclass(frozen=True)
class OutputKind:
    """An activation, described by its functional and module spellings."""

    label: str  # "softmax"
    funcs: FrozenSet[str]  # qualified names of functions: torch.nn.functional.softmax
    method: str  # tensor method name: x.softmax(dim)
    modules: FrozenSet[str]  # qualified names of module classes: torch.nn.Softmax


def _seq_last(call: cst.Call) -> Optional[cst.BaseExpression]:
    pos = [a.value for a in call.args if a.keyword is None and not a.star]
    return pos[-1] if pos else None


def source_of(ctx: FileContext, expr: cst.BaseExpression, at: Site, kind: OutputKind, depth: int = 0, flags: CallFlags = None) -> Optional[str]:
    """A short description of how `expr` is `kind`'s output (e.g. "F.softmax(...) on line 3"),
    or None when that cannot be shown. Every possible value must be such an output.
    `flags`: the flag values of the call through which `at`'s function is reached."""
    if depth > MAX_DEPTH:
        return None
    if isinstance(expr, cst.Name) and at.function is not None:
        conditional = _conditional_source(ctx, expr, at, kind, depth, flags)
        if conditional != _UNCONDITIONAL:
            return conditional
    if isinstance(expr, cst.Name):
        unpacked = _unpacked_from(ctx, expr, at, kind, depth)
        if unpacked is not None:
            return unpacked or None
    if isinstance(expr, (cst.Name, cst.Attribute)) and not _is_imported(ctx, expr):
        cands = ctx.resolve(expr, at)
        if not cands or any(v is expr for v, _ in cands):
            return None
        found = None
        for value, site in cands:
            found = source_of(ctx, value, site, kind, depth + 1, flags)
            if found is None:
                return None
        return found
    if not isinstance(expr, cst.Call):
        return None
    func = expr.func
    q = ctx.qualname(func)
    if q in kind.funcs:
        return f"`{ctx.module.code_for_node(func)}(...)`"
    if q in _SHAPE_FUNCS and expr.args and expr.args[0].keyword is None and not expr.args[0].star:
        return source_of(ctx, expr.args[0].value, at, kind, depth + 1, flags)
    if isinstance(func, cst.Attribute):
        # `self.softmax(x)` is a layer kept under that name (often `nn.LogSoftmax()`), not
        # the tensor method: it is followed as a module below.
        if func.attr.value == kind.method and q is None and not (isinstance(func.value, cst.Name) and func.value.value == "self"):
            return f"`.{kind.method}(...)`"
        if func.attr.value in _SHAPE_METHODS and q is None:
            return source_of(ctx, func.value, at, kind, depth + 1, flags)
    if isinstance(func, cst.Call) and ctx.qualname(func.func) in kind.modules:
        return f"`{ctx.module.code_for_node(func.func)}`"
    if isinstance(func, (cst.Name, cst.Attribute)) and q is None:
        return _callable_output(ctx, func, at, kind, depth, expr)
    return None


def _conditional_source(ctx: FileContext, name: cst.Name, at: Site, kind: OutputKind, depth: int, flags: CallFlags) -> Optional[str]:
    """The use of `name` at `at` sees one assignment, made under an `if` that the use is not
    under (`if apply_softmax: y = F.softmax(y, 1)` then `return y`): when the branch does
    not run, the value from before it reaches the use. A branch decided by a flag parameter
    (analysis/flags.py) is followed one way; an undecided one both ways, and both values
    must be `kind`'s output. `_UNCONDITIONAL` when the assignment always runs."""
    sites = ctx.reaching(name.value, at)
    if len(sites) != 1 or sites[0].function is not at.function or sites[0].op != "=":
        return _UNCONDITIONAL
    site = sites[0]
    branches = [b for b in site.ifs if b not in at.ifs]
    if not branches:
        return _UNCONDITIONAL
    if flags is not None and flags[0] is at.function:
        values = flags[1]
    else:
        # Reached without a known call: a flag that defaults to False is taken as not
        # passed (the common call), one that defaults to True as unknown.
        values = {k: v for k, v in bool_defaults(at.function).items() if v is False}  # type: ignore[arg-type]
    taken = [branch_taken(ctx, b, values) for b in branches]
    if any(t is False for t in taken):
        return source_of(ctx, name, site, kind, depth + 1, flags)  # the value before the `if`
    if all(t is True for t in taken):
        return _UNCONDITIONAL
    if source_of(ctx, name, site, kind, depth + 1, flags) is None:
        return None  # without the branch, the value is not `kind`'s output
    return _UNCONDITIONAL


def _unpacked_from(ctx: FileContext, name: cst.Name, at: Site, kind: OutputKind, depth: int) -> Optional[str]:
    """`logits, probs = model(x)`: the matching element of what the call returns.
    None: not an unpacking; "": an unpacking that is not `kind`'s output."""
    sites = ctx.reaching(name.value, at)
    if len(sites) != 1 or sites[0].value is not None or not isinstance(sites[0].whole_value, cst.Call):
        return None
    site = sites[0]
    index = next((i for i, t in enumerate(site.targets) if isinstance(t, cst.Name) and t.value == name.value), -1)
    call = site.whole_value
    fn = None
    if isinstance(call.func, cst.Name) and ctx.class_named(call.func.value) is None:
        fn = ctx.function_named(call.func.value, site.function)
    if fn is None and isinstance(call.func, (cst.Name, cst.Attribute)):
        cls = ctx.instance_class(call.func, site)
        fn = ctx.method(cls, "forward") if cls is not None else None
    if fn is None and index >= 0 and isinstance(call.func, (cst.Name, cst.Attribute)):
        return _unpacked_from_project(ctx, call.func, site, kind, index, len(site.targets))
    if fn is None or index < 0:
        return ""
    found = ""
    for r in ctx.returns_of(fn):
        elements = r.value.elements if isinstance(r.value, (cst.Tuple, cst.List)) else None
        if not elements or len(elements) != len(site.targets) or isinstance(elements[index], cst.StarredElement):
            return ""
        found = source_of(ctx, elements[index].value, r, kind, depth + 1) or ""
        if not found:
            return ""
    return found


def _unpacked_from_project(ctx: FileContext, func: cst.BaseExpression, at: Site, kind: OutputKind, index: int, width: int) -> str:
    """`logits, probs = model(x)` with `model` built from a class of another module of the
    project: that class's summary says, element by element, which outputs of the tuple
    `forward` returns are `kind`'s (analysis/project.py). "" when that cannot be shown for
    every construction `model` may hold."""
    if ctx.project is None or ctx.qualname(func) is not None:
        return ""
    from trainlint.analysis.project import constructor_summary

    cands = ctx.constructions(func, at)
    found = ""
    for value, _ in cands:
        if not isinstance(value, cst.Call) or not isinstance(value.func, (cst.Name, cst.Attribute)):
            return ""
        summary = constructor_summary(ctx, value.func)
        elements = summary[0].get(f"{kind.label}_elements") if summary is not None else None
        if not isinstance(elements, list) or len(elements) != width or not elements[index]:
            return ""
        name = ctx.module.code_for_node(value.func).rsplit(".", 1)[-1]
        where = summary[1]  # type: ignore[index]
        found = f"`{name}` from {where}, whose `forward` returns {elements[index]} as element {index + 1} of {width}"
    return found


def returned_elements(ctx: FileContext, fn: FunctionInfo, kind: OutputKind, flags: CallFlags = None) -> Optional[list]:
    """For a `fn` whose every return is a tuple of the same length (`return logits, probs`):
    per element, how it is `kind`'s output (as `source_of` says), or None where some return
    gives something else there. None when some return is not such a tuple. Branches a flag
    keeps from running in the call are left out."""
    out: Optional[list] = None
    for r in ctx.returns_of(fn):
        if _skipped(ctx, r, fn, flags):
            continue
        elements = r.value.elements if isinstance(r.value, (cst.Tuple, cst.List)) else None
        if not elements or any(isinstance(e, cst.StarredElement) for e in elements):
            return None
        if out is None:
            out = [""] * len(elements)  # "": not looked at yet
        elif len(elements) != len(out):
            return None
        for i, e in enumerate(elements):
            if out[i] is not None:
                out[i] = source_of(ctx, e.value, r, kind, 1, flags) or None
    return out


def _is_imported(ctx: FileContext, expr: cst.BaseExpression) -> bool:
    return ctx.qualname(expr) is not None


def _callable_output(ctx: FileContext, func: cst.BaseExpression, at: Site, kind: OutputKind, depth: int, call: Optional[cst.Call] = None) -> Optional[str]:
    """`func(...)` returns `kind`'s output: a module instance, a model class, a helper.
    `call`: the call itself, whose flag arguments decide branches of what it runs."""
    # A same-module helper function (or method) whose every return is such an output.
    if isinstance(func, cst.Name) and ctx.class_named(func.value) is None:
        fn = ctx.function_named(func.value, at.function)
        if fn is not None:
            return _returns_output(ctx, fn, kind, depth, _flags_of(fn, call, False))
    if isinstance(func, cst.Attribute) and isinstance(func.value, cst.Name) and func.value.value == "self":
        cls = ctx.method_class(at.function)
        fn = ctx.method(cls, func.attr.value) if cls is not None else None
        if fn is not None:
            return _returns_output(ctx, fn, kind, depth, _flags_of(fn, call, True))
    # An instance: nn.Softmax(), nn.Sequential(..., nn.Softmax()), or a model class.
    cands = ctx.constructions(func, at)
    if not cands:
        return None
    found = None
    for value, site in cands:
        found = _instance_output(ctx, value, site, kind, depth, call)
        if found is None:
            return None
    return found


def _skipped(ctx: FileContext, site: Site, fn: FunctionInfo, flags: CallFlags) -> bool:
    """`site` lies in a branch of `fn` that a flag keeps from running in this call
    (`if apply_softmax: return F.softmax(y, 1)` in a call without the flag)."""
    values = flags[1] if flags is not None and flags[0] is fn else {k: v for k, v in bool_defaults(fn).items() if v is False}
    return any(b.function is fn and branch_taken(ctx, b, values) is False for b in site.ifs)


def _flags_of(fn: FunctionInfo, call: Optional[cst.Call], bound_method: bool) -> CallFlags:
    return (fn, call_flags(fn, call, bound_method)) if call is not None else None


def _instance_output(ctx: FileContext, value: cst.BaseExpression, site: Site, kind: OutputKind, depth: int, call: Optional[cst.Call] = None) -> Optional[str]:
    if not isinstance(value, cst.Call):
        return None
    q = ctx.qualname(value.func)
    if q in kind.modules:
        return f"`{ctx.module.code_for_node(value.func)}`"
    if q in ("torch.nn.Sequential",):
        last = _seq_last(value)
        if isinstance(last, cst.Call) and ctx.qualname(last.func) in kind.modules:
            return f"an `nn.Sequential` ending in `{ctx.module.code_for_node(last.func)}`"
        return None
    if q is None and isinstance(value.func, cst.Name):
        cls = ctx.class_named(value.func.value)
        if cls is not None:
            forward = ctx.method(cls, "forward")
            if forward is not None:
                inner = _returns_output(ctx, forward, kind, depth, _flags_of(forward, call, True))
                if inner:
                    return f"`{cls.name}.forward`, which returns {inner}"
    if ctx.project is not None and isinstance(value.func, (cst.Name, cst.Attribute)):
        # A model class from another module of the project: its summary says what
        # `forward` returns (analysis/project.py).
        from trainlint.analysis.project import constructor_summary

        found = constructor_summary(ctx, value.func)
        if found is not None and found[0].get(kind.label):
            summary, where = found
            name = ctx.module.code_for_node(value.func).rsplit(".", 1)[-1]
            return f"`{name}` from {where}, whose `forward` returns {summary[kind.label]}"
    return None


def _returns_output(ctx: FileContext, fn, kind: OutputKind, depth: int, flags: CallFlags = None) -> Optional[str]:
    returns = [r for r in ctx.returns_of(fn) if r.value is not None and not _skipped(ctx, r, fn, flags)]
    if not returns:
        return None
    found = None
    for r in returns:
        found = source_of(ctx, r.value, r, kind, depth + 1, flags)
        if found is None:
            return None
    return found


SOFTMAX = OutputKind(
    "softmax",
    frozenset({"torch.softmax", "torch.nn.functional.softmax", "torch.special.softmax", "torch.Tensor.softmax"}),
    "softmax",
    frozenset({"torch.nn.Softmax", "torch.nn.modules.activation.Softmax"}),
)
SIGMOID = OutputKind(
    "sigmoid",
    frozenset({"torch.sigmoid", "torch.nn.functional.sigmoid", "torch.special.expit", "torch.Tensor.sigmoid"}),
    "sigmoid",
    frozenset({"torch.nn.Sigmoid", "torch.nn.modules.activation.Sigmoid"}),
)


def activation_input(ctx: FileContext, expr: cst.BaseExpression, kind: OutputKind) -> Optional[cst.BaseExpression]:
    """`x` for an activation written out in place: `F.softmax(x, 1)`, `x.softmax(1)`,
    `torch.sigmoid(x)`, `x.sigmoid()`; None for anything else (a name, a module call).
    What a fix puts where the activation stood, to feed the logits on."""
    if not isinstance(expr, cst.Call):
        return None
    func = expr.func
    if ctx.qualname(func) in kind.funcs and expr.args and not expr.args[0].star and expr.args[0].keyword is None:
        return expr.args[0].value
    if isinstance(func, cst.Attribute) and func.attr.value == kind.method and ctx.qualname(func) is None:
        return func.value
    return None


def activation_through_name(
    ctx: FileContext, name: cst.BaseExpression, at: Site, kind: OutputKind
) -> Optional[Tuple[cst.Call, cst.BaseExpression]]:
    """For `probs` read at `at` after `probs = F.softmax(logits, 1)`: (that softmax call, `logits`),
    when the name is nothing but a way to carry the activation to this one read, so that
    writing `probs = logits` changes nothing but what this read gets.

    That holds when `probs` has this single `probs = <activation written in place>`
    statement as its binding in the read's own scope (function or module) and no other
    occurrence there at all, nested functions included: no second binding (loop target,
    walrus, augmented assignment, `del`), no other read (`probs.argmax(1)`, a log call,
    an in-place `probs.clamp_()`). None otherwise, and a fix must then not be offered.
    """
    if not isinstance(name, cst.Name):
        return None
    sites = ctx.reaching(name.value, at)
    if len(sites) != 1:
        return None
    site = sites[0]
    stmt = site.node
    if (
        site.function is not at.function
        or site.op != "="
        or not isinstance(stmt, cst.Assign)
        or len(stmt.targets) != 1
        or not isinstance(stmt.targets[0].target, cst.Name)
        or stmt.value is not site.value
        or not isinstance(site.value, cst.Call)
    ):
        return None
    inner = activation_input(ctx, site.value, kind)
    if inner is None:
        return None
    from trainlint.analysis.facts import walk

    scope = site.function.node if site.function is not None else ctx.module
    target = stmt.targets[0].target
    for node in walk(scope):
        if isinstance(node, cst.Name) and node.value == name.value and node is not target and node is not name:
            return None
    return site.value, inner


def snippet(ctx: FileContext, node: cst.CSTNode, limit: int = 40) -> str:
    """The node's source, shortened for a message."""
    text = " ".join(ctx.module.code_for_node(node).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."

