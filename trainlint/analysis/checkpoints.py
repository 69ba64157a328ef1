"""Checkpoints: what a file writes with `torch.save` (the keys of the dicts it saves) and
where a value was read from a `torch.load`ed checkpoint (`ckpt["model"]`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

import libcst as cst

from trainlint.analysis.containers import dict_entries, subscript_key
from trainlint.analysis.facts import Site
from trainlint.analysis.names import dotted

TORCH_SAVE = {"torch.save", "torch.serialization.save"}
TORCH_LOAD = {"torch.load", "torch.serialization.load"}
OPTIMIZER_TEXT = re.compile(r"optim|(^|[^a-z])opt([^a-z]|$)", re.I)
SCHEDULER_TEXT = re.compile(r"sched|lr_s", re.I)
PROGRESS_KEY = re.compile(r"epoch|step|iter", re.I)


@dataclass(eq=False)
class SavedCheckpoint:
    """One dict a file saves with `torch.save`: its (key, value, site the value is read at)
    entries, and the save call (whose path ties it to the loads of the same file)."""

    entries: List[Tuple[Optional[str], cst.BaseExpression, Site]]
    save: Site
    path: Optional[cst.BaseExpression]


def saved_checkpoints(ctx) -> List[SavedCheckpoint]:
    """For every dict the file saves with `torch.save` (a display, a name bound to one and
    filled key by key, a parameter that same-module callers fill): its entries and where it
    is written. Saves of anything else are left out."""
    out: List[SavedCheckpoint] = []
    for call in ctx.facts.calls:
        if call.qualname not in TORCH_SAVE:
            continue
        obj = call.arg(0, "obj")
        if obj is None:
            continue
        try:
            cands = ctx.resolve(obj, call)
        except RecursionError:
            continue
        for value, site in cands:
            entries = dict_entries(value)
            if entries is None:
                continue
            pairs = [(k, v, site) for k, v in entries]
            name = _bound_name(ctx, value, site)
            if name is not None:
                pairs += _keyed(ctx, name, site)
            out.append(SavedCheckpoint(pairs, call, call.arg(1, "f")))
    return out


def holds_optimizer_state(ctx, key: Optional[str], value: cst.BaseExpression, at: Site) -> bool:
    """A checkpoint entry that holds an optimizer's state: keyed like one (`"optimizer"`,
    `"optim_state"`), or valued `X.state_dict()` where X is an optimizer — built by
    `torch.optim.*` as the analysis resolves it — whatever the key (`"optG": optG.state_dict()`)."""
    return _holds(ctx, key, value, at, OPTIMIZER_TEXT, ctx.training.is_optimizer)


def holds_scheduler_state(ctx, key: Optional[str], value: cst.BaseExpression, at: Site) -> bool:
    """The same for a learning-rate scheduler's state."""
    return _holds(ctx, key, value, at, SCHEDULER_TEXT, ctx.training.is_scheduler)


def _holds(ctx, key, value, at, pattern, is_kind: Callable) -> bool:
    if isinstance(value, cst.Name) and value.value == "None":
        return False  # `"optimizer": None` is written on purpose and holds nothing
    if key is not None and pattern.search(key):
        return True
    text = ctx.module.code_for_node(value)
    if "state_dict" in text and pattern.search(text):
        return True
    if isinstance(value, cst.Call) and isinstance(value.func, cst.Attribute) and value.func.attr.value == "state_dict":
        try:
            return bool(is_kind(value.func.value, at))
        except RecursionError:
            return False
    return False


def literal_path(ctx, expr: Optional[cst.BaseExpression], at: Site) -> Optional[str]:
    """The file a save/load names when it is a string literal, directly or through a name bound
    only to literals of one value (`CKPT = "last.pt"`); None when it is computed or unknown."""
    if expr is None:
        return None
    if isinstance(expr, cst.SimpleString):
        v = expr.evaluated_value
        return v if isinstance(v, str) else None
    if not isinstance(expr, (cst.Name, cst.Attribute)):
        return None
    try:
        cands = ctx.resolve(expr, at)
    except RecursionError:
        return None
    values = {c.evaluated_value if isinstance(c, cst.SimpleString) else None for c, _ in cands}
    if len(values) == 1 and None not in values:
        return values.pop()
    return None


