"""Model selection: where a metric is compared with the best value so far and the winner
is kept (a checkpoint saved, the best epoch or hyper-parameters recorded, an early-stopping
counter reset). Shared by the rules about *what* is selected on (test data, training loss).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import List, Optional, Set

import libcst as cst

from trainlint.analysis.facts import Block, Site, walk
from trainlint.analysis.names import dotted

BEST_NAME = re.compile(r"best|^(min|max)_|^(lowest|highest)(_|$)", re.I)
COUNTER_NAME = re.compile(r"patience|counter|wait|bad_epochs|no_improve|stale|trigger", re.I)
SAVE_ATTRS = {"save", "save_checkpoint", "save_model", "save_pretrained", "save_state_dict", "state_dict", "deepcopy", "save_weights"}
COMPARE = (cst.LessThan, cst.GreaterThan, cst.LessThanEqual, cst.GreaterThanEqual)


@dataclass(eq=False)
class Selection:
    comparison: cst.Comparison
    site: Site  # where the comparison runs (an `if` test, or an assignment `is_best = ...`)
    body: Optional[Block]  # the `if` body, None for an assigned comparison
    metric: cst.BaseExpression  # the side compared with the best value so far


def selections(ctx) -> List[Selection]:
    """Every comparison of a metric with a best-so-far value whose winner is kept."""
    out = []
    for comparison, site, body in _comparisons(ctx):
        metric = _metric_side(comparison)
        if metric is not None and _keeps_winner(ctx, comparison, site, body):
            out.append(Selection(comparison, site, body, metric))
    return out


def _comparisons(ctx):
    out = []
    for b in ctx.facts.blocks:
        # Only comparisons with a best-so-far value: the blocks around them are looked up below.
        if b.kind == "if" and isinstance(b.test, cst.Comparison) and _metric_side(b.test) is not None:
            # The test runs just before the body: values are followed from the `if` itself,
            # inside the branches and loops that hold it.
            around = [o for o in ctx.facts.blocks if o.function is b.function and o.contains(b.start)]
            ifs = tuple(o for o in around if o.kind in ("if", "else"))
            loops = tuple(o for o in around if o.kind in ("for", "while"))
            out.append((b.test, Site(b.node, b.function, loops, (), ifs, b.start), b))
    for a in ctx.facts.assigns:
        if a.op == "=" and isinstance(a.value, cst.Comparison):
            out.append((a.value, a, None))
    return out


def _metric_side(node: cst.Comparison) -> Optional[cst.BaseExpression]:
    """The compared metric, when the other side is the best value so far."""
    if len(node.comparisons) != 1 or not isinstance(node.comparisons[0].operator, COMPARE):
        return None
    left, right = node.left, node.comparisons[0].comparator
    lname, rname = dotted(left) or "", dotted(right) or ""
    if BEST_NAME.search(rname.rsplit(".", 1)[-1]) and not BEST_NAME.search(lname):
        return left
    if BEST_NAME.search(lname.rsplit(".", 1)[-1]) and not BEST_NAME.search(rname):
        return right
    return None


def _keeps_winner(ctx, node: cst.Comparison, site: Site, body: Optional[Block]) -> bool:
    """The if-body saves or copies the model, records other best values (the epoch, the
    hyper-parameters) or resets an early-stopping counter; for an assigned comparison
    (`is_best = ...`), the flag goes to a save call, or an `if` tests the flag (alone or
    `and`-ed with other conditions) and its body keeps the winner."""
    compared = {dotted(node.left), dotted(node.comparisons[0].comparator)}
    if body is not None:
        return _body_keeps_winner(ctx, compared, body)
    flag = [t.value for t in getattr(site, "targets", ()) if isinstance(t, cst.Name)]
    if any(
        c.order > site.order and (c.attr in SAVE_ATTRS or "save" in (c.attr or ""))
        and any(isinstance(n, cst.Name) and n.value in flag for a in c.args for n in walk(a.value))
        for c in ctx.calls_in(site.function)
    ):
        return True
    for b in ctx.facts.blocks:
        if b.kind != "if" or b.function is not site.function or b.start <= site.order:
            continue
        at = Site(b.node, b.function, (), (), (), b.start)
        for tested in _tested_flags(b.test) & set(flag):
            # The flag the `if` reads is this assignment's (not a later rebinding).
            if any(r is site for r in ctx.reaching(tested, at)) and _body_keeps_winner(ctx, compared, b):
                return True
    return False


def _tested_flags(test: Optional[cst.BaseExpression]) -> Set[str]:
    """`{"is_best"}` for `if is_best:` or `if is_best and epoch > warmup:` (the body runs only
    when the flag is true); nothing for `if not is_best:` or `if is_best or ...:`."""
    if isinstance(test, cst.Name):
        return {test.value}
    if isinstance(test, cst.BooleanOperation) and isinstance(test.operator, cst.And):
        return _tested_flags(test.left) | _tested_flags(test.right)
    return set()


def _body_keeps_winner(ctx, compared, body: Block) -> bool:
    for c in ctx.calls_within(body):
        if c.attr in SAVE_ATTRS or "save" in (c.attr or ""):
            return True
    for a in ctx.assigns_within(body):
        for t in a.targets:
            name = dotted(t) or ""
            if name in compared:
                continue
            last = name.rsplit(".", 1)[-1]
            if BEST_NAME.search(last) or COUNTER_NAME.search(last):
                return True
    return False
