"""Can a gradient flow from a value back into a model? A small abstract interpretation.

`gradient_source(ctx, expr, at)` classifies what `expr` is built from:
- MODEL: the output of a model (or a part of one) — gradients reach its parameters;
- CUT: a model output whose graph was cut (`.detach()`, `.data`, `.item()`, `.tolist()`,
  `.numpy()`, `float(...)`, or copied with `torch.tensor(...)`), with nothing else that
  carries a gradient;
- DATA: plain data (literals, batches from a loader, label parameters, fresh constructors);
- UNKNOWN: anything that cannot be followed (a call we do not know, a parameter, a trainable
  leaf such as `nn.Parameter` or `requires_grad=True`): it may carry a gradient.

Combining operands: UNKNOWN wins, then MODEL, then CUT, then DATA. Only functions known to
be pure in their tensor arguments (PyTorch functions, tensor methods, loss modules) combine
their arguments; a same-module helper (`def rmsle(pred, true): return np.sqrt(...)`) gives
what its returns compute with its parameters bound to the call's arguments; other calls are
UNKNOWN. So CUT is a claim: every path to a gradient was cut.

The depth limit counts hops from a use to a value (a name to its assignment, a parameter to
its argument, a call to its helper's returns), not the nesting of one expression: a dice
loss written over four lines is as easy to follow as one written in one. A budget of steps
per question bounds the work on pathological files (the answer is then UNKNOWN).
"""

from __future__ import annotations

import re
import threading
import weakref
from dataclasses import dataclass
from typing import List, Optional, Set

import libcst as cst

from trainlint.analysis.context import FileContext
from trainlint.analysis.facts import AssignSite, Block, Site, walk
from trainlint.analysis.names import dotted
from trainlint.analysis.torch_api import is_optimizer_qualname

DATA, CUT, MODEL, UNKNOWN = 0, 1, 2, 3
_MAX_DEPTH = 12
_STEP_BUDGET = 5000

_CUT_METHODS = {"detach", "item", "tolist", "numpy"}
# Tensor methods that compute from their receiver and arguments only.
_TENSOR_METHODS = {
    "mean", "sum", "pow", "abs", "log", "exp", "sqrt", "neg", "clamp", "clamp_min", "clamp_max", "mul", "add",
    "sub", "div", "float", "double", "half", "long", "int", "to", "cuda", "cpu", "view", "reshape", "squeeze",
    "unsqueeze", "flatten", "permute", "transpose", "contiguous", "gather", "masked_select", "log_softmax",
    "softmax", "sigmoid", "tanh", "relu", "norm", "square", "type_as", "view_as", "expand_as", "t", "clone",
    "argmax", "max", "min", "prod", "std", "var", "exp_", "mul_", "add_", "div_", "sub_", "astype", "ravel",
}
_LEAF_CONSTRUCTORS = re.compile(
    r"^torch\.(zeros|ones|full|empty|rand|randn|randint|arange|linspace|eye|zeros_like|ones_like|full_like|"
    r"empty_like|rand_like|randn_like|randint_like|LongTensor|FloatTensor|Tensor|BoolTensor|IntTensor)$"
)
# Calls that copy values into a new tensor without a graph (`torch.as_tensor` and `Variable`
# of a tensor return it unchanged, graph included: not here).
_REBUILD = {"torch.tensor", "torch.from_numpy"}
# A dtype (`astype(np.float32)`, `.to(torch.float16)`) is a constant, not a tensor.
_DTYPE = re.compile(r"^(torch|numpy)\.(u?int\d*|float\d*|bfloat16|half|double|long|short|bool_?|complex\d*|float_)$")
_LOSS_MODULE = re.compile(r"^torch\.nn\.(modules\.loss\.)?\w+Loss$")
# Parameters named like labels hold data.
_LABEL_PARAM = re.compile(r"^(y|ys|y_true|target|targets|label|labels|gt|truth|ground_truth|y_batch|batch_y|tgt|batch|rewards?)$")
# A loss function passed around by name: `criterion(out, y)` in a `train(model, criterion)`.
_LOSS_NAME = re.compile(r"(^|_)(criterion|loss_fn|loss_func|loss_function|lossfn)$", re.I)
_DATA_ITER = re.compile(r"(loader|dataloader|(^|_)dl$|batches|dataset|(^|_)data$|(^|_)ds$)", re.I)
_ITER_WRAPPERS = {"enumerate", "tqdm", "zip", "iter", "tqdm.tqdm", "tqdm.auto.tqdm", "tqdm.notebook.tqdm"}


