"""init: is the model initialised so that it can learn?

On entry (weights only, one host read): NaN/Inf, all-zero or constant weight
matrices, and a weight std far from every usual scale (He ``sqrt(2/fan_in)``,
Xavier ``sqrt(2/(fan_in+fan_out))``, LeCun ``sqrt(1/fan_in)`` and PyTorch's
own default for the layer type).

On the first forward (forward hooks on leaf modules, removed right after):
the spread of activations through depth, dead ReLUs and saturated
tanh/sigmoid units.
"""
from __future__ import annotations

import math
from typing import Dict, List

import torch
from torch import nn

from ..errors import InitError
from .base import Check, Finding

_REMEDY_SCALE = ("use nn.init.kaiming_normal_ (ReLU) or nn.init.xavier_uniform_ "
                 "(tanh/sigmoid/linear), or keep PyTorch's default initialisation")


def _reference_scales(module: nn.Module, weight: torch.Tensor) -> Dict[str, float]:
    """The stds a sane initialisation of this weight would have."""
    fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(weight)
    refs = {
        "He": math.sqrt(2.0 / fan_in),
        "Xavier": math.sqrt(2.0 / (fan_in + fan_out)),
        "LeCun": math.sqrt(1.0 / fan_in),
        # kaiming_uniform_(a=sqrt(5)) of Linear/Conv: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        "PyTorch default": 1.0 / math.sqrt(3.0 * fan_in),
    }
    if isinstance(module, nn.RNNBase):
        # RNN/LSTM/GRU initialise every weight with U(-1/sqrt(H), 1/sqrt(H)).
        refs["PyTorch default"] = 1.0 / math.sqrt(3.0 * module.hidden_size)
    return refs


