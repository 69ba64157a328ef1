"""divergence: judged on the smoothed loss."""
import math
import warnings

import pytest
import torch
from torch import nn

from guard import DivergenceError, GuardWarning, TrainingGuard
from guard_helpers import causes, data, guard_warnings, mlp, train


def _run_with_losses(losses, mode="raise", **kw):
    """Feed a given loss curve through observe_loss on a real (tiny) loop."""
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), 1e-3)
    x = torch.randn(8, 4)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        # A synthetic loss curve over one fixed batch: the data check would rightly call
        # that "the same batch", and the spike check the curves' injected spikes.
        with TrainingGuard(model, opt, checks={"divergence": mode, "update": "off",
                                               "data": "off", "spike": "off"},
                           check_every=25, **kw) as g:
            for value in losses:
                opt.zero_grad()
                model(x).pow(2).mean().backward()
                g.observe_loss(value)
                opt.step()
    return g, rec


def test_loss_rising_far_above_its_best():
    losses = [2.0 * 0.97 ** i for i in range(60)] + [0.3 * 1.08 ** i for i in range(60)]
    with pytest.raises(DivergenceError) as err:
        _run_with_losses(losses)
    assert err.value.cause == "diverging" and "smoothed" in str(err.value)
    assert err.value.step > 60


def test_single_spikes_are_not_divergence():
    losses = [2.0 * 0.97 ** i for i in range(150)]
    for i in range(30, 150, 20):
        losses[i] = 50.0          # one bad batch now and then
    g, rec = _run_with_losses(losses)
    assert guard_warnings(rec) == []


def test_no_progress_over_a_window():
    losses = [1.0 + 0.01 * ((-1) ** i) for i in range(260)]
    g, rec = _run_with_losses(losses, mode="warn")
    assert [w.cause for w in guard_warnings(rec)] == ["no-progress"]


def test_converged_plateau_is_healthy():
    losses = [2.0 * 0.9 ** i for i in range(40)] + [0.03 + 0.001 * (i % 3) for i in range(300)]
    g, rec = _run_with_losses(losses, mode="warn")
    assert guard_warnings(rec) == []


def test_a_high_noise_floor_after_learning_is_healthy():
    """A hard task (overlapping classes, noisy targets) learns, then settles at a floor far
    above half its starting loss: that is convergence, not 'no progress'."""
    floor = [1.4 + 0.05 * ((i * 7) % 5 - 2) for i in range(420)]
    losses = [2.3 - 0.9 * i / 275 for i in range(275)] + floor
    g, rec = _run_with_losses(losses, mode="warn")
    assert guard_warnings(rec) == []


def test_a_run_that_barely_moved_is_still_no_progress():
    # 5 % below its start, then flat: it has not learned (a learning rate far too small)
    losses = [2.3 - 0.12 * min(i, 50) / 50 + 0.01 * ((-1) ** i) for i in range(450)]
    g, rec = _run_with_losses(losses, mode="warn")
    assert [w.cause for w in guard_warnings(rec)] == ["no-progress"]


def test_real_run_learning_rate_blown_up_mid_run():
    """Adam trains well, then a scheduler bug multiplies the lr by 100: the loss
    jumps and stays far above its best (finite all along)."""
    torch.manual_seed(0)
    model = mlp()
    x, y = data()
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 if s < 60 else 100.0)
    g, rec, err = train(model, opt, x, y, steps=130, scheduler=sched, expect_error=True,
                        guard_kw=dict(checks={"divergence": "raise"}))
    assert isinstance(err, DivergenceError) and err.cause == "diverging"
    assert err.step > 60 and all(math.isfinite(r["loss"]) for r in g.history)


def test_healthy_run_does_not_diverge():
    torch.manual_seed(0)
    model = mlp()
    x, y = data()
    g, rec, err = train(model, torch.optim.Adam(model.parameters(), 1e-2), x, y, steps=200,
                        guard_kw=dict(checks={"divergence": "raise"}))
    assert err is None and guard_warnings(rec) == []


# --- blow-ups in the first smoothing window, and runs stuck at chance -------------------

def _digits_run(lr, seed, *, epochs=30, hidden=64, patience=5):
    """A small MLP on digits-like data with SGD, early stopping on a validation loss
    (patience 5) as a tutorial would have it; returns (guard, warnings, losses)."""
    torch.manual_seed(seed)
    x, y = data("digits", n=1797, seed=seed)
    model = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))
    opt = torch.optim.SGD(model.parameters(), lr)
    crit = nn.CrossEntropyLoss()
    xv, yv, xt, yt = x[:300], y[:300], x[300:], y[300:]
    losses = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            with TrainingGuard(model, opt, loss_fn=crit, patience=patience) as g:
                for _ in range(epochs):
                    perm = torch.randperm(len(xt))
                    for i in range(0, len(xt), 64):
                        idx = perm[i:i + 64]
                        opt.zero_grad()
                        loss = crit(model(xt[idx]), yt[idx])
                        loss.backward()
                        opt.step()
                        losses.append(loss.item())
                    with torch.no_grad():
                        if g.early_stop(crit(model(xv), yv)):
                            break
    finally:
        torch.set_num_threads(threads)
    return g, guard_warnings(rec), losses


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_learning_rate_ten_times_too_high_is_not_healthy(seed):
    """SGD lr=30: the loss blows up within the first steps (thousands) and then stays
    at 4-10, far above the 2.3 it started from, until early stopping ends the run.
    The first 25-step median already holds the blow-up: it must not be the baseline."""
    g, warns, losses = _digits_run(30.0, seed)
    assert max(losses[:5]) > 100 * losses[0]              # the blow-up, early
    div = [w for w in warns if w.check == "divergence"]
    assert [w.cause for w in div] == ["diverging"], [str(w) for w in warns]
    text = str(div[0])
    assert "the loss before training (step 0" in text and "blew up" in text
    assert "raise the learning rate" not in g.report()
    assert "looks healthy" not in g.report()


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_same_task_with_a_good_learning_rate_stays_silent(seed):
    g, warns, losses = _digits_run(0.3, seed)
    assert warns == [], [str(w) for w in warns]
    assert "looks healthy" in g.report() and losses[-1] < 0.5 * losses[0]


