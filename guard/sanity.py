"""Sanity tools from the training checklist, run before real training.

- :func:`overfit_one_batch` -- can the model drive the loss on one batch to ~0?
  A healthy model/loss pair can; one that cannot has a bug (a frozen layer, a
  softmax fed into ``CrossEntropyLoss``, a learning rate of 0, a detached graph).
- :func:`lr_find` -- the learning-rate range test (Leslie Smith, 2015; as in
  fastai and Lightning): raise the learning rate exponentially batch by batch,
  follow the smoothed loss, stop once it diverges, and suggest the rate where
  the loss fell fastest.

Both leave the model and optimizer exactly as they found them: parameter and
buffer values (copied back into the same tensors, so references stay valid),
gradients, ``requires_grad`` flags, the train/eval mode of every submodule,
the optimizer's state, hyperparameters and hooks -- also when the forward pass
or the loss raises.

These tools read the loss back to the host every step (a divergence decision
needs it); they are meant for a few hundred steps before training, not for the
training loop itself.

How a batch is fed to the model, unless ``forward`` is given:

- a tuple or list ``(inputs..., target)``: ``loss_fn(model(*inputs), target)``;
- a dict: the target is the value of the first of the keys ``"target"``,
  ``"targets"``, ``"y"``, ``"label"``, ``"labels"``; a single remaining entry
  is passed positionally (``model(x)``), several as keywords (``model(**rest)``).

For anything else pass ``forward(model, batch) -> loss``: a callable that
returns the scalar loss of one batch (already moved to the model's device),
for example ``forward=lambda m, b: m(**b).loss``. It replaces ``loss_fn``.
"""
from __future__ import annotations

import collections.abc
import copy
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple, Union

import torch
from torch import nn

__all__ = ["lr_find", "overfit_one_batch", "LRFinderResult", "OverfitResult"]

_TARGET_KEYS = ("target", "targets", "y", "label", "labels")
_MISSING = object()

Forward = Callable[[nn.Module, Any], torch.Tensor]
OptimizerFactory = Callable[[List[nn.Parameter]], torch.optim.Optimizer]


# ---------------------------------------------------------------------------
# Leaving the model and optimizer as found
# ---------------------------------------------------------------------------


