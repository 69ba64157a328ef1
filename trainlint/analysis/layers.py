"""Which layer a `.weight` belongs to, and where that layer sits in its network.

Used by the initialisation rule: `m.weight` in `for m in self.modules(): if isinstance(m,
nn.Linear): ...` is *every* Linear layer (a type guard), `self.fc1.weight` is one layer
found through its construction, `net[0].weight` is an element of an `nn.Sequential`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import List, Optional, Set

import libcst as cst

from trainlint.analysis.context import FileContext
from trainlint.analysis.facts import Block, CallSite, Site, walk
from trainlint.analysis.names import dotted

# Layers whose weight is a matrix (or a bank of filters): constant values make units identical.
_WEIGHT_LAYER = re.compile(r"^(Lazy)?(Linear|Bilinear|Conv[123]d|ConvTranspose[123]d)$")
_NORM = re.compile(r"norm", re.I)
# A class name checked as a string: `classname.find('Conv') != -1` (DCGAN style).
_WEIGHT_LAYER_STR = re.compile(r"^(Linear|Conv|Conv[123]d|ConvTranspose[123]d?)$")


def is_weight_layer_qualname(q: Optional[str]) -> bool:
    return bool(q) and q.startswith("torch.nn.") and bool(_WEIGHT_LAYER.match(q.rsplit(".", 1)[-1]))  # type: ignore[union-attr]


@dataclass
class TypeGuard:
    """What an `if` tells about a name's class: 'weight' (all weight layers), 'norm', 'other'."""

    kind: str
    label: str  # "nn.Linear" as written


def _same(ctx: FileContext, a: cst.CSTNode, b: cst.CSTNode) -> bool:
    return ctx.module.code_for_node(a) == ctx.module.code_for_node(b)


def _classes_kind(ctx: FileContext, classes: List[cst.BaseExpression]) -> Optional[TypeGuard]:
    kinds: Set[str] = set()
    labels = []
    for c in classes:
        q = ctx.qualname(c)
        text = ctx.module.code_for_node(c)
        labels.append(text)
        if is_weight_layer_qualname(q):
            kinds.add("weight")
        elif _NORM.search(text.rsplit(".", 1)[-1]):
            kinds.add("norm")
        else:
            kinds.add("other")
    if not kinds:
        return None
    kind = kinds.pop() if len(kinds) == 1 else "mixed"
    return TypeGuard(kind, ", ".join(labels))


def _elements(expr: cst.BaseExpression) -> List[cst.BaseExpression]:
    if isinstance(expr, (cst.Tuple, cst.List, cst.Set)):
        return [e.value for e in expr.elements]
    return [expr]


def _class_name_var(ctx: FileContext, expr: cst.BaseExpression, target: cst.BaseExpression, at: Site) -> bool:
    """`expr` is `target.__class__.__name__` / `type(target).__name__`, or a name bound to it."""
    for value, _ in ctx.resolve(expr, at) if isinstance(expr, cst.Name) else [(expr, at)]:
        if isinstance(value, cst.Attribute) and value.attr.value == "__name__":
            inner = value.value
            if isinstance(inner, cst.Attribute) and inner.attr.value == "__class__" and _same(ctx, inner.value, target):
                return True
            if isinstance(inner, cst.Call) and dotted(inner.func) == "type" and inner.args and _same(ctx, inner.args[0].value, target):
                return True
    return False


