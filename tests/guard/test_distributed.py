"""guard under torch.distributed: every rank takes the same decision, none hangs.

Each test runs 2 or 3 CPU processes with the ``gloo`` backend on 127.0.0.1 and
a hard deadline: a rank still alive after it is killed and the test fails
("hang"). The processes are forked from a forkserver that has imported torch
once, so a test costs about a second.
"""
from __future__ import annotations

import math
import multiprocessing as mp
import os
import socket
import time
import traceback
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from guard import TrainingGuard
from guard.decisions import Decisions
from guard.distributed import DistributedDecisions, global_grad_norm, make_decisions

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")

DEADLINE = 60.0      # seconds for a whole multi-process run (a hang fails the test)
NAN = float("nan")


# --------------------------------------------------------------------------- harness
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, scenario, kwargs, queue):
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    try:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                world_size=world, timeout=timedelta(seconds=30))
        try:
            result = globals()[scenario](rank, world, **kwargs)
        finally:
            dist.destroy_process_group()
        queue.put((rank, "ok", result))
    except BaseException as e:  # report, never hang the parent
        queue.put((rank, "error", f"{type(e).__name__}: {e}\n{traceback.format_exc()}"))


_CTX = None


def _context():
    global _CTX
    if _CTX is None:
        method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
        _CTX = mp.get_context(method)
        if method == "forkserver":
            # DDP's constructor imports torch._dynamo (seconds): once, in the server.
            _CTX.set_forkserver_preload(["torch", "torch.distributed", "torch._dynamo",
                                         "torch.nn.parallel", "guard", "guard.distributed"])
    return _CTX


def run_ranks(scenario, world=2, deadline=DEADLINE, **kwargs):
    """Run ``scenario(rank, world, **kwargs)`` on ``world`` gloo ranks; return
    the per-rank results, in rank order. Fails on a hang or an error."""
    ctx = _context()
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, world, port, scenario, kwargs, queue),
                         daemon=True) for r in range(world)]
    for p in procs:
        p.start()
    results, end = {}, time.monotonic() + deadline
    hung = True
    try:
        while len(results) < world and time.monotonic() < end:
            try:
                rank, status, value = queue.get(timeout=0.2)
            except Exception:
                if any(p.exitcode not in (None, 0) for p in procs):
                    dead = [r for r, p in enumerate(procs) if p.exitcode not in (None, 0)]
                    if not all(r in results for r in dead):
                        time.sleep(0.5)   # its message may still be in the pipe
                        while not queue.empty():
                            rank, status, value = queue.get()
                            results[rank] = (status, value)
                        if not all(r in results for r in dead):
                            pytest.fail(f"rank(s) {dead} died without a result")
                continue
            results[rank] = (status, value)
        missing = [r for r in range(world) if r not in results]
        hung = bool(missing)
        if missing:
            pytest.fail(f"{scenario}: rank(s) {missing} did not finish within {deadline:.0f} s "
                        f"(hang); finished: {sorted(results)}")
    finally:
        for p in procs:
            p.join(timeout=0.1 if hung else 5)
            if p.is_alive():
                p.kill()
                p.join(timeout=5)
    errors = {r: v for r, (s, v) in results.items() if s == "error"}
    if errors:
        pytest.fail(f"{scenario}: errors on ranks {sorted(errors)}:\n" +
                    "\n".join(errors.values()))
    return [results[r][1] for r in range(world)]


# --------------------------------------------------------------------------- scenarios
def _setup(rank, seed=0, nin=8, ncls=4):
    torch.manual_seed(seed)     # the same initial weights (DDP broadcasts them anyway)
    model = nn.Sequential(nn.Linear(nin, 16), nn.ReLU(), nn.Linear(16, ncls))
    ddp = DDP(model)
    g = torch.Generator().manual_seed(100 + rank)   # each rank its own data
    x = torch.randn(64, nin, generator=g)
    y = (x[:, :ncls].argmax(1))
    return model, ddp, x, y


def _checksum(model):
    return float(sum(p.detach().double().sum() for p in model.parameters()))


def _quiet_checks(**extra):
    checks = {"init": "off", "initial-loss": "off", "update": "off", "divergence": "off"}
    checks.update(extra)
    return checks


