"""Loss functions by their PyTorch spellings, and "is this call one of these losses?"."""

from __future__ import annotations

import libcst as cst

from trainlint.analysis.torch_api import CROSS_ENTROPY_FUNCS, CROSS_ENTROPY_MODULES

NLL_FUNCS = frozenset({"torch.nn.functional.nll_loss"})
NLL_MODULES = frozenset({"torch.nn.NLLLoss", "torch.nn.NLLLoss2d", "torch.nn.modules.loss.NLLLoss"})
BCE_FUNCS = frozenset({"torch.nn.functional.binary_cross_entropy"})
BCE_MODULES = frozenset({"torch.nn.BCELoss", "torch.nn.modules.loss.BCELoss"})
BCE_LOGITS_FUNCS = frozenset({"torch.nn.functional.binary_cross_entropy_with_logits", "torch.binary_cross_entropy_with_logits"})
BCE_LOGITS_MODULES = frozenset({"torch.nn.BCEWithLogitsLoss", "torch.nn.modules.loss.BCEWithLogitsLoss"})
CE_FUNCS = frozenset(CROSS_ENTROPY_FUNCS)
CE_MODULES = frozenset(CROSS_ENTROPY_MODULES)


def is_loss_call(ctx, call, funcs, modules) -> bool:
    """`F.cross_entropy(...)`, `nn.CrossEntropyLoss()(...)` or `criterion(...)` with
    `criterion` (a name, `self.` attribute or parameter) built from the loss class."""
    if call.qualname in funcs:
        return True
    func = call.func
    if isinstance(func, cst.Call):
        return ctx.qualname(func.func) in modules
    if call.qualname is not None or not isinstance(func, (cst.Name, cst.Attribute)):
        return False
    cands = ctx.constructions(func, call)
    if not cands:
        return False
    for value, _ in cands:
        if isinstance(value, cst.Call):
            if ctx.qualname(value.func) not in modules:
                return False
        elif ctx.qualname(value) not in funcs:  # `loss_fn = F.cross_entropy`
            return False
    return True


# What a loss wrapper's summary names (analysis/project.py): the losses its input is fed to.
LOSS_FAMILIES = {
    "cross_entropy": (CE_FUNCS, CE_MODULES),
    "bce_with_logits": (BCE_LOGITS_FUNCS, BCE_LOGITS_MODULES),
}


def feeds_loss_input(ctx, fn, funcs, modules) -> bool:
    """`fn`, a loss class's `forward`, hands its first argument after `self` unchanged (no
    assignment to it in `fn`) to one of these losses as that loss's input:
    `def forward(self, inputs, targets): return F.binary_cross_entropy_with_logits(inputs, ...)`.
    A focal loss that also takes `torch.sigmoid(inputs)` for its weights still counts; one
    that turns its argument into logits first (`logits = torch.logit(probs)`) does not."""
    params = fn.params[1:]
    if not params:
        return False
    first = params[0]
    for c in ctx.facts.calls:
        if c.function is not fn or c.has_star_args or not is_loss_call(ctx, c, funcs, modules):
            continue
        inp = c.arg(0, "input")
        if isinstance(inp, cst.Name) and inp.value == first and not ctx.reaching(first, c):
            return True
    return False


def loss_input(ctx, call, family: str):
    """The expression that becomes the input of a `family` loss (see LOSS_FAMILIES) at `call`,
    and the loss class it goes through (None for the loss itself); None when `call` is
    neither such a loss nor an instance of such a loss class: one of this module, or of
    another module of the project whose summary says so. Every object the called name may
    hold must be such a loss."""
    funcs, modules = LOSS_FAMILIES[family]
    if is_loss_call(ctx, call, funcs, modules):
        return call.arg(0, "input"), None
    func = call.func
    if call.qualname is not None or call.has_star_args or not isinstance(func, (cst.Name, cst.Attribute)):
        return None
    inp = call.positional(0)
    if inp is None:
        return None
    if isinstance(func, cst.Name) and ctx.class_named(func.value) is None and ctx.function_named(func.value, call.function) is not None:
        # A helper function: its parameter is followed to this call's argument where the
        # helper calls the loss (values.source_of), and reported there.
        return None
    cands = ctx.constructions(func, call)
    if not cands:
        return None
    via = None
    for value, _ in cands:
        via = _wrapper_class(ctx, value, family)
        if via is None:
            return None
    return inp, via


def _wrapper_class(ctx, value, family: str):
    """`value` builds a loss class that feeds its input to a `family` loss: its name."""
    if not isinstance(value, cst.Call) or not isinstance(value.func, (cst.Name, cst.Attribute)):
        return None
    funcs, modules = LOSS_FAMILIES[family]
    if isinstance(value.func, cst.Name) and ctx.qualname(value.func) is None:
        cls = ctx.class_named(value.func.value)
        if cls is not None:
            forward = ctx.method(cls, "forward")
            return f"`{cls.name}`" if forward is not None and feeds_loss_input(ctx, forward, funcs, modules) else None
    if ctx.project is None:
        return None
    from trainlint.analysis.project import constructor_summary

    found = constructor_summary(ctx, value.func)
    if found is None or family not in (found[0].get("feeds") or ()):
        return None
    name = ctx.module.code_for_node(value.func).rsplit(".", 1)[-1]
    return f"`{name}` from {found[1]}"