def _guard_in(ctx: FileContext, test: cst.BaseExpression, target: cst.BaseExpression, at: Site) -> Optional[TypeGuard]:
    """The type guard on `target` that `test` establishes when true, if any."""
    if isinstance(test, cst.BooleanOperation):
        left = _guard_in(ctx, test.left, target, at)
        right = _guard_in(ctx, test.right, target, at)
        if isinstance(test.operator, cst.And):
            return left or right
        if left and right:  # `or`: both sides must say the same
            return left if left.kind == right.kind else TypeGuard("mixed", left.label + ", " + right.label)
        return None
    if isinstance(test, cst.Call):
        name = dotted(test.func)
        if name == "isinstance" and len(test.args) >= 2 and _same(ctx, test.args[0].value, target):
            return _classes_kind(ctx, _elements(test.args[1].value))
        # classname.find('Conv') / classname.startswith('Linear')
        if isinstance(test.func, cst.Attribute) and test.func.attr.value in ("startswith", "endswith") and test.args:
            if _class_name_var(ctx, test.func.value, target, at):
                return _string_kind(test.args[0].value)
        return None
    if isinstance(test, cst.Comparison) and len(test.comparisons) == 1:
        comp = test.comparisons[0]
        op, right, left = comp.operator, comp.comparator, test.left
        # type(m) == nn.Linear / type(m) is nn.Linear / type(m) in (...)
        if isinstance(left, cst.Call) and dotted(left.func) == "type" and left.args and _same(ctx, left.args[0].value, target):
            if isinstance(op, (cst.Equal, cst.Is, cst.In)):
                return _classes_kind(ctx, _elements(right))
            return None
        # classname.find('Conv') != -1
        if isinstance(left, cst.Call) and isinstance(left.func, cst.Attribute) and left.func.attr.value == "find" and left.args:
            if isinstance(op, cst.NotEqual) and _class_name_var(ctx, left.func.value, target, at):
                return _string_kind(left.args[0].value)
            return None
        # 'Conv' in classname
        if isinstance(op, cst.In) and isinstance(left, cst.SimpleString) and _class_name_var(ctx, right, target, at):
            return _string_kind(left)
    return None


def _string_kind(expr: cst.BaseExpression) -> Optional[TypeGuard]:
    if not isinstance(expr, cst.SimpleString):
        return None
    s = expr.evaluated_value
    if not isinstance(s, str):
        return None
    if _NORM.search(s):
        return TypeGuard("norm", repr(s))
    if _WEIGHT_LAYER_STR.match(s):
        return TypeGuard("weight", repr(s))
    return TypeGuard("other", repr(s))


def type_guard(ctx: FileContext, target: cst.BaseExpression, site: Site) -> Optional[TypeGuard]:
    """The class of `target` as the `if`s around `site` establish it.

    None when some enclosing `if`/`else` in the function is not a type test of `target`
    (a name or flag condition: `if name.startswith('head')`, `if zero_init:` — a deliberate
    choice the rule does not second-guess), or when there is no type test at all.
    """
    found: Optional[TypeGuard] = None
    for block in conditions(ctx, site):
        test = block.test
        if block.kind != "if" or test is None:
            return None
        g = _guard_in(ctx, test, target, site)
        if g is None:
            return None
        found = g  # the innermost guard wins
    return found


_MAIN_GUARD = re.compile(r"""^__name__\s*==\s*['"]__main__['"]$""")


def conditions(ctx: FileContext, site: Site) -> List[Block]:
    """The `if`/`else` blocks around `site`, without `if __name__ == "__main__":`."""
    return [b for b in site.ifs if not (b.kind == "if" and b.test is not None and _MAIN_GUARD.match(ctx.module.code_for_node(b.test).strip()))]


@dataclass
class LayerRef:
    """A specific layer: what built it and the name it is known by."""

    qualname: str
    name: str  # "fc1", "self.fc1", "net[0]"
    position: Optional[str] = None  # "hidden" / "last" when it can be shown


def _seq_positional(call: cst.Call) -> List[cst.BaseExpression]:
    return [a.value for a in call.args if a.keyword is None and not a.star]


def _int_index(sub: cst.Subscript) -> Optional[int]:
    if len(sub.slice) != 1 or not isinstance(sub.slice[0].slice, cst.Index):
        return None
    v = sub.slice[0].slice.value
    neg = False
    if isinstance(v, cst.UnaryOperation) and isinstance(v.operator, cst.Minus):
        neg, v = True, v.expression
    if isinstance(v, cst.Integer):
        n = int(v.evaluated_value)
        return -n if neg else n
    return None