def scenario_nan_one_rank(rank, world, policy="raise", where="loss", bad_rank=1, at=5,
                          steps=12, repeats=1, check_every=50):
    """A NaN on ``bad_rank`` only, at step ``at``: in the observed loss only
    (gradients stay finite: a purely local flag) or in the input (NaN reaches
    every rank's gradients through DDP's all-reduce)."""
    outcomes = []
    for rep in range(repeats):
        model, ddp, x, y = _setup(rank, seed=rep)
        crit = nn.CrossEntropyLoss()
        opt = torch.optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9)
        outcome = {"raised": None, "step": None, "message": None}
        try:
            with TrainingGuard(ddp, opt, loss_fn=crit, on_nonfinite=policy,
                               checks=_quiet_checks(), check_every=check_every) as gd:
                assert isinstance(gd._decisions, DistributedDecisions)
                for step in range(steps):
                    xb, yb = x[step * 4 % 64:][:8], y[step * 4 % 64:][:8]
                    if rank == bad_rank and step == at and where == "input":
                        xb = xb.clone()
                        xb[0, 0] = NAN
                    opt.zero_grad()
                    loss = crit(ddp(xb), yb)
                    if rank == bad_rank and step == at and where == "loss":
                        gd.observe_loss(torch.tensor(NAN))
                    else:
                        gd.observe_loss(loss)
                    loss.backward()
                    opt.step()
        except Exception as e:
            outcome.update(raised=type(e).__name__, step=getattr(e, "step", None),
                           message=str(e))
        hist = gd.history
        outcome.update(steps=len(hist), skipped=[h["step"] for h in hist if h["skipped"]],
                       grad_norms=[h["grad_norm"] for h in hist],
                       finite=all(bool(torch.isfinite(p).all()) for p in model.parameters()),
                       checksum=_checksum(model))
        outcomes.append(outcome)
    return outcomes


def scenario_exploding_one_rank(rank, world, bad_rank=1, at=2, steps=6):
    """A bad batch (inputs 1e6 too large) on ``bad_rank`` only: after DDP's all-reduce
    every rank holds the same exploding gradient, so with gradient-norm "raise" every
    rank reads it and raises at the same step, before the update -- none hangs."""
    model, ddp, x, y = _setup(rank)
    crit = nn.CrossEntropyLoss()
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    outcome = {"raised": None, "step": None}
    try:
        with TrainingGuard(ddp, opt, loss_fn=crit, checks=_quiet_checks(**{
                "gradient-norm": "raise"})) as gd:
            for step in range(steps):
                xb, yb = x[step * 8:][:8], y[step * 8:][:8]
                if rank == bad_rank and step == at:
                    xb = xb * 1e6
                opt.zero_grad()
                crit(ddp(xb), yb).backward()
                opt.step()
    except Exception as e:
        outcome.update(raised=type(e).__name__, step=getattr(e, "step", None))
    outcome.update(steps=len(gd.history), checksum=_checksum(model))
    return outcome


def scenario_early_stop(rank, world, bad_rank=1, patience=2, restore_best=False):
    """Every rank passes its own metric; only ``bad_rank``'s stops improving."""
    model, ddp, x, y = _setup(rank)
    crit = nn.CrossEntropyLoss()
    opt = torch.optim.SGD(ddp.parameters(), lr=0.05)
    stopped_at = None
    with TrainingGuard(ddp, opt, loss_fn=crit, patience=patience, restore_best=restore_best,
                       checks=_quiet_checks()) as gd:
        for epoch in range(20):
            for i in range(0, 64, 16):
                opt.zero_grad()
                crit(ddp(x[i:i + 16]), y[i:i + 16]).backward()
                opt.step()
            metric = 1.0 if (rank == bad_rank and epoch >= 3) else 1.0 / (epoch + 1)
            if gd.early_stop(metric):
                stopped_at = epoch
                break
    return {"stopped_at": stopped_at, "stopped": gd.stopped, "checksum": _checksum(model),
            "restored": gd._early.restored}


