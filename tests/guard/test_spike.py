"""spike: loss / gradient-norm spikes relative to their running median."""
import copy
import math
import random
import warnings

import pytest
import torch
from torch import nn

from guard import DivergenceError, ExplodingGradientError, TrainingGuard
from guard.checks.spike import DeviceSpikeRing, HostSpikeGate, SpikeHistory, lower_median
from guard_helpers import data, guard_warnings, mlp, warning_causes


def _run(model, opt, x, y, *, steps=100, bad_steps=(), scale=30.0, label_noise_steps=(),
         guard_kw=None, seed=0, batch=32, snapshot_at=None):
    """A guarded loop whose batches at ``bad_steps`` have inputs multiplied by ``scale``
    (a corrupt batch); returns (guard, warnings, error, snapshots around snapshot_at)."""
    torch.manual_seed(seed)
    torch.set_num_threads(1)   # tiny models: one thread is fastest and stable under load
    crit = nn.CrossEntropyLoss()
    kw = dict(loss_fn=crit, check_every=10)
    kw.update(guard_kw or {})
    snaps = {}
    error = None
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        g = TrainingGuard(model, opt, **kw)
        try:
            with g:
                for step in range(steps):
                    idx = torch.randint(0, len(x), (batch,))
                    xb, yb = x[idx], y[idx]
                    if step in bad_steps:
                        xb = xb * scale
                    if step in label_noise_steps:
                        yb = (yb + 1 + torch.randint(0, 4, yb.shape)) % 5
                    if step == snapshot_at:
                        snaps["before"] = copy.deepcopy(model.state_dict())
                        snaps["opt_before"] = copy.deepcopy(opt.state_dict())
                    opt.zero_grad()
                    crit(model(xb), yb).backward()
                    opt.step()
                    if step == snapshot_at:
                        snaps["after"] = copy.deepcopy(model.state_dict())
                        snaps["opt_after"] = copy.deepcopy(opt.state_dict())
        except (DivergenceError, ExplodingGradientError) as e:
            error = e
    return g, guard_warnings(rec), error, snaps


def test_gradient_norm_spike_under_clipping_is_named():
    """A corrupt batch: the raw norm jumps 30x but stays far below the absolute 1e3
    threshold, and clipping hides it from the update -- only the relative check sees it."""
    torch.manual_seed(0)
    model = mlp()
    x, y = data()
    g, warned, err, _ = _run(model, torch.optim.Adam(model.parameters(), 1e-3), x, y,
                             bad_steps=(60,), guard_kw=dict(max_grad_norm=1.0))
    spikes = [w for w in warned if w.check == "spike"]
    assert [(w.cause, w.step) for w in spikes] == [("grad-norm-spike", 60)]
    assert ("gradient-norm", "exploding") not in warning_causes(warned)
    assert g._checks["spike"].ring is None   # "warn": judged at read-back, no per-step work
    assert "x the median" in str(spikes[0]) and "max_grad_norm=1.0) if" not in str(spikes[0])
    assert g.history[60]["grad_norm"] < 1e3 and not g.history[60]["skipped"]


def test_loss_spike_from_wrong_labels_is_named():
    torch.manual_seed(1)
    model = mlp()
    x, y = data()
    # Train to a low loss, then one batch with every label wrong.
    g, warned, err, _ = _run(model, torch.optim.Adam(model.parameters(), 3e-3), x, y,
                             steps=200, label_noise_steps=(150,), guard_kw=dict(max_grad_norm=1.0))
    assert ("spike", "loss-spike") in warning_causes(warned)
    w = [w for w in warned if w.cause == "loss-spike"][0]
    assert w.step == 150


def test_raise_mode_names_the_series_with_its_error_class():
    torch.manual_seed(0)
    model = mlp()
    x, y = data()
    g, warned, err, _ = _run(model, torch.optim.Adam(model.parameters(), 1e-3), x, y,
                             bad_steps=(60,), guard_kw=dict(checks={"spike": "raise"}))
    assert isinstance(err, ExplodingGradientError)
    assert err.check == "spike" and err.cause == "grad-norm-spike" and err.step == 60