@dataclass(frozen=True)
class Flow:
    kind: int
    cut: Optional[cst.CSTNode] = None  # where the graph was cut (for CUT)

    def __or__(self, other: "Flow") -> "Flow":
        if other.kind > self.kind:
            return other
        if other.kind == self.kind and self.cut is None:
            return other
        return self


_DATA = Flow(DATA)
_UNKNOWN = Flow(UNKNOWN)


class _Question(threading.local):
    """State of the question being answered: steps left, and the arguments a helper's
    parameters are bound to while its returns are followed (id of the function -> name ->
    (argument, call site))."""

    def __init__(self) -> None:
        self.steps = 0
        self.bindings: dict = {}


_Q = _Question()


def gradient_source(ctx: FileContext, expr: cst.BaseExpression, at: Site) -> Flow:
    saved = (_Q.steps, _Q.bindings)
    _Q.steps, _Q.bindings = _STEP_BUDGET, {}
    try:
        return _flow(ctx, expr, at, 0)
    except RecursionError:
        return _UNKNOWN
    finally:
        _Q.steps, _Q.bindings = saved


def _combine(ctx, exprs, at, depth) -> Flow:
    out = _DATA
    for e in exprs:
        out = out | _flow(ctx, e, at, depth)
        if out.kind == UNKNOWN:
            break
    return out


def _cut(inner: Flow, node: cst.CSTNode) -> Flow:
    """A cut of `inner`: a model output becomes CUT (the claim the rule reports); anything
    else carries no gradient afterwards either, but no model was shown to be cut off: DATA."""
    if inner.kind == MODEL:
        return Flow(CUT, node)
    return inner if inner.kind == CUT else _DATA


def _flow(ctx: FileContext, expr: cst.BaseExpression, at: Site, depth: int) -> Flow:
    _Q.steps -= 1
    if depth > _MAX_DEPTH or _Q.steps < 0:
        return _UNKNOWN
    if isinstance(expr, (cst.Integer, cst.Float, cst.Imaginary, cst.SimpleString, cst.ConcatenatedString, cst.FormattedString)):
        return _DATA
    if isinstance(expr, cst.Name):
        return _name(ctx, expr, at, depth)
    if isinstance(expr, cst.Attribute):
        q = ctx.qualname(expr)
        if q is not None:
            return _DATA if _DTYPE.match(q) else _UNKNOWN
        if expr.attr.value == "data":
            return _cut(_flow(ctx, expr.value, at, depth), expr)
        if isinstance(expr.value, cst.Name) and expr.value.value == "self":
            # Every `self.x = ...` of the class, each followed one step at a time.
            sites = [a for a in ctx.self_attr_values(expr.attr.value, at) if a.op == "="]
            if not sites or any(a.value is None for a in sites):
                return _UNKNOWN
            out = _DATA
            for a in sites:
                out = out | _flow(ctx, a.value, a, depth + 1)
            return out
        return _flow(ctx, expr.value, at, depth)  # `outputs.logits`, `batch.label`
    if isinstance(expr, cst.Subscript):
        return _flow(ctx, expr.value, at, depth)  # a slice of data is data
    if isinstance(expr, cst.BinaryOperation):
        return _combine(ctx, (expr.left, expr.right), at, depth)
    if isinstance(expr, cst.UnaryOperation):
        return _flow(ctx, expr.expression, at, depth)
    if isinstance(expr, cst.Comparison):
        return _DATA  # booleans carry no gradient
    if isinstance(expr, (cst.Tuple, cst.List)):
        return _combine(ctx, [e.value for e in expr.elements], at, depth)
    if isinstance(expr, cst.IfExp):
        return _combine(ctx, (expr.body, expr.orelse), at, depth)
    if isinstance(expr, cst.Call):
        return _call(ctx, expr, at, depth)
    return _UNKNOWN


