"""Agreement between ranks under ``torch.distributed`` (DDP, FSDP).

Every decision of the guard that changes control flow -- skip this step, raise,
stop early, restore the best weights -- goes through a :class:`Decisions`
object (``guard/decisions.py``). In a single process it is the identity. Under
``torch.distributed`` with more than one rank, :func:`make_decisions` returns a
:class:`DistributedDecisions`, which makes every rank take the same decision,
so that no rank raises or leaves the loop while the others block forever at
the next collective (DDP's gradient all-reduce, a barrier, ...).

What needs a reduction and what does not
----------------------------------------
* **Identical already** (no collective needed): numbers computed from gradients
  *after* DDP's all-reduce -- every rank holds the same gradients, hence the
  same per-parameter and global norms, the same clip coefficient and the same
  non-finite flag from them; likewise the parameters (DDP keeps them equal), so
  the update check and the "non-finite parameters" check see the same numbers.
* **Local** (one reduction): the loss (each rank sees its own batch), the
  first-forward activation statistics, micro-steps under ``no_sync()`` (their
  losses are averaged into the step's loss), FSDP gradient *shards* (each rank
  holds a different slice), and the validation metric passed to
  :meth:`~guard.TrainingGuard.early_stop`.

FSDP: the guard measures each rank's shards and sums their squared norms over
ranks (one ``all_reduce`` of one number per parameter per step, the same sum as
``FullyShardedDataParallel.clip_grad_norm_``), so per-parameter and global norms,
the clip coefficient and the non-finite flag from them are identical on all ranks.

Under DDP the per-step path adds exactly one collective, and only when the guard has a
per-step decision to take (``on_nonfinite="skip"``, or ``"raise"`` with the host or
device gate; the accelerator's "deferred" raise is agreed at the read-back): the step's
non-finite flag (gradients | loss) is reduced with one ``all_reduce(MAX)`` of a
0-d tensor on the gradients' device. On an accelerator this is asynchronous
like any other collective: it adds no host-device synchronisation. Findings are
agreed at each read-back (every ``check_every`` steps): one ``all_reduce(MAX)``
for all checks together, plus one ``all_gather_object`` only when some rank has
a finding. ``early_stop`` adds one ``all_reduce`` per call.

Reports: every rank keeps its own history (its own losses), ``report()`` says
how many ranks there were, and ``to_json()`` / ``plot()`` write on rank 0 only.
"""
from __future__ import annotations

import math
from typing import List, Optional

import torch
from torch import nn

from .decisions import Decisions

try:  # torch built without distributed support
    import torch.distributed as dist
except ImportError:  # pragma: no cover
    dist = None


def is_distributed(process_group=None) -> bool:
    """Whether ``torch.distributed`` is initialised with more than one rank
    (in ``process_group``, default: the world)."""
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return False
    return dist.get_world_size(process_group) > 1


def _comm_device(group) -> torch.device:
    """The device that the group's backend reduces on (NCCL: the current GPU)."""
    backend = str(dist.get_backend(group)).lower()
    if "nccl" in backend and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


