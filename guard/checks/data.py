"""data: what the first batches say about the input pipeline.

Looked at on the first ``batches`` (3) optimizer steps only -- through forward
pre-hooks that remove themselves after that -- never in steady state. Each
inspected call reads its few statistics back in one transfer (a handful of
syncs at the start of the run, none after).

* pixel-range / not-normalised -- the input of the model's first weight layer
  (Linear, Conv, RNN...) holds 0-255 pixel values, or sits on a scale far from
  normalised (|mean| or std above ``max_scale``). Looking at what the first
  layer receives, not at the raw batch, keeps a model that normalises inside
  ``forward`` (``x / 255``, a BatchNorm first) silent;
* constant-batch / identical-samples -- the model's main input is one value
  everywhere, or every sample of a batch of 4 or more is the same;
* same-batch -- the loader returns the same batch at every step (the model's
  inputs at the first ``batches`` steps are identical). Full-batch training (a
  GNN on one graph, PINN collocation points) looks the same from inside the loop:
  switch it off there with ``checks={"data": {"same_batch": False}}``; L-BFGS,
  full-batch by design, is never judged;
* embedding-index -- an ``nn.Embedding`` gets a negative index or one at or
  above ``num_embeddings`` (checked *before* its forward: on a GPU that is a
  device-side assert that kills the process without saying which layer);
* target-range -- targets outside the loss's range: class indices < 0 or >= C
  for ``CrossEntropyLoss`` / ``NLLLoss`` (``ignore_index`` aside), targets
  outside [0, 1] for ``BCELoss`` / ``BCEWithLogitsLoss``;
* broadcast-shapes -- a regression loss (``MSELoss``, ``L1Loss``,
  ``SmoothL1Loss``, ``HuberLoss``) whose input and target shapes differ and
  broadcast, e.g. ``(N, 1)`` against ``(N,)`` gives an ``(N, N)`` loss;
* small-batch-batchnorm -- a BatchNorm layer in training mode normalising over
  fewer than ``min_bn_batch`` (8) samples: its statistics are noise.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn

from ..errors import GuardError
from .base import Check, Finding

_MAIN_INPUT_KWARGS = ("input_ids", "pixel_values", "inputs_embeds", "input_values", "x",
                      "input", "inputs")
_REGRESSION_LOSSES = (nn.MSELoss, nn.L1Loss, nn.SmoothL1Loss, nn.HuberLoss)
_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)   # not SyncBatchNorm
_FINGERPRINT_ELEMENTS = 64


def _tensors(args, kwargs) -> List[Tuple[str, torch.Tensor]]:
    """The tensors of a call, one container level deep (a dict batch, a tuple)."""
    out = []

    def add(name, v):
        if isinstance(v, torch.Tensor):
            out.append((name, v))
        elif isinstance(v, dict):
            for k, item in v.items():
                if isinstance(item, torch.Tensor):
                    out.append((f"{name}[{k!r}]", item))
        elif isinstance(v, (list, tuple)):
            for i, item in enumerate(v):
                if isinstance(item, torch.Tensor):
                    out.append((f"{name}[{i}]", item))
    for i, a in enumerate(args):
        add(f"args[{i}]", a)
    for k, v in kwargs.items():
        add(k, v)
    return out


def _main_input(args, kwargs) -> Optional[torch.Tensor]:
    """What the model is fed: the first positional tensor, else a well-known keyword
    (an attention mask, all ones in every sample, is never the main input)."""
    if args and isinstance(args[0], torch.Tensor):
        return args[0]
    for k in _MAIN_INPUT_KWARGS:
        if isinstance(kwargs.get(k), torch.Tensor):
            return kwargs[k]
    return None


def _fingerprint(t: torch.Tensor) -> torch.Tensor:
    """A few floats that tell batches apart: the sum and evenly spread elements."""
    flat = t.detach().reshape(-1)
    if not flat.numel():
        return torch.zeros(1, dtype=torch.float64, device=t.device)
    if flat.dtype == torch.bool:
        flat = flat.to(torch.uint8)
    idx = torch.linspace(0, flat.numel() - 1, min(flat.numel(), _FINGERPRINT_ELEMENTS),
                         device=t.device).long()
    # The sum accumulates in float64 without a float64 copy of the batch.
    return torch.cat([flat.sum(dtype=torch.float64).reshape(1), flat[idx].double()])


class DataCheck(Check):
    name = "data"
    defaults = {
        "batches": 3,        # optimizer steps whose batches are inspected
        "max_scale": 20.0,   # first-layer input |mean| or std above this: not normalised
        "min_bn_batch": 8,   # BatchNorm over fewer samples than this in training mode
        "same_batch": True,  # compare the inspected steps' batches
    }

    def __init__(self, mode, options, guard):
        super().__init__(mode, options, guard)
        self.pending: List[Finding] = []   # distributed: emitted at a step every rank takes

    def on_window(self, window) -> List[Finding]:
        """Distributed only: the hooks' findings, agreed with the read-back's."""
        found, self.pending = self.pending, []
        return found

    # -- the judgements (pure: host numbers in, findings out) ----------------------
    def judge_first_layer(self, step: int, layer: str, stats: Dict[str, float]) -> List[Finding]:
        mn, mx, mean, std, integral = (stats[k] for k in ("min", "max", "mean", "std",
                                                          "integral"))
        if not all(math.isfinite(v) for v in (mn, mx, mean, std)):
            return []   # the finite check names NaN/Inf inputs
        seen = (f"the input of the first layer {layer} at step {step} ranges over "
                f"[{mn:.4g}, {mx:.4g}] (mean {mean:.3g}, std {std:.3g})")
        if mn >= 0 and 25 < mx <= 255 and integral:
            return [Finding("pixel-range", (
                f"{seen}: raw 0-255 pixel values. Unnormalised inputs make the first layer's "
                "pre-activations ~100x too large: saturated units, huge gradients, a learning "
                "rate that fits no layer. Remedies: divide by 255 (ToTensor() does) and "
                "normalise per channel (transforms.Normalize(mean, std)), or do it in "
                "forward()."), step=step, param=layer)]
        if max(abs(mean), std) > self.opt["max_scale"]:
            return [Finding("not-normalised", (
                f"{seen}: far from normalised (|mean| or std above {self.opt['max_scale']:g}). "
                "Remedies: standardise each feature with the training set's mean and std "
                "(StandardScaler, transforms.Normalize), log-transform heavy-tailed counts, "
                "or put a normalisation layer (BatchNorm/LayerNorm) first."),
                step=step, param=layer)]
        return []

    def judge_main_input(self, step: int, name: str, stats: Dict[str, float]) -> List[Finding]:
        if stats["spread"] == 0:
            return [Finding("constant-batch", (
                f"the model's input {name} at step {step} holds a single value "
                f"({stats['first']:.4g}) everywhere: a blank batch (failed image decoding, a "
                "mask instead of the data, padding only). Remedies: check the dataset's "
                "__getitem__ and the transforms on a few samples."), step=step, param=name)]
        # From 4 samples up: two equal rows in a batch of 2 happen by chance (sampling
        # with replacement, duplicated records); four in a row do not.
        if stats["samples"] >= 4 and stats["sample_spread"] == 0:
            return [Finding("identical-samples", (
                f"all {int(stats['samples'])} samples of the model's input {name} at step "
                f"{step} are identical: the batch repeats one sample (an index bug in "
                "__getitem__, a broadcast instead of a stack in collate_fn). Remedies: check "
                "the dataset's __getitem__ and the collate function."), step=step, param=name)]
        return []

    def judge_same_batch(self, steps: List[int]) -> List[Finding]:
        return [Finding("same-batch", (
            f"the model got exactly the same batch at steps {', '.join(map(str, steps))}: "
            "the loader yields one batch over and over (next(iter(loader)) inside the loop, "
            "a batch created once outside it), so the model memorises it. Remedies: iterate "
            "`for x, y in loader:`; if one fixed batch is intended (full-batch training of a "
            "GNN on one graph or of a PINN, an overfitting test), set "
            "checks={'data': {'same_batch': False}}."),
            step=steps[-1])]

    def judge_embedding(self, step: int, layer: str, lo: int, hi: int,
                        size: int) -> List[Finding]:
        if lo < 0:
            return [Finding("embedding-index", (
                f"negative index {lo} fed to the embedding {layer} at step {step}: an "
                "embedding's indices run from 0 to num_embeddings - 1; -1 or -100 are padding/"
                "ignore markers meant for the loss, not for the lookup. Remedies: map "
                "padding to padding_idx (a valid index) before the embedding."),
                step=step, param=layer)]
        if hi >= size:
            return [Finding("embedding-index", (
                f"index {hi} fed to the embedding {layer} at step {step}, which has "
                f"num_embeddings={size} (valid: 0..{size - 1}): the tokenizer or vocabulary "
                "does not match the model (added special tokens, a different tokenizer). On a "
                "GPU this is a device-side assert. Remedies: build the embedding with the "
                "vocabulary's size (model.resize_token_embeddings(len(tokenizer)) in "
                "transformers), check the id mapping."), step=step, param=layer)]
        return []

    def judge_targets(self, step: int, kind: str, lo: float, hi: float,
                      classes: Optional[int]) -> List[Finding]:
        if classes is not None and (lo < 0 or hi >= classes):
            bad = lo if lo < 0 else hi
            return [Finding("target-range", (
                f"class index {bad:g} in the targets of {kind} at step {step}, with "
                f"{classes} classes in the logits (valid: 0..{classes - 1}): labels counted "
                "from 1, -1 for 'unknown', or a head with too few outputs. On a GPU this is a "
                "device-side assert. Remedies: map labels to 0..C-1, give the head C outputs, "
                "mark ignored targets with the loss's ignore_index."), step=step,
                param="target")]
        if classes is None and (lo < 0 or hi > 1):
            return [Finding("target-range", (
                f"targets of {kind} at step {step} range over [{lo:.4g}, {hi:.4g}]; binary "
                "cross-entropy needs targets in [0, 1] (labels as -1/1 or 0/255 give a loss "
                "that no model can minimise). Remedies: map the labels to 0/1."),
                step=step, param="target")]
        return []

    def judge_shapes(self, step: int, kind: str, inp: torch.Size,
                     target: torch.Size) -> List[Finding]:
        if inp == target:
            return []
        try:
            out = torch.broadcast_shapes(inp, target)
        except RuntimeError:
            return []   # the loss itself raises on shapes that do not broadcast
        return [Finding("broadcast-shapes", (
            f"{kind} at step {step} compares an input of shape {tuple(inp)} with a target of "
            f"shape {tuple(target)}; they broadcast to {tuple(out)}, so every prediction is "
            "compared with every target and the loss is minimised by predicting the mean. "
            "Remedies: make the shapes equal (output.squeeze(-1) or target.unsqueeze(-1))."),
            step=step, param="target")]

    def judge_batchnorm(self, step: int, layer: str, samples: int) -> List[Finding]:
        return [Finding("small-batch-batchnorm", (
            f"the BatchNorm layer {layer} normalises over a batch of {samples} samples at "
            f"step {step} (in training mode): its mean and variance are estimated from too few "
            "samples, so training is noisy and the running statistics used at evaluation do "
            f"not match. Remedies: a batch of at least {self.opt['min_bn_batch']}, GroupNorm or "
            "LayerNorm instead, or freeze the BatchNorm layers (eval mode)."),
            step=step, param=layer)]


def _never_breaks_training(hook):
    """A hook of the data check must never stop a training run by a bug of its own or
    an input it cannot measure (a nested or sparse tensor...): it then just looks away.
    Its own findings in "raise" mode (GuardError) do stop the run, as asked."""
    def wrapped(*args, **kwargs):
        try:
            return hook(*args, **kwargs)
        except GuardError:
            raise
        except Exception:
            return None
    return wrapped


class DataProbe:
    """The hooks of the data check, attached on entry and gone after the first
    ``batches`` optimizer steps (or on exit)."""

    def __init__(self, check: DataCheck, guard, outer: nn.Module, root: nn.Module, loss_fn):
        self.check, self.guard, self.root = check, guard, root
        self.batches = int(check.opt["batches"])
        self._handles: List[Any] = []
        self._fingerprints: Dict[int, list] = {}      # step -> host fingerprint
        self._inspected_steps = set()
        self._first_layer_done = set()                # steps whose first layer was seen
        self._bn_reported = False
        self._blank = False   # a blank batch is the same every step: one finding is enough
        # L-BFGS trains full-batch by design: the same batch every step is the method.
        self._full_batch = isinstance(guard.optimizer, torch.optim.LBFGS)
        self._handles.append(outer.register_forward_pre_hook(
            _never_breaks_training(self._on_model), with_kwargs=True))
        for name, module in root.named_modules():
            if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
                self._handles.append(module.register_forward_pre_hook(_never_breaks_training(
                    self._embedding_hook(name or type(module).__name__))))
            elif isinstance(module, _BATCH_NORMS):
                self._handles.append(module.register_forward_pre_hook(_never_breaks_training(
                    self._batchnorm_hook(name or type(module).__name__))))
            elif next(module.children(), None) is None and any(
                    p.dim() >= 2 and p.is_floating_point()
                    for p in module.parameters(recurse=False)):
                self._handles.append(module.register_forward_pre_hook(_never_breaks_training(
                    self._first_layer_hook(name or type(module).__name__))))
        if isinstance(loss_fn, nn.Module) and isinstance(
                loss_fn, (nn.CrossEntropyLoss, nn.NLLLoss, nn.BCELoss, nn.BCEWithLogitsLoss)
                + _REGRESSION_LOSSES):
            self._handles.append(loss_fn.register_forward_pre_hook(
                _never_breaks_training(self._on_loss), with_kwargs=True))

    # -- when to look ------------------------------------------------------------
    def _active(self) -> bool:
        """A training call within the inspected steps; removes every hook after them."""
        if self.guard.step >= self.batches:
            self.remove()
            return False
        return torch.is_grad_enabled()

    def _report(self, findings: List[Finding]) -> None:
        if findings:
            self.guard._data_findings(self.check, findings)

    # -- the hooks ---------------------------------------------------------------
    def _on_model(self, module, args, kwargs):
        if not self._active() or not self.root.training:
            return None
        step = self.guard.step
        if step in self._inspected_steps:
            return None   # the first forward of each step: a second call (R-drop) is no repeat
        self._inspected_steps.add(step)
        tensors = _tensors(args, kwargs)
        main = _main_input(args, kwargs)
        with torch.no_grad():
            parts = [_fingerprint(t).to(tensors[0][1].device) for _, t in tensors] \
                if tensors and self.check.opt["same_batch"] and not self._full_batch else []
            stats = None
            if main is not None and main.numel() > 1:
                m = main.detach()
                if m.dtype == torch.bool:
                    m = m.to(torch.uint8)
                flat = m.reshape(-1)
                # In the input's own dtype: no float copy of a large batch.
                spread = flat.amax().double() - flat.amin().double()
                samples = m.shape[0] if m.dim() >= 1 else 1
                # 1 when some sample differs from the first (NaN != NaN counts as differing)
                sample_spread = (m != m[:1]).any().double() if samples > 1 else \
                    spread.new_ones(())
                stats = torch.stack([spread, sample_spread, flat[0].double()])
            if not parts and stats is None:
                return None
            dev = (stats if stats is not None else parts[0]).device
            host = torch.cat([p.to(dev) for p in parts] + ([stats] if stats is not None
                                                           else [])).cpu().tolist()
        findings: List[Finding] = []
        if stats is not None:
            spread, sample_spread, first = host[-3:]
            host = host[:-3]
            name = next((n for n, t in tensors if t is main), "input")
            found = self.check.judge_main_input(step, name, {
                "spread": spread, "sample_spread": sample_spread, "first": first,
                "samples": main.shape[0] if main.dim() >= 1 else 1})
            self._blank = self._blank or any(f.cause == "constant-batch" for f in found)
            findings += found
        if parts:
            shapes = [(n, tuple(t.shape), t.dtype) for n, t in tensors]
            self._fingerprints[step] = [shapes, host]
            if len(self._fingerprints) == self.batches and self.batches >= 2 \
                    and not self._blank:
                prints = [self._fingerprints[s] for s in sorted(self._fingerprints)]
                if all(p == prints[0] for p in prints[1:]):
                    findings += self.check.judge_same_batch(sorted(self._fingerprints))
        self._report(findings)
        return None

    def _first_layer_hook(self, name):
        def hook(module, args):
            if not self._active():
                return None
            step = self.guard.step
            if step != 0 or step in self._first_layer_done:
                return None   # the first weight layer of the first forward only
            self._first_layer_done.add(step)
            x = args[0] if args and isinstance(args[0], torch.Tensor) else None
            if x is None or not x.is_floating_point() or x.numel() < 2:
                return None
            with torch.no_grad():
                xf = x.detach().float().reshape(-1)
                sample = xf[torch.linspace(0, xf.numel() - 1, min(xf.numel(), 1024),
                                           device=xf.device).long()]
                vals = torch.stack([xf.amin(), xf.amax(), xf.mean(), xf.std(),
                                    (sample == sample.round()).all().float()]).cpu().tolist()
            stats = dict(zip(("min", "max", "mean", "std", "integral"), vals))
            stats["integral"] = stats["integral"] == 1.0
            self._report(self.check.judge_first_layer(step, name, stats))
            return None
        return hook

    def _embedding_hook(self, name):
        def hook(module, args):
            if not self._active():
                return None
            idx = args[0] if args and isinstance(args[0], torch.Tensor) else None
            if idx is None or idx.is_floating_point() or not idx.numel():
                return None
            lo, hi = torch.stack([idx.detach().amin(), idx.detach().amax()]).cpu().tolist()
            self._report(self.check.judge_embedding(self.guard.step, name, int(lo), int(hi),
                                                    module.num_embeddings))
            return None
        return hook

    def _batchnorm_hook(self, name):
        def hook(module, args):
            if self._bn_reported or not self._active() or not module.training:
                return None
            x = args[0] if args and isinstance(args[0], torch.Tensor) else None
            if x is None or x.dim() < 2:
                return None
            samples = x.shape[0]
            if 1 < samples < self.check.opt["min_bn_batch"]:
                self._bn_reported = True
                self._report(self.check.judge_batchnorm(self.guard.step, name, samples))
            return None
        return hook

    def _on_loss(self, module, args, kwargs):
        if not self._active():
            return None
        inp = args[0] if args else kwargs.get("input")
        target = args[1] if len(args) > 1 else kwargs.get("target")
        if not isinstance(inp, torch.Tensor) or not isinstance(target, torch.Tensor) \
                or not inp.requires_grad:
            return None   # a validation call
        step, kind = self.guard.step, type(module).__name__
        if isinstance(module, _REGRESSION_LOSSES):
            self._report(self.check.judge_shapes(step, kind, inp.shape, target.shape))
            return None
        if not target.numel():
            return None
        t = target.detach()
        with torch.no_grad():
            if isinstance(module, (nn.CrossEntropyLoss, nn.NLLLoss)):
                if t.is_floating_point():
                    return None   # class probabilities
                classes = inp.shape[1] if inp.dim() >= 2 else inp.shape[0]
                valid = t[t != module.ignore_index]
                if not valid.numel():
                    return None
                lo, hi = torch.stack([valid.amin(), valid.amax()]).cpu().tolist()
            else:
                classes = None
                lo, hi = torch.stack([t.amin().float(), t.amax().float()]).cpu().tolist()
        self._report(self.check.judge_targets(step, kind, lo, hi, classes))
        return None

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
