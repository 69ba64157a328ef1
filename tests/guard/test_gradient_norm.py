"""gradient-norm: exploding / vanishing gradients, clipping at the right moment."""
import copy
import warnings

import pytest
import torch
from torch import nn

from guard import (ExplodingGradientError, GuardError, NonFiniteError, TrainingGuard,
                   VanishingGradientError)
from guard_helpers import RNN, causes, data, guard_warnings, mlp, train


def _exploding_rnn():
    torch.manual_seed(0)
    model = RNN(kind=nn.RNN, hidden=32)
    with torch.no_grad():
        model.rnn.weight_hh_l0.mul_(6.0)   # recurrent gain >> 1: gradients explode in time
        model.rnn.nonlinearity = "relu"
    return model


def _seq():
    x, y = data("seq", nin=8)
    return torch.cat([x] * 5, 1), y     # 50 time steps


def test_exploding_rnn_without_clipping_raises():
    model = _exploding_rnn()
    x, y = _seq()
    g, rec, err = train(model, torch.optim.SGD(model.parameters(), 1e-3), x, y, steps=10,
                        guard_kw=dict(checks={"gradient-norm": "raise", "init": "off",
                                              "finite": "warn"}),
                        expect_error=True)
    assert isinstance(err, ExplodingGradientError) and err.cause == "exploding"
    assert "max_grad_norm" in str(err) and f"step {err.step}" in str(err)


def test_exploding_rnn_with_clipping_applies_at_most_max_norm():
    model = _exploding_rnn()
    x, y = _seq()
    opt = torch.optim.SGD(model.parameters(), 1e-3)
    applied = []

    def measure(optimizer, args, kwargs):   # runs after the guard's pre-hook
        applied.append(float(torch.nn.utils.get_total_norm(
            [p.grad for p in model.parameters()])))
    g, rec, err = train(model, opt, x, y, steps=10,
                        guard_kw=dict(max_grad_norm=0.5, checks={"init": "off"}))
    h = opt.register_step_post_hook(measure)
    # a second short run with our own post-hook to read the applied norms
    g2, rec2, _ = train(model, opt, x, y, steps=5,
                        guard_kw=dict(max_grad_norm=0.5, checks={"init": "off"}))
    h.remove()
    assert err is None
    assert ("gradient-norm", "exploding") in causes(rec)   # still reported, once
    assert max(applied) <= 0.5 * (1 + 1e-4)
    assert all(r["applied_grad_norm"] <= 0.5 for r in g.history)
    assert all(r["grad_norm"] > 1e3 for r in g.history[:3])
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_clipping_matches_clip_grad_norm_():
    torch.manual_seed(0)
    a = mlp()
    b = mlp()
    b.load_state_dict(a.state_dict())
    x, y = data()
    crit = nn.CrossEntropyLoss()
    opt_a = torch.optim.SGD(a.parameters(), 0.5)
    opt_b = torch.optim.SGD(b.parameters(), 0.5)
    with TrainingGuard(a, opt_a, loss_fn=crit, max_grad_norm=0.1):
        for i in range(0, 160, 32):
            opt_a.zero_grad()
            crit(a(x[i:i + 32]), y[i:i + 32]).backward()
            opt_a.step()
            opt_b.zero_grad()
            crit(b(x[i:i + 32]), y[i:i + 32]).backward()
            torch.nn.utils.clip_grad_norm_(b.parameters(), 0.1)
            opt_b.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb)


def test_clip_by_value():
    torch.manual_seed(0)
    model = mlp()
    x, y = data()
    opt = torch.optim.SGD(model.parameters(), 0.1)
    seen = []
    opt.register_step_post_hook(lambda o, a, k: seen.append(
        max(float(p.grad.abs().max()) for p in model.parameters())))
    train(model, opt, x, y, steps=5, guard_kw=dict(clip_value=1e-3))
    assert max(seen) <= 1e-3 * (1 + 1e-6)   # float32 rounding of the bound