def _name(ctx: FileContext, name: cst.Name, at: Site, depth: int) -> Flow:
    if name.value in ("True", "False", "None"):
        return _DATA
    q = ctx.qualname(name)
    if q is not None:
        return _DATA if _DTYPE.match(q) else _UNKNOWN
    sites = ctx.reaching(name.value, at)
    if not sites:
        fn = at.function
        if fn is not None and name.value in fn.params:
            bound = _Q.bindings.get(id(fn), {})
            if name.value in bound:  # a helper followed from one call: that call's argument
                arg, site = bound[name.value]
                return _flow(ctx, arg, site, depth + 1)
            # (`self` of a method followed from `self.helper(x)` is not in the binding)
            if _LABEL_PARAM.match(name.value):
                return _DATA
            args = ctx.param_arguments(fn, name.value)
            if not args:
                return _UNKNOWN
            out = _DATA
            for arg, site in args:
                out = out | _flow(ctx, arg, site, depth + 1)
            return out
        # Never bound in this file (a constant from `from config import *`, a builtin):
        # not a tensor that carries a gradient.
        return _DATA if _never_bound(ctx, name.value) else _UNKNOWN
    if sites[0].function is at.function:
        sites = _reaching_paths(ctx, name.value, at)
        if sites is None:
            return _UNKNOWN  # assigned on some paths only: another value may reach the use
    out = _DATA
    for site in sites:
        if site.op == "for":
            out = out | (_DATA if _iterates_data(ctx, site.whole_value, site) else _UNKNOWN)
        elif site.op in ("+=", "-=", "*=", "/="):
            out = out | _flow(ctx, site.value, site, depth + 1) | _name(ctx, name, site, depth + 1)
        elif site.op == "=":
            value = site.value if site.value is not None else site.whole_value
            if isinstance(value, cst.List) and not value.elements and site.function is at.function:
                # `log_probs = []` filled by `.append(x)` / `.extend(xs)` in this function
                out = out | _filled_list(ctx, name.value, at, depth)
                if out.kind == UNKNOWN:
                    return out
                continue
            if isinstance(value, (cst.List, cst.Dict, cst.Set, cst.ListComp, cst.DictComp, cst.SetComp)):
                return _UNKNOWN  # a container filled later (`outs.append(model(x))`)
            out = out | _flow(ctx, value, site, depth + 1)
        else:
            return _UNKNOWN
        if out.kind == UNKNOWN:
            return out
    return out


_LIST_FILLERS = {"append", "extend"}
_LIST_READERS = {"index", "count", "copy"}


def _filled_list(ctx: FileContext, name: str, at: Site, depth: int) -> Flow:
    """What a list that starts empty holds: every value `.append`ed or `.extend`ed to it
    in the function (in any order: a loop may come round). UNKNOWN when anything else may
    change it: another method, an item assignment, or the list handed to a call that is not
    a PyTorch function (a helper may fill it)."""
    out = _DATA
    for c in ctx.calls_in(at.function):
        recv = c.receiver
        if isinstance(recv, cst.Name) and recv.value == name:
            if c.attr in _LIST_FILLERS and len(c.node.args) == 1 and not c.has_star_args:
                out = out | _flow(ctx, c.node.args[0].value, c, depth + 1)
            elif c.attr not in _LIST_READERS:
                return _UNKNOWN
        elif any(isinstance(a.value, cst.Name) and a.value.value == name for a in c.node.args) \
                and not (c.qualname or "").startswith("torch."):
            return _UNKNOWN
        if out.kind == UNKNOWN:
            return out
    for a in ctx.facts.assigns:
        if a.function is at.function and any(
            isinstance(t, cst.Subscript) and isinstance(t.value, cst.Name) and t.value.value == name for t in a.targets
        ):
            return _UNKNOWN
    return out


