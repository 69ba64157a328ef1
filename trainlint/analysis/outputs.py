"""What a tensor's last operation was: the raw output of a Linear (or convolution) layer —
logits —, a `log_softmax`, a `softmax`, a `sigmoid`, a ReLU or a dropout.

`final_output(ctx, expr, at)` follows names, `self.` attributes, parameters (through the
same-module callers), unpacking of a model's tuple output, same-module helpers, model
classes' `forward`, same-module factory functions (`model = build_small()`) and
`nn.Sequential` (its last layer). Shape-only operations
(`.view()`, `.squeeze()`, indexing) and copies (`.detach()`, `.data`, `.cpu()`, `.numpy()`)
keep the kind. Anything else — arithmetic, a
concatenation, a model class from another package — is unknown: every possible value must
end in the same kind, or the answer is None (precision first).

The answer also names the layer that produced the value (`origins`: the ids of the
construction calls, e.g. the `nn.Linear(...)` in `Net.__init__`), so that two uses of the
same model can be recognised as such.
"""

from __future__ import annotations

import re
import weakref
from dataclasses import dataclass
from typing import FrozenSet, Optional, Set

import libcst as cst

from trainlint.analysis.context import FileContext
from trainlint.analysis.facts import Site
from trainlint.analysis.inputs import constructor_arguments
from trainlint.analysis.names import dotted

LOGITS, LOG_SOFTMAX, SOFTMAX, SIGMOID, LOG_SIGMOID, RELU, DROPOUT = (
    "logits", "log_softmax", "softmax", "sigmoid", "log_sigmoid", "relu", "dropout",
)

_FUNCS = {
    "torch.nn.functional.linear": LOGITS,
    "torch.nn.functional.log_softmax": LOG_SOFTMAX,
    "torch.log_softmax": LOG_SOFTMAX,
    "torch.special.log_softmax": LOG_SOFTMAX,
    "torch.nn.functional.softmax": SOFTMAX,
    "torch.softmax": SOFTMAX,
    "torch.special.softmax": SOFTMAX,
    "torch.sigmoid": SIGMOID,
    "torch.nn.functional.sigmoid": SIGMOID,
    "torch.special.expit": SIGMOID,
    "torch.nn.functional.logsigmoid": LOG_SIGMOID,
    "torch.relu": RELU,
    "torch.relu_": RELU,
    "torch.nn.functional.relu": RELU,
    "torch.nn.functional.relu_": RELU,
    "torch.nn.functional.relu6": RELU,
    "torch.nn.functional.dropout": DROPOUT,
    "torch.dropout": DROPOUT,
}
_METHODS = {"log_softmax": LOG_SOFTMAX, "softmax": SOFTMAX, "sigmoid": SIGMOID, "relu": RELU, "relu_": RELU}
_MODULES = {
    "torch.nn.LogSoftmax": LOG_SOFTMAX,
    "torch.nn.Softmax": SOFTMAX,
    "torch.nn.Sigmoid": SIGMOID,
    "torch.nn.LogSigmoid": LOG_SIGMOID,
    "torch.nn.ReLU": RELU,
    "torch.nn.ReLU6": RELU,
    "torch.nn.Dropout": DROPOUT,
}
# Layers whose output is an affine map of their input: raw scores, no activation.
_LOGIT_LAYER = re.compile(r"^torch\.nn\.(Lazy)?(Linear|Bilinear|Conv[123]d)$")
# Tensor methods and functions that keep what the values are: `logits.squeeze(1)`; cutting
# the graph or copying to numpy keeps them too (`out.detach().cpu().numpy().ravel()` are
# still raw scores).
_SHAPE_METHODS = {
    "float", "double", "half", "to", "cuda", "cpu", "squeeze", "unsqueeze", "view", "reshape",
    "contiguous", "permute", "transpose", "flatten", "clone", "view_as", "reshape_as", "t",
    "detach", "numpy", "ravel",
}
_SHAPE_FUNCS = {"torch.squeeze", "torch.flatten", "torch.reshape", "torch.unsqueeze", "torch.transpose", "torch.permute"}
# A mean keeps the kind too: the mean of scores is a score, of probabilities a probability,
# of ReLU outputs non-negative (a bag's instance scores averaged, a sequence pooled).
_KEEPING_METHODS = _SHAPE_METHODS | {"mean"}
_KEEPING_FUNCS = _SHAPE_FUNCS | {"torch.mean"}
_MAX_DEPTH = 14
# Per file: attribute names assigned on something other than `self` (see _replaced_from_outside).
_OUTSIDE_ATTRS: "weakref.WeakKeyDictionary[FileContext, Set[str]]" = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class Output:
    kind: str  # LOGITS, LOG_SOFTMAX, ...
    why: str  # "`self.fc` (`nn.Linear`) in `Net.forward`"
    origins: FrozenSet[int]  # ids of the nodes that made the last operation


