"""optimizer: the optimizer's configuration, once on entry.

* adam-weight-decay -- ``torch.optim.Adam`` with ``weight_decay > 0``: Adam adds
  an L2 term to the gradient, which its per-parameter scaling then weakens for
  exactly the weights with large gradients; decoupled decay (``AdamW``) is what
  is almost always meant (Loshchilov & Hutter);
* decay-on-bias-norm -- weight decay applied to 1-D parameters (biases,
  normalisation weights): it pulls LayerNorm/BatchNorm gains towards 0 and
  brings no regularisation; the usual recipe puts them in a group with
  ``weight_decay=0``;
* decay-on-embedding -- weight decay on embedding tables (shrinks rare tokens'
  rows at every step although they rarely get a gradient).

These are recipe notes, not failures -- a healthy run may well decay its
biases -- so the check's default mode is ``"info"``: the notes go to
``report()`` and ``to_json()`` (``summary.notes``) and no warning is emitted.
``"warn"`` turns them into ``GuardWarning``\\ s, ``"raise"`` into errors.
"""
from __future__ import annotations

from typing import List

import torch
from torch import nn

from .base import Check, Finding

_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm) + \
    ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())


def _names(names: List[str], limit: int = 4) -> str:
    extra = f" (and {len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + extra


class OptimizerCheck(Check):
    name = "optimizer"
    modes = ("off", "info", "warn", "raise")
    defaults: dict = {}

    def on_enter(self) -> List[Finding]:
        g = self.guard
        opt, root = g.optimizer, g.root
        findings: List[Finding] = []
        decayed = [grp for grp in opt.param_groups
                   if isinstance(grp.get("weight_decay"), (int, float)) and grp["weight_decay"] > 0]
        if not decayed:
            return findings
        # Exactly Adam (AdamW subclasses nothing here, but a user subclass may decouple).
        if type(opt) is torch.optim.Adam and not any(grp.get("decoupled_weight_decay")
                                                     for grp in decayed):
            wd = max(grp["weight_decay"] for grp in decayed)
            findings.append(Finding(
                "adam-weight-decay",
                f"torch.optim.Adam with weight_decay={wd:g}: Adam adds the decay to the "
                "gradient (L2), and its adaptive scaling then shrinks the decay of exactly the "
                "weights with large gradients. Decoupled weight decay is almost always what is "
                "meant. Remedies: torch.optim.AdamW(params, lr, weight_decay=...) (typically "
                "0.01-0.1), or Adam(..., decoupled_weight_decay=True).", param=None))
        names = {id(p): n for n, p in root.named_parameters()}
        norm_params = {id(p) for m in root.modules() if isinstance(m, _NORMS)
                       for p in m.parameters(recurse=False)}
        emb_params = {id(p) for m in root.modules()
                      if isinstance(m, (nn.Embedding, nn.EmbeddingBag))
                      for p in m.parameters(recurse=False)}
        one_d, emb = [], []
        for grp in decayed:
            for p in grp["params"]:
                if not p.requires_grad:
                    continue
                name = names.get(id(p))
                if name is None:
                    continue
                if p.dim() <= 1 or id(p) in norm_params:
                    one_d.append(name)
                elif id(p) in emb_params:
                    emb.append(name)
        if one_d:
            findings.append(Finding(
                "decay-on-bias-norm",
                f"weight decay is applied to {len(one_d)} bias/normalisation parameter(s): "
                f"{_names(one_d)}. Decaying biases and norm gains brings no regularisation and "
                "pulls normalisation gains towards 0. Remedies: two param groups, "
                "[{'params': weights, 'weight_decay': wd}, {'params': biases_and_norms, "
                "'weight_decay': 0.0}] (1-D parameters: p.ndim < 2).", param=one_d[0]))
        if emb:
            findings.append(Finding(
                "decay-on-embedding",
                f"weight decay is applied to the embedding table(s) {_names(emb)}: rows of rare "
                "tokens are shrunk at every step but rarely get a gradient. Remedies: put "
                "embeddings in the param group with weight_decay=0 (common in transformer "
                "recipes) unless decaying them is intended.", param=emb[0]))
        return findings