def _reaching_paths(ctx: FileContext, name: str, at: Site) -> Optional[List[AssignSite]]:
    """Every assignment of `name` in the use's function that may reach the use: back to the
    nearest one that is not under an `if` the use is not under, or the branches of one
    `if`/`elif`/`else` chain that all assign it. None when some path may carry a value from
    before (a parameter, an enclosing scope) or the branches cannot be read."""
    earlier = [a for a in ctx.facts.assigns if a.function is at.function and a.order < at.order
               and any(isinstance(t, cst.Name) and t.value == name for t in a.targets)]
    found: List[AssignSite] = []
    for a in reversed(earlier):
        found.append(a)
        extra = [b for b in a.ifs if b not in at.ifs]
        if not extra:
            return found
    # No unconditional assignment: the branches of one if/elif/else chain must all assign it
    # (directly in each branch, not under a further `if`).
    heads = set()
    covered = set()
    branches: set = set()
    for a in found:
        extra = [b for b in a.ifs if b not in at.ifs]
        chain = _chain_of(ctx, extra[0]) if len(extra) == 1 else None
        if chain is None:
            return None
        heads.add(chain[0])
        branches = chain[1]
        covered.add(id(extra[0].node))
    return found if len(heads) == 1 and branches <= covered else None


def _chain_of(ctx: FileContext, block: Block):
    """(id of the first `if`, ids of every branch) of the if/elif/else chain that `block` is
    a branch of, when that chain ends in `else`; None otherwise."""
    best: Optional[list] = None
    for b in ctx.facts.blocks:
        if b.kind != "if" or b.function is not block.function:
            continue
        ids, node = [], b.node
        while isinstance(node, cst.If):
            ids.append(id(node))
            node = node.orelse
        if not isinstance(node, cst.Else):
            continue
        ids.append(id(node))
        # An `elif` starts a shorter chain of its own: the longest one is the whole chain.
        if id(block.node) in ids and (best is None or len(ids) > len(best)):
            best = ids
    return (best[0], set(best)) if best else None


def _never_bound(ctx: FileContext, name: str) -> bool:
    if name in ctx.facts.lambda_params or f"{name} :=" in ctx.text or f"{name}:=" in ctx.text:
        return False
    for a in ctx.facts.assigns:
        if any(isinstance(t, cst.Name) and t.value == name for t in a.targets):
            return False
    return not any(name in f.params for f in ctx.facts.functions) and f"global {name}" not in ctx.text


def _iterates_data(ctx: FileContext, it: Optional[cst.BaseExpression], at: Site) -> bool:
    """A `for` loop over a data loader or data set (through enumerate/tqdm/zip)."""
    if it is None:
        return False
    while isinstance(it, cst.Call) and (dotted(it.func) in _ITER_WRAPPERS or ctx.qualname(it.func) in _ITER_WRAPPERS) and it.args:
        if dotted(it.func) == "zip":
            return all(_iterates_data(ctx, a.value, at) for a in it.args)
        it = it.args[0].value
    name = dotted(it)
    if name is None:
        return False
    if any(q and q.endswith("DataLoader") for q in ctx.constructed_qualnames(it, at)):
        return True
    return bool(_DATA_ITER.search(name.rsplit(".", 1)[-1]))


def _requires_grad(call: cst.Call) -> bool:
    for a in call.args:
        if a.keyword is not None and a.keyword.value == "requires_grad":
            return not (isinstance(a.value, cst.Name) and a.value.value == "False")
    return False