@pytest.mark.parametrize("seed", range(4))
def test_healthy_runs_to_convergence_stay_silent(seed):
    """Near miss: long runs that drive the loss towards 0, where batch-to-batch relative
    noise is large; the floor (half the run's early level) keeps them silent."""
    torch.manual_seed(seed)
    model = mlp()
    x, y = data(seed=seed)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    g, warned, err, _ = _run(model, opt, x, y, steps=300, seed=seed, batch=16)
    assert [w for w in warned if w.check == "spike"] == []
    losses = [r["loss"] for r in g.history]
    assert min(losses[-50:]) < 0.3 * losses[0]   # it did converge


@pytest.mark.parametrize("seed", range(3))
def test_healthy_sgd_small_batches_stay_silent(seed):
    """Near miss: noisy SGD with tiny batches (gradient norms vary several-fold)."""
    torch.manual_seed(seed)
    model = mlp(depth=3)
    x, y = data(seed=seed)
    opt = torch.optim.SGD(model.parameters(), 0.05, momentum=0.9)
    g, warned, err, _ = _run(model, opt, x, y, steps=200, seed=seed, batch=4)
    assert [w for w in warned if w.check == "spike"] == []


def test_a_lasting_change_of_level_stops_counting():
    """Values of spiking steps enter the median, so a new level is a spike only for the
    first half window, never for ever (which would skip every step in "skip" mode)."""
    h = SpikeHistory(window=20, min_history=5, factor=10, floor=0.5, above_max=3)
    flagged = [step for step in range(100)
               if h.judge(step, 1.0 if step < 40 else 50.0) is not None]
    assert flagged and flagged[0] == 40 and max(flagged) < 40 + 11


def test_a_second_spike_soon_after_a_first_is_still_one():
    """Spikes stay out of the recent maximum: the next one is judged against calm steps."""
    h = SpikeHistory(window=20, min_history=5, factor=10, floor=0.5, above_max=3)
    values = [1.0 + 0.1 * (i % 3) for i in range(60)]
    values[30] = values[35] = 40.0
    assert [s for s, v in enumerate(values) if h.judge(s, v) is not None] == [30, 35]


def test_heavy_tailed_small_batch_losses_are_no_spikes():
    """Near miss: a batch of 2 with one misclassified sample every so often -- values far
    above the median, but within the run's own recent range."""
    h = SpikeHistory(window=50, min_history=10, factor=10, floor=0.5, above_max=3)
    rnd = random.Random(0)
    values = [1.6] * 5 + [rnd.choice([0.01, 0.02, 0.03, 0.05]) if rnd.random() > 0.1
                          else rnd.uniform(0.8, 2.5) for _ in range(400)]
    assert [s for s, v in enumerate(values) if h.judge(s, v) is not None] == []


def test_device_ring_decides_as_the_host_history():
    """The on-device statistics (skip mode) and the host ones (reports) agree."""
    rnd = random.Random(0)
    ring = DeviceSpikeRing(window=16, min_history=4, factor=5.0, floor=0.5, above_max=2.0,
                           device="cpu")
    hist = {s: SpikeHistory(16, 4, 5.0, 0.5, 2.0) for s in ("loss", "grad_norm")}
    decided = 0
    for step in range(120):
        loss = rnd.lognormvariate(0, 0.3) * (20 if step % 17 == 9 else 1)
        norm = rnd.lognormvariate(0, 0.5) * (30 if step % 23 == 11 else 1)
        if step % 31 == 5:
            norm = math.inf
        dev = bool(ring.flag(step, torch.tensor(loss), torch.tensor(norm)))
        host = False
        for s, v in (("loss", loss), ("grad_norm", norm)):
            v32 = float(torch.tensor(v, dtype=torch.float32))
            host = (hist[s].judge(step, v32) is not None) or host
        assert dev == host, step
        decided += host
    assert decided >= 5   # the comparison saw spikes, not only calm steps