def test_blow_up_inside_the_first_window_then_stuck_high_raises():
    """The shape of the reported run through observe_loss (no loss module, so no log C):
    about 2.3 for 8 steps, 665 at step 8, then 20-60 for good."""
    g = torch.Generator().manual_seed(0)
    losses = [2.3 + 0.02 * i for i in range(8)] + [665.0, 300.0, 120.0]
    losses += (20 + 40 * torch.rand(200, generator=g)).tolist()
    with pytest.raises(DivergenceError) as err:
        _run_with_losses(losses)
    assert err.value.cause == "diverging"
    assert "median of the first 5 steps" in str(err.value)
    assert "raise the learning rate" not in str(err.value)


def test_noisy_first_losses_are_not_a_start_value():
    """Small-batch losses that do not learn: the first five disagree (a lucky low batch
    among them), so they do not become a low start value, and nothing diverges."""
    g = torch.Generator().manual_seed(1)
    losses = (1.0 + 0.1 * torch.randn(400, generator=g).abs()).tolist()
    losses[:5] = [0.2, 0.3, 0.25, 1.2, 0.22]
    g_, rec = _run_with_losses(losses, mode="warn")
    assert [w.cause for w in guard_warnings(rec)] == ["no-progress"]


def test_blow_up_then_flat_at_chance_advises_a_lower_learning_rate():
    """SGD lr=10: the loss jumps to tens in the first steps and the network dies at
    log 10: named as chance level, and the advice is to lower, not raise, the learning
    rate."""
    g, warns, losses = _digits_run(10.0, 1, hidden=32, epochs=10, patience=None)
    found = {w.cause: str(w) for w in warns if w.check == "divergence"}
    assert set(found) == {"chance"}, [str(w) for w in warns]
    assert "no better than chance" in found["chance"] and "log(10 classes)" in found["chance"]
    assert "blew up" in found["chance"] and "lower it" in found["chance"]
    assert "raise the learning rate" not in found["chance"]


def test_shuffled_labels_are_no_better_than_chance():
    torch.manual_seed(0)
    x, y = data("digits", n=1797, seed=0)
    y = y[torch.randperm(len(y))]
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    g, rec, _ = train(model, torch.optim.Adam(model.parameters(), 1e-3), x, y, steps=260,
                      batch=64)
    found = {w.cause: str(w) for w in guard_warnings(rec)}
    assert set(found) == {"chance"}, found
    assert "labels match their inputs" in found["chance"]
    assert "blew up" not in found["chance"] and "raise the learning rate" not in found["chance"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_real_labels_on_the_same_model_learn_and_stay_silent(seed):
    torch.manual_seed(seed)
    x, y = data("digits", n=1797, seed=seed)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    g, rec, _ = train(model, torch.optim.Adam(model.parameters(), 1e-3), x, y, steps=260,
                      batch=64, seed=seed)
    assert guard_warnings(rec) == [], [str(w) for w in guard_warnings(rec)]


def test_a_plateau_above_chance_without_log_c_is_still_no_progress():
    losses = [1.0 + 0.01 * ((-1) ** i) for i in range(260)]
    g, rec = _run_with_losses(losses, mode="warn")
    (w,) = guard_warnings(rec)
    assert w.cause == "no-progress" and "blew up" not in str(w)


def test_a_slow_steady_decrease_is_progress():
    """0.05 % per step: no single step improves on the running best by 1 %, yet the loss
    falls by 10 % every 200 steps -- that is progress, not a stalled run."""
    losses = [2.0 * 0.9995 ** i for i in range(450)]
    g, rec = _run_with_losses(losses, mode="warn")
    assert guard_warnings(rec) == []


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_small_learning_rate_that_learns_slowly_is_not_chance(seed):
    """Adam lr=1e-4 on real labels: 300 steps take the loss only ~6 % below log 10, but it
    keeps falling: neither 'no better than chance' nor 'no progress'."""
    torch.manual_seed(seed)
    x, y = data("digits", n=1797, seed=seed)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    g, rec, _ = train(model, torch.optim.Adam(model.parameters(), 1e-4), x, y, steps=300,
                      seed=seed)
    assert guard_warnings(rec) == [], [str(w) for w in guard_warnings(rec)]
    assert g.history[-1]["loss"] < 0.97 * math.log(10)


def test_chance_waits_while_the_learning_rate_warms_up():
    """Shuffled labels, but a linear warm-up over 1000 steps is still under way at step
    260: a loss near log C may only mean the steps are still tiny -- no verdict yet."""
    torch.manual_seed(0)
    x, y = data("digits", n=1797, seed=0)
    y = y[torch.randperm(len(y))]
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 1000))
    g, rec, _ = train(model, opt, x, y, steps=260, batch=64, scheduler=sched)
    assert guard_warnings(rec) == [], [str(w) for w in guard_warnings(rec)]


def test_chance_is_named_once_the_warm_up_is_over():
    torch.manual_seed(0)
    x, y = data("digits", n=1797, seed=0)
    y = y[torch.randperm(len(y))]
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 250))
    g, rec, _ = train(model, opt, x, y, steps=330, batch=64, scheduler=sched)
    (w,) = guard_warnings(rec)
    assert w.cause == "chance" and w.step >= 250