def specific_layers(ctx: FileContext, layer: cst.BaseExpression, at: Site) -> Optional[List[LayerRef]]:
    """The concrete torch.nn weight layers `layer` stands for (every candidate must be one)."""
    try:
        return _specific_layers(ctx, layer, at)
    except RecursionError:
        # `self.x = self.x.to(dev)` sends FileContext.constructions round in circles: unknown.
        return None


def _specific_layers(ctx: FileContext, layer: cst.BaseExpression, at: Site) -> Optional[List[LayerRef]]:
    if isinstance(layer, cst.Subscript):
        index = _int_index(layer)
        if index is None:
            return None
        out: List[LayerRef] = []
        for value, _ in ctx.constructions(layer.value, at):
            if not (isinstance(value, cst.Call) and ctx.qualname(value.func) == "torch.nn.Sequential"):
                return None
            items = _seq_positional(value)
            if not items or any(a.star for a in value.args) or not -len(items) <= index < len(items):
                return None
            item = items[index]
            q = ctx.qualname(item.func) if isinstance(item, cst.Call) else None
            if not is_weight_layer_qualname(q):
                return None
            last_weight = max(i for i, it in enumerate(items) if isinstance(it, cst.Call) and is_weight_layer_qualname(ctx.qualname(it.func)))
            pos = "last" if index % len(items) == last_weight else "hidden"
            out.append(LayerRef(q, ctx.module.code_for_node(layer), pos))  # type: ignore[arg-type]
        return out or None
    if not isinstance(layer, (cst.Name, cst.Attribute)) or ctx.qualname(layer) is not None:
        return None
    values = _layer_values(ctx, layer, at)
    if not values:
        return None
    out = []
    for value in values:
        q = ctx.qualname(value.func) if isinstance(value, cst.Call) else None
        if not is_weight_layer_qualname(q):
            return None
        out.append(LayerRef(q, dotted(layer) or "", None))  # type: ignore[arg-type]
    return out


def _layer_values(ctx: FileContext, layer: cst.BaseExpression, at: Site) -> List[cst.BaseExpression]:
    cands = [v for v, _ in ctx.constructions(layer, at)]
    if cands and not any(v is layer for v in cands):
        return cands
    # `model.fc1` with `model` an instance of a class defined here: its `self.fc1 = ...`.
    if isinstance(layer, cst.Attribute) and not (isinstance(layer.value, cst.Name) and layer.value.value == "self"):
        cls = ctx.instance_class(layer.value, at)
        if cls is not None:
            return attr_values(ctx, cls, layer.attr.value)
    return []


def attr_values(ctx: FileContext, cls, attr: str) -> List[cst.BaseExpression]:
    out = []
    for a in ctx.facts.assigns:
        if a.op != "=" or ctx.method_class(a.function) is not cls:
            continue
        for t in a.targets:
            if isinstance(t, cst.Attribute) and isinstance(t.value, cst.Name) and t.value.value == "self" and t.attr.value == attr:
                if a.value is None:
                    return []
                out.extend(v for v, _ in ctx.constructions(a.value, a))
    return out


_NUMBERED = re.compile(r"^(.*?)_?(\d+)$")


def sibling_names(ctx: FileContext, cls=None, function=None) -> Set[str]:
    """Layer names bound beside another: the `self.` attributes of class `cls`, or (no class)
    the names assigned in `function`."""
    out: Set[str] = set()
    for a in ctx.facts.assigns:
        for t in a.targets:
            if cls is not None:
                if isinstance(t, cst.Attribute) and isinstance(t.value, cst.Name) and t.value.value == "self" and ctx.method_class(a.function) is cls:
                    out.add(t.attr.value)
            elif isinstance(t, cst.Name) and a.function is function:
                out.add(t.value)
    return out


