"""Healthy runs stay silent: no GuardWarning, no error, every step recorded."""
import pytest
import torch
from torch import nn

from guard_helpers import CNN, RNN, TinyTransformer, data, guard_warnings, mlp, train


def _assert_silent(g, rec, steps):
    assert guard_warnings(rec) == [], [str(w) for w in guard_warnings(rec)]
    assert len(g.history) == steps
    assert g._events == []
    assert "the run looks healthy" in g.report()


def test_mlp_adam():
    torch.manual_seed(0)
    model = mlp()
    x, y = data()
    g, rec, _ = train(model, torch.optim.Adam(model.parameters(), 1e-3), x, y, steps=80,
                      guard_kw=dict(max_grad_norm=1.0))
    _assert_silent(g, rec, 80)
    losses = [r["loss"] for r in g.history]
    assert losses[-1] < losses[0]


def test_mlp_sgd_momentum_with_scheduler():
    torch.manual_seed(1)
    model = mlp(depth=3)
    x, y = data()
    opt = torch.optim.SGD(model.parameters(), 0.05, momentum=0.9, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.StepLR(opt, 20, 0.5)
    g, rec, _ = train(model, opt, x, y, steps=80, scheduler=sched)
    _assert_silent(g, rec, 80)
    assert g.history[0]["lr"] == 0.05 and g.history[-1]["lr"] < 0.05


def test_cnn_adamw_cosine():
    torch.manual_seed(2)
    model = CNN()
    x, y = data("img")
    opt = torch.optim.AdamW(model.parameters(), 3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 60)
    g, rec, _ = train(model, opt, x, y, steps=60, scheduler=sched)
    _assert_silent(g, rec, 60)


@pytest.mark.parametrize("kind", [nn.LSTM, nn.GRU, nn.RNN])
def test_rnn_with_clipping(kind):
    torch.manual_seed(3)
    model = RNN(kind=kind)
    x, y = data("seq", nin=8)
    g, rec, _ = train(model, torch.optim.Adam(model.parameters(), 3e-3), x, y, steps=50,
                      guard_kw=dict(max_grad_norm=1.0))
    _assert_silent(g, rec, 50)


def test_tiny_transformer_warmup():
    torch.manual_seed(4)
    model = TinyTransformer()
    x, y = data("tok")
    opt = torch.optim.AdamW(model.parameters(), 1e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 10))
    g, rec, _ = train(model, opt, x, y, steps=60, scheduler=sched,
                      guard_kw=dict(max_grad_norm=1.0))
    _assert_silent(g, rec, 60)


def test_gradient_accumulation_one_record_per_step():
    torch.manual_seed(5)
    model = mlp()
    x, y = data()
    g, rec, _ = train(model, torch.optim.SGD(model.parameters(), 0.1), x, y, steps=80,
                      accumulate=4)
    _assert_silent(g, rec, 20)


def test_several_param_groups():
    torch.manual_seed(6)
    model = mlp()
    x, y = data()
    opt = torch.optim.Adam([
        {"params": model[0].parameters(), "lr": 1e-3},
        {"params": list(model[2].parameters()) + list(model[4].parameters()), "lr": 3e-3},
    ])
    g, rec, _ = train(model, opt, x, y, steps=40)
    _assert_silent(g, rec, 40)
    assert g.history[0]["lr"] == [1e-3, 3e-3]


def test_frozen_backbone_is_not_an_alarm():
    torch.manual_seed(7)
    model = mlp()
    for p in model[0].parameters():
        p.requires_grad_(False)
    x, y = data()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], 1e-3)
    g, rec, _ = train(model, opt, x, y, steps=40)
    _assert_silent(g, rec, 40)


def test_zero_initialised_output_layer_is_fine():
    torch.manual_seed(8)
    model = mlp()
    nn.init.zeros_(model[-1].weight)
    x, y = data()
    g, rec, _ = train(model, torch.optim.Adam(model.parameters(), 1e-3), x, y, steps=40)
    _assert_silent(g, rec, 40)


def test_bce_binary_classifier():
    torch.manual_seed(9)
    model = mlp(ncls=1)
    x, _ = data()
    y = (x[:, :1] > 0).float()
    g, rec, _ = train(model, torch.optim.Adam(model.parameters(), 1e-3), x, y, steps=40,
                      loss_fn=nn.BCEWithLogitsLoss())
    _assert_silent(g, rec, 40)


def test_bf16_autocast_on_cpu():
    torch.manual_seed(10)
    model = mlp()
    x, y = data()
    g, rec, _ = train(model, torch.optim.Adam(model.parameters(), 1e-3), x, y, steps=40,
                      autocast=torch.bfloat16, guard_kw=dict(max_grad_norm=1.0))
    _assert_silent(g, rec, 40)


def test_plain_function_loss_with_observe_loss():
    torch.manual_seed(11)
    model = mlp()
    x, y = data()
    g, rec, _ = train(model, torch.optim.Adam(model.parameters(), 1e-3), x, y, steps=40,
                      loss_fn=nn.functional.cross_entropy, observe=True)
    _assert_silent(g, rec, 40)
    assert all(r["loss"] is not None for r in g.history)


def test_validation_pass_does_not_count_as_training_loss():
    torch.manual_seed(12)
    model = mlp()
    x, y = data()
    crit = nn.CrossEntropyLoss()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    from guard import TrainingGuard
    import warnings
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        with TrainingGuard(model, opt, loss_fn=crit, check_every=5) as g:
            for epoch in range(3):
                model.train()
                for i in range(0, 256, 32):
                    opt.zero_grad()
                    crit(model(x[i:i + 32]), y[i:i + 32]).backward()
                    opt.step()
                model.eval()
                with torch.no_grad():
                    val = crit(model(x), y).item()
                g.early_stop(val)
    assert guard_warnings(rec) == []
    assert len(g.history) == 24
