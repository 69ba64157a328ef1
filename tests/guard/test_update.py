"""update: parameters that do not learn."""
import pytest
import torch
from torch import nn

from guard import NoUpdateError, TrainingGuard
from guard_helpers import causes, data, guard_warnings, mlp, train


class Detached(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(20, 32)
        self.b = nn.Linear(32, 5)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)).detach())   # cuts self.a off the loss


def test_detached_layer_gets_no_gradient():
    torch.manual_seed(0)
    model = Detached()
    x, y = data()
    g, rec, err = train(model, torch.optim.Adam(model.parameters(), 1e-3), x, y, steps=12,
                        guard_kw=dict(checks={"update": "raise"}), expect_error=True)
    assert isinstance(err, NoUpdateError) and err.cause == "no-grad"
    assert err.param == "a.weight" and "a.bias" in str(err) and ".detach()" in str(err)


def test_detached_layer_with_zero_grad_set_to_none_false():
    torch.manual_seed(0)
    model = Detached()
    x, y = data()
    opt = torch.optim.SGD(model.parameters(), 0.1)
    for p in model.a.parameters():   # as after zero_grad(set_to_none=False)
        p.grad = torch.zeros_like(p)
    g, rec, _ = train(model, opt, x, y, steps=12)
    assert ("update", "zero-grad") in causes(rec) or ("update", "no-grad") in causes(rec)


def test_parameter_missing_from_the_optimizer():
    torch.manual_seed(0)
    model = mlp()
    opt = torch.optim.Adam(list(model.parameters())[2:], 1e-3)   # forgot the first layer
    with pytest.raises(NoUpdateError) as err:
        with TrainingGuard(model, opt, checks={"update": "raise"}):
            pass
    assert err.value.cause == "not-in-optimizer" and err.value.param == "0.weight"
    assert not opt._optimizer_step_pre_hooks
    x, y = data()
    g, rec, _ = train(model, opt, x, y, steps=5)
    assert ("update", "not-in-optimizer") in causes(rec)


def test_lr_zero_is_reported_as_unchanged():
    torch.manual_seed(0)
    model = mlp()
    x, y = data()
    g, rec, err = train(model, torch.optim.SGD(model.parameters(), lr=0.0), x, y, steps=12,
                        guard_kw=dict(checks={"update": "raise"}), expect_error=True)
    assert isinstance(err, NoUpdateError) and err.cause == "unchanged"
    assert "lr = 0" in str(err) and "[0.0]" in str(err)


def test_one_param_group_with_lr_zero():
    torch.manual_seed(0)
    model = mlp()
    x, y = data()
    opt = torch.optim.Adam([{"params": model[0].parameters(), "lr": 0.0},
                            {"params": list(model[2].parameters()) +
                             list(model[4].parameters())}], lr=1e-3)
    g, rec, _ = train(model, opt, x, y, steps=12)
    w = [w for w in guard_warnings(rec) if w.cause == "unchanged"]
    assert len(w) == 1 and w[0].param == "0.weight" and "2.weight" not in str(w[0])


def test_update_ratio_far_too_high():
    torch.manual_seed(0)
    model = mlp()
    x, y = data()
    # Heavy momentum on top of lr=5: each step rewrites most of every weight matrix.
    opt = torch.optim.SGD(model.parameters(), lr=5.0, momentum=0.9)
    g, rec, _ = train(model, opt, x, y, steps=40,
                      guard_kw=dict(checks={"divergence": "off", "gradient-norm": "off"}))
    assert ("update", "ratio-high") in causes(rec)
    ratios = [r["update_ratio"] for r in g.history if r["update_ratio"] is not None]
    assert ratios and max(ratios) > 0.5


def test_update_ratio_far_too_low():
    torch.manual_seed(0)
    model = mlp()
    x, y = data()
    g, rec, _ = train(model, torch.optim.SGD(model.parameters(), lr=1e-6), x, y, steps=40)
    assert ("update", "ratio-low") in causes(rec)


def test_updates_below_float_precision_are_unchanged():
    torch.manual_seed(0)
    model = mlp()
    x, y = data()
    g, rec, _ = train(model, torch.optim.SGD(model.parameters(), lr=1e-12), x, y, steps=20)
    assert ("update", "unchanged") in causes(rec)


def test_healthy_update_ratio_is_recorded():
    torch.manual_seed(0)
    model = mlp()
    x, y = data()
    g, rec, _ = train(model, torch.optim.Adam(model.parameters(), 1e-3), x, y, steps=30)
    assert guard_warnings(rec) == []
    ratios = [r["update_ratio"] for r in g.history if r["update_ratio"] is not None]
    assert len(ratios) >= 3 and all(1e-5 < r < 1e-1 for r in ratios)


def _mnist_like(n=512, seed=0):
    """28x28 'digits': a blank 4-pixel border (as in MNIST, where those pixels are
    always 0) around blobs whose position depends on the class."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n,), generator=g)
    img = torch.zeros(n, 28, 28)
    for c in range(10):
        r, col = 4 + 2 * c, 4 + (7 * c) % 18
        img[y == c, r:r + 6, col:col + 6] = 1.0
    img[:, 4:24, 4:24] += 0.3 * torch.rand(n, 20, 20, generator=g)
    return img.flatten(1), y


def test_sampled_elements_spread_over_rows_and_columns():
    from guard.guard import _SAMPLE_ELEMENTS, _sample_indices

    gen = torch.Generator().manual_seed(0)
    for shape in [(128, 784), (64, 32, 3, 3), (50000, 512), (40, 40)]:
        numel = torch.Size(shape).numel()
        idx = _sample_indices(numel, gen)
        assert len(idx) == _SAMPLE_ELEMENTS == len(set(idx.tolist()))
        assert 0 <= int(idx.min()) and int(idx.max()) < numel
        # Every dimension (rows, input columns, channels, kernel positions) is covered.
        for dim, coords in zip(shape, torch.unravel_index(idx, shape)):
            assert len(set(coords.tolist())) >= min(dim, 12), (shape, dim)
    assert _sample_indices(5, gen).tolist() == [0, 1, 2, 3, 4]


def test_update_ratio_of_an_image_mlp_first_layer_is_not_zero():
    """Linear(784 -> 128) on MNIST-like input whose first column (and whole border) is
    always 0: the first layer learns, and its update ratio must say so."""
    torch.manual_seed(0)
    x, y = _mnist_like()
    assert (x[:, 0] == 0).all()
    model = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
    g, rec, _ = train(model, torch.optim.Adam(model.parameters(), 1e-3), x, y, steps=40,
                      batch=64)
    assert guard_warnings(rec) == [], [str(w) for w in guard_warnings(rec)]
    first = g.param_names.index("0.weight")
    assert 1e-5 < g.layer_update_ratio[first] < 1e-1