class DistributedDecisions(Decisions):
    """Decisions agreed by all ranks of ``process_group`` (default: the world):
    a flag is set if it is set on *any* rank (``all_reduce(MAX)``)."""

    collective = True

    def __init__(self, process_group=None):
        if not (dist is not None and dist.is_available() and dist.is_initialized()):
            raise RuntimeError("DistributedDecisions needs an initialised torch.distributed "
                               "process group (torch.distributed.init_process_group)")
        self.group = process_group
        self.world_size = dist.get_world_size(process_group)
        self.rank = dist.get_rank(process_group)
        self.device = _comm_device(process_group)
        self._src = 0 if process_group is None else dist.get_global_rank(process_group, 0)

    # --------------------------------------------------------------- helpers
    def _max_(self, t: torch.Tensor) -> torch.Tensor:
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.group)
        return t

    # ------------------------------------------------------------- decisions
    def device_any(self, flag: torch.Tensor) -> torch.Tensor:
        """One ``all_reduce(MAX)`` of the 0-d flag, on the device with NCCL (no
        host sync); with gloo the flag goes through the CPU."""
        t = flag.detach().reshape(()).to(device=self.device, dtype=torch.float32)
        self._max_(t)
        return (t > 0).to(flag.device)

    def host_any(self, flag: bool) -> bool:
        t = torch.tensor(1.0 if flag else 0.0, device=self.device)
        return bool(self._max_(t).item())

    def agree(self, groups: List[List]) -> List[List]:
        """Every rank returns the same lists: per group (one per check), the
        findings of all ranks in rank order, one per cause, so that a check in
        ``"raise"`` mode raises the same error on every rank. One
        ``all_reduce(MAX)`` of the finding count; an ``all_gather_object`` only
        when some rank has a finding. A finding seen on some ranks only says so."""
        n = torch.tensor(float(sum(len(g) for g in groups)), device=self.device)
        if self._max_(n).item() == 0:
            return [[] for _ in groups]
        gathered: List[Optional[list]] = [None] * self.world_size
        dist.all_gather_object(gathered, [list(g) for g in groups], group=self.group)
        return [self._merge([(r, fs[k]) for r, fs in enumerate(gathered)])
                for k in range(len(groups))]

    def _merge(self, per_rank) -> List:
        merged, ranks, texts = {}, {}, {}
        for r, fs in per_rank:
            for f in fs or []:
                ranks.setdefault(f.cause, []).append(r)
                texts.setdefault(f.cause, set()).add(f.message)
                # A finding that names its culprit wins over one that cannot (param
                # "?": the flag was agreed from another rank's NaN).
                if f.cause not in merged or (merged[f.cause][1].param == "?"
                                             and f.param != "?"):
                    merged[f.cause] = (r, f)
        out = []
        for cause, (r, f) in merged.items():
            on = ranks[cause]
            if len(on) < self.world_size:
                f.message = (f"{f.message} (seen on rank{'s' if len(on) > 1 else ''} "
                             f"{', '.join(map(str, on))} of {self.world_size})")
            elif len(texts[cause]) > 1:
                f.message = f"{f.message} (rank {r} of {self.world_size})"
            out.append(f)
        return out

    def sync_module(self, module: nn.Module) -> None:
        """Make every rank hold rank 0's parameters and buffers (after restoring
        the best weights, which each rank snapshotted at its own best metric)."""
        with torch.no_grad():
            for t in list(module.parameters()) + list(module.buffers()):
                if t.device == self.device:
                    dist.broadcast(t.data, src=self._src, group=self.group)
                else:
                    buf = t.data.to(self.device)
                    dist.broadcast(buf, src=self._src, group=self.group)
                    t.data.copy_(buf)

    def global_norm(self, local_norm: torch.Tensor, norm_type: float = 2.0) -> torch.Tensor:
        """The global norm of gradients *sharded* across ranks (FSDP): the sum of
        ``norm**p`` of the shards over ranks, to the ``1/p``; max for ``inf``.
        Only for sharded gradients -- after DDP's all-reduce every rank holds the
        whole gradient and its local norm is the global one already."""
        return global_grad_norm(local_norm, norm_type, self.group, self.device)

    @property
    def is_writer(self) -> bool:
        return self.rank == 0


def global_grad_norm(local_norm: torch.Tensor, norm_type: float = 2.0, group=None,
                     device: Optional[torch.device] = None) -> torch.Tensor:
    """Global ``norm_type``-norm of a gradient sharded over the ranks of
    ``group``, from this rank's shard norm -- what
    ``FullyShardedDataParallel.clip_grad_norm_`` computes: one ``all_reduce``
    (SUM of ``norm**p``, or MAX for the inf-norm), no host sync. Elementwise for
    a vector of norms (one per parameter: the per-parameter global norms)."""
    device = device or _comm_device(group)
    t = local_norm.detach().to(device=device, dtype=torch.float32, copy=True)
    p = float(norm_type)
    if math.isinf(p):
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=group)
        return t.to(local_norm.device)
    t = t.pow(p)
    dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
    return t.pow(1.0 / p).to(local_norm.device)


def local_tensor(t: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a DTensor (FSDP2 parameters and gradients), a view
    that in-place ops write through; any other tensor as is."""
    to_local = getattr(t, "to_local", None)
    return to_local() if callable(to_local) and type(t).__name__ == "DTensor" else t


def is_sharded(model: nn.Module) -> bool:
    """Whether ``model``'s parameters are sharded across ranks: FSDP2
    (``fully_shard``: DTensor parameters) or FSDP1 (``FullyShardedDataParallel``)."""
    if dist is None or not dist.is_available():
        return False
    if any(type(p).__name__ == "DTensor" for p in model.parameters()):
        return True
    try:
        from torch.distributed.fsdp import FullyShardedDataParallel
    except ImportError:  # pragma: no cover
        return False
    return any(isinstance(m, FullyShardedDataParallel) for m in model.modules())


def make_decisions(process_group=None) -> Decisions:
    """:class:`DistributedDecisions` when ``torch.distributed`` is initialised
    and ``process_group`` (default: the world) has more than one rank; the
    single-process :class:`Decisions` otherwise. Pass a ``Decisions`` instance
    as ``process_group`` to use it as is."""
    if isinstance(process_group, Decisions):
        return process_group
    if is_distributed(process_group):
        return DistributedDecisions(process_group)
    return Decisions()