def load_path(ctx, holder: Optional[str], arg: cst.BaseExpression, at: Site) -> Optional[cst.BaseExpression]:
    """The path expression of the `torch.load` a checkpoint comes from: the load bound to
    `holder`, or the inline `torch.load(p)["model"]`."""
    calls: List[cst.Call] = []
    if holder is not None and "." not in holder:
        calls = [v for v, _ in ctx.resolve(cst.Name(holder), at) if isinstance(v, cst.Call)]
    elif isinstance(arg, cst.Subscript) and isinstance(arg.value, cst.Call):
        calls = [arg.value]
    if len(calls) != 1 or ctx.qualname(calls[0].func) not in TORCH_LOAD:
        return None  # a helper's load: its path is a parameter
    call = calls[0]
    for a in call.args:
        if a.keyword is not None and a.keyword.value == "f":
            return a.value
    pos = [a for a in call.args if a.keyword is None and not a.star]
    return pos[0].value if pos else None


def _bound_name(ctx, value, site: Site) -> Optional[str]:
    targets = getattr(site, "targets", ())
    if getattr(site, "value", None) is value and len(targets) == 1 and isinstance(targets[0], cst.Name):
        return targets[0].value
    return None


def _keyed(ctx, name: str, site: Site) -> List[Tuple[Optional[str], cst.BaseExpression, Site]]:
    """`name["key"] = value` in the scope that binds `name`."""
    out = []
    for a in ctx.facts.assigns:
        if a.function is not site.function or a.op != "=" or a.value is None:
            continue
        for t in a.targets:
            if isinstance(t, cst.Subscript) and isinstance(t.value, cst.Name) and t.value.value == name:
                out.append((subscript_key(t), a.value, a))
    return out


def loaded_checkpoint(ctx, expr: cst.BaseExpression, at: Site) -> Optional[Tuple[str, Optional[str]]]:
    """For `ckpt["model"]` / `ckpt.get("model")` / `torch.load(p)["model"]` where `ckpt` is a
    `torch.load`ed object: (key, name holding the checkpoint or None when inline)."""
    key = None
    base = None
    if isinstance(expr, cst.Subscript):
        key, base = subscript_key(expr), expr.value
    elif isinstance(expr, cst.Call) and isinstance(expr.func, cst.Attribute) and expr.func.attr.value == "get" and expr.args:
        k = expr.args[0].value
        if isinstance(k, cst.SimpleString) and isinstance(k.evaluated_value, str):
            key, base = k.evaluated_value, expr.func.value
    if key is None or base is None:
        return None
    if isinstance(base, cst.Call):
        return (key, None) if _is_load(ctx, base, at) else None
    if not isinstance(base, (cst.Name, cst.Attribute)):
        return None
    cands = ctx.resolve(base, at)
    if cands and all(isinstance(v, cst.Call) and _is_load(ctx, v, s) for v, s in cands):
        return key, dotted(base)
    return None


def _is_load(ctx, call: cst.Call, at: Site, depth: int = 0) -> bool:
    """`torch.load(...)`, or a call of a same-module helper whose every return is one
    (`def load_checkpoint(path): return torch.load(path, map_location="cpu")`)."""
    if ctx.qualname(call.func) in TORCH_LOAD:
        return True
    if depth > 2 or not isinstance(call.func, cst.Name) or ctx.qualname(call.func) is not None:
        return False
    fn = ctx.function_named(call.func.value, at.function)
    returns = [r for r in ctx.returns_of(fn) if r.value is not None] if fn is not None else []
    return bool(returns) and all(
        all(isinstance(v, cst.Call) and _is_load(ctx, v, s, depth + 1) for v, s in ctx.resolve(r.value, r)) for r in returns
    )
