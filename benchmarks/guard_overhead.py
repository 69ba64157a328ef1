"""Time overhead of guard.TrainingGuard over a plain loop with clip_grad_norm_.

The same MLP training loop runs in two variants, interleaved in one process
so that both see the same machine state (thermal, other load, allocator):

* plain   -- zero_grad, forward, loss, backward, clip_grad_norm_(1.0), step
* guarded -- the same inside ``TrainingGuard(max_grad_norm=1.0, loss_fn=...)``
             (the guard clips; no manual clip)

Each round times ``--steps`` steady-state steps of each variant after
``--warmup`` untimed ones (default 55: past the guard's first read-back, when the
update check stops taking whole-tensor norms); a fresh guard per guarded block,
its entry and exit untimed.
The result is the median over rounds of the per-step time of each variant
and the median of the per-round ratios guarded / plain -- in wall-clock time
and, on the CPU, in process CPU time (robust when the machine is shared).

On the CPU it also attributes the difference (see ``attribute``): the CPU time
of clip_grad_norm_ in the plain loop against that of the guard's hooks.

On CUDA it also proves the "no host-device sync in steady state" contract:
``torch.cuda.set_sync_debug_mode("error")`` is switched on for steady-state
guarded steps (between read-backs); any sync would raise. It then counts the
syncs of one read-back with mode "warn".

Usage:
    python benchmarks/guard_overhead.py                 # CPU
    python benchmarks/guard_overhead.py --device cuda   # GPU (timing + sync proof)
"""
from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from guard import TrainingGuard  # noqa: E402


def make_model(args, device):
    layers, d = [], args.inputs
    for _ in range(args.depth):
        layers += [nn.Linear(d, args.hidden), nn.ReLU()]
        d = args.hidden
    layers.append(nn.Linear(d, args.classes))
    return nn.Sequential(*layers).to(device)


def make_optimizer(args, model):
    kw = {"fused": True} if args.fused else {}
    return torch.optim.Adam(model.parameters(), lr=1e-3, **kw)


def batches(args, device, n=256):
    """A pool of batches of a learnable task. Large enough that the model does not
    memorise it (a memorised, cycled pool gives a saw-tooth loss that is no
    real training run)."""
    g = torch.Generator().manual_seed(0)
    xs = torch.randn(n, args.batch, args.inputs, generator=g)
    ys = xs[:, :, : args.classes].argmax(-1)
    return xs.to(device), ys.to(device)


walk = itertools.count()   # batch order: no block replays what the previous one saw


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_block(model, opt, crit, xs, ys, steps, warmup, device, guard_kw=None):
    """Time ``steps`` steps after ``warmup`` untimed ones; return (wall, CPU) seconds
    per step. CPU time (time.process_time, all threads of this process) is the
    robust measure on a shared machine: waiting for a core does not count."""
    guard = TrainingGuard(model, opt, loss_fn=crit, **guard_kw) if guard_kw is not None \
        else None
    if guard is not None:
        guard.__enter__()
    try:
        t0 = None
        for i in range(warmup + steps):
            if i == warmup:
                sync(device)
                t0, c0 = time.perf_counter(), time.process_time()
            k = next(walk) * 97 % len(xs)   # one shuffled walk, continued by every block
            x, y = xs[k], ys[k]
            opt.zero_grad(set_to_none=True)
            loss = crit(model(x), y)
            loss.backward()
            if guard is None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        sync(device)
        return (time.perf_counter() - t0) / steps, (time.process_time() - c0) / steps
    finally:
        if guard is not None:
            guard.__exit__(None, None, None)


def attribute(args, model, opt, crit, xs, ys, device, guard_kw, steps):
    """CPU time of what differs between the variants, measured inside the steps:
    clip_grad_norm_ in the plain loop; the guard's optimizer hooks and loss hook in
    the guarded one (timing hooks registered around the guard's own). Less noisy
    on a shared machine than whole-step ratios; CPU backend only."""
    clock = time.thread_time
    spent = {"clip": 0.0, "guard": 0.0, "step": 0.0}
    for i in range(args.warmup):
        run_block(model, opt, crit, xs, ys, 1, 0, device)
    c0 = clock()
    for i in range(steps):
        k = next(walk) * 97 % len(xs)
        opt.zero_grad(set_to_none=True)
        crit(model(xs[k]), ys[k]).backward()
        t = clock()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        spent["clip"] += clock() - t
        opt.step()
    spent["step"] = clock() - c0
    marks = {}

    def start(name):
        def hook(*a, **k):
            marks[name] = clock()
        return hook

    def stop(name):
        def hook(*a, **k):
            spent["guard"] += clock() - marks.pop(name)
        return hook
    # pre/post hooks run in registration order: ours before and after the guard's
    handles = [opt.register_step_pre_hook(start("pre")), opt.register_step_post_hook(start("post")),
               crit.register_forward_hook(start("loss"))]
    guard = TrainingGuard(model, opt, loss_fn=crit, **guard_kw)
    with guard:
        handles += [opt.register_step_pre_hook(stop("pre")),
                    opt.register_step_post_hook(stop("post")),
                    crit.register_forward_hook(stop("loss"))]
        for i in range(args.warmup + steps):
            k = next(walk) * 97 % len(xs)
            opt.zero_grad(set_to_none=True)
            crit(model(xs[k]), ys[k]).backward()
            if i == args.warmup:
                spent["guard"] = 0.0
            opt.step()
        for h in handles[3:]:
            h.remove()
    for h in handles[:3]:
        h.remove()
    plain_step = spent["step"] / steps
    return {"plain_cpu_ms_per_step": 1e3 * plain_step,
            "clip_grad_norm_cpu_ms_per_step": 1e3 * spent["clip"] / steps,
            "guard_hooks_cpu_ms_per_step": 1e3 * spent["guard"] / steps,
            "net_overhead_percent": 100 * (spent["guard"] - spent["clip"]) / steps / plain_step}