def test_vanishing_deep_sigmoid_net():
    torch.manual_seed(0)
    model = mlp(depth=12, hidden=32, act=nn.Sigmoid)
    x, y = data()
    g, rec, err = train(model, torch.optim.SGD(model.parameters(), 0.1), x, y, steps=20,
                        guard_kw=dict(checks={"gradient-norm": "raise"}),
                        expect_error=True)
    assert isinstance(err, VanishingGradientError)
    assert err.param == "0.weight" and "first layer" in str(err)


def test_vanishing_global_norm():
    torch.manual_seed(0)
    model = mlp()
    x, y = data()
    crit = nn.CrossEntropyLoss()
    g, rec, err = train(model, torch.optim.SGD(model.parameters(), 0.1), x, y, steps=10,
                        loss_fn=lambda out, t: crit(out, t) * 1e-9, observe=True)
    assert ("gradient-norm", "vanishing") in causes(rec)


def test_thresholds_are_configurable():
    torch.manual_seed(0)
    model = mlp()
    x, y = data()
    g, rec, err = train(model, torch.optim.SGD(model.parameters(), 0.1), x, y, steps=10,
                        guard_kw=dict(checks={"gradient-norm": {"mode": "raise",
                                                                "exploding": 1e-3}}),
                        expect_error=True)
    assert isinstance(err, ExplodingGradientError)
    with pytest.raises(ValueError, match="unknown option"):
        TrainingGuard(model, torch.optim.SGD(model.parameters(), 0.1),
                      checks={"gradient-norm": {"explode": 1.0}})


def _clipped_by_hand(observe: bool):
    """An exploding RNN clipped by the user's own clip_grad_norm_ (not the guard's)."""
    import warnings

    model = _exploding_rnn()
    x, y = _seq()
    opt = torch.optim.SGD(model.parameters(), 1e-3)
    before = []
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        with TrainingGuard(model, opt, loss_fn=None,
                           checks={"init": "off", "initial-loss": "off", "update": "off",
                                   "finite": "warn"}) as g:
            for _ in range(4):
                opt.zero_grad()
                loss = nn.functional.cross_entropy(model(x[:32]), y[:32])
                g.observe_loss(loss)
                loss.backward()
                if observe:
                    g.observe_gradients()
                before.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)))
                opt.step()
    return g, before, rec


def test_observe_gradients_reports_the_norm_before_the_users_own_clipping():
    g, before, rec = _clipped_by_hand(observe=True)
    assert min(before) > 1e3
    assert [r["grad_norm"] for r in g.history] == pytest.approx(before, rel=1e-4)
    assert all(r["applied_grad_norm"] <= 0.5 * (1 + 1e-4) for r in g.history)   # what the user's clip left
    assert ("gradient-norm", "exploding") in causes(rec)
    # The message knows the gradients are clipped already: it does not advise clipping.
    [msg] = [str(w.message) for w in rec if "exploding" in str(w.message)]
    assert "clipped (to a norm of 0.5)" in msg and "max_grad_norm=1.0" not in msg


def test_without_observe_gradients_the_guard_sees_the_clipped_norm():
    g, before, rec = _clipped_by_hand(observe=False)
    assert min(before) > 1e3
    assert all(r["grad_norm"] <= 0.5 * (1 + 1e-4) for r in g.history)
    assert ("gradient-norm", "exploding") not in causes(rec)


def test_an_observation_counts_for_its_own_step_only():
    """Observed outside the block, or at an earlier step: the step measures itself."""
    model = _exploding_rnn()
    x, y = _seq()
    opt = torch.optim.SGD(model.parameters(), 1e-3)
    g = TrainingGuard(model, opt, loss_fn=None, checks={"init": "off", "initial-loss": "off",
                                                        "update": "off", "finite": "warn"})
    nn.functional.cross_entropy(model(x[:32]), y[:32]).backward()
    g.observe_gradients()   # not entered yet: nothing is measured
    with g:
        for k in range(3):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x[:32]), y[:32])
            g.observe_loss(loss)
            loss.backward()
            if k == 0:
                g.observe_gradients()   # step 0 only
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
            opt.step()
    norms = [r["grad_norm"] for r in g.history]
    assert norms[0] > 1e3                                   # observed before the clip
    assert all(n <= 0.5 * (1 + 1e-4) for n in norms[1:])    # measured at their own step