def has_later_numbered_sibling(last: str, siblings: Set[str]) -> bool:
    """`fc1` with an `fc2` (or `fc3`, ...) beside it: not the network's last layer."""
    m = _NUMBERED.match(last)
    if not m or not m.group(1):
        return False
    stem, n = m.group(1), int(m.group(2))
    for s in siblings:
        sm = _NUMBERED.match(s)
        if sm and sm.group(1) == stem and int(sm.group(2)) > n:
            return True
    return False


def built_in_chain(ctx: FileContext, call: CallSite) -> bool:
    """A weight layer built several times over into one network: in a loop of a function that
    hands a list to `nn.Sequential(*layers)`, or in a comprehension unpacked into one
    (`nn.Sequential(*[nn.Linear(h, h) for _ in range(n)])`). A loop of parallel heads
    (`nn.ModuleList(...)`) is not a chain."""
    sequentials = [c for c in ctx.calls_in(call.function) if c.qualname == "torch.nn.Sequential" and c.has_star_args]
    for seq in sequentials:
        for a in seq.node.args:  # type: ignore[attr-defined]
            if a.star and any(n is call.node for n in walk(a.value)):
                return True
    if not call.loops or not sequentials:
        return False
    return any(call.loops[-1].start < seq.order for seq in sequentials)


def looped_layers(ctx: FileContext, layer: cst.BaseExpression, at: Site):
    """What a loop variable `layer` runs over when the loop around `at` binds it:
    ("list", source, [element, ...]) for a literal list/tuple of layer expressions,
    ("modulelist", source, [qualname]) for an `nn.ModuleList` whose every element is a torch
    weight layer (a literal list or a comprehension); None otherwise."""
    if not isinstance(layer, cst.Name):
        return None
    loop = next((b for b in reversed(at.loops) if isinstance(b.node, cst.For) and isinstance(b.node.target, cst.Name) and b.node.target.value == layer.value), None)
    if loop is None or ctx.reaching(layer.value, at) and ctx.reaching(layer.value, at)[0].node is not loop.node:
        return None
    source = loop.iter
    if isinstance(source, (cst.List, cst.Tuple)):
        items = [e.value for e in source.elements]
        if len(items) < 2 or any(isinstance(e, cst.StarredElement) for e in source.elements):
            return None
        return "list", source, items
    if not isinstance(source, (cst.Name, cst.Attribute)):
        return None
    values = [v for v, _ in ctx.constructions(source, at)]
    if not values or any(v is source for v in values):
        return None
    quals = []
    for v in values:
        if not (isinstance(v, cst.Call) and ctx.qualname(v.func) == "torch.nn.ModuleList" and len(v.args) == 1 and not v.args[0].star):
            return None
        arg = v.args[0].value
        elts = [arg.elt] if isinstance(arg, (cst.ListComp, cst.GeneratorExp)) else [e.value for e in arg.elements] if isinstance(arg, (cst.List, cst.Tuple)) else []
        if isinstance(arg, (cst.List, cst.Tuple)) and len(elts) < 2:
            return None
        if not elts or any(isinstance(e, cst.StarredElement) for e in elts):
            return None
        for e in elts:
            q = ctx.qualname(e.func) if isinstance(e, cst.Call) else None
            if not is_weight_layer_qualname(q):
                return None
            quals.append(q)
    return "modulelist", source, quals


def other_weight_layer(ctx: FileContext, cls, attr: str) -> bool:
    """Class `cls` builds a weight layer of its own after `self.<attr>` (which then feeds it,
    as a text CNN's convolutions feed its classifier; heads come after their trunk)."""
    own = [a.order for a in ctx.facts.assigns if a.op == "=" and ctx.method_class(a.function) is cls and any(
        isinstance(t, cst.Attribute) and isinstance(t.value, cst.Name) and t.value.value == "self" and t.attr.value == attr for t in a.targets)]
    if not own:
        return False
    for a in ctx.facts.assigns:
        if a.op != "=" or a.value is None or ctx.method_class(a.function) is not cls or a.order < min(own):
            continue
        if any(isinstance(t, cst.Attribute) and isinstance(t.value, cst.Name) and t.value.value == "self" and t.attr.value != attr for t in a.targets):
            if isinstance(a.value, cst.Call) and is_weight_layer_qualname(ctx.qualname(a.value.func)):
                return True
    return False