def final_output(ctx: FileContext, expr: cst.BaseExpression, at: Site) -> Optional[Output]:
    """The last operation every possible value of `expr` went through, or None."""
    try:
        return _final(ctx, expr, at, 0)
    except RecursionError:  # pathological value chains: cannot tell
        return None


def _agree(found: list) -> Optional[Output]:
    """One answer when every candidate has the same kind (origins merged), else None."""
    if not found or any(f is None for f in found):
        return None
    kinds = {f.kind for f in found}
    if len(kinds) != 1:
        return None
    origins = frozenset().union(*(f.origins for f in found))
    return Output(found[0].kind, found[0].why, origins)


def _final(ctx: FileContext, expr: cst.BaseExpression, at: Site, depth: int) -> Optional[Output]:
    if depth > _MAX_DEPTH:
        return None
    if isinstance(expr, cst.Subscript):  # `logits[:, -1]`, `out[mask]`: the same kind of values
        return _final(ctx, expr.value, at, depth + 1)
    if isinstance(expr, cst.Name):
        return _name(ctx, expr, at, depth)
    if isinstance(expr, cst.Attribute):
        if ctx.qualname(expr) is not None:
            return None
        if expr.attr.value == "data" and not _is_self(expr.value):  # `out.data`: the same values
            return _final(ctx, expr.value, at, depth + 1)
        if isinstance(expr.value, cst.Name) and expr.value.value == "self" and not _replaced_from_outside(ctx, expr.attr.value):
            # Every `self.x = ...` of the class, each followed one step at a time.
            sites = [a for a in ctx.self_attr_values(expr.attr.value, at) if a.op == "="]
            if not sites or any(a.value is None for a in sites):
                return None
            return _agree([_final(ctx, a.value, a, depth + 1) for a in sites])
        return None
    if not isinstance(expr, cst.Call):
        return None
    func = expr.func
    q = ctx.qualname(func)
    if q in _FUNCS:
        return Output(_FUNCS[q], f"`{_code(ctx, func)}(...)`", frozenset({id(expr)}))
    if q in _KEEPING_FUNCS and expr.args and expr.args[0].keyword is None and not expr.args[0].star:
        return _final(ctx, expr.args[0].value, at, depth + 1)
    if isinstance(func, cst.Attribute) and q is None:
        name = func.attr.value
        # `x.softmax(1)` is the tensor method; `self.softmax(x)` is a layer of the model
        # (often `nn.LogSoftmax()` kept under that name), followed below.
        if name in _METHODS and not _is_self(func.value):
            return Output(_METHODS[name], f"`.{name}(...)`", frozenset({id(expr)}))
        if name in _KEEPING_METHODS:
            return _final(ctx, func.value, at, depth + 1)
        if name == "forward":
            return _called(ctx, func.value, at, depth)
    if isinstance(func, cst.Call):  # `nn.Linear(4, 2)(x)`, `nn.LogSoftmax(dim=1)(x)`
        return _module_output(ctx, func, at, depth)
    if isinstance(func, (cst.Name, cst.Attribute)) and q is None:
        return _called(ctx, func, at, depth)
    return None


