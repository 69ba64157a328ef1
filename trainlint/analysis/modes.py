"""Train/eval mode across the iterations of a loop.

`flatten(ctx, loop)` lists every call and assignment one iteration of `loop` runs, nested
loops included, with calls to same-module functions and methods expanded in place and the
chain of calls that leads to each site. `outer_name` maps a name used inside a called
function back to the loop's own function (`model` in `evaluate(model)` called as
`evaluate(net, val_loader)` is `net`), so that a mode switch in a helper and a forward pass
in another helper can be seen to concern the same model.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import libcst as cst

from trainlint.analysis.context import FileContext
from trainlint.analysis.facts import AssignSite, Block, CallSite, FunctionInfo, Site
from trainlint.analysis.names import dotted

MAX_DEPTH = 4
MAX_STEPS = 20000  # helpers calling helpers many times over: stop expanding, stay cheap
_WRAPPER_SUFFIXES = (".module", "._orig_mod")


@dataclass(eq=False)
class Step:
    site: Site
    chain: Tuple[CallSite, ...] = ()  # calls from the loop's own function down to `site`'s function

    @property
    def anchor(self) -> Site:
        """The site in the loop's own body that leads here."""
        return self.chain[0] if self.chain else self.site


_SITES: "weakref.WeakKeyDictionary[FileContext, Dict[int, List[Site]]]" = weakref.WeakKeyDictionary()


def _sites_of(ctx: FileContext, function: Optional[FunctionInfo]) -> List[Site]:
    """Calls and plain assignments whose innermost function is `function`, in order."""
    index = _SITES.get(ctx)
    if index is None:
        index = {}
        for c in ctx.facts.calls:
            index.setdefault(id(c.function), []).append(c)
        for a in ctx.facts.assigns:
            if a.op in ("=", "del"):
                index.setdefault(id(a.function), []).append(a)
        for sites in index.values():
            sites.sort(key=lambda s: s.order)
        _SITES[ctx] = index
    return index.get(id(function), [])


def _expand(ctx: FileContext, sites: Sequence[Site], chain: Tuple[CallSite, ...], seen: Tuple[int, ...], out: List[Step]) -> None:
    for site in sites:
        out.append(Step(site, chain))
        if isinstance(site, CallSite) and len(chain) < MAX_DEPTH and len(out) < MAX_STEPS:
            callee = ctx.callee(site)
            if callee is not None and id(callee) not in seen:
                _expand(ctx, _sites_of(ctx, callee), chain + (site,), seen + (id(callee),), out)


def flatten(ctx: FileContext, loop: Block) -> List[Step]:
    """One iteration of `loop` in program order: nested loops and same-module calls included."""
    sites = [s for s in _sites_of(ctx, loop.function) if loop in s.loops]
    out: List[Step] = []
    _expand(ctx, sites, (), (id(loop.function),), out)
    return out


def _argument_for(ctx: FileContext, call: CallSite, fn: FunctionInfo, param: str) -> Optional[cst.BaseExpression]:
    if call.has_star_args:
        return None
    arg = call.keyword(param)
    if arg is not None:
        return arg
    params = list(fn.params)
    if fn.cls is not None and params and params[0] in ("self", "cls") and isinstance(call.func, cst.Attribute):
        params = params[1:]
    if param not in params:
        return None
    return call.positional(params.index(param))


_SAME_OBJECT_METHODS = {"to", "cuda", "cpu", "float", "half", "double", "bfloat16", "train", "eval"}


def _same_object(value: Optional[cst.BaseExpression], name: str) -> bool:
    """`model = model.to(device)` / `model = model.module`: still (a view of) the same module."""
    for _ in range(MAX_DEPTH):
        if isinstance(value, cst.Call) and isinstance(value.func, cst.Attribute) and value.func.attr.value in _SAME_OBJECT_METHODS:
            value = value.func.value
        elif isinstance(value, cst.Attribute) and value.attr.value in ("module", "_orig_mod"):
            value = value.value
        else:
            break
    return isinstance(value, cst.Name) and value.value == name


def normalise(name: str) -> str:
    """`model.module` (DataParallel) and `model._orig_mod` (torch.compile) are `model`."""
    changed = True
    while changed:
        changed = False
        for suffix in _WRAPPER_SUFFIXES:
            if name.endswith(suffix):
                name = name[: -len(suffix)]
                changed = True
    return name


def outer_name(ctx: FileContext, name: Optional[str], step: Step) -> Optional[str]:
    """`name`, used at `step.site`, as the loop's own function names it (None: unknown)."""
    if not name:
        return None
    point: Site = step.site
    fn = point.function
    for call in reversed(step.chain):
        root, _, rest = name.partition(".")
        tail = "." + rest if rest else ""
        if fn is None:
            return None
        local = [a for a in ctx.reaching(root, point) if a.function is fn] if root != "self" else []
        if local and not all(_same_object(a.value, root) for a in local):
            return None  # rebound in the helper (`model = copy.deepcopy(model)`): another object
        if root == "self":
            if isinstance(call.func, cst.Attribute):
                recv = dotted(call.func.value)
                if recv is None:
                    return None
                name = recv + tail
            # a plain call of a nested function: `self` is the enclosing method's
        elif root in fn.params:
            arg = _argument_for(ctx, call, fn, root)
            d = dotted(arg) if arg is not None else None
            if d is None:
                return None
            name = d + tail
        elif local:
            return None  # a local of the helper: not the caller's object
        point = call
        fn = call.function
    return normalise(name)