# Normalisation layers with learnable scale/shift (InstanceNorm has none by default).
_AFFINE_NORM = re.compile(r"^torch\.nn\.(Lazy)?(BatchNorm[123]d|SyncBatchNorm|LayerNorm|GroupNorm|RMSNorm)$")
_AFFINE_OFF = {"affine", "elementwise_affine"}
_CONTAINERS = {"torch.nn.Sequential", "torch.nn.ModuleList", "torch.nn.ModuleDict"}


def norm_layer_in(ctx: FileContext, model: cst.BaseExpression, at: Site) -> Optional[str]:
    """A normalisation layer with learnable weights that the model `model` builds, as
    written (`nn.BatchNorm2d`), looking through `nn.Sequential`/`ModuleList` and the model
    classes of this module (their sub-module classes too); `self` is the class of the
    method `at` is in. None when none can be seen (which does not mean there is none)."""
    if isinstance(model, cst.Name) and model.value == "self":
        cls = ctx.method_class(at.function)
        return _norm_in_class(ctx, cls, set()) if cls is not None else None
    try:
        cands = ctx.constructions(model, at)
    except RecursionError:
        return None
    for value, _ in cands:
        found = _norm_in_value(ctx, value, set())
        if found:
            return found
    return None


def _is_affine_norm(ctx: FileContext, call: cst.Call) -> bool:
    if not _AFFINE_NORM.match(ctx.qualname(call.func) or ""):
        return False
    for a in call.args:
        if a.keyword is not None and a.keyword.value in _AFFINE_OFF and isinstance(a.value, cst.Name) and a.value.value == "False":
            return False
    return True


def _norm_in_value(ctx: FileContext, value: cst.BaseExpression, seen: Set[str]) -> Optional[str]:
    if not isinstance(value, cst.Call):
        return None
    if _is_affine_norm(ctx, value):
        return ctx.module.code_for_node(value.func)
    q = ctx.qualname(value.func)
    if q in _CONTAINERS:
        for node in walk(value):
            if node is not value and isinstance(node, cst.Call):
                found = _norm_in_value(ctx, node, seen)
                if found:
                    return found
        return None
    if q is None and isinstance(value.func, cst.Name):
        cls = ctx.class_named(value.func.value)
        if cls is not None:
            return _norm_in_class(ctx, cls, seen)
    return None


def _norm_in_class(ctx: FileContext, cls, seen: Set[str]) -> Optional[str]:
    if cls.name in seen or len(seen) > 20:
        return None
    seen.add(cls.name)
    for call in ctx.facts.calls:
        if ctx.method_class(call.function) is not cls:
            continue
        node = call.node
        if _is_affine_norm(ctx, node):  # type: ignore[arg-type]
            return ctx.module.code_for_node(call.func)
        if call.qualname is None and isinstance(call.func, cst.Name):
            sub = ctx.class_named(call.func.value)
            if sub is not None and sub is not cls:
                found = _norm_in_class(ctx, sub, seen)
                if found:
                    return found
    for base in cls.bases:  # layers built by a same-module base class
        base_cls = ctx.class_named((dotted(base) or "").rsplit(".", 1)[-1])
        if base_cls is not None:
            found = _norm_in_class(ctx, base_cls, seen)
            if found:
                return found
    return None


# -- what `.apply(fn)` reaches ------------------------------------------------------------------
_GROWING_METHODS = {"append", "extend", "insert", "add_module", "register_module", "update"}