def scenario_accumulate(rank, world, accum=3, steps=6, nan_rank=None, nan_step=2,
                        policy="skip"):
    """Gradient accumulation with DDP's no_sync() on all but the last micro-batch;
    a NaN in one micro-batch loss on one rank (under no_sync: local only)."""
    model, ddp, x, y = _setup(rank)
    crit = nn.CrossEntropyLoss()
    opt = torch.optim.Adam(ddp.parameters(), lr=1e-2)
    raised = None
    try:
        with TrainingGuard(ddp, opt, loss_fn=crit, max_grad_norm=1.0, on_nonfinite=policy,
                           checks=_quiet_checks()) as gd:
            for step in range(steps):
                opt.zero_grad()
                for micro in range(accum):
                    i = (step * accum + micro) * 4 % 64
                    ctx = ddp.no_sync() if micro < accum - 1 else _nullcontext()
                    with ctx:
                        loss = crit(ddp(x[i:i + 4]), y[i:i + 4])
                        if rank == nan_rank and step == nan_step and micro == 0:
                            gd.observe_loss(torch.tensor(NAN))
                        else:
                            gd.observe_loss(loss)
                        (loss / accum).backward()
                opt.step()
    except Exception as e:
        raised = (type(e).__name__, getattr(e, "step", None))
    hist = gd.history
    return {"raised": raised, "steps": len(hist),
            "skipped": [h["step"] for h in hist if h["skipped"]],
            "grad_norms": [h["grad_norm"] for h in hist],
            "applied": [h["applied_grad_norm"] for h in hist],
            "checksum": _checksum(model), "events": [e["cause"] for e in gd._events]}


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def scenario_clip(rank, world, max_grad_norm=0.05, clip_value=None):
    model, ddp, x, y = _setup(rank)
    crit = nn.CrossEntropyLoss()
    opt = torch.optim.SGD(ddp.parameters(), lr=0.5)
    with TrainingGuard(ddp, opt, loss_fn=crit, max_grad_norm=max_grad_norm,
                       clip_value=clip_value, checks=_quiet_checks(), check_every=4) as gd:
        for step in range(8):
            opt.zero_grad()
            crit(ddp(x[step * 8:][:8]), y[step * 8:][:8]).backward()
            opt.step()
            if step == 3 and rank == 0:
                gd.report()        # rank 0 only, inside the block: must not hang
    hist = gd.history
    return {"grad_norms": [h["grad_norm"] for h in hist],
            "applied": [h["applied_grad_norm"] for h in hist],
            "losses": [h["loss"] for h in hist], "checksum": _checksum(model)}


def scenario_divergence_one_rank(rank, world, bad_rank=1):
    """A check in "raise" mode that fires on one rank's local loss only."""
    model, ddp, x, y = _setup(rank)
    crit = nn.CrossEntropyLoss()
    opt = torch.optim.SGD(ddp.parameters(), lr=0.01)
    checks = _quiet_checks(divergence={"mode": "raise", "smooth": 3, "persist": 2,
                                       "min_steps": 2})
    raised = None
    try:
        with TrainingGuard(ddp, opt, loss_fn=None, checks=checks, check_every=5) as gd:
            for step in range(40):
                opt.zero_grad()
                loss = crit(ddp(x[:8]), y[:8])
                loss.backward()
                gd.observe_loss(1.0 * 10 ** step if (rank == bad_rank and step > 8) else 1.0)
                opt.step()
    except Exception as e:
        raised = (type(e).__name__, getattr(e, "step", None), getattr(e, "cause", None), str(e))
    return {"raised": raised, "checksum": _checksum(model)}


def scenario_report(rank, world, path):
    model, ddp, x, y = _setup(rank)
    crit = nn.CrossEntropyLoss()
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    with TrainingGuard(ddp, opt, loss_fn=crit, checks=_quiet_checks()) as gd:
        for step in range(4):
            opt.zero_grad()
            crit(ddp(x[:8]), y[:8]).backward()
            opt.step()
        gd.to_json(path)            # every rank calls it; rank 0 writes
    gd.to_json(path + ".after")
    return {"report": gd.report()}


def scenario_global_norm(rank, world):
    """FSDP-style shards: the global norm from the shard norms equals the norm of
    the whole (unsharded) gradient, for p = 2, 1 and inf."""
    torch.manual_seed(0)
    full = torch.randn(1000) * 3
    shard = full.chunk(world)[rank]
    out = {}
    for p in (2.0, 1.0, math.inf):
        local = torch.linalg.vector_norm(shard, p)
        out[str(p)] = (float(global_grad_norm(local, p)),
                       float(torch.linalg.vector_norm(full, p)))
    out["decisions"] = float(DistributedDecisions().global_norm(
        torch.linalg.vector_norm(shard)))
    return out


