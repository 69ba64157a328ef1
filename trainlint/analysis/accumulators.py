"""Where an epoch metric's value comes from: the loops that accumulate the names it is
computed from (`correct += ...` over `test_loader`, `running_loss += loss.item()` in the
loop that trains), so a metric is known by its source, not only by its name."""

from __future__ import annotations

from typing import List, Tuple

import libcst as cst

from trainlint.analysis.facts import Block, Site, walk

ACCUMULATE = ("+=", "-=")


def accumulating_loops(ctx, value: cst.BaseExpression, at: Site) -> List[Tuple[str, Block]]:
    """(name, loop) for each name `value` reads that a loop accumulates before `at`, in the
    same function: `acc = hits / n` after `for x, y in test_loader: hits += ...; n += len(y)`.
    The loop is the innermost one around the accumulation (the batch loop, not the epochs)."""
    read = {n.value for n in walk(value) if isinstance(n, cst.Name)}
    out: List[Tuple[str, Block]] = []
    for a in ctx.facts.assigns:
        if a.op not in ACCUMULATE or a.function is not at.function or a.order >= at.order or not a.loops:
            continue
        if len(a.targets) != 1 or not isinstance(a.targets[0], cst.Name) or a.targets[0].value not in read:
            continue
        loop = a.loops[-1]
        if loop.kind in ("for", "while"):
            out.append((a.targets[0].value, loop))
    return out
