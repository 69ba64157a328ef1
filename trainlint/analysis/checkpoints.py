"""Checkpoints: what a file writes with `torch.save` (the keys of the dicts it saves) and
where a value was read from a `torch.load`ed checkpoint (`ckpt["model"]`)."""

from __future__ import annotations

import re
from typing import List, Optional, Tuple

import libcst as cst

from trainlint.analysis.containers import dict_entries, subscript_key
from trainlint.analysis.facts import Site
from trainlint.analysis.names import dotted

TORCH_SAVE = {"torch.save", "torch.serialization.save"}
TORCH_LOAD = {"torch.load", "torch.serialization.load"}
OPTIMIZER_TEXT = re.compile(r"optim|(^|[^a-z])opt([^a-z]|$)", re.I)
SCHEDULER_TEXT = re.compile(r"sched|lr_s", re.I)
PROGRESS_KEY = re.compile(r"epoch|step|iter", re.I)


def saved_checkpoints(ctx) -> List[List[Tuple[Optional[str], str]]]:
    """For every dict the file saves with `torch.save` (a display, a name bound to one and
    filled key by key, a parameter that same-module callers fill): its (key, value source)
    pairs. Saves of anything else are left out."""
    return _saved(ctx)


def _saved(ctx) -> List[List[Tuple[Optional[str], str]]]:
    out: List[List[Tuple[Optional[str], str]]] = []
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
            pairs = [(k, ctx.module.code_for_node(v)) for k, v in entries]
            name = _bound_name(ctx, value, site)
            if name is not None:
                pairs += _keyed(ctx, name, site)
            out.append(pairs)
    return out


def _bound_name(ctx, value, site: Site) -> Optional[str]:
    targets = getattr(site, "targets", ())
    if getattr(site, "value", None) is value and len(targets) == 1 and isinstance(targets[0], cst.Name):
        return targets[0].value
    return None


def _keyed(ctx, name: str, site: Site) -> List[Tuple[Optional[str], str]]:
    """`name["key"] = value` in the scope that binds `name`."""
    out = []
    for a in ctx.facts.assigns:
        if a.function is not site.function or a.op != "=" or a.value is None:
            continue
        for t in a.targets:
            if isinstance(t, cst.Subscript) and isinstance(t.value, cst.Name) and t.value.value == name:
                out.append((subscript_key(t), ctx.module.code_for_node(a.value)))
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
