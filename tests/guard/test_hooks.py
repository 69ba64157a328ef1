"""Attach / detach: after the with block everything is exactly as before."""
import pytest
import torch
import torch.optim.optimizer as optim_mod
from torch import nn

import guard
from guard import TrainingGuard
from guard_helpers import data, mlp


def _hook_state(model, opt, crit):
    dicts = {}
    for name, m in list(model.named_modules()) + [("<loss>", crit)]:
        for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks",
                     "_forward_hooks_with_kwargs", "_forward_hooks_always_called",
                     "_forward_pre_hooks_with_kwargs", "_backward_pre_hooks"):
            dicts[(name, attr)] = dict(getattr(m, attr))
    for attr in ("_optimizer_step_pre_hooks", "_optimizer_step_post_hooks"):
        dicts[("<opt>", attr)] = dict(getattr(opt, attr))
    dicts["global"] = (dict(optim_mod._global_optimizer_pre_hooks),
                       dict(optim_mod._global_optimizer_post_hooks))
    dicts["opt_attrs"] = sorted(vars(opt))
    dicts["grads"] = [p.grad is None for p in model.parameters()]
    return dicts


def _setup():
    torch.manual_seed(0)
    model = mlp()
    crit = nn.CrossEntropyLoss()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    # the user's own hooks must survive, in order
    model[0].register_forward_hook(lambda m, i, o: None)
    opt.register_step_pre_hook(lambda o, a, k: None)
    crit.register_forward_hook(lambda m, i, o: None)
    return model, crit, opt


def test_hooks_restored_after_a_normal_exit():
    model, crit, opt = _setup()
    x, y = data()
    before = _hook_state(model, opt, crit)
    with TrainingGuard(model, opt, loss_fn=crit, max_grad_norm=1.0, patience=2) as g:
        assert _hook_state(model, opt, crit) != before
        for i in range(0, 128, 32):
            opt.zero_grad()
            crit(model(x[i:i + 32]), y[i:i + 32]).backward()
            opt.step()
    after = _hook_state(model, opt, crit)
    after["grads"] = before["grads"]
    assert after == before


def test_hooks_restored_when_the_body_raises():
    model, crit, opt = _setup()
    x, y = data()
    before = _hook_state(model, opt, crit)
    with pytest.raises(KeyError):
        with TrainingGuard(model, opt, loss_fn=crit):
            opt.zero_grad()
            crit(model(x[:8]), y[:8]).backward()
            opt.step()
            raise KeyError("user bug")
    after = _hook_state(model, opt, crit)
    after["grads"] = before["grads"]
    assert after == before


def test_hooks_restored_when_the_guard_raises():
    model, crit, opt = _setup()
    x, y = data()
    before = _hook_state(model, opt, crit)
    with pytest.raises(guard.NonFiniteError):
        with TrainingGuard(model, opt, loss_fn=crit):
            xb = x[:8].clone()
            xb[0, 0] = float("nan")
            opt.zero_grad()
            crit(model(xb), y[:8]).backward()
            opt.step()
    after = _hook_state(model, opt, crit)
    after["grads"] = before["grads"]
    assert after == before


def test_a_guard_is_entered_once():
    model, crit, opt = _setup()
    g = TrainingGuard(model, opt)
    with g:
        pass
    with pytest.raises(RuntimeError):
        with g:
            pass


def test_public_names():
    for name in ("TrainingGuard", "GuardError", "InitError", "InitialLossError",
                 "NonFiniteError", "ExplodingGradientError", "VanishingGradientError",
                 "NoUpdateError", "DivergenceError", "GuardWarning"):
        assert hasattr(guard, name)
    assert issubclass(guard.GuardWarning, UserWarning)
    for name in ("InitError", "InitialLossError", "NonFiniteError", "ExplodingGradientError",
                 "VanishingGradientError", "NoUpdateError", "DivergenceError"):
        assert issubclass(getattr(guard, name), guard.GuardError)


def test_bad_arguments():
    model, crit, opt = _setup()
    with pytest.raises(ValueError):
        TrainingGuard(model, opt, checks={"nope": "warn"})
    with pytest.raises(ValueError):
        TrainingGuard(model, opt, checks={"init": "skip"})
    with pytest.raises(ValueError):
        TrainingGuard(model, opt, on_nonfinite="ignore")
    with pytest.raises(ValueError):
        TrainingGuard(model, opt, max_grad_norm=0)
    with pytest.raises(ValueError):
        TrainingGuard(model, opt, mode="best")


def test_compiled_model():
    torch.manual_seed(0)
    model = mlp()
    compiled = torch.compile(model, backend="eager")
    crit = nn.CrossEntropyLoss()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    x, y = data()
    import warnings
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        with TrainingGuard(compiled, opt, loss_fn=crit, max_grad_norm=1.0, check_every=5) as g:
            for i in range(0, 256, 32):
                opt.zero_grad()
                crit(compiled(x[i:i + 32]), y[i:i + 32]).backward()
                opt.step()
    assert not [r for r in rec if isinstance(r.message, guard.GuardWarning)]
    assert len(g.history) == 8 and g.param_names[0] == "0.weight"
    assert not compiled._forward_hooks and all(not m._forward_hooks for m in model.modules())
