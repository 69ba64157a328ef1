"""Whether a callable is a plain function rather than an `nn.Module`.

From-scratch training code calls its "model" as a function that gets its weights passed in
(`net = linreg` with `def linreg(X, w, b)`, `net = lambda X: linreg(X, w, b)`,
`rnn(X, state, params)`). A function has no train/eval mode: `net.eval()` would raise, and
no mode can change what it computes. A rule about modes asks `plain_function` of the values
a model expression resolves to (`FileContext.constructions`).
"""

from __future__ import annotations

from typing import Optional

import libcst as cst

from trainlint.analysis.context import FileContext
from trainlint.analysis.facts import CallSite, Site, walk


def _bound_as_parameter(ctx: FileContext, name: str, at: Site) -> bool:
    """`name` is a parameter of the function the use is in or of an enclosing one, so it
    does not name the module-level function of that name (`def predict(rnn, ...)` beside
    `def rnn(...)`)."""
    return any(name in f.params for f in ctx.enclosing_function_chain(at.function))


def plain_function(ctx: FileContext, value: cst.BaseExpression, at: Optional[Site]) -> bool:
    """`value` is known to be a function: a lambda, a `def` of this module that the name sees
    (not shadowed by a parameter or an assignment; not a class), or a module-level function
    of another module of the project (`d2l.linreg`, `from .model import linreg`). A value the
    analysis could not follow (a parameter, an unknown import) is not known to be one."""
    if isinstance(value, cst.Lambda):
        return True
    if isinstance(value, cst.Name):
        name = value.value
        if name not in ctx.imports.alias:
            if at is None or _bound_as_parameter(ctx, name, at) or ctx.reaching(name, at):
                return False
            if ctx.class_named(name) is not None:
                return False
            return ctx.function_named(name, at.function) is not None
    if not isinstance(value, (cst.Name, cst.Attribute)):
        return False
    q = ctx.qualname(value)
    view = ctx.project
    if q is None or view is None:
        return False
    # A class of another module is looked up as a class: a function summary only for a
    # module-level `def` (`ProjectView._defined_in`).
    return view.function_summary(q) is not None and view.class_summary(q) is None


def parameter_named_like_function(ctx: FileContext, value: cst.BaseExpression, at: Optional[Site]) -> bool:
    """`value` is a parameter no caller fills in that bears the name of a module-level
    function of this module (`def predict_rnn(..., rnn, params)` beside `def rnn(inputs,
    state, params)`): such helpers are written to be handed that function."""
    if not isinstance(value, cst.Name) or at is None or not _bound_as_parameter(ctx, value.value, at):
        return False
    fn = ctx.function_named(value.value)
    return fn is not None and fn.parent is None and fn.cls is None and ctx.class_named(value.value) is None


_PARAMETER = {"torch.nn.Parameter", "torch.nn.parameter.Parameter"}
_MAX_HOPS = 3


def passes_own_weights(ctx: FileContext, call: CallSite) -> bool:
    """The call hands the callee trainable weights: `net(X, w, b)` with
    `w = torch.zeros(..., requires_grad=True)`, `rnn(X, state, params)` where the `params`
    are updated by hand from their `.grad` or handed to an optimizer. An `nn.Module` holds
    its weights; a callee given them is a function of them (from-scratch code), which has no
    train/eval mode. Weights taken from a module (`list(model.parameters())`) are not
    counted: a module's functional forward still runs its layers."""
    positional = [a for a in call.node.args if a.keyword is None]  # type: ignore[attr-defined]
    if any(a.star for a in positional):
        return False
    # The first argument is the input, which may require grad itself (a saliency map, an
    # adversarial example): only the arguments after it can be the weights.
    return any(_weights(ctx, a.value, call, 0) for a in positional[1:])


def _weights(ctx: FileContext, expr: cst.BaseExpression, at: Site, hops: int) -> bool:
    if hops > _MAX_HOPS:
        return False
    if isinstance(expr, (cst.List, cst.Tuple)):
        return bool(expr.elements) and all(
            not isinstance(e, cst.StarredElement) and _weights(ctx, e.value, at, hops + 1) for e in expr.elements
        )
    if isinstance(expr, cst.Call):
        return _makes_weight(ctx, expr)
    if not isinstance(expr, cst.Name) or expr.value in ctx.imports.alias:
        return False
    name = expr.value
    if _used_as_weights(ctx, name, at.function, hops):
        return True
    sites = ctx.reaching(name, at)
    if sites:
        return all(s.op == "=" and s.value is not None and _weights(ctx, s.value, s, hops + 1) for s in sites)
    if at.function is not None and name in at.function.params:
        args = ctx.param_arguments(at.function, name)
        return bool(args) and all(_weights(ctx, a, site, hops + 1) for a, site in args)
    return False


def _makes_weight(ctx: FileContext, call: cst.Call) -> bool:
    """`torch.zeros(..., requires_grad=True)`, `nn.Parameter(...)`. Not a tensor shaped
    after another (`torch.zeros_like(x, requires_grad=True)`: a perturbation of an input)."""
    q = ctx.qualname(call.func)
    if q in _PARAMETER:
        return True
    return bool(q and q.startswith("torch.") and not q.endswith("_like")) and any(
        a.keyword is not None and a.keyword.value == "requires_grad" and _is_true(a.value) for a in call.args
    )


def _is_true(expr: cst.BaseExpression) -> bool:
    return isinstance(expr, cst.Name) and expr.value == "True"


def _used_as_weights(ctx: FileContext, name: str, function, hops: int) -> bool:
    """In `function`, `name` holds tensors trained by hand: a loop over it reads each one's
    `.grad` (`for p in params: p.data -= lr * p.grad`), it is handed to a `torch.optim`
    optimizer, or to a same-module helper that does either with it (`sgd(params, lr)`)."""
    if hops > _MAX_HOPS:
        return False
    for loop in ctx.loops:
        node = loop.node
        if loop.function is not function or not isinstance(node, cst.For):
            continue
        if not (isinstance(node.iter, cst.Name) and node.iter.value == name and isinstance(node.target, cst.Name)):
            continue
        target = node.target.value
        if any(
            isinstance(n, cst.Attribute) and n.attr.value == "grad" and isinstance(n.value, cst.Name) and n.value.value == target
            for n in walk(node.body)
        ):
            return True
    for c in ctx.calls_in(function):
        passed = [i for i, a in enumerate(c.node.args) if a.keyword is None and not a.star and isinstance(a.value, cst.Name) and a.value.value == name]  # type: ignore[attr-defined]
        if not passed:
            continue
        if c.qualname and c.qualname.startswith("torch.optim.") and 0 in passed:
            return True
        callee = ctx.callee(c)
        if callee is None or callee.cls is not None or c.has_star_args:
            continue
        params = list(callee.params)
        for i in passed:
            if i < len(params) and _used_as_weights(ctx, params[i], callee, hops + 1):
                return True
    return False