def scenario_make_decisions(rank, world):
    sub = dist.new_group([0])          # every rank must call new_group
    d_world = make_decisions()
    d_sub = make_decisions(sub) if rank == 0 else None
    return {"world": type(d_world).__name__, "world_size": d_world.world_size,
            "sub": type(d_sub).__name__ if d_sub is not None else None,
            "explicit": type(make_decisions(Decisions())).__name__}


# --------------------------------------------------------------------------- tests
def _same(results, key):
    vals = [r[key] for r in results]
    assert all(v == vals[0] for v in vals), f"{key} differs across ranks: {vals}"
    return vals[0]


def test_single_process_gets_the_identity():
    assert type(make_decisions()) is Decisions
    model = nn.Linear(2, 2)
    g = TrainingGuard(model, torch.optim.SGD(model.parameters(), lr=0.1))
    assert type(g._decisions) is Decisions


def test_make_decisions_picks_the_distributed_one_for_the_world_and_a_group():
    res = run_ranks("scenario_make_decisions", world=2)
    assert res[0] == {"world": "DistributedDecisions", "world_size": 2, "sub": "Decisions",
                      "explicit": "Decisions"}
    assert res[1]["world"] == "DistributedDecisions"


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("where", ["loss", "input"])
def test_nan_on_one_rank_all_ranks_raise_at_the_same_step(world, where):
    res = run_ranks("scenario_nan_one_rank", world=world, policy="raise", where=where,
                    bad_rank=world - 1, repeats=3)
    for rep in range(3):
        outs = [r[rep] for r in res]
        assert [o["raised"] for o in outs] == ["NonFiniteError"] * world
        assert _same(outs, "step") == 5
        assert _same(outs, "message")          # the same error text everywhere
        assert all(o["finite"] for o in outs)  # the NaN update was never applied
        _same(outs, "checksum")                # and the ranks stayed in step
        assert _same(outs, "steps") == 6


def test_exploding_gradient_on_one_rank_all_ranks_raise_before_the_update():
    a, b = run_ranks("scenario_exploding_one_rank")
    assert a["raised"] == b["raised"] == "ExplodingGradientError"
    assert a["step"] == b["step"] == 2 and a["steps"] == b["steps"] == 3
    assert a["checksum"] == b["checksum"]


@pytest.mark.parametrize("world", [2, 3])
def test_nan_on_one_rank_all_ranks_skip_the_same_step_and_go_on(world):
    res = run_ranks("scenario_nan_one_rank", world=world, policy="skip", where="loss",
                    bad_rank=0, repeats=2)
    for rep in range(2):
        outs = [r[rep] for r in res]
        assert [o["raised"] for o in outs] == [None] * world
        assert _same(outs, "skipped") == [5]
        assert _same(outs, "steps") == 12
        assert all(o["finite"] for o in outs)
        _same(outs, "checksum")


def test_nan_in_the_input_on_one_rank_skip():
    res = run_ranks("scenario_nan_one_rank", world=2, policy="skip", where="input")
    outs = [r[0] for r in res]
    assert _same(outs, "skipped") == [5]
    assert all(o["finite"] for o in outs)
    _same(outs, "checksum")


@pytest.mark.parametrize("world", [2, 3])
def test_early_stop_decided_on_one_ranks_metric_stops_every_rank(world):
    res = run_ranks("scenario_early_stop", world=world, bad_rank=world - 1, patience=2)
    assert _same(res, "stopped_at") == 4          # metric flat from epoch 3, patience 2
    assert all(r["stopped"] for r in res)
    _same(res, "checksum")


def test_restore_best_leaves_every_rank_with_the_same_weights():
    res = run_ranks("scenario_early_stop", world=2, bad_rank=1, patience=2, restore_best=True)
    assert _same(res, "stopped_at") == 4
    _same(res, "checksum")
    assert [r["restored"] for r in res] == [True, True]


def test_grad_accumulation_with_no_sync_healthy():
    res = run_ranks("scenario_accumulate", world=2)
    assert _same(res, "raised") is None
    assert _same(res, "steps") == 6
    assert _same(res, "skipped") == []
    _same(res, "grad_norms")
    _same(res, "checksum")


@pytest.mark.parametrize("policy", ["skip", "raise"])
def test_nan_in_a_no_sync_micro_batch_on_one_rank(policy):
    res = run_ranks("scenario_accumulate", world=2, nan_rank=1, nan_step=2, policy=policy)
    if policy == "skip":
        assert _same(res, "raised") is None
        assert _same(res, "skipped") == [2]
        assert _same(res, "steps") == 6
    else:
        assert _same(res, "raised") == ("NonFiniteError", 2)
    _same(res, "checksum")


