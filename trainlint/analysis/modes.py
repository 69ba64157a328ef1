"""Train/eval mode across the iterations of a loop.

`flatten(ctx, loop)` lists every call and assignment one iteration of `loop` runs, nested
loops included, with calls to same-module functions and methods expanded in place and the
chain of calls that leads to each site. `outer_name` maps a name used inside a called
function back to the loop's own function (`model` in `evaluate(model)` called as
`evaluate(net, val_loader)` is `net`), so that a mode switch in a helper and a forward pass
in another helper can be seen to concern the same model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import libcst as cst

from trainlint.analysis.context import FileContext
from trainlint.analysis.facts import AssignSite, Block, CallSite, FunctionInfo, Site
from trainlint.analysis.names import dotted

MAX_DEPTH = 4
_WRAPPER_SUFFIXES = (".module", "._orig_mod")


@dataclass(eq=False)
class Step:
    site: Site
    chain: Tuple[CallSite, ...] = ()  # calls from the loop's own function down to `site`'s function

    @property
    def anchor(self) -> Site:
        """The site in the loop's own body that leads here."""
        return self.chain[0] if self.chain else self.site


def _sites_of(ctx: FileContext, function: Optional[FunctionInfo]) -> List[Site]:
    sites: List[Site] = list(ctx.calls_in(function))
    sites.extend(a for a in ctx.facts.assigns if a.function is function and a.op in ("=", "del"))
    sites.sort(key=lambda s: s.order)
    return sites


def _expand(ctx: FileContext, sites: Sequence[Site], chain: Tuple[CallSite, ...], seen: Tuple[int, ...]) -> List[Step]:
    out: List[Step] = []
    for site in sites:
        out.append(Step(site, chain))
        if isinstance(site, CallSite) and len(chain) < MAX_DEPTH:
            callee = ctx.callee(site)
            if callee is not None and id(callee) not in seen:
                out.extend(_expand(ctx, _sites_of(ctx, callee), chain + (site,), seen + (id(callee),)))
    return out


def flatten(ctx: FileContext, loop: Block) -> List[Step]:
    """One iteration of `loop` in program order: nested loops and same-module calls included."""
    sites = [s for s in _sites_of(ctx, loop.function) if loop in s.loops]
    return _expand(ctx, sites, (), (id(loop.function),))


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
        elif any(s.function is fn for s in ctx.reaching(root, point)):
            return None  # a local of the helper: not the caller's object
        point = call
        fn = call.function
    return normalise(name)