def applied_layers(ctx: FileContext, fn) -> Optional[List[cst.Call]]:
    """The torch.nn layer constructions a module-level function reaches when its only uses
    are `X.apply(fn)` on containers built here of torch.nn layers (`block2 =
    nn.Sequential(nn.Linear(5, 5))` then `block2.apply(init_42)`): `apply` runs it on `X`
    and its descendants only, not on the whole model. None when the function is used any
    other way, or a receiver is not such a container (a model class, a parameter, a
    container grown after it was built)."""
    if fn.cls is not None or fn.parent is not None:
        return None
    apply_args, receivers = set(), []
    for c in ctx.facts.calls:
        if c.attr != "apply" or c.receiver is None or len(c.node.args) != 1:  # type: ignore[attr-defined]
            continue
        arg = c.node.args[0].value  # type: ignore[attr-defined]
        if isinstance(arg, cst.Name) and arg.value == fn.name:
            apply_args.add(id(arg))
            receivers.append((c.receiver, c))
    if not receivers:
        return None
    for node in walk(ctx.module):
        if isinstance(node, cst.Name) and node.value == fn.name and id(node) not in apply_args and node is not fn.node.name:
            return None  # called directly, passed on, rebound: may reach anything
    out: List[cst.Call] = []
    for recv, at in receivers:
        found = _torch_layers(ctx, recv, at, 0)
        if found is None:
            return None
        out.extend(found)
    return out


def _torch_layers(ctx: FileContext, expr: cst.BaseExpression, at: Site, depth: int) -> Optional[List[cst.Call]]:
    """The torch.nn layers `expr` is built of, as `apply` at `at` finds them: a torch.nn
    layer, a container's elements, and what `add_module`/`append` added to a container
    name before `at`. None when some part cannot be read."""
    if depth > 6:
        return None
    if isinstance(expr, cst.Name):
        sites = ctx.reaching(expr.value, at)
        if len(sites) != 1 or sites[0].op != "=" or sites[0].value is None:
            return None
        bound = sites[0]
        out = _torch_layers(ctx, bound.value, bound, depth + 1)  # type: ignore[arg-type]
        if out is None:
            return None
        added = _added_to(ctx, expr.value, bound, at)
        if added is None:
            return None
        for layer, site in added:
            found = _torch_layers(ctx, layer, site, depth + 1)
            if found is None:
                return None
            out.extend(found)
        return out
    value = ctx.unwrap_model(expr)
    if not isinstance(value, cst.Call):
        return None
    q = ctx.qualname(value.func) or ""
    if not q.startswith("torch.nn."):
        return None  # a class or factory of its own: not read here
    if q not in _CONTAINERS:
        return [value]
    if q == "torch.nn.ModuleDict":
        return None
    out = []
    for a in value.args:
        if a.star or a.keyword is not None:
            return None
        items = [e.value for e in a.value.elements] if isinstance(a.value, (cst.List, cst.Tuple)) else [a.value]
        for item in items:
            if isinstance(item, (cst.StarredElement, cst.IfExp)):
                return None
            found = _torch_layers(ctx, item, at, depth + 1)
            if found is None:
                return None
            out.extend(found)
    return out


def _added_to(ctx: FileContext, name: str, bound, at: Site):
    """(layer, site) pairs that `name.add_module(key, layer)` / `name.append(layer)` add to
    the container bound at `bound`, before `at`, in the same function; None when the
    container is changed any other way (items replaced, attributes set, extended)."""
    out = []
    for c in ctx.facts.calls:
        if c.receiver is None or dotted(c.receiver) != name or c.function is not bound.function:
            continue
        if c.order <= bound.order or (c.order >= at.order and c.function is at.function):
            continue
        if c.attr in ("add_module", "register_module"):
            layer = c.arg(1, "module")
        elif c.attr == "append":
            layer = c.positional(0)
        elif c.attr in _GROWING_METHODS:
            return None
        else:
            continue
        if layer is None:
            return None
        out.append((layer, c))
    for a in ctx.facts.assigns:
        if a.function is not bound.function or a.order <= bound.order:
            continue
        for t in a.targets:
            if isinstance(t, (cst.Subscript, cst.Attribute)) and dotted(t.value) == name:
                return None
    return out
