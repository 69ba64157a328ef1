"""initial-loss: the step-0 loss against log(C) / log 2."""
import math

import pytest
import torch
from torch import nn

from guard import InitialLossError
from guard_helpers import causes, data, guard_warnings, mlp, train


def test_logits_times_100_at_init():
    torch.manual_seed(0)
    model = mlp()
    x, y = data()
    g, rec, err = train(model, torch.optim.SGD(model.parameters(), 0.01), x, y, steps=3,
                        logit_scale=100.0,
                        guard_kw=dict(checks={"initial-loss": "raise"}), expect_error=True)
    assert isinstance(err, InitialLossError) and err.cause == "too-high" and err.step == 0
    assert "log(5 classes) = 1.609" in str(err)
    assert g.history == [] or not g.history[0].get("skipped")


def test_too_high_is_a_warning_by_default_once():
    torch.manual_seed(0)
    model = mlp()
    x, y = data()
    g, rec, _ = train(model, torch.optim.SGD(model.parameters(), 1e-4), x, y, steps=5,
                      logit_scale=100.0)
    assert [w.cause for w in guard_warnings(rec) if w.check == "initial-loss"] == ["too-high"]


def test_probabilities_fed_to_nll_loss_are_too_low():
    torch.manual_seed(0)
    model = nn.Sequential(mlp(), nn.Softmax(dim=1))   # NLLLoss wants log-probabilities
    x, y = data()
    g, rec, err = train(model, torch.optim.SGD(model.parameters(), 0.01), x, y, steps=2,
                        loss_fn=nn.NLLLoss(),
                        guard_kw=dict(checks={"initial-loss": "raise"}), expect_error=True)
    assert isinstance(err, InitialLossError) and err.cause == "too-low"
    assert "leak" in str(err)


def test_leaked_labels_at_step_0():
    """A model that already 'knows' the answer: the step-0 loss is ~0."""
    torch.manual_seed(0)
    x, y = data()
    model = nn.Linear(20, 5)
    with torch.no_grad():          # a 'trained' model stands in for label leakage
        model.weight.zero_()
        model.weight[:, :5] = torch.eye(5) * 50
        model.bias.zero_()
    g, rec, _ = train(model, torch.optim.SGD(model.parameters(), 0.01), x, y, steps=2,
                      guard_kw=dict(checks={"init": "off"}))
    assert ("initial-loss", "too-low") in causes(rec)


def test_bce_logits_times_100():
    torch.manual_seed(0)
    model = mlp(ncls=1)
    x, _ = data()
    y = (x[:, :1] > 0).float()
    g, rec, _ = train(model, torch.optim.SGD(model.parameters(), 1e-4), x, y, steps=2,
                      loss_fn=nn.BCEWithLogitsLoss(), logit_scale=100.0)
    assert ("initial-loss", "too-high") in causes(rec)
    assert "log 2" in next(str(w) for w in guard_warnings(rec) if w.check == "initial-loss")


def test_sequence_logits_use_the_class_dimension():
    """CrossEntropyLoss on (N, C, L): the classes are dim 1, as PyTorch reads them."""
    torch.manual_seed(0)

    class Tagger(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(8, 7)

        def forward(self, x):              # (N, L, 8) -> (N, 7, L)
            return self.lin(x).transpose(1, 2)
    model = Tagger()
    x = torch.randn(64, 30, 8)
    y = torch.randint(0, 7, (64, 30))
    g, rec, _ = train(model, torch.optim.SGD(model.parameters(), 0.01), x, y, steps=3)
    assert guard_warnings(rec) == []


def test_no_loss_module_no_initial_loss_check():
    torch.manual_seed(0)
    model = mlp()
    x, y = data()
    g, rec, _ = train(model, torch.optim.SGD(model.parameters(), 1e-4), x, y, steps=3,
                      loss_fn=nn.functional.cross_entropy, observe=True, logit_scale=100.0)
    assert ("initial-loss", "too-high") not in causes(rec)
    assert g.history[0]["loss"] > 10