def prove_no_sync(args, model, opt, crit, xs, ys, device):
    """CUDA only: steady-state guarded steps run under sync debug mode "error"."""
    steps = 2 * args.check_every
    guard = TrainingGuard(model, opt, loss_fn=crit, max_grad_norm=1.0,
                          check_every=args.check_every)
    syncs_at_readback = None
    with guard:
        for i in range(steps):
            x, y = xs[i % len(xs)], ys[i % len(ys)]
            # step 0 (initial-loss check, first-forward probe) and the read-back
            # steps sync by design; every other step must not.
            readback = i == 0 or (i + 1) % args.check_every == 0
            mode = "warn" if readback else "error"
            torch.cuda.set_sync_debug_mode(mode)
            try:
                with warnings.catch_warnings(record=True) as rec:
                    warnings.simplefilter("always")
                    opt.zero_grad(set_to_none=True)
                    loss = crit(model(x), y)
                    loss.backward()
                    opt.step()
            finally:
                torch.cuda.set_sync_debug_mode(0)
            if readback and i > 0:
                syncs_at_readback = sum("synchroniz" in str(r.message) for r in rec)
    steady = steps - 1 - steps // args.check_every
    return {"steady_state_steps_checked": steady, "steady_state_syncs": 0,
            "syncs_per_readback": syncs_at_readback}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--inputs", type=int, default=256)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=100, help="timed steps per block")
    p.add_argument("--warmup", type=int, default=55,
                   help="untimed steps per block (default: past the first read-back)")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--check-every", type=int, default=50)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    p.add_argument("--fused", action="store_true", help="Adam(fused=True) in both variants")
    p.add_argument("--json", help="write the results to this file")
    p.add_argument("--verbose", action="store_true", help="print every round's ratios")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = make_model(args, device)
    opt = make_optimizer(args, model)
    crit = nn.CrossEntropyLoss()
    xs, ys = batches(args, device)
    guard_kw = dict(max_grad_norm=1.0, check_every=args.check_every,
                    checks={"init": "off", "initial-loss": "off"})   # steady state only

    run_block(model, opt, crit, xs, ys, 20, 5, device)              # warm everything up
    run_block(model, opt, crit, xs, ys, 20, 5, device, guard_kw)
    plain, guarded, ratios = [], [], []
    plain_cpu, guarded_cpu, ratios_cpu = [], [], []
    for r in range(args.rounds):
        order = [None, guard_kw] if r % 2 == 0 else [guard_kw, None]   # alternate who goes first
        times = {}
        for kw in order:
            times[kw is None] = run_block(model, opt, crit, xs, ys, args.steps, args.warmup,
                                          device, kw)
        (pw, pc), (gw, gc) = times[True], times[False]
        plain.append(pw)
        guarded.append(gw)
        ratios.append(gw / pw)
        plain_cpu.append(pc)
        guarded_cpu.append(gc)
        ratios_cpu.append(gc / pc)
        if args.verbose:
            print(f"round {r}: wall ratio {gw / pw:.3f}  cpu ratio {gc / pc:.3f}",
                  file=sys.stderr)
    result = {
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(),
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "model": f"MLP {args.inputs}-" + "-".join([str(args.hidden)] * args.depth)
                 + f"-{args.classes}, batch {args.batch}, Adam{' fused' if args.fused else ''}",
        "rounds": args.rounds, "steps_per_block": args.steps,
        "plain_ms_per_step": 1e3 * statistics.median(plain),
        "guarded_ms_per_step": 1e3 * statistics.median(guarded),
        "median_ratio": statistics.median(ratios),
        "overhead_percent": 100 * (statistics.median(ratios) - 1),
    }
    if device.type == "cpu":
        result.update({
            "plain_cpu_ms_per_step": 1e3 * statistics.median(plain_cpu),
            "guarded_cpu_ms_per_step": 1e3 * statistics.median(guarded_cpu),
            "median_cpu_ratio": statistics.median(ratios_cpu),
            "cpu_overhead_percent": 100 * (statistics.median(ratios_cpu) - 1),
        })
    if device.type == "cpu":
        result["attribution"] = attribute(args, model, opt, crit, xs, ys, device, guard_kw,
                                          args.steps * 3)
    if device.type == "cuda":
        result["sync_check"] = prove_no_sync(args, model, opt, crit, xs, ys, device)
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