def test_clipping_is_equal_across_ranks_and_report_on_one_rank_does_not_hang():
    res = run_ranks("scenario_clip", world=2, max_grad_norm=0.05)
    norms = _same(res, "grad_norms")
    applied = _same(res, "applied")
    assert len(norms) == 8
    assert all(a <= 0.05 + 1e-6 for a in applied)
    assert any(n > 0.05 for n in norms)
    _same(res, "checksum")
    assert res[0]["losses"] != res[1]["losses"]   # each rank keeps its own loss


def test_a_raising_check_on_one_ranks_loss_raises_on_every_rank():
    res = run_ranks("scenario_divergence_one_rank", world=2)
    raised = _same(res, "raised")
    assert raised is not None and raised[0] == "DivergenceError", raised
    assert "seen on rank 1 of 2" in raised[3]
    _same(res, "checksum")


def test_reports_are_written_once_and_say_how_many_ranks(tmp_path):
    path = str(tmp_path / "guard.json")
    res = run_ranks("scenario_report", world=2, path=path)
    import json
    with open(path) as fh:      # inside the block: no read-back on one rank (no collective)
        doc = json.load(fh)
    assert doc["summary"]["world_size"] == 2
    with open(path + ".after") as fh:
        doc = json.load(fh)
    assert doc["summary"]["world_size"] == 2
    assert doc["summary"]["steps"] == 4
    assert "ranks: 2" in res[0]["report"]
    files = sorted(os.listdir(tmp_path))
    assert files == ["guard.json", "guard.json.after"]


@pytest.mark.parametrize("world", [2, 3])
def test_global_norm_of_shards_is_the_norm_of_the_whole(world):
    res = run_ranks("scenario_global_norm", world=world)
    for r in res:
        for p in ("2.0", "1.0", "inf"):
            got, want = r[p]
            assert got == pytest.approx(want, rel=1e-5)
        assert r["decisions"] == pytest.approx(r["2.0"][1], rel=1e-5)


def scenario_fsdp_norm(rank, world, kind):
    """Real FSDP-sharded gradients on CPU/gloo: global_grad_norm of this rank's
    shard norms equals FSDP's own global norm and the unsharded model's."""
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP, fully_shard
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    ref = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    ref.load_state_dict(model.state_dict())
    torch.manual_seed(1)
    xs, ys = torch.randn(world, 4, 8), torch.randint(0, 4, (world, 4))
    crit = nn.CrossEntropyLoss()
    if kind == "fsdp1":
        model = FSDP(model, device_id=torch.device("cpu"), use_orig_params=True)
    else:
        fully_shard(model[0])
        fully_shard(model)
    crit(model(xs[rank]), ys[rank]).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    local = [g.to_local() if hasattr(g, "to_local") else g for g in grads]
    shard_norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(local))) \
        if local else torch.zeros(())
    got = float(global_grad_norm(shard_norm))
    if kind == "fsdp1":
        fsdp_norm = float(model.clip_grad_norm_(1e9))
    else:
        fsdp_norm = float(torch.nn.utils.get_total_norm(grads).full_tensor())
    (sum(crit(ref(xs[r]), ys[r]) for r in range(world)) / world).backward()
    want = float(torch.nn.utils.get_total_norm([p.grad for p in ref.parameters()]))
    return {"global": got, "fsdp": fsdp_norm, "unsharded": want, "shard": float(shard_norm)}


@pytest.mark.parametrize("kind", ["fsdp1", "fsdp2"])
def test_global_norm_of_real_fsdp_shards(kind):
    res = run_ranks("scenario_fsdp_norm", world=2, kind=kind)
    for r in res:
        assert r["global"] == pytest.approx(r["fsdp"], rel=1e-5)
        assert r["global"] == pytest.approx(r["unsharded"], rel=1e-4)
    assert res[0]["shard"] != pytest.approx(res[0]["global"], rel=1e-3)   # shards really differ


