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