class InitCheck(Check):
    name = "init"
    error = InitError
    defaults = {
        "too_large": 5.0,         # weight std > too_large x the largest reference scale
        "too_small": 10.0,        # weight std < smallest reference scale / too_small
        "act_exploding": 100.0,   # activation spread grows this much through depth
        "act_vanishing": 1e-3,    # ... or shrinks to this fraction
        "dead_relu": 0.9,         # fraction of ReLU outputs that are exactly 0
        "saturation": 0.5,        # fraction of tanh/sigmoid inputs beyond +-saturation_at
        "saturation_at": 5.0,
    }

    # -- on entry ------------------------------------------------------------
    def on_enter(self) -> List[Finding]:
        root = self.guard.root
        names = {id(p): n for n, p in root.named_parameters()}
        embedding_params = {id(p) for m in root.modules()
                            if isinstance(m, (nn.Embedding, nn.EmbeddingBag))
                            for p in m.parameters(recurse=False)}
        # Parameters on the meta device have no values to check (the guard notes them).
        params = [p for p in root.parameters() if p.is_floating_point() and not p.is_meta]
        if not params:
            return []
        findings: List[Finding] = []
        with torch.no_grad():
            # One batched read of everything (an entry-time sync is fine).
            finite = torch.stack([torch.isfinite(p).all() for p in params]).cpu().tolist()
        bad = [names.get(id(p), "?") for p, ok in zip(params, finite) if not ok]
        if bad:
            findings.append(Finding(
                "nonfinite-weights",
                f"NaN/Inf in the initial parameters of {', '.join(bad[:5])}"
                f"{' ...' if len(bad) > 5 else ''}. Remedies: check the initialisation code "
                "and the checkpoint that was loaded.", param=bad[0]))

        # Weight matrices (dim >= 2) with the module that owns them, in registration order.
        seen = set()
        weights = []
        for mname, module in root.named_modules():
            for pname, p in module.named_parameters(recurse=False):
                if p.dim() < 2 or id(p) in seen or not p.is_floating_point() \
                        or "weight" not in pname or p.is_meta:
                    # Only layer weights (weight, weight_hh_l0, in_proj_weight...):
                    # a zero positional embedding or class token is a common recipe.
                    continue
                seen.add(id(p))
                weights.append((f"{mname}.{pname}" if mname else pname, module, p))
        if not weights:
            return findings
        with torch.no_grad():
            stats = torch.stack([
                torch.stack([p.detach().float().std(), p.detach().float().abs().amax(),
                             p.detach().amax().float() - p.detach().amin().float()])
                for _, _, p in weights]).cpu().tolist()
        last = len(weights) - 1
        zero = [i for i, (std, amax, spread) in enumerate(stats) if amax == 0]
        # A single zero-initialised output layer is a deliberate, harmless recipe
        # (the layers below still break the symmetry); zeros anywhere else are not.
        if zero and zero != [last]:
            layers = [weights[i][0] for i in zero]
            findings.append(Finding(
                "zero-weights",
                f"all-zero weights in {', '.join(layers[:5])}{' ...' if len(layers) > 5 else ''}: "
                "every unit of such a layer computes the same thing and receives the same "
                f"gradient, so the layer cannot learn distinct features. Remedies: {_REMEDY_SCALE}; "
                "zero-initialise biases only.", param=layers[0]))
        const = [i for i, (std, amax, spread) in enumerate(stats)
                 if amax != 0 and spread == 0 and weights[i][2].numel() > 1]
        if const:
            layers = [weights[i][0] for i in const]
            findings.append(Finding(
                "constant-weights",
                f"constant weights in {', '.join(layers[:5])}: all units are identical "
                f"(symmetry is never broken). Remedies: {_REMEDY_SCALE}.", param=layers[0]))
        too_large, too_small = [], []
        for i, ((name, module, p), (std, amax, spread)) in enumerate(zip(weights, stats)):
            if amax == 0 or spread == 0 or not math.isfinite(std) or id(p) in embedding_params:
                continue   # embeddings legitimately use N(0, 1) or N(0, 0.02)
            refs = _reference_scales(module, p)
            hi, lo = max(refs.values()), min(refs.values())
            if std > self.opt["too_large"] * hi:
                too_large.append((name, std, refs))
            elif std < lo / self.opt["too_small"] and i != last:
                # A deliberately small output layer (logits near 0) is healthy.
                too_small.append((name, std, refs))
        for cause, items, word in (("scale-too-large", too_large, "above"),
                                   ("scale-too-small", too_small, "below")):
            if not items:
                continue
            name, std, refs = items[0]
            ref_txt = ", ".join(f"{k} {v:.3g}" for k, v in refs.items())
            others = f" (and {len(items) - 1} more layer(s))" if len(items) > 1 else ""
            findings.append(Finding(
                cause,
                f"weight std of {name} is {std:.3g}, far {word} every usual scale for its "
                f"shape ({ref_txt}){others}. Activations and gradients will "
                f"{'explode' if word == 'above' else 'vanish'} through depth. "
                f"Remedies: {_REMEDY_SCALE}.", param=name))
        return findings

    # -- first forward -------------------------------------------------------
    def on_first_forward(self, records: List[dict]) -> List[Finding]:
        """``records``: one dict per leaf module call, in call order (see ActivationProbe).
        Dead and saturated units come first: they are the usual cause of a
        vanishing spread through depth."""
        findings: List[Finding] = []
        nonfinite = [r["name"] for r in records if not r["finite"]]
        if nonfinite:
            findings.append(Finding(
                "nonfinite-activations",
                f"NaN/Inf in the first forward pass, first in {nonfinite[0]}. Remedies: check "
                "the input data and the initialisation.", step=0, param=nonfinite[0]))
            return findings
        dead = [r for r in records
                if r["zero_frac"] is not None and r["zero_frac"] >= self.opt["dead_relu"]]
        if dead:
            r = dead[0]
            findings.append(Finding(
                "dead-relu",
                f"{r['zero_frac']:.0%} of the outputs of {r['name']} are 0 on the first batch "
                f"(dead ReLUs{', also in ' + ', '.join(d['name'] for d in dead[1:4]) if len(dead) > 1 else ''}): "
                "those units pass no gradient. Remedies: smaller or He initialisation, "
                "no large negative biases, a lower learning rate, LeakyReLU/GELU.",
                step=0, param=r["name"]))
        sat = [r for r in records
               if r["sat_frac"] is not None and r["sat_frac"] > self.opt["saturation"]]
        if sat:
            r = sat[0]
            findings.append(Finding(
                "saturated",
                f"{r['sat_frac']:.0%} of the inputs of {r['name']} lie beyond "
                f"+-{self.opt['saturation_at']:g} on the first batch: the unit is saturated "
                "and its gradient is ~0. Remedies: Xavier initialisation, normalise the "
                "inputs, add normalisation layers before the activation.",
                step=0, param=r["name"]))
        layers = [r for r in records if r["weighted"] and r["out_std"] is not None]
        if layers:
            ref = layers[0]["in_std"] or layers[0]["out_std"]
            if ref and ref > 0 and math.isfinite(ref):
                for r in layers:
                    if r["out_std"] / ref > self.opt["act_exploding"]:
                        findings.append(Finding(
                            "activations-exploding",
                            f"activation spread grows through depth: std {r['out_std']:.3g} at "
                            f"{r['name']} against {ref:.3g} at the first layer (first forward). "
                            f"Remedies: {_REMEDY_SCALE}; add normalisation layers.",
                            step=0, param=r["name"]))
                        break
                for r in layers[:-1]:   # the output layer may be small on purpose
                    if r["out_std"] / ref < self.opt["act_vanishing"]:
                        findings.append(Finding(
                            "activations-vanishing",
                            f"activation spread vanishes through depth: std {r['out_std']:.3g} "
                            f"at {r['name']} against {ref:.3g} at the first layer (first "
                            f"forward); deeper layers see almost the same input for every "
                            f"sample. Remedies: {_REMEDY_SCALE}; prefer ReLU/GELU to "
                            "sigmoid in deep stacks; add normalisation layers.",
                            step=0, param=r["name"]))
                        break
        return findings


