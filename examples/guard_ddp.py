"""TrainingGuard under DistributedDataParallel: every rank takes the same decision.

    torchrun --nproc_per_node 2 examples/guard_ddp.py            # CPU, gloo
    torchrun --nproc_per_node 2 examples/guard_ddp.py --nan      # a NaN on the last rank only

Each rank trains on its own shard of a synthetic task, with gradient
accumulation (``no_sync()`` on all but the last micro-batch), clipping and early
stopping on each rank's own validation loss. With ``--nan`` the last rank sees a
NaN loss once: every rank skips that same step (``on_nonfinite="skip"``) and
training goes on -- no rank hangs at the next all-reduce. Rank 0 prints the
report and writes ``guard_ddp.json``.
"""
import argparse
import os

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from guard import TrainingGuard

ACCUM = 2


def make_data(n, generator):
    x = torch.randn(n, 20, generator=generator)
    return x, x[:, :5].argmax(1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nan", action="store_true", help="a NaN loss on the last rank, once")
    ap.add_argument("--epochs", type=int, default=20)
    args = ap.parse_args()

    if "RANK" not in os.environ:   # plain `python examples/guard_ddp.py`: one rank
        os.environ.update(RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT="29511")
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(1)
    torch.manual_seed(0)                                  # the same initial weights
    g = torch.Generator().manual_seed(1 + rank)           # each rank its own data
    x_train, y_train = make_data(1024, g)
    x_val, y_val = make_data(256, g)

    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 5))
    ddp = DDP(model)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.AdamW(ddp.parameters(), lr=3e-3)

    with TrainingGuard(ddp, optimizer, loss_fn=criterion, max_grad_norm=1.0,
                       on_nonfinite="skip", patience=3, restore_best=True) as guard:
        for epoch in range(args.epochs):
            ddp.train()
            for i in range(0, len(x_train), 32 * ACCUM):
                optimizer.zero_grad()
                for k in range(ACCUM):
                    xb = x_train[i + 32 * k: i + 32 * (k + 1)]
                    yb = y_train[i + 32 * k: i + 32 * (k + 1)]
                    sync = k == ACCUM - 1        # all-reduce on the last micro-batch only
                    with (ddp.no_sync() if not sync else torch.enable_grad()):
                        loss = criterion(ddp(xb), yb)
                        if args.nan and rank == world - 1 and epoch == 1 and i == 0 and k == 0:
                            guard.observe_loss(float("nan"))   # this rank only, this step
                        else:
                            guard.observe_loss(loss)
                        (loss / ACCUM).backward()
                optimizer.step()
            ddp.eval()
            with torch.no_grad():
                val = criterion(ddp(x_val), y_val).item()   # each rank its own metric
            if guard.early_stop(val):                      # True on every rank, or on none
                break

    skipped = [h["step"] for h in guard.history if h["skipped"]]
    print(f"rank {rank}/{world}: {len(guard.history)} steps, skipped {skipped}, "
          f"stopped={guard.stopped}")
    if rank == 0:
        print(guard.report())
    guard.to_json("guard_ddp.json")                         # writes on rank 0 only
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