def test_lower_median_matches_torch_nanmedian():
    vals = [3.0, float("nan"), 1.0, 4.0, 2.0]
    assert lower_median(vals) == float(torch.nanmedian(torch.tensor(vals))) == 2.0
    assert math.isnan(lower_median([float("nan")]))


def _assert_same_state(a, b):
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_skip_on_cpu_leaves_model_and_optimizer_untouched():
    torch.manual_seed(0)
    model = mlp()
    x, y = data()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    g, warned, err, snaps = _run(model, opt, x, y, bad_steps=(60,), snapshot_at=60,
                                 guard_kw=dict(on_spike="skip", max_grad_norm=1.0))
    assert g._gate == "host" and isinstance(g._checks["spike"].ring, HostSpikeGate)
    _assert_same_state(snaps["before"], snaps["after"])
    st_b, st_a = snaps["opt_before"]["state"], snaps["opt_after"]["state"]
    assert all(torch.equal(st_b[i]["exp_avg"], st_a[i]["exp_avg"]) and
               int(st_b[i]["step"]) == int(st_a[i]["step"]) for i in st_b)
    assert [r["step"] for r in g.history if r["spike_skipped"]] == [60]
    assert [r["step"] for r in g.history if r["skipped"]] == [60]
    assert "skipped (spikes): 1" in g.report()
    [w] = [w for w in warned if w.check == "spike"]
    assert w.step == 60 and "was skipped" in str(w)
    assert int(opt.state[model[0].weight]["step"]) == 99
    assert all(p.grad is not None for p in model.parameters())   # gradients handed back


def test_skip_without_a_spike_changes_nothing():
    """Near miss: on_spike="skip" on a healthy run skips no step."""
    torch.manual_seed(3)
    model = mlp()
    x, y = data()
    g, warned, err, _ = _run(model, torch.optim.Adam(model.parameters(), 1e-3), x, y,
                             guard_kw=dict(on_spike="skip", max_grad_norm=1.0))
    assert warned == [] and not any(r["skipped"] for r in g.history)


def test_skip_through_the_fused_kernel_flag():
    """The accelerator path: the spike flag reaches a fused optimizer as found_inf."""
    torch.manual_seed(0)
    model = mlp()
    x, y = data()
    opt = torch.optim.Adam(model.parameters(), 1e-3, fused=True)
    g = TrainingGuard(model, opt, loss_fn=nn.CrossEntropyLoss(), on_spike="skip",
                      on_nonfinite="warn", check_every=10)
    g._force_gate = "device"
    crit = nn.CrossEntropyLoss()
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        with g:
            for step in range(80):
                idx = torch.arange(step * 3, step * 3 + 32) % len(x)
                xb, yb = x[idx], y[idx]
                if step == 50:
                    xb = xb * 30
                    before = copy.deepcopy(model.state_dict())
                opt.zero_grad()
                crit(model(xb), yb).backward()
                opt.step()
                if step == 50:
                    _assert_same_state(before, model.state_dict())
    assert g._gate == "device" and not hasattr(opt, "found_inf")
    assert isinstance(g._checks["spike"].ring, DeviceSpikeRing)
    assert [r["step"] for r in g.history if r["spike_skipped"]] == [50]
    assert int(opt.state[model[0].weight]["step"]) == 79
    assert ("spike", "grad-norm-spike") in warning_causes(guard_warnings(rec))


def test_bad_options_are_refused():
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), 0.1)
    with pytest.raises(ValueError):
        TrainingGuard(model, opt, on_spike="sometimes")
    with pytest.raises(ValueError):
        TrainingGuard(model, opt, checks={"spike": {"factor": 0.5}})
    with pytest.raises(ValueError):
        TrainingGuard(model, opt, checks={"spike": {"window": 10, "min_history": 20}})