_RELUS = (nn.ReLU, nn.ReLU6)
_SQUASH = (nn.Tanh, nn.Sigmoid, nn.Hardtanh, nn.Hardsigmoid)


def _first_tensor(x):
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, (tuple, list)) and x:
        return _first_tensor(x[0])
    return None


def _spread(t: torch.Tensor) -> torch.Tensor:
    """Std across samples (dim 0), averaged over features: the signal that
    distinguishes inputs. A per-unit offset (e.g. sigmoid's 0.5) does not count."""
    t = t.detach().float()
    if t.dim() >= 2 and t.shape[0] > 1:
        return t.std(dim=0).mean()
    return t.std() if t.numel() > 1 else t.new_zeros(())


class ActivationProbe:
    """Forward hooks for the first forward pass only.

    Every leaf module gets a hook that queues a few reductions *on the device*;
    the hook on the root reads them all back at once (a single sync, at step 0)
    and removes every hook again, so steady-state forwards run hook-free.
    """

    def __init__(self, root: nn.Module, outer: nn.Module, on_done):
        self._handles = []
        self._records: List[dict] = []
        self._tensors: List[torch.Tensor] = []
        self._on_done = on_done
        self._seen_weighted = False
        for name, module in root.named_modules():
            if next(module.children(), None) is not None:
                continue   # leaves only: their outputs are the layers' activations
            weighted = any(p.dim() >= 2 for p in module.parameters(recurse=False)) and \
                not isinstance(module, (nn.Embedding, nn.EmbeddingBag))
            if not (weighted or isinstance(module, _RELUS + _SQUASH)):
                continue
            self._handles.append(module.register_forward_hook(
                self._make_hook(name or type(module).__name__, module, weighted)))
        # The root hook fires after the whole forward; it must be the outer
        # (possibly torch.compile'd) module so that it runs outside the graph.
        self._handles.append(outer.register_forward_hook(self._done))

    def _make_hook(self, name, module, weighted):
        def hook(mod, inputs, output):
            out = _first_tensor(output)
            if out is None or not out.is_floating_point() or out.is_meta:
                return   # a forward on the meta device computes shapes, no values
            inp = _first_tensor(inputs)
            with torch.no_grad():
                vals = [torch.isfinite(out).all().float(), _spread(out)]
                rec = {"name": name, "weighted": weighted, "in": None, "zero": None, "sat": None}
                if weighted and not self._seen_weighted and inp is not None \
                        and inp.is_floating_point():
                    # The input of the first weight layer is the reference spread.
                    rec["in"] = len(vals)
                    vals.append(_spread(inp))
                self._seen_weighted = self._seen_weighted or weighted
                if isinstance(mod, _RELUS):
                    rec["zero"] = len(vals)
                    vals.append((out <= 0).float().mean())
                if isinstance(mod, _SQUASH) and inp is not None and inp.is_floating_point():
                    rec["sat"] = len(vals)
                    vals.append((inp.detach().abs() > self.saturation_at).float().mean())
                self._tensors.append(torch.stack([v.to(vals[0].device) for v in vals]))
            self._records.append(rec)
        return hook

    saturation_at = 5.0

    def _done(self, module, inputs, output):
        self.remove()
        if not self._tensors:
            return
        values = [t.cpu().tolist() for t in self._tensors]  # the one sync of step 0
        records = []
        for rec, v in zip(self._records, values):
            records.append({
                "name": rec["name"], "weighted": rec["weighted"], "finite": v[0] == 1.0,
                "out_std": v[1],
                "in_std": v[rec["in"]] if rec["in"] is not None else None,
                "zero_frac": v[rec["zero"]] if rec["zero"] is not None else None,
                "sat_frac": v[rec["sat"]] if rec["sat"] is not None else None,
            })
        self._records, self._tensors = [], []
        self._on_done(records)

    def remove(self):
        for h in self._handles:
            h.remove()
        self._handles = []
