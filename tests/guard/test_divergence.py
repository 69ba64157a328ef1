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
        with TrainingGuard(model, opt, checks={"divergence": mode, "update": "off"},
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


def test_real_run_climbing_the_loss_diverges():
    """Gradient ascent (a sign bug, here SGD(maximize=True)): the loss climbs steadily."""
    torch.manual_seed(0)
    model = mlp()
    x, y = data()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, maximize=True)
    g, rec, err = train(model, opt, x, y, steps=100, expect_error=True,
                        guard_kw=dict(checks={"divergence": "raise", "finite": "skip"}))
    assert isinstance(err, DivergenceError) and err.cause == "diverging"
    assert err.step > 50
