"""init: broken initialisations are caught on entry / first forward; sane ones are not."""
import pytest
import torch
from torch import nn

from guard import GuardWarning, InitError, TrainingGuard
from guard_helpers import CNN, RNN, TinyTransformer, causes, data, mlp, train


def _enter(model, checks=None):
    opt = torch.optim.SGD(model.parameters(), 0.01)
    return TrainingGuard(model, opt, checks=checks or {"init": "raise"})


def test_zero_init_raises_on_entry_and_leaves_no_hooks():
    model = mlp()
    for m in model:
        if isinstance(m, nn.Linear):
            nn.init.zeros_(m.weight)
    opt = torch.optim.SGD(model.parameters(), 0.01)
    with pytest.raises(InitError) as err:
        with TrainingGuard(model, opt, checks={"init": "raise"}):
            pass
    assert err.value.cause == "zero-weights" and err.value.param == "0.weight"
    assert "all-zero" in str(err.value) and "kaiming" in str(err.value)
    assert not opt._optimizer_step_pre_hooks and not model._forward_hooks


def test_zero_init_warns_once_and_training_reports_zero_gradients():
    torch.manual_seed(0)
    model = mlp()
    for p in model.parameters():
        nn.init.zeros_(p)
    x, y = data()
    g, rec, _ = train(model, torch.optim.SGD(model.parameters(), 0.1), x, y, steps=20)
    found = causes(rec)
    assert ("init", "zero-weights") in found
    assert ("update", "zero-grad") in found   # the hidden layers never get a gradient
    assert sum(1 for w in rec if getattr(w.message, "cause", None) == "zero-weights") == 1


def test_constant_init():
    model = mlp()
    nn.init.constant_(model[2].weight, 0.05)
    with pytest.raises(InitError, match="constant weights in 2.weight"):
        with _enter(model):
            pass


def test_nan_in_initial_weights():
    model = mlp()
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")
    with pytest.raises(InitError) as err:
        with _enter(model):
            pass
    assert err.value.cause == "nonfinite-weights"


def test_huge_init_is_caught_on_entry_and_in_the_first_forward():
    torch.manual_seed(0)
    model = mlp()
    for m in model:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=10.0)
    x, y = data()
    g, rec, _ = train(model, torch.optim.SGD(model.parameters(), 1e-4), x, y, steps=5)
    found = causes(rec)
    assert ("init", "scale-too-large") in found
    assert ("init", "activations-exploding") in found
    msg = next(str(w) for w in (r.message for r in rec) if w.cause == "scale-too-large")
    assert "0.weight" in msg and "He" in msg and "Xavier" in msg


def test_tiny_hidden_init_is_too_small():
    model = mlp()
    nn.init.normal_(model[2].weight, std=1e-5)
    with pytest.raises(InitError) as err:
        with _enter(model):
            pass
    assert err.value.cause == "scale-too-small" and err.value.param == "2.weight"


def test_dead_relu_on_first_forward():
    torch.manual_seed(0)
    model = mlp()
    nn.init.constant_(model[0].bias, -20.0)
    x, y = data()
    g, rec, _ = train(model, torch.optim.SGD(model.parameters(), 0.01), x, y, steps=3)
    assert ("init", "dead-relu") in causes(rec)


def test_saturated_tanh_on_first_forward():
    torch.manual_seed(0)
    model = mlp(act=nn.Tanh)
    nn.init.normal_(model[0].weight, std=3.0)
    x, y = data()
    g, rec, _ = train(model, torch.optim.SGD(model.parameters(), 0.01), x, y, steps=3)
    assert ("init", "saturated") in causes(rec)


def test_first_forward_error_in_raise_mode():
    torch.manual_seed(0)
    model = mlp()
    nn.init.constant_(model[0].bias, -20.0)
    opt = torch.optim.SGD(model.parameters(), 0.01)
    x, _ = data()
    with pytest.raises(InitError, match="dead ReLU"):
        with TrainingGuard(model, opt, checks={"init": "raise"}):
            model(x[:32])
    assert all(not m._forward_hooks for m in model.modules())


@pytest.mark.parametrize("make", [mlp, CNN, RNN, TinyTransformer,
                                  lambda: mlp(act=nn.Tanh), lambda: mlp(act=nn.GELU)])
def test_default_inits_are_silent(make):
    torch.manual_seed(0)
    model = make()
    with pytest.warns(None) if False else _no_guard_warning():
        with _enter(model, checks={"init": "raise"}):
            pass


def test_hooks_for_the_first_forward_are_removed_after_it():
    torch.manual_seed(0)
    model = mlp()
    x, _ = data()
    opt = torch.optim.SGD(model.parameters(), 0.01)
    with TrainingGuard(model, opt, checks={"init": "raise"}):
        assert any(m._forward_hooks for m in model.modules())
        model(x[:8])
        assert all(not m._forward_hooks for m in model.modules())


def test_tied_embedding_is_not_a_scale_problem():
    class LM(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(100, 64)
            self.out = nn.Linear(64, 100, bias=False)
            self.out.weight = self.emb.weight

        def forward(self, x):
            return self.out(self.emb(x))
    with _enter(LM()):
        pass


class _no_guard_warning:
    def __enter__(self):
        import warnings
        self._cm = warnings.catch_warnings(record=True)
        self.rec = self._cm.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc):
        self._cm.__exit__(*exc)
        bad = [str(r.message) for r in self.rec if isinstance(r.message, GuardWarning)]
        assert not bad, bad