def _call(ctx: FileContext, call: cst.Call, at: Site, depth: int) -> Flow:
    func = call.func
    q = ctx.qualname(func)
    args = [a.value for a in call.args if not a.star]
    if any(a.star for a in call.args):
        return _UNKNOWN
    if q in _REBUILD:
        inner = _combine(ctx, args[:1], at, depth)
        if _requires_grad(call):
            # A fresh trainable leaf: the classic "fix" of a detached loss when built from a
            # model's output; a parameter being learned otherwise.
            if inner.kind == CUT:
                return inner  # report where the graph was first cut
            return Flow(CUT, call) if inner.kind == MODEL else _UNKNOWN
        return Flow(CUT, call) if inner.kind == MODEL else (inner if inner.kind == CUT else _DATA)
    if q is not None and _LEAF_CONSTRUCTORS.match(q):
        return _UNKNOWN if _requires_grad(call) else _DATA
    if q in ("torch.nn.Parameter", "torch.nn.parameter.Parameter"):
        return _UNKNOWN
    if q == "torch.autograd.Variable":  # a no-op wrapper since PyTorch 0.4
        return _combine(ctx, args[:1], at, depth)
    if q is not None and (q.startswith("numpy.") or q.startswith("np.")):
        inner = _combine(ctx, args, at, depth)
        return _cut(inner, call) if inner.kind != UNKNOWN else _UNKNOWN
    if q is not None and (q.startswith("torch.nn.functional.") or (q.startswith("torch.") and q.count(".") == 1)):
        return _combine(ctx, args, at, depth)
    if q is None and isinstance(func, cst.Name) and func.value in ("float", "int") and ctx.function_named(func.value, at.function) is None:
        return _cut(_combine(ctx, args[:1], at, depth), call)
    if isinstance(func, cst.Attribute) and q is None:
        method = func.attr.value
        if method in _CUT_METHODS and not args:
            return _cut(_flow(ctx, func.value, at, depth), call)
        if method == "requires_grad_":
            return _UNKNOWN
        if method in _TENSOR_METHODS:
            return _combine(ctx, [func.value, *args], at, depth)
    if isinstance(func, cst.Call) and _LOSS_MODULE.match(ctx.qualname(func.func) or ""):
        return _combine(ctx, args, at, depth)  # `nn.MSELoss()(a, b)`
    site = ctx.call_site(call)
    if site is not None:
        if ctx.training.is_model_call(site) or (dotted(func) or "?") in _optimized(ctx):
            return Flow(MODEL)
        if isinstance(func, (cst.Name, cst.Attribute)) and q is None and _is_loss_module(ctx, func, site):
            return _combine(ctx, args, at, depth)
        helper = ctx.callee(site) if q is None else None
        if helper is not None:
            return _helper_returns(ctx, helper, site, depth)
    return _UNKNOWN


_LITERALS = (cst.Integer, cst.Float, cst.Imaginary, cst.SimpleString, cst.ConcatenatedString)


def _helper_returns(ctx: FileContext, fn, call, depth: int) -> Flow:
    """What a same-module helper returns, its parameters bound to this call's arguments
    (`rmsle(preds, yb)` computes from `preds` and `yb`). UNKNOWN for what the returns do
    not show: a generator, a decorated function (`@torch.no_grad()`, a `staticmethod`
    called through an instance), a path that falls off the end, a recursive call."""
    if depth >= _MAX_DEPTH or id(fn) in _Q.bindings or fn.decorators:
        return _UNKNOWN
    returns = ctx.returns_of(fn)
    if not returns or any(r.value is None for r in returns) or _may_fall_off(fn.node):
        return _UNKNOWN
    if any(isinstance(n, (cst.Yield, cst.Await)) for n in walk(fn.node.body)):
        return _UNKNOWN
    binding = _bind(fn, call)
    if binding is None:
        return _UNKNOWN
    _Q.bindings[id(fn)] = binding
    try:
        out = _DATA
        for r in returns:
            out = out | _flow(ctx, r.value, r, depth + 1)
            if out.kind == UNKNOWN:
                break
        return out
    finally:
        del _Q.bindings[id(fn)]


def _may_fall_off(node: cst.FunctionDef) -> bool:
    """Some path through the body ends without a `return` (the helper may return None)."""
    return not _always_leaves(node.body)


def _always_leaves(block) -> bool:
    """Every path through `block` ends in a `return` or `raise`."""
    body = getattr(block, "body", ())
    if not body:
        return False
    last = body[-1]
    if isinstance(last, cst.SimpleStatementLine):
        return any(isinstance(s, (cst.Return, cst.Raise)) for s in last.body)
    if isinstance(last, cst.If):
        other = last.orelse
        if other is None:
            return False
        rest = other if isinstance(other, cst.If) else other.body
        return _always_leaves(last.body) and (_always_leaves(cst.IndentedBlock(body=[other])) if isinstance(other, cst.If) else _always_leaves(rest))
    return False