def test_an_observation_is_dropped_when_the_next_micro_batch_starts():
    """Observed, then the step skipped: the next batch's loss discards the observation, so
    that step reports its own (here: user-clipped) norm, not the discarded batch's."""
    model = _exploding_rnn()
    x, y = _seq()
    opt = torch.optim.SGD(model.parameters(), 1e-3)
    with TrainingGuard(model, opt, loss_fn=None, checks={"init": "off", "initial-loss": "off",
                                                         "update": "off", "finite": "warn",
                                                         "gradient-norm": "off"}) as g:
        loss = nn.functional.cross_entropy(model(x[:32]), y[:32])
        g.observe_loss(loss)
        loss.backward()
        g.observe_gradients()          # ... and then the step is skipped
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x[32:64]), y[32:64])
        g.observe_loss(loss)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        opt.step()
    [rec] = g.history
    assert rec["grad_norm"] <= 0.5 * (1 + 1e-4)


def test_nanmedian_of_a_never_measured_column_is_nan_and_silent():
    import warnings

    import numpy as np

    from guard.window import nanmedian

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        med = nanmedian(np.array([[1.0, np.nan], [3.0, np.nan]]), axis=0)
    assert med[0] == 2.0 and np.isnan(med[1])


# --- "raise" is exact where a host read is free --------------------------------------

def _blow_up_at_step_0(lr=1e14, force_gate=None, check_every=50, mode="raise"):
    """A bad first batch (inputs 1e6 too large) gives a finite gradient norm of ~5e5 at
    step 0; with this lr its update overflows the model at step 1."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 3))
    opt = torch.optim.SGD(model.parameters(), lr)
    crit = nn.CrossEntropyLoss()
    x, y = torch.randn(64, 10), torch.randint(0, 3, (64,))
    g = TrainingGuard(model, opt, loss_fn=crit, check_every=check_every,
                      checks={"gradient-norm": mode, "initial-loss": "off"})
    g._force_gate = force_gate   # "deferred": the accelerator path (no per-step read)
    before = copy.deepcopy(model.state_dict())
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        with pytest.raises(GuardError) as err:
            with g:
                for step in range(5):
                    opt.zero_grad()
                    crit(model(x * (1e6 if step == 0 else 1.0)), y).backward()
                    opt.step()
    untouched = all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    return err.value, untouched


def test_raise_on_the_cpu_stops_at_the_exploding_step_before_its_update():
    err, untouched = _blow_up_at_step_0()
    assert isinstance(err, ExplodingGradientError) and err.step == 0
    assert "5.16e+05 at step 0" in str(err)
    assert untouched   # the exploding update was never applied


def test_raise_with_check_every_1_is_exact_on_the_accelerator_path_too():
    err, untouched = _blow_up_at_step_0(force_gate="deferred", check_every=1)
    assert isinstance(err, ExplodingGradientError) and err.step == 0 and untouched


def test_accelerator_nan_error_names_the_explosion_before_it():
    """No per-step read on an accelerator: the NaN of step 1 is found at the read-back,
    and its error says which explosion caused it."""
    err, _ = _blow_up_at_step_0(force_gate="deferred")
    assert isinstance(err, NonFiniteError) and err.step == 1
    assert "after an exploding gradient (global norm 5.16e+05 at step 0)" in str(err)


def test_nan_without_an_explosion_before_it_does_not_mention_one():
    torch.manual_seed(0)
    model = mlp()
    x, y = data()
    g, rec, err = train(model, torch.optim.SGD(model.parameters(), 0.1), x, y, steps=20,
                        nan_steps=(7,), expect_error=True)
    assert isinstance(err, NonFiniteError) and err.step == 7
    assert "exploding" not in str(err)


def test_raise_mode_on_a_healthy_run_reads_but_stays_silent():
    torch.manual_seed(0)
    model = mlp()
    x, y = data()
    g, rec, err = train(model, torch.optim.Adam(model.parameters(), 1e-3), x, y, steps=40,
                        guard_kw=dict(checks={"gradient-norm": "raise"}))
    assert err is None and guard_warnings(rec) == [] and len(g.history) == 40