def _replaced_from_outside(ctx: FileContext, attr: str) -> bool:
    """`model.fc = nn.Sequential(...)` somewhere in the module (a head swapped after the
    model was built): the class's own `self.fc` is not what runs."""
    cache = _OUTSIDE_ATTRS.get(ctx)
    if cache is None:
        cache = set()
        for a in ctx.facts.assigns:
            for t in a.targets:
                if isinstance(t, cst.Attribute) and not _is_self(t.value):
                    cache.add(t.attr.value)
        _OUTSIDE_ATTRS[ctx] = cache
    return attr in cache


def _is_self(expr: cst.BaseExpression) -> bool:
    return isinstance(expr, cst.Name) and expr.value == "self"


def _followed(ctx: FileContext, expr: cst.BaseExpression, at: Site):
    """What a name or `self.` attribute stands for; empty when it cannot be followed."""
    cands = ctx.resolve(expr, at)
    if not cands or any(v is expr for v, _ in cands):
        return []
    return cands


def _name(ctx: FileContext, name: cst.Name, at: Site, depth: int) -> Optional[Output]:
    if ctx.qualname(name) is not None:
        return None
    sites = ctx.reaching(name.value, at)
    if len(sites) == 1:
        site = sites[0]
        if site.op != "=":
            return None  # `x += bias`, a loop variable, `del`: not a plain value
        # An assignment under an `if` the use is not under: another value may reach the use.
        if site.function is at.function and any(b not in at.ifs for b in site.ifs):
            return None
        if site.value is None:
            return _unpacked(ctx, name, site, depth)
        # One step at a time, so that each name on the way gets the check above.
        return _final(ctx, site.value, site, depth + 1)
    return _agree([_final(ctx, v, s, depth + 1) for v, s in _followed(ctx, name, at)])


def _unpacked(ctx: FileContext, name: cst.Name, site, depth: int) -> Optional[Output]:
    """`logits, hidden = model(x)`: the matching element of every tuple the forward (or a
    helper) returns."""
    call = site.whole_value
    if not isinstance(call, cst.Call):
        return None
    index = next((i for i, t in enumerate(site.targets) if isinstance(t, cst.Name) and t.value == name.value), -1)
    if index < 0:
        return None
    fn = _callee_function(ctx, call.func, site)
    if fn is None:
        return None
    found = []
    for r in ctx.returns_of(fn):
        elements = r.value.elements if isinstance(r.value, (cst.Tuple, cst.List)) else None
        if not elements or len(elements) != len(site.targets) or isinstance(elements[index], cst.StarredElement):
            return None
        found.append(_final(ctx, elements[index].value, r, depth + 1))
    return _agree(found)


def _callee_function(ctx: FileContext, func: cst.BaseExpression, at: Site):
    """The same-module function a call runs: a helper, a `self.` method, or a model class's
    `forward` for an instance."""
    if isinstance(func, cst.Attribute) and func.attr.value == "forward":
        func = func.value
    if isinstance(func, cst.Name) and ctx.class_named(func.value) is None and ctx.qualname(func) is None:
        fn = ctx.function_named(func.value, at.function)
        if fn is not None:
            return fn
    if isinstance(func, cst.Attribute) and isinstance(func.value, cst.Name) and func.value.value == "self":
        cls = ctx.method_class(at.function)
        fn = ctx.method(cls, func.attr.value) if cls is not None else None
        if fn is not None:
            return fn
    if isinstance(func, (cst.Name, cst.Attribute)):
        cls = ctx.instance_class(func, at)
        if cls is not None:
            return ctx.method(cls, "forward")
    return None