def _bind(fn, call) -> Optional[dict]:
    """Parameter name -> (argument, call site) for one call; None when an argument cannot be
    matched (`*args`, `**kw`, a parameter left to a non-literal default)."""
    node: cst.FunctionDef = fn.node
    p = node.params
    if p.star_kwarg is not None or isinstance(p.star_arg, cst.Param):
        return None
    params = [*p.posonly_params, *p.params]
    if fn.cls is not None and params and params[0].name.value in ("self", "cls"):
        if not isinstance(call.func, cst.Attribute):
            return None
        params = params[1:]
    args = call.node.args
    if any(a.star for a in args):
        return None
    binding: dict = {}
    positional = [a for a in args if a.keyword is None]
    if len(positional) > len(params):
        return None
    for param, arg in zip(params, positional):
        binding[param.name.value] = (arg.value, call)
    every = {x.name.value: x for x in (*params, *p.kwonly_params)}
    for a in args:
        if a.keyword is not None:
            if a.keyword.value not in every:
                return None
            binding[a.keyword.value] = (a.value, call)
    for name, param in every.items():
        if name in binding:
            continue
        if param.default is None or not _literal(param.default):
            return None
        binding[name] = (param.default, call)
    return binding


def _literal(expr: cst.BaseExpression) -> bool:
    if isinstance(expr, cst.UnaryOperation):
        expr = expr.expression
    return isinstance(expr, _LITERALS) or (isinstance(expr, cst.Name) and expr.value in ("True", "False", "None"))


_OPTIMIZED: "weakref.WeakKeyDictionary[FileContext, Set[str]]" = weakref.WeakKeyDictionary()


def _optimized(ctx: FileContext) -> Set[str]:
    """Names whose `.parameters()` an optimizer is built from (`self.Q` in
    `Adam(self.Q.parameters())`): calling them runs a trained model."""
    found = _OPTIMIZED.get(ctx)
    if found is None:
        found = set()
        for c in ctx.facts.calls:
            if not is_optimizer_qualname(c.qualname):
                continue
            for a in c.node.args:  # type: ignore[attr-defined]
                for node in walk(a.value):
                    if isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute) and node.func.attr.value == "parameters":
                        name = dotted(node.func.value)
                        if name:
                            found.add(name)
        _OPTIMIZED[ctx] = found
    return found


def _is_loss_module(ctx: FileContext, func: cst.BaseExpression, at: Site) -> bool:
    """`criterion` built from a `torch.nn.*Loss` class (every candidate), or a loss passed
    in by a name that says so."""
    cands = ctx.constructions(func, at)
    if not cands:
        return False
    if len(cands) == 1 and cands[0][0] is func or all(v is func or isinstance(v, cst.Name) and v.value == dotted(func) for v, _ in cands):
        return bool(_LOSS_NAME.search((dotted(func) or "").rsplit(".", 1)[-1]))
    return all(isinstance(v, cst.Call) and _LOSS_MODULE.match(ctx.qualname(v.func) or "") for v, _ in cands)



_LOSS_FUNC = re.compile(r"^torch\.nn\.functional\.(\w*loss\w*|\w*entropy\w*|kl_div|\w*_embedding_loss)$")


def computed_loss(ctx: FileContext, expr: cst.BaseExpression, at: Site) -> bool:
    """`expr` holds a computed loss: built from a model's output (attached or cut), or by a
    loss function (`F.mse_loss`, a `torch.nn.*Loss` module, a `criterion`) — not a tensor
    made fresh (`torch.randn(1)` in a test)."""
    if gradient_source(ctx, expr, at).kind in (MODEL, CUT):
        return True
    for value, site in ctx.resolve(expr, at):
        if value is expr:
            continue
        for node in walk(value):
            if not isinstance(node, cst.Call):
                continue
            if _LOSS_FUNC.match(ctx.qualname(node.func) or ""):
                return True
            if isinstance(node.func, cst.Call) and _LOSS_MODULE.match(ctx.qualname(node.func.func) or ""):
                return True
            if isinstance(node.func, (cst.Name, cst.Attribute)) and ctx.qualname(node.func) is None and _is_loss_module(ctx, node.func, site):
                return True
            call = ctx.call_site(node)
            fn = ctx.callee(call) if call is not None else None
            if fn is not None and "loss" in fn.name.lower():  # `self._actor_loss(...)`
                return True
    return False