def scenario_fsdp_guard(rank, world, kind, nan_rank=None, nan_step=2):
    """The guard on an FSDP model: the global norm (before clipping) is the
    unsharded model's, clipping uses it, a NaN on one rank is skipped on all."""
    import warnings
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP, fully_shard
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    ref = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    ref.load_state_dict(model.state_dict())
    if kind == "fsdp1":
        model = FSDP(model, device_id=torch.device("cpu"), use_orig_params=True)
    else:
        fully_shard(model[0])
        fully_shard(model)
    torch.manual_seed(1)
    xs, ys = torch.randn(5, world, 8, 8), torch.randint(0, 4, (5, world, 8))
    crit = nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ropt = torch.optim.SGD(ref.parameters(), lr=0.1)
    ref_norms = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with TrainingGuard(model, opt, loss_fn=crit, max_grad_norm=0.1, on_nonfinite="skip",
                           checks={"initial-loss": "off"}) as gd:
            for step in range(5):
                opt.zero_grad()
                loss = crit(model(xs[step, rank]), ys[step, rank])
                if rank == nan_rank and step == nan_step:
                    gd.observe_loss(float("nan"))
                loss.backward()
                opt.step()
                ropt.zero_grad()
                (sum(crit(ref(xs[step, r]), ys[step, r]) for r in range(world))
                 / world).backward()
                ref_norms.append(float(torch.nn.utils.clip_grad_norm_(ref.parameters(), 0.1)))
                if rank == nan_rank and step == nan_step or \
                        nan_rank is not None and step == nan_step:
                    ropt.zero_grad()      # the guard skipped this step on every rank
                    continue
                ropt.step()
    hist = gd.history
    return {"norms": [h["grad_norm"] for h in hist], "ref": ref_norms,
            "skipped": [h["step"] for h in hist if h["skipped"]],
            "warnings": [str(w.message)[:120] for w in caught
                         if "GuardWarning" in type(w.message).__name__]}


@pytest.mark.parametrize("kind", ["fsdp1", "fsdp2"])
def test_guard_on_fsdp_global_norm_clipping_and_skip(kind):
    res = run_ranks("scenario_fsdp_guard", world=2, kind=kind, nan_rank=1)
    norms = _same(res, "norms")
    assert norms == pytest.approx(res[0]["ref"], rel=1e-4)   # true global norms
    assert _same(res, "skipped") == [2]
    assert _same(res, "warnings") == [] or all("finite" in w for w in res[0]["warnings"]), \
        res[0]["warnings"]


def scenario_count_collectives(rank, world, policy):
    """The guard's own collectives per step (DDP's gradient all-reduce runs in
    C++ and is not counted)."""
    calls = []
    real = dist.all_reduce

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    dist.all_reduce = counting
    try:
        model, ddp, x, y = _setup(rank)
        crit = nn.CrossEntropyLoss()
        opt = torch.optim.SGD(ddp.parameters(), lr=0.05)
        per_step = []
        with TrainingGuard(ddp, opt, loss_fn=crit, on_nonfinite=policy, max_grad_norm=1.0,
                           check_every=5) as gd:
            for step in range(10):
                before = len(calls)
                opt.zero_grad()
                crit(ddp(x[step * 4:][:8]), y[step * 4:][:8]).backward()
                opt.step()
                per_step.append(len(calls) - before)
    finally:
        dist.all_reduce = real
    return {"per_step": per_step, "events": [e["cause"] for e in gd._events]}


@pytest.mark.parametrize("policy", ["warn", "skip", "raise"])
def test_per_step_collectives_only_what_the_decision_needs(policy):
    res = run_ranks("scenario_count_collectives", world=2, policy=policy)
    per_step = _same(res, "per_step")
    gate = 0 if policy == "warn" else 1          # the skip/raise flag, one 0-d all_reduce
    # steps 4 and 9 end with a read-back: one all_reduce agrees all checks' findings
    want = [gate + (1 if s in (4, 9) else 0) for s in range(10)]
    assert per_step[1:] == want[1:], per_step   # step 0 also agrees the first-step checks


def scenario_forward_on_one_rank(rank, world):
    """Rank 0 alone runs a forward before training (a sample prediction): the
    first-forward checks must not put a collective on rank 0 only."""
    import warnings
    model, ddp, x, y = _setup(rank)
    crit = nn.CrossEntropyLoss()
    opt = torch.optim.SGD(ddp.parameters(), lr=0.01)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        with TrainingGuard(ddp, opt, loss_fn=crit, check_every=2,
                           checks={"init": "warn", "initial-loss": "off"}) as gd:
            try:
                if rank == 0:
                    with torch.no_grad():
                        model(x[:2])        # the bare module: no DDP collective
                for step in range(4):
                    opt.zero_grad()
                    crit(ddp(x[:8]), y[:8]).backward()
                    opt.step()
            except Exception as e:
                return {"raised": type(e).__name__, "step": getattr(e, "step", None)}
    return {"raised": None, "events": [e["cause"] for e in gd._events]}