def _host_copy(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    return copy.deepcopy(value)


def _put_back(original: Any, saved: Any) -> Any:
    """The value to store again: tensors are refilled in place, others replaced."""
    if isinstance(original, torch.Tensor):
        original.copy_(saved)
        return original
    return saved


class _Snapshot:
    """A host-memory copy of everything these tools may change; ``restore()`` undoes it.

    Tensors are restored in place (``copy_`` into the original objects, which are also
    put back where they were if something replaced them), so references held by the
    user -- to parameters, buffers, gradients or optimizer state -- stay valid.
    ``suspend_optimizer_hooks`` empties the optimizer's step pre/post hooks until
    ``restore()``: the sweep's steps are not training steps for a logger or a guard.
    """

    def __init__(self, model: nn.Module, optimizer: Optional[torch.optim.Optimizer] = None,
                 suspend_optimizer_hooks: bool = False):
        self.model = model
        self.optimizer = optimizer
        self.names = {id(p): n for n, p in model.named_parameters()}

        # Every (module, "_parameters"/"_buffers", name) slot, and one copy per tensor.
        self._slots = []
        self._values: Dict[int, Tuple[torch.Tensor, torch.Tensor]] = {}
        for module in model.modules():
            for kind in ("_parameters", "_buffers"):
                for name, tensor in getattr(module, kind).items():
                    if tensor is None:
                        continue
                    if isinstance(tensor, nn.parameter.UninitializedTensorMixin):
                        raise ValueError(
                            f"{type(module).__name__}.{name} is an uninitialized lazy "
                            "parameter: run one forward pass before this tool")
                    self._slots.append((module, kind, name, tensor))
                    if id(tensor) not in self._values:
                        self._values[id(tensor)] = (tensor, _host_copy(tensor))
        self._params = [t for t, _ in self._values.values() if isinstance(t, nn.Parameter)]
        self._requires_grad = [(p, p.requires_grad) for p in self._params]
        self._grads = [(p, p.grad, None if p.grad is None else _host_copy(p.grad))
                       for p in self._params]
        self._modes = [(m, m.training) for m in model.modules()]

        self._opt = None
        if optimizer is not None:
            opt = optimizer
            groups = [(g, {k: (v, _host_copy(v)) for k, v in g.items() if k != "params"},
                       g["params"], list(g["params"])) for g in opt.param_groups]
            state = {p: (s, {k: (v, _host_copy(v)) for k, v in s.items()})
                     for p, s in opt.state.items()}
            hooks = {name: (d, collections.OrderedDict(d)) for name, d in vars(opt).items()
                     if name.startswith("_optimizer_") and name.endswith("_hooks")
                     and isinstance(d, dict)}
            self._opt = (opt.state, opt.param_groups, list(opt.param_groups), groups, state,
                         hooks, getattr(opt, "_opt_called", _MISSING))
            if suspend_optimizer_hooks:
                opt._optimizer_step_pre_hooks.clear()
                opt._optimizer_step_post_hooks.clear()

    def unchanged(self, params: Iterable[nn.Parameter]) -> List[nn.Parameter]:
        """Those of ``params`` whose values equal the snapshot's exactly."""
        return [p for p in params
                if torch.equal(p.detach().cpu(), self._values[id(p)][1])]

    def restore(self) -> None:
        with torch.no_grad():
            for module, kind, name, tensor in self._slots:
                slots = getattr(module, kind)
                if slots.get(name) is not tensor:
                    slots[name] = tensor
            for tensor, saved in self._values.values():
                tensor.copy_(saved)
            for p, flag in self._requires_grad:
                p.requires_grad_(flag)
            for p, grad, saved in self._grads:
                p.grad = None if grad is None else _put_back(grad, saved)
            for module, training in self._modes:
                module.training = training
            if self._opt is not None:
                self._restore_optimizer()

    def _restore_optimizer(self) -> None:
        opt = self.optimizer
        state_obj, groups_obj, group_list, groups, state, hooks, opt_called = self._opt
        opt.state, opt.param_groups = state_obj, groups_obj
        groups_obj[:] = group_list
        for group, saved, params, members in groups:
            for key in [k for k in group if k != "params" and k not in saved]:
                del group[key]
            for key, (original, value) in saved.items():
                group[key] = _put_back(original, value)
            params[:] = members
            group["params"] = params
        for p in [p for p in state_obj if p not in state]:
            del state_obj[p]
        for p, (entry, saved) in state.items():
            entry.clear()
            entry.update({k: _put_back(original, value) for k, (original, value) in saved.items()})
            state_obj[p] = entry
        for name, (hook_dict, saved) in hooks.items():
            hook_dict.clear()
            hook_dict.update(saved)
            setattr(opt, name, hook_dict)
        if opt_called is _MISSING:
            opt.__dict__.pop("_opt_called", None)
        else:
            opt._opt_called = opt_called


# ---------------------------------------------------------------------------
# Batches and the loss
# ---------------------------------------------------------------------------


def _model_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, collections.abc.Mapping):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(_to_device(v, device) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


def _loss_and_output(model: nn.Module, batch: Any, loss_fn: Optional[Callable],
                     forward: Optional[Forward]) -> Tuple[torch.Tensor, Any]:
    """The scalar loss of one batch, and the model's output (None with ``forward``)."""
    output = None
    if forward is not None:
        loss = forward(model, batch)
    else:
        if isinstance(batch, (list, tuple)) and len(batch) >= 2:
            output = model(*batch[:-1])
            target = batch[-1]
        elif isinstance(batch, collections.abc.Mapping):
            key = next((k for k in _TARGET_KEYS if k in batch), None)
            if key is None:
                raise TypeError(
                    f"the batch dict has none of the target keys {_TARGET_KEYS}; pass "
                    "forward=lambda model, batch: <scalar loss> to say how to compute the loss")
            rest = {k: v for k, v in batch.items() if k != key}
            output = model(*rest.values()) if len(rest) == 1 else model(**rest)
            target = batch[key]
        else:
            raise TypeError(
                f"cannot split a batch of type {type(batch).__name__} into inputs and target: "
                "use a (inputs..., target) tuple, a dict with a 'target'/'y'/'label(s)' key, "
                "or pass forward=lambda model, batch: <scalar loss>")
        loss = loss_fn(output, target)
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise ValueError(f"the loss must be a scalar tensor, got {shape}")
    return loss.reshape(()), output


def _check_loss_args(loss_fn: Optional[Callable], forward: Optional[Forward]) -> None:
    if (loss_fn is None) == (forward is None):
        raise TypeError("pass exactly one of loss_fn (called as loss_fn(model(inputs), target)) "
                        "and forward (called as forward(model, batch) -> scalar loss)")


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError('plot() needs matplotlib: pip install "trainlint[plot]"') from exc
    return plt


def _new_axes(path, ax):
    """Axes to draw on: the given ones, a figure without pyplot (to save), or a pyplot one."""
    if ax is not None:
        return ax.figure, ax
    plt = _pyplot()
    if path is not None:
        from matplotlib.figure import Figure
        fig = Figure(figsize=(6.4, 4.2))
        return fig, fig.add_subplot()
    return plt.subplots(figsize=(6.4, 4.2))


# ---------------------------------------------------------------------------
# overfit_one_batch
# ---------------------------------------------------------------------------


@dataclass
class OverfitResult:
    """The verdict of :func:`overfit_one_batch`; truthy when it passed.

    ``losses[k]`` is the batch loss before update ``k`` (``losses[0]``: the initial loss).
    ``target`` is the loss that counted as "near zero". ``causes`` lists likely reasons
    for a failure; ``frozen`` names the parameters with ``requires_grad=False``.
    """

    passed: bool
    losses: List[float]
    target: float
    steps: int
    max_steps: int
    causes: List[str] = field(default_factory=list)
    frozen: List[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.passed

    @property
    def initial_loss(self) -> float:
        return self.losses[0]

    @property
    def final_loss(self) -> float:
        return self.losses[-1]

    @property
    def best_loss(self) -> float:
        finite = [v for v in self.losses if math.isfinite(v)]
        return min(finite) if finite else math.nan

    def summary(self) -> str:
        head = (f"overfit_one_batch: {'PASS' if self.passed else 'FAIL'} -- loss "
                f"{self.initial_loss:.4g} -> {self.final_loss:.4g} (best {self.best_loss:.4g}) "
                f"in {self.steps} step(s); target <= {self.target:.4g}")
        if self.passed:
            return head
        return "\n".join([head, "likely causes:"] + [f"  - {c}" for c in self.causes])

    __str__ = summary

    def plot(self, path=None, *, ax=None):
        """The loss curve with the target; saved to ``path`` if given. Returns the figure."""
        fig, ax = _new_axes(path, ax)
        ax.plot(range(len(self.losses)), self.losses, label="batch loss")
        ax.axhline(self.target, color="tab:green", linestyle="--", label="target")
        if self.losses and min(self.losses + [self.target]) > 0:
            ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_title(f"overfit one batch: {'PASS' if self.passed else 'FAIL'}")
        ax.legend()
        if path is not None:
            fig.savefig(path)
        return fig


def _looks_like_probabilities(output: Any) -> bool:
    if not isinstance(output, torch.Tensor) or output.dim() < 2 or not output.is_floating_point():
        return False
    out = output.detach().float()
    return bool(out.min() >= 0 and out.max() <= 1
                and torch.allclose(out.sum(1), torch.ones((), device=out.device), atol=1e-3))


def _softmax_cause(loss_fn: Optional[Callable], output: Any) -> Optional[str]:
    import torch.nn.functional as F

    if not _looks_like_probabilities(output):
        return None
    if isinstance(loss_fn, nn.CrossEntropyLoss) or loss_fn is F.cross_entropy:
        return ("the model's outputs are probabilities (in [0, 1], summing to 1) but the loss is "
                "cross-entropy, which applies log_softmax itself: this caps how low the loss can "
                "go; remove the final softmax and feed the raw logits")
    if isinstance(loss_fn, nn.NLLLoss) or loss_fn is F.nll_loss:
        return ("the model's outputs are probabilities (in [0, 1], summing to 1) but NLLLoss "
                "expects log-probabilities: use log_softmax instead of softmax")
    return None


def _listing(names: List[str], limit: int = 8) -> str:
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _failure_causes(snapshot: _Snapshot, opt: Optional[torch.optim.Optimizer],
                    trainable: List[nn.Parameter], frozen: List[str],
                    ungraded: List[nn.Parameter], softmax: Optional[str], losses: List[float],
                    target: float, max_steps: int) -> List[str]:
    """Likely reasons why the batch was not fitted, most specific first."""
    def names(params):
        return _listing([snapshot.names.get(id(p), "?") for p in params])

    if opt is None:
        return ["no parameter requires grad: nothing can learn"]
    causes = []
    if frozen:
        causes.append(f"{len(frozen)} parameter tensor(s) are frozen (requires_grad=False) and "
                      f"cannot learn: {_listing(frozen)}")
    if softmax:
        causes.append(softmax)
    if ungraded:
        causes.append("parameters that require grad got no gradient (not used in the forward "
                      f"pass, or the graph is detached): {names(ungraded)}")
    if all(float(g["lr"]) == 0 for g in opt.param_groups):
        causes.append("the optimizer's learning rate is 0")
    in_optimizer = {id(p) for g in opt.param_groups for p in g["params"]}
    missing = [p for p in trainable if id(p) not in in_optimizer]
    if missing:
        causes.append(f"parameters not in the optimizer: {names(missing)}")
    no_grad = {id(p) for p in ungraded}
    stepped = [p for p in trainable if id(p) not in no_grad and id(p) in in_optimizer]
    unchanged = snapshot.unchanged(stepped) if len(losses) > 1 else []
    if unchanged:
        causes.append(f"parameters that never changed: {names(unchanged)}")
    if len(losses) > 1 and math.isfinite(losses[-1]):
        causes.append(_curve_cause(losses, target, max_steps))
    return causes


def _curve_cause(losses: List[float], target: float, max_steps: int) -> str:
    initial, best = losses[0], min(losses)
    if max(losses) > 2 * abs(initial) + 1e-12 or losses[-1] > initial:
        return (f"the loss rose (up to {max(losses):.4g} from {initial:.4g}): the learning rate "
                "is probably too high")
    if best > initial - 0.01 * abs(initial):
        return (f"the loss barely moved from {initial:.4g} (best {best:.4g}): a learning rate far "
                "too low, or parameters that do not reach the loss")
    window = max(5, len(losses) // 5)
    before = min(losses[:-window]) if len(losses) > window else initial
    recent_rate = (before - min(losses[-window:])) / window
    if recent_rate >= 0.25 * (initial - best) / (len(losses) - 1):   # a quarter of the average
        return (f"the loss was still falling after {max_steps} steps (best {best:.4g}, target "
                f"{target:.4g}): raise max_steps or the learning rate")
    return (f"the loss stopped improving at about {best:.4g} ({best / initial:.1%} of the initial "
            f"{initial:.4g}) without reaching {target:.4g}: a floor in the loss (a softmax or "
            "sigmoid before a loss that expects logits, label smoothing, identical inputs with "
            "different targets), too little capacity, or a learning rate too low")


def overfit_one_batch(model: nn.Module, batch: Any, loss_fn: Optional[Callable] = None, *,
                      optimizer: Union[None, torch.optim.Optimizer, OptimizerFactory] = None,
                      lr: float = 1e-3, max_steps: int = 500, target_loss: float = 0.01,
                      target_ratio: float = 0.01,
                      forward: Optional[Forward] = None) -> OverfitResult:
    """Train on one batch and report whether the loss gets near zero.

    The model runs in train mode on ``batch`` (moved to the model's device) for up to
    ``max_steps`` steps. It passes as soon as the batch loss is at most
    ``max(target_loss, target_ratio * initial_loss)``; it fails when the steps run out,
    the loss becomes NaN/Inf, or it starts negative (the check assumes a loss >= 0
    whose minimum is 0, as cross-entropy and MSE). A failed result's ``causes`` name
    likely reasons: frozen parameters (listed), parameters that got no gradient or never
    changed, a learning rate of 0, a softmax before cross-entropy, a plateau, a rising
    loss.

    ``optimizer``: None (default) builds ``torch.optim.Adam(params, lr=lr)`` over the
    parameters that require grad; a callable ``factory(params) -> Optimizer`` builds
    another kind; an existing optimizer instance is used as is (``lr`` is then ignored;
    its step hooks do not run). ``batch``, ``loss_fn`` and ``forward``: see the module
    docstring.

    The model (and an optimizer instance passed in) are restored afterwards, also
    when the forward pass or the loss raises.
    """
    _check_loss_args(loss_fn, forward)
    if max_steps < 1:
        raise ValueError("max_steps must be at least 1")
    user_optimizer = optimizer if isinstance(optimizer, torch.optim.Optimizer) else None
    losses: List[float] = []
    causes: List[str] = []
    target = math.nan
    passed = False
    steps = 0
    snapshot = _Snapshot(model, user_optimizer, suspend_optimizer_hooks=True)
    try:
        model.train()
        batch = _to_device(batch, _model_device(model))
        all_params = list(model.parameters())
        trainable = [p for p in all_params if p.requires_grad]
        frozen = [snapshot.names[id(p)] for p in all_params if not p.requires_grad]
        if user_optimizer is not None:
            opt = user_optimizer
        elif not trainable:
            opt = None
        elif optimizer is None:
            opt = torch.optim.Adam(trainable, lr=lr)
        else:
            opt = optimizer(trainable)
        ungraded: List[nn.Parameter] = []
        softmax = None
        for step in range(max_steps):
            if opt is not None:
                opt.zero_grad(set_to_none=True)
            model.zero_grad(set_to_none=True)
            loss, output = _loss_and_output(model, batch, loss_fn, forward)
            value = float(loss.detach())
            losses.append(value)
            if step == 0:
                softmax = _softmax_cause(loss_fn, output)
                target = max(target_loss, target_ratio * value if math.isfinite(value) else 0)
            if not math.isfinite(value):
                causes.append(
                    f"the loss became {value} at step {step}: check the inputs and targets for "
                    "NaN/Inf, the loss for log(0) or division by zero, or lower the learning rate")
                break
            if step == 0 and value < 0:
                causes.append(
                    f"the loss is negative ({value:.4g}): this check needs a loss whose minimum "
                    "is 0 (a forward that subtracts the floor can provide one)")
                break
            if value <= target:
                passed = True
                break
            if opt is None:
                break
            loss.backward()
            if step == 0:
                ungraded = [p for p in trainable if p.grad is None]
            opt.step()
            steps += 1
        if not passed:
            causes += _failure_causes(snapshot, opt, trainable, frozen, ungraded, softmax,
                                      losses, target, max_steps)
    finally:
        snapshot.restore()
    return OverfitResult(passed=passed, losses=losses, target=target, steps=steps,
                         max_steps=max_steps, causes=causes, frozen=frozen)


# ---------------------------------------------------------------------------
# lr_find
# ---------------------------------------------------------------------------


@dataclass
class LRFinderResult:
    """The outcome of :func:`lr_find`.

    ``lrs[i]`` is the learning rate of step ``i``; ``losses[i]`` the batch loss measured
    before that step's update, ``smoothed[i]`` its bias-corrected exponential average.
    ``suggestion``: the rate where the smoothed loss fell fastest (steepest negative
    slope against log lr), or None with the reason in ``note``. ``minimum``: the rate
    at the lowest smoothed loss divided by 10 (fastai's other rule of thumb).
    """

    lrs: List[float]
    losses: List[float]
    smoothed: List[float]
    suggestion: Optional[float]
    minimum: Optional[float]
    diverged: bool
    stop_reason: str
    note: str = ""

    def summary(self) -> str:
        if self.lrs:
            span = f"{len(self.lrs)} step(s), lr {self.lrs[0]:.3g} .. {self.lrs[-1]:.3g}"
        else:
            span = "no step ran"
        lines = [f"lr_find: {span}; {self.stop_reason}"]
        if self.suggestion is not None:
            lines.append(f"suggested lr: {self.suggestion:.3g} "
                         "(steepest fall of the smoothed loss)")
        if self.minimum is not None:
            lines.append(f"min/10 lr: {self.minimum:.3g} (lr at the lowest smoothed loss / 10)")
        if self.note:
            lines.append(self.note)
        return "\n".join(lines)

    __str__ = summary

    def plot(self, path=None, *, ax=None, show_raw: bool = True):
        """Loss against learning rate (log scale), the suggestion marked; saved to ``path``
        if given. Returns the figure."""
        fig, ax = _new_axes(path, ax)
        if show_raw:
            ax.plot(self.lrs, self.losses, color="tab:blue", alpha=0.3, label="batch loss")
        ax.plot(self.lrs, self.smoothed, color="tab:blue", label="smoothed loss")
        for lr, color, label in ((self.suggestion, "tab:red", "suggestion"),
                                 (self.minimum, "tab:orange", "min / 10")):
            if lr is not None:
                ax.axvline(lr, color=color, linestyle="--", label=f"{label}: {lr:.2g}")
        if self.smoothed:   # the raw loss's final explosion would flatten the curve
            low, high = min(self.losses + self.smoothed), max(self.smoothed)
            ax.set_ylim(low - 0.05 * (high - low), high + 0.1 * (high - low) + 1e-12)
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("loss")
        ax.set_title("learning-rate range test")
        ax.legend()
        if path is not None:
            fig.savefig(path)
        return fig


def _cycle(loader: Iterable) -> Iterator:
    """The loader's batches, started again at the end; a one-shot iterator is replayed."""
    if isinstance(loader, collections.abc.Iterator):
        seen = []
        for batch in loader:
            seen.append(batch)
            yield batch
        while seen:
            yield from seen
        return
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            return


def _set_lr(group: dict, lr: float) -> None:
    if isinstance(group["lr"], torch.Tensor):
        group["lr"].fill_(lr)
    else:
        group["lr"] = lr


def _suggest(lrs: List[float], smoothed: List[float], skip_start: int, skip_end: int,
             half_window: int) -> Tuple[Optional[float], Optional[float], str]:
    """(steepest-fall rate, lowest-loss rate / 10, why no suggestion)."""
    if not lrs:
        return None, None, ""
    import numpy as np

    loss = np.asarray(smoothed)
    minimum = lrs[int(np.argmin(loss))] / 10
    stop = len(lrs) - skip_end
    if stop - skip_start < 3:
        return None, minimum, (
            f"no suggestion: only {len(lrs)} step(s) ran, too few after skipping the first "
            f"{skip_start} and last {skip_end}; lower start_lr or raise num_iter")
    # Slope across +-half_window points rather than between neighbours: early in the sweep the
    # bias-corrected average is still a mean of few batches, and one easy batch would
    # otherwise fake the steepest fall at a uselessly small rate.
    log_lr = np.log10(np.asarray(lrs))
    i = np.arange(skip_start, stop)
    lo = np.maximum(i - half_window, skip_start)
    hi = np.minimum(i + half_window, stop - 1)
    slopes = (loss[hi] - loss[lo]) / (log_lr[hi] - log_lr[lo])
    best = int(np.argmin(slopes))
    if not slopes[best] < -1e-3 * np.abs(loss[skip_start:stop]).max():   # rounding is no fall
        return None, minimum, ("no suggestion: the smoothed loss never fell; check the model and "
                               "the loss first (overfit_one_batch)")
    return float(lrs[skip_start + best]), minimum, ""


def lr_find(model: nn.Module, optimizer: torch.optim.Optimizer, loader: Iterable,
            loss_fn: Optional[Callable] = None, *, start_lr: float = 1e-7, end_lr: float = 10.0,
            num_iter: int = 100, beta: float = 0.98, diverge_threshold: float = 4.0,
            skip_start: int = 10, skip_end: int = 1, forward: Optional[Forward] = None,
            run_optimizer_hooks: bool = False) -> LRFinderResult:
    """The learning-rate range test: which learning rate to train with.

    For ``num_iter`` batches from ``loader`` (any iterable, started again when it runs
    out), the learning rate of every param group is set to
    ``start_lr * (end_lr / start_lr) ** (i / (num_iter - 1))`` and one training step is
    taken with ``optimizer``. The loss is smoothed with a bias-corrected exponential
    average (``beta``); the sweep stops when the smoothed loss exceeds
    ``diverge_threshold`` times its best, or the loss becomes NaN/Inf.

    Suggestion: the rate at the steepest negative slope of the smoothed loss against
    log lr (each slope taken across ``num_iter // 20`` points either side), leaving out
    the first ``skip_start`` points and, when the sweep diverged, the last ``skip_end``.
    ``minimum`` (the rate at the lowest smoothed loss, divided by 10) is given too.

    The optimizer's step pre/post hooks do not run during the sweep unless
    ``run_optimizer_hooks``. The model and optimizer are restored afterwards -- also
    when the forward pass or the loss raises. ``batch`` formats and ``forward``: see the
    module docstring.
    """
    _check_loss_args(loss_fn, forward)
    if not 0 < start_lr < end_lr:
        raise ValueError("need 0 < start_lr < end_lr")
    if num_iter < 2:
        raise ValueError("num_iter must be at least 2")
    if not 0 <= beta < 1:
        raise ValueError("beta must be in [0, 1)")
    if diverge_threshold <= 1:
        raise ValueError("diverge_threshold must be above 1")
    lrs: List[float] = []
    losses: List[float] = []
    smoothed: List[float] = []
    diverged = False
    stop_reason = f"completed {num_iter} steps without diverging (raise end_lr to see more)"
    snapshot = _Snapshot(model, optimizer, suspend_optimizer_hooks=not run_optimizer_hooks)
    try:
        model.train()
        device = _model_device(model)
        batches = _cycle(loader)
        average, best = 0.0, math.inf
        for i in range(num_iter):
            lr = start_lr * (end_lr / start_lr) ** (i / (num_iter - 1))
            batch = next(batches, _MISSING)
            if batch is _MISSING:
                stop_reason = "the loader yielded no batch" if i == 0 else \
                    f"stopped: the loader gave no more batches after {i}"
                break
            for group in optimizer.param_groups:
                _set_lr(group, lr)
            optimizer.zero_grad(set_to_none=True)
            model.zero_grad(set_to_none=True)
            loss, _ = _loss_and_output(model, _to_device(batch, device), loss_fn, forward)
            value = float(loss.detach())
            if not math.isfinite(value):
                diverged = True
                stop_reason = f"stopped: the loss became {value} at lr {lr:.3g}"
                break
            average = beta * average + (1 - beta) * value
            smooth = average / (1 - beta ** (i + 1))
            lrs.append(lr)
            losses.append(value)
            smoothed.append(smooth)
            if i > 0 and smooth > diverge_threshold * best:
                diverged = True
                stop_reason = (f"stopped at lr {lr:.3g}: smoothed loss {smooth:.4g} > "
                               f"{diverge_threshold:g} x best {best:.4g}")
                break
            best = min(best, smooth)
            loss.backward()
            optimizer.step()
    finally:
        snapshot.restore()
    suggestion, minimum, note = _suggest(lrs, smoothed, skip_start, skip_end if diverged else 0,
                                        max(1, num_iter // 20))
    return LRFinderResult(lrs=lrs, losses=losses, smoothed=smoothed, suggestion=suggestion,
                          minimum=minimum, diverged=diverged, stop_reason=stop_reason, note=note)