def _called(ctx: FileContext, func: cst.BaseExpression, at: Site, depth: int) -> Optional[Output]:
    """`func(...)`: a helper or method of this module, or a module instance."""
    # A model calling itself inside its own methods: `self(x)`, `self.__call__(x)`.
    if _is_self(func) or (isinstance(func, cst.Attribute) and func.attr.value == "__call__" and _is_self(func.value)):
        cls = ctx.method_class(at.function)
        forward = ctx.method(cls, "forward") if cls is not None else None
        return _returns(ctx, forward, depth) if forward is not None else None
    if isinstance(func, cst.Name) and ctx.class_named(func.value) is None:
        fn = ctx.function_named(func.value, at.function)
        if fn is not None:
            return _returns(ctx, fn, depth)
    if isinstance(func, cst.Attribute) and isinstance(func.value, cst.Name) and func.value.value == "self":
        cls = ctx.method_class(at.function)
        fn = ctx.method(cls, func.attr.value) if cls is not None else None
        if fn is not None:
            return _returns(ctx, fn, depth)
    if isinstance(func, cst.Attribute) and _is_self(func.value) and _replaced_from_outside(ctx, func.attr.value):
        return None
    if isinstance(func, cst.Attribute) and not _is_self(func.value) and not _replaced_from_outside(ctx, func.attr.value):
        # `model.head(feats)` outside the class: the layer (or method) the class of every
        # object `model` may be gives `head`
        member = _member_output(ctx, func, at, depth)
        if member is not False:
            return member
    cands = ctx.constructions(func, at)
    if not cands or any(v is func for v, _ in cands):
        return None
    found = []
    for v, s in cands:
        passed = _passed_to_constructor(ctx, v, s)
        if passed:
            found += [_module_output(ctx, pv, ps, depth + 1) for a, asite in passed for pv, ps in ctx.constructions(a, asite)]
        else:
            found.append(_module_output(ctx, v, s, depth + 1))
    return _agree(found)


def _member_output(ctx: FileContext, func: cst.Attribute, at: Site, depth: int):
    """`obj.attr(...)` where every object `obj` may be is an instance of a class of this
    module: what its method `attr` returns, or what calling the layer its `__init__` assigns
    to `self.attr` returns. False when `obj` is not known to be such an instance (the caller
    goes on); None when it is, but the answer is not one kind."""
    owners = ctx.constructions(func.value, at)
    classes = []
    for v, _ in owners:
        cls = ctx.class_named(v.func.value) if isinstance(v, cst.Call) and isinstance(v.func, cst.Name) else None
        if cls is None or ctx.qualname(v.func) is not None:
            return False
        classes.append(cls)
    if not classes:
        return False
    attr = func.attr.value
    found = []
    for cls in classes:
        method = ctx.method(cls, attr)
        if method is not None:
            found.append(_returns(ctx, method, depth))
            continue
        assigns = ctx.class_attr_values(cls, attr)
        if not assigns:
            return None  # set by a base class or from outside: not seen here
        for a in assigns:
            for v, s in ctx.constructions(a.value, a):
                found.append(_module_output(ctx, v, s, depth + 1))
    return _agree(found)


def _passed_to_constructor(ctx: FileContext, value: cst.BaseExpression, site: Site):
    """For a parameter of `__init__` that no assignment gives a value (`self.backbone =
    backbone`): the arguments `Model(backbone=...)` calls in the module pass for it."""
    fn = site.function
    if not isinstance(value, cst.Name) or fn is None or fn.name != "__init__" or value.value not in fn.params:
        return []
    if ctx.reaching(value.value, site):
        return []
    return constructor_arguments(ctx, fn, value.value)