def test_a_forward_on_one_rank_only_does_not_hang_the_first_forward_checks():
    res = run_ranks("scenario_forward_on_one_rank", world=2, deadline=40)
    assert _same(res, "raised") is None
    _same(res, "events")


def scenario_fsdp_restore(rank, world, kind):
    """restore_best under FSDP with the same metric on every rank: each rank
    restores its own shards of the same best call."""
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP, fully_shard
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    if kind == "fsdp1":
        model = FSDP(model, device_id=torch.device("cpu"), use_orig_params=True)
    else:
        fully_shard(model[0])
        fully_shard(model)
    crit = nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(rank)
    x, y = torch.randn(16, 8, generator=g), torch.randint(0, 4, (16,), generator=g)
    metrics = [3.0, 2.0, 1.0, 1.5, 1.7, 1.9, 2.0]
    snap = None
    with TrainingGuard(model, opt, loss_fn=crit, patience=2, restore_best=True,
                       checks={"init": "off", "initial-loss": "off"}) as gd:
        for epoch, metric in enumerate(metrics):
            opt.zero_grad()
            crit(model(x), y).backward()
            opt.step()
            if epoch == 2:
                snap = [_local(p).detach().clone() for p in model.parameters()]
            if gd.early_stop(metric):
                break
    now = [_local(p).detach() for p in model.parameters()]
    return {"epoch": epoch, "restored": gd._early.restored,
            "same_as_best": all(torch.equal(a, b) for a, b in zip(snap, now))}


def _local(t):
    return t.to_local() if hasattr(t, "to_local") else t


@pytest.mark.parametrize("kind", ["fsdp1", "fsdp2"])
def test_fsdp_restore_best_with_the_same_metric_everywhere(kind):
    res = run_ranks("scenario_fsdp_restore", world=2, kind=kind)
    assert _same(res, "epoch") == 4
    assert [r["restored"] for r in res] == [True, True]
    assert [r["same_as_best"] for r in res] == [True, True]


def scenario_hang(rank, world):
    """Rank 1 waits at a collective that rank 0 never joins."""
    if rank == 1:
        dist.all_reduce(torch.zeros(1))
    else:
        time.sleep(20)
    return {}


def test_the_harness_fails_fast_on_a_hang():
    run_ranks("scenario_make_decisions", world=2)     # the forkserver is up
    start = time.monotonic()
    with pytest.raises(pytest.fail.Exception, match="hang"):
        run_ranks("scenario_hang", world=2, deadline=3)
    assert time.monotonic() - start < 12


def scenario_deferred(rank, world, nan_rank=1, nan_step=3):
    """The accelerator "deferred" gate (raise, non-fused optimizer), forced on
    CPU: no per-step collective; a NaN on one rank raises on all at the read-back."""
    calls = []
    real = dist.all_reduce

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    dist.all_reduce = counting
    raised, per_step = None, []
    try:
        model, ddp, x, y = _setup(rank)
        crit = nn.CrossEntropyLoss()
        opt = torch.optim.SGD(ddp.parameters(), lr=0.05)
        gd = TrainingGuard(ddp, opt, loss_fn=crit, check_every=5, checks=_quiet_checks())
        gd._force_gate = "deferred"
        try:
            with gd:
                for step in range(10):
                    before = len(calls)
                    opt.zero_grad()
                    loss = crit(ddp(x[step * 4:][:8]), y[step * 4:][:8])
                    gd.observe_loss(float("nan") if (rank == nan_rank and step == nan_step)
                                    else loss)
                    loss.backward()
                    opt.step()
                    per_step.append(len(calls) - before)
        except Exception as e:
            raised = (type(e).__name__, getattr(e, "step", None))
    finally:
        dist.all_reduce = real
    return {"raised": raised, "per_step": per_step}


def test_deferred_gate_has_no_per_step_collective_and_raises_everywhere():
    res = run_ranks("scenario_deferred", world=2)
    assert _same(res, "raised") == ("NonFiniteError", 3)
    assert _same(res, "per_step")[1:4] == [0, 0, 0]
