"""finite: NaN/Inf is stopped before it reaches the weights; AMP overflow is not an error."""
import copy

import pytest
import torch
from torch import nn

from guard import NonFiniteError, TrainingGuard
from guard_helpers import causes, data, guard_warnings, mlp, train


def _finite(model):
    return all(torch.isfinite(p).all() for p in model.parameters())


def test_lr_so_high_the_loss_goes_nan_raises_and_leaves_the_model_finite():
    torch.manual_seed(0)
    model = mlp()
    x, y = data()
    opt = torch.optim.SGD(model.parameters(), lr=1e6)
    g, rec, err = train(model, opt, x, y, steps=50, expect_error=True)
    assert isinstance(err, NonFiniteError)
    assert err.step is not None and f"step {err.step}" in str(err)
    assert err.param is not None and err.param in str(err)
    assert _finite(model)
    assert g.history[-1]["nonfinite"] and g.history[-1]["step"] == err.step


def test_nan_batch_raise_keeps_the_last_good_state():
    torch.manual_seed(0)
    model = mlp()
    x, y = data()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    snapshots = {}

    def remember(optimizer, args, kwargs):
        snapshots["model"] = copy.deepcopy(model.state_dict())
        snapshots["opt"] = copy.deepcopy(optimizer.state_dict())
    h = opt.register_step_post_hook(remember)
    g, rec, err = train(model, opt, x, y, steps=20, nan_steps=(7,), expect_error=True)
    h.remove()
    assert isinstance(err, NonFiniteError) and err.step == 7 and err.param == "0.weight"
    for k, v in model.state_dict().items():
        assert torch.equal(v, snapshots["model"][k])
    assert opt.state_dict()["state"][0]["step"] == snapshots["opt"]["state"][0]["step"] == 7


def test_nan_batches_with_skip_train_on_and_count_skips():
    torch.manual_seed(0)
    model = mlp()
    x, y = data()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    g, rec, err = train(model, opt, x, y, steps=40, nan_steps=(3, 11, 12),
                        guard_kw=dict(on_nonfinite="skip"))
    assert err is None and _finite(model)
    assert [r["step"] for r in g.history if r["skipped"]] == [3, 11, 12]
    assert int(opt.state[model[0].weight]["step"]) == 37   # counters untouched by skips
    assert "skipped (non-finite): 3" in g.report()
    warned = [w for w in guard_warnings(rec) if w.check == "finite"]
    assert len(warned) == 1 and warned[0].step == 3   # once per cause
    # the gradients are back after a skipped step (the user's loop may read them)
    assert all(p.grad is not None for p in model.parameters())


def test_skip_via_checks_dict():
    torch.manual_seed(0)
    model = mlp()
    x, y = data()
    g, rec, err = train(model, torch.optim.SGD(model.parameters(), 0.1), x, y, steps=10,
                        nan_steps=(2,), guard_kw=dict(checks={"finite": "skip"}))
    assert err is None and sum(r["skipped"] for r in g.history) == 1


def test_warn_lets_the_update_through():
    torch.manual_seed(0)
    model = mlp()
    x, y = data()
    g, rec, err = train(model, torch.optim.SGD(model.parameters(), 0.1), x, y, steps=5,
                        nan_steps=(2,), guard_kw=dict(on_nonfinite="warn",
                                                      checks={"divergence": "off"}))
    assert ("finite", "nonfinite") in causes(rec)
    assert not _finite(model)


@pytest.mark.parametrize("policy", ["skip", "raise"])
def test_fused_optimizer_device_gate(policy):
    """The accelerator path: the flag goes to the fused kernel as found_inf (no sync)."""
    torch.manual_seed(0)
    model = mlp()
    x, y = data()
    opt = torch.optim.Adam(model.parameters(), 1e-3, fused=True)
    before = {}
    crit = nn.CrossEntropyLoss()
    g = TrainingGuard(model, opt, loss_fn=crit, on_nonfinite=policy, check_every=10)
    g._force_gate = "device"
    with pytest.raises(NonFiniteError) if policy == "raise" else _nothing():
        with g:
            for step in range(20):
                xb, yb = x[step * 8:(step + 1) * 8].clone(), y[step * 8:(step + 1) * 8]
                if step == 4:
                    xb[0, 0] = float("nan")
                    before = copy.deepcopy(model.state_dict())
                opt.zero_grad()
                crit(model(xb), yb).backward()
                opt.step()
    assert g._gate == "device"
    assert not hasattr(opt, "found_inf")
    assert _finite(model)
    if policy == "skip":
        assert [r["step"] for r in g.history if r["skipped"]] == [4]
        assert int(opt.state[model[0].weight]["step"]) == 19
    else:
        # latched: no update from the bad step until the read-back raised at step 9
        for k, v in model.state_dict().items():
            assert torch.equal(v, before[k])
        assert int(opt.state[model[0].weight]["step"]) == 4