def _module_output(ctx: FileContext, value: cst.BaseExpression, site: Site, depth: int) -> Optional[Output]:
    """What calling the module built by `value` returns."""
    if not isinstance(value, cst.Call) or depth > _MAX_DEPTH:
        return None
    q = ctx.qualname(value.func)
    text = _code(ctx, value.func)
    if q in _MODULES:
        return Output(_MODULES[q], f"`{text}`", frozenset({id(value)}))
    if q and _LOGIT_LAYER.match(q):
        return Output(LOGITS, f"`{text}`", frozenset({id(value)}))
    if q == "torch.nn.Sequential":
        last = _sequential_last(value)
        inner = _module_output(ctx, last, site, depth + 1) if last is not None else None
        if inner is None:
            return None
        return Output(inner.kind, f"an `nn.Sequential` ending in {inner.why}", inner.origins)
    if ctx.project is not None and (
        q is not None or (isinstance(value.func, cst.Name) and ctx.class_named(value.func.value) is None)
    ):
        # A model class (or factory) of another module of the project: its summary says
        # what `forward` ends in (analysis/project.py). The construction here stands for
        # the layer that made the value, so two uses of one model are recognised.
        from trainlint.analysis.project import constructor_summary

        name = text.rsplit(".", 1)[-1]
        found = constructor_summary(ctx, value.func)
        if found is not None and found[0].get("output"):
            (kind, why), where = found[0]["output"], found[1]
            return Output(kind, f"`{name}` from {where}, whose `forward` ends in {why}", frozenset({id(value)}))
        made = ctx.project.factory_output(q) if found is None else None
        if made is not None:
            (kind, why), where = made
            return Output(kind, f"`{name}(...)` from {where}, which builds {why}", frozenset({id(value)}))
    if q is None and isinstance(value.func, cst.Name):
        cls = ctx.class_named(value.func.value)
        forward = ctx.method(cls, "forward") if cls is not None else None
        if forward is not None:
            inner = _returns(ctx, forward, depth)
            if inner is not None:
                return Output(inner.kind, f"`{cls.name}.forward`, which returns {inner.why}", inner.origins)  # type: ignore[union-attr]
        # A factory already being followed is not entered again: `model = fit(model, ...)`
        # called in several places would otherwise branch through every call site at
        # every hop (a notebook of five such calls never finished).
        open_factories = ctx.open_factories
        made = ctx.factory_returns(value, site) if cls is None and text not in open_factories else None
        if made:  # `model = build_small()`: what the factory builds
            open_factories.add(text)
            try:
                inner = _agree([_module_output(ctx, v, s, depth + 1) for v, s in made])
            finally:
                open_factories.discard(text)
            if inner is not None:
                return Output(inner.kind, f"`{text}(...)`, which builds {inner.why}", inner.origins)
    return None


def factory_output(ctx: FileContext, fn) -> Optional[Output]:
    """What the model a module-level factory function builds ends in (for the project
    summary): every construction it returns must end in the same kind."""
    made = ctx.built_by(fn)
    return _agree([_module_output(ctx, v, s, 1) for v, s in made]) if made else None


def forward_output(ctx: FileContext, forward) -> Optional[Output]:
    """What a model class's `forward` returns on every path (for the project summary)."""
    return _returns(ctx, forward, 0)


def _sequential_last(call: cst.Call) -> Optional[cst.BaseExpression]:
    if any(a.star for a in call.args):
        return None  # `nn.Sequential(*layers)`: the last layer is not written here
    pos = [a.value for a in call.args if a.keyword is None]
    if len(pos) == 1 and isinstance(pos[0], cst.Call) and (dotted(pos[0].func) or "").endswith("OrderedDict"):
        # nn.Sequential(OrderedDict([("fc", nn.Linear(...)), ("out", nn.LogSoftmax(1))]))
        items = pos[0].args[0].value if pos[0].args else None
        if isinstance(items, (cst.List, cst.Tuple)) and items.elements:
            pair = items.elements[-1].value
            if isinstance(pair, cst.Tuple) and len(pair.elements) == 2:
                return pair.elements[1].value
        return None
    return pos[-1] if pos else None


def _returns(ctx: FileContext, fn, depth: int) -> Optional[Output]:
    returns = [r for r in ctx.returns_of(fn) if r.value is not None]
    if not returns:
        return None
    return _agree([_final(ctx, r.value, r, depth + 1) for r in returns])


def _code(ctx: FileContext, node: cst.CSTNode) -> str:
    text = " ".join(ctx.module.code_for_node(node).split())
    return text if len(text) <= 40 else text[:37] + "..."

