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