def test_grad_scaler_skipped_steps_are_not_errors():
    torch.manual_seed(0)
    model = mlp()
    x, y = data()
    opt = torch.optim.Adam(model.parameters(), 1e-3, fused=True)
    # fp16 autocast with a too large initial scale: the first backward passes
    # overflow in fp16 and the GradScaler skips those steps, as in real AMP.
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 30, growth_interval=1000)
    g, rec, err = train(model, opt, x, y, steps=40, scaler=scaler, autocast=torch.float16,
                        guard_kw=dict(max_grad_norm=1.0))
    assert err is None and guard_warnings(rec) == []
    sk = [r["scaler_skipped"] for r in g.history]
    assert any(sk) and not all(sk)
    assert not any(r["nonfinite"] or r["skipped"] for r in g.history)
    applied = [r["applied_grad_norm"] for r in g.history if not r["scaler_skipped"]]
    assert max(applied) <= 1.0 + 1e-6 and all(torch.isfinite(torch.tensor(applied)))


def test_grad_scaler_with_unscale_and_non_fused_optimizer():
    torch.manual_seed(0)
    model = mlp()
    x, y = data()
    opt = torch.optim.SGD(model.parameters(), 0.05)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 30)
    g, rec, err = train(model, opt, x, y, steps=30, scaler=scaler, autocast=torch.float16)
    assert err is None and guard_warnings(rec) == []
    assert 0 < len(g.history) < 30   # steps the scaler skipped never reach the optimizer


def test_nan_loss_via_observe_loss():
    torch.manual_seed(0)
    model = mlp()
    x, y = data()
    g, rec, err = train(model, torch.optim.SGD(model.parameters(), 0.1), x, y, steps=10,
                        nan_steps=(4,), loss_fn=nn.functional.cross_entropy, observe=True,
                        expect_error=True)
    assert isinstance(err, NonFiniteError) and err.step == 4


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def test_deferred_gate_raises_at_the_read_back():
    """The accelerator path with a non-fused optimizer: no per-step read."""
    torch.manual_seed(0)
    model = mlp()
    x, y = data()
    opt = torch.optim.SGD(model.parameters(), 0.1)
    crit = nn.CrossEntropyLoss()
    g = TrainingGuard(model, opt, loss_fn=crit, check_every=5)
    g._force_gate = "deferred"
    with pytest.raises(NonFiniteError) as err:
        with g:
            for step in range(20):
                xb = x[step * 8:(step + 1) * 8].clone()
                if step == 2:
                    xb[0, 0] = float("nan")
                opt.zero_grad()
                crit(model(xb), y[step * 8:(step + 1) * 8]).backward()
                opt.step()
    assert err.value.step == 2 and "read-back" in str(err.value)
    assert len(g.history) == 5      # raised at the first read-back, after step 4


def test_fused_device_gate_with_grad_scaler():
    """found_inf from a GradScaler and from the guard are combined, then restored."""
    torch.manual_seed(0)
    model = mlp()
    x, y = data()
    opt = torch.optim.Adam(model.parameters(), 1e-3, fused=True)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 30)
    crit = nn.CrossEntropyLoss()
    g = TrainingGuard(model, opt, loss_fn=crit, on_nonfinite="skip", check_every=10)
    g._force_gate = "device"
    with g:
        for step in range(40):
            xb = x[step % 30 * 8:(step % 30 + 1) * 8].clone()
            if step == 30:
                xb[0, 0] = float("nan")
            opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.float16):
                loss = crit(model(xb), y[step % 30 * 8:(step % 30 + 1) * 8])
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
    h = g.history
    assert any(r["scaler_skipped"] for r in h[:20])
    assert [r["step"] for r in h if r["skipped"]] == [30]
    assert not hasattr(opt, "found_inf") and _finite(model)
