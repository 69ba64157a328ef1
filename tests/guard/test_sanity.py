"""Tests of guard.sanity: overfit_one_batch and lr_find."""
import copy
import math
import sys

import pytest

torch = pytest.importorskip("torch")
np = pytest.importorskip("numpy")
from torch import nn  # noqa: E402

from guard.sanity import LRFinderResult, OverfitResult, lr_find, overfit_one_batch  # noqa: E402


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run ~10x faster on one thread than on two contended ones; seeds fixed."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


def mlp(n_in=20, n_out=5, hidden=64):
    return nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, n_out))


def class_batch(n=32, n_in=20, classes=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, n_in, generator=g), torch.randint(0, classes, (n,), generator=g)


# ---------------------------------------------------------------------------
# restoring: a model with buffers, modes, frozen parts, gradients, a replaced buffer
# ---------------------------------------------------------------------------


class Counter(nn.Module):
    """Counts forward calls in a buffer it *replaces* (not updates in place)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def forward(self, x):
        self.calls = self.calls + 1
        return x


def rich_model():
    model = nn.Sequential(nn.Linear(20, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.1),
                          Counter(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 5))
    model[3].eval()                     # a submodule in eval mode inside a train-mode model
    model[5].bias.requires_grad_(False)  # a frozen tensor
    model(torch.randn(8, 20)).sum().backward()   # existing gradients and BN statistics
    return model


def capture(model, optimizer=None):
    """Everything that must come back, as independent copies, plus the objects themselves."""
    rec = {
        "tensors": {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()},
        "objects": dict(model.state_dict(keep_vars=True)),
        "grads": {n: (p.grad, None if p.grad is None else p.grad.clone())
                  for n, p in model.named_parameters()},
        "modes": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
    }
    if optimizer is not None:
        rec["opt_groups"] = [{k: v for k, v in g.items() if k != "params"}
                             for g in copy.deepcopy(optimizer.param_groups)]
        rec["opt_state"] = {id(p): (s, {k: (v, v.clone() if torch.is_tensor(v) else v)
                                        for k, v in s.items()})
                            for p, s in optimizer.state.items()}
        rec["opt_called"] = getattr(optimizer, "_opt_called", "missing")
    return rec


def assert_restored(model, rec, optimizer=None):
    now = model.state_dict(keep_vars=True)
    assert now.keys() == rec["tensors"].keys()
    for k, v in rec["tensors"].items():
        assert now[k] is rec["objects"][k], f"{k} is a different object"
        assert torch.equal(now[k].detach(), v), f"{k} changed"
    for n, p in model.named_parameters():
        grad, value = rec["grads"][n]
        if grad is None:
            assert p.grad is None, n
        else:
            assert p.grad is grad and torch.equal(p.grad, value), n
    assert [m.training for m in model.modules()] == rec["modes"]
    assert [p.requires_grad for p in model.parameters()] == rec["requires_grad"]
    if optimizer is not None:
        assert [{k: v for k, v in g.items() if k != "params"}
                for g in optimizer.param_groups] == rec["opt_groups"]
        assert {id(p) for p in optimizer.state} == set(rec["opt_state"])
        for p, s in optimizer.state.items():
            entry, values = rec["opt_state"][id(p)]
            assert s is entry and s.keys() == values.keys()
            for k, (obj, value) in values.items():
                if torch.is_tensor(obj):
                    assert s[k] is obj and torch.equal(s[k], value), k
                else:
                    assert s[k] == value, k
        assert getattr(optimizer, "_opt_called", "missing") == rec["opt_called"]


def trained_sgd(model, steps=3, **kw):
    """An SGD optimizer with momentum state, as a training loop would leave it."""
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad],
                          lr=0.05, momentum=0.9, **kw)
    device = next(model.parameters()).device
    x, y = (t.to(device) for t in class_batch(16))
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model(x).sum().backward()   # leave gradients behind too
    return opt


# ---------------------------------------------------------------------------
# overfit_one_batch
# ---------------------------------------------------------------------------


def test_overfit_passes_a_healthy_model():
    result = overfit_one_batch(mlp(), class_batch(16), nn.CrossEntropyLoss())
    assert isinstance(result, OverfitResult)
    assert result.passed and bool(result)
    assert result.final_loss <= result.target < result.initial_loss
    assert result.target == pytest.approx(max(0.01, 0.01 * result.initial_loss))
    assert result.steps < 500 and result.causes == []
    assert "PASS" in str(result)


def test_overfit_fails_softmax_before_ce_with_frozen_head_and_names_the_causes():
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 5), nn.Softmax(dim=1))
    model[2].requires_grad_(False)
    result = overfit_one_batch(model, class_batch(16), nn.CrossEntropyLoss(), max_steps=300)
    assert not result.passed and not result
    assert result.steps == 300
    assert result.best_loss > 0.5     # softmax caps how low cross-entropy can go
    assert result.frozen == ["2.weight", "2.bias"]
    text = str(result)
    assert "FAIL" in text and "2.weight, 2.bias" in text and "frozen" in text
    assert "outputs are probabilities" in text and "cross-entropy" in text


def test_overfit_names_softmax_before_nll_but_not_log_softmax():
    def model(last):
        return nn.Sequential(nn.Linear(20, 8), nn.ReLU(), nn.Linear(8, 5), last)

    batch = class_batch(16)
    wrong = overfit_one_batch(model(nn.Softmax(dim=1)), batch, nn.NLLLoss(), max_steps=30)
    assert not wrong.passed and "NLLLoss expects log-probabilities" in str(wrong)
    assert "loss is negative" in str(wrong) and wrong.steps == 0
    right = overfit_one_batch(model(nn.LogSoftmax(dim=1)), batch, nn.NLLLoss(), max_steps=30)
    assert not right.passed                       # 30 steps are too few, for another reason
    assert "probabilities" not in str(right) and "still falling" in str(right)


def test_overfit_reports_a_plateau():
    x = torch.randn(1, 20).repeat(16, 1)          # identical inputs ...
    y = torch.arange(16) % 2                      # ... with conflicting labels: floor log 2
    result = overfit_one_batch(mlp(), (x, y), nn.CrossEntropyLoss(), lr=0.01, max_steps=200)
    assert not result.passed and result.best_loss == pytest.approx(math.log(2), abs=1e-3)
    assert "stopped improving at about 0.6931" in str(result)
    assert "still falling" not in str(result) and "frozen" not in str(result)


def test_overfit_fails_with_zero_learning_rate():
    result = overfit_one_batch(mlp(), class_batch(16), nn.CrossEntropyLoss(), lr=0.0,
                               max_steps=50)
    assert not result.passed
    assert result.final_loss == result.initial_loss
    text = str(result)
    assert "learning rate is 0" in text
    assert "never changed: 0.weight, 0.bias, 2.weight, 2.bias" in text
    assert "frozen" not in text and "softmax" not in text


def test_overfit_reports_nan_loss_and_unused_parameters():
    class Unused(nn.Module):
        def __init__(self):
            super().__init__()
            self.used = nn.Linear(20, 5)
            self.unused = nn.Linear(20, 5)

        def forward(self, x):
            return self.used(x)

    x, y = class_batch(16)
    result = overfit_one_batch(Unused(), (x, y), nn.CrossEntropyLoss(), lr=0.0, max_steps=20)
    assert "no gradient" in str(result) and "unused.weight, unused.bias" in str(result)

    x[3, 4] = float("nan")
    result = overfit_one_batch(mlp(), (x, y), nn.CrossEntropyLoss())
    assert not result.passed and len(result.losses) == 1 and math.isnan(result.final_loss)
    assert "nan at step 0" in str(result)


def test_overfit_optimizer_factory_dict_batch_and_forward_hook():
    x, y = class_batch(16)
    made = []

    def factory(params):
        made.append(params)
        return torch.optim.SGD(params, lr=0.5, momentum=0.9)

    result = overfit_one_batch(mlp(), {"inputs": x, "labels": y}, nn.CrossEntropyLoss(),
                               optimizer=factory)
    assert result.passed and len(made) == 1 and len(made[0]) == 4

    def forward(model, batch):
        return nn.functional.cross_entropy(model(batch["img"]), batch["cls"])

    assert overfit_one_batch(mlp(), {"img": x, "cls": y}, forward=forward).passed
    with pytest.raises(TypeError, match="exactly one"):
        overfit_one_batch(mlp(), (x, y), nn.CrossEntropyLoss(), forward=forward)
    with pytest.raises(TypeError, match="target keys"):
        overfit_one_batch(mlp(), {"img": x, "cls": y}, nn.CrossEntropyLoss())


def test_overfit_restores_model_and_a_given_optimizer():
    model = rich_model()
    opt = trained_sgd(model)
    rec = capture(model, opt)
    result = overfit_one_batch(model, class_batch(16), nn.CrossEntropyLoss(), optimizer=opt)
    assert result.passed       # it did train the model in between
    assert_restored(model, rec, opt)

    rec = capture(model)
    overfit_one_batch(model, class_batch(16), nn.CrossEntropyLoss(), max_steps=5)
    assert_restored(model, rec)


# ---------------------------------------------------------------------------
# lr_find
# ---------------------------------------------------------------------------


def regression(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1024, 10, generator=g)
    y = x @ torch.randn(10, 1, generator=g) + 0.5 * torch.randn(1024, 1, generator=g)
    torch.manual_seed(seed)
    return x, y, nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 1)), nn.MSELoss()


def classification(seed):
    g = torch.Generator().manual_seed(seed)
    centers = 0.5 * torch.randn(4, 16, generator=g)
    y = torch.randint(0, 4, (1024,), generator=g)
    x = centers[y] + torch.randn(1024, 16, generator=g)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    return x, y, model, nn.CrossEntropyLoss()


PROBLEMS = {"regression": regression, "classification": classification}
OPTIMIZERS = {
    "sgd": lambda params, lr: torch.optim.SGD(params, lr=lr),
    "momentum": lambda params, lr: torch.optim.SGD(params, lr=lr, momentum=0.9),
    "adam": lambda params, lr: torch.optim.Adam(params, lr=lr),
}


def best_fixed_lr(model, make_opt, batches, loss_fn, x, y, steps=20):
    """Brute force, independent of lr_find: the rate whose short run lowers the loss most."""
    grid = 10.0 ** np.arange(-5, 1.01, 0.25)
    final = []
    for lr in grid:
        m = copy.deepcopy(model)
        opt = make_opt(m.parameters(), lr)
        for i in range(steps):
            xb, yb = batches[i % len(batches)]
            opt.zero_grad()
            loss_fn(m(xb), yb).backward()
            opt.step()
        with torch.no_grad():
            value = float(loss_fn(m(x), y))
        final.append(value if math.isfinite(value) else math.inf)
    return float(grid[int(np.argmin(final))])


@pytest.mark.parametrize("problem,opt_name,seed", [
    ("regression", "sgd", 1),        # noisy batches: a neighbour-to-neighbour slope picks ~1e-6
    ("regression", "adam", 2),
    ("classification", "momentum", 0),
    ("classification", "adam", 3),
])
def test_lr_find_suggestion_lies_where_the_loss_falls_fastest(problem, opt_name, seed):
    x, y, model, loss_fn = PROBLEMS[problem](seed)
    batches = [(x[i:i + 32], y[i:i + 32]) for i in range(0, len(x), 32)]
    make_opt = OPTIMIZERS[opt_name]
    best = best_fixed_lr(model, make_opt, batches, loss_fn, x, y)
    result = lr_find(model, make_opt(model.parameters(), 1e-3), batches, loss_fn)
    assert isinstance(result, LRFinderResult) and result.diverged
    assert result.suggestion is not None
    assert abs(math.log10(result.suggestion / best)) <= 1.0, (result.suggestion, best)
    assert result.minimum is not None and abs(math.log10(result.minimum / best)) <= 1.0


def test_lr_find_schedule_smoothing_and_divergence_stop():
    x, y, model, loss_fn = regression(0)
    batches = [(x[i:i + 32], y[i:i + 32]) for i in range(0, len(x), 32)]
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    quiet = lr_find(model, opt, batches, loss_fn, start_lr=1e-6, end_lr=1e-3, num_iter=30)
    assert not quiet.diverged and len(quiet.lrs) == 30
    assert np.allclose(quiet.lrs, np.geomspace(1e-6, 1e-3, 30))
    average, expected = 0.0, []
    for i, loss in enumerate(quiet.losses):
        average = 0.98 * average + 0.02 * loss
        expected.append(average / (1 - 0.98 ** (i + 1)))
    assert np.allclose(quiet.smoothed, expected)

    loud = lr_find(model, opt, batches, loss_fn, end_lr=100.0)
    assert loud.diverged and len(loud.lrs) < 100
    assert loud.smoothed[-1] > 4 * min(loud.smoothed[:-1])
    assert all(s <= 4 * min(loud.smoothed[:i + 1]) for i, s in enumerate(loud.smoothed[:-1]))
    assert "stopped at lr" in str(loud) and "suggested lr" in str(loud)


def test_lr_find_no_suggestion_when_the_loss_never_falls():
    x, y, model, _ = regression(0)
    flat = lr_find(model, torch.optim.SGD(model.parameters(), lr=0.1), [(x, y)],
                   lambda out, target: (out * 0).sum() + 1.0, num_iter=30)
    assert flat.suggestion is None and "never fell" in str(flat)


def test_lr_find_cycles_short_loaders_and_replays_iterators():
    x, y, model, loss_fn = regression(0)
    batches = [(x[i:i + 32], y[i:i + 32]) for i in range(0, 96, 32)]
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    kw = dict(start_lr=1e-6, end_lr=1e-4, num_iter=20)
    assert len(lr_find(model, opt, batches, loss_fn, **kw).lrs) == 20
    seen = []

    def recording(out, target):
        seen.append(id(target))
        return loss_fn(out, target)

    assert len(lr_find(model, opt, iter(batches), recording, **kw).lrs) == 20
    assert seen == [id(yb) for _, yb in batches] * 6 + [id(batches[0][1]), id(batches[1][1])]
    empty = lr_find(model, opt, [], loss_fn, **kw)
    assert empty.lrs == [] and empty.suggestion is None and "no batch" in str(empty)
    dicts = [{"x": xb, "y": yb} for xb, yb in batches]
    assert len(lr_find(model, opt, dicts, loss_fn, **kw).lrs) == 20


def test_lr_find_restores_model_optimizer_and_hooks():
    model = rich_model()
    opt = trained_sgd(model, nesterov=True)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, 10)   # wraps opt.step, adds _opt_called
    opt.param_groups[0]["lr"] = 0.123
    called = []
    pre = opt.register_step_pre_hook(lambda *a: called.append("pre"))
    post = opt.register_step_post_hook(lambda *a: called.append("post"))
    weight = model[0].weight
    rec = capture(model, opt)
    x, y = class_batch(64)
    batches = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 64, 16)]
    result = lr_find(model, opt, batches, nn.CrossEntropyLoss(), num_iter=40)
    assert len(result.lrs) > 10
    assert_restored(model, rec, opt)
    assert model[0].weight is weight
    assert called == []                      # hooks suspended during the sweep ...
    opt.step()
    assert called == ["pre", "post"]         # ... and back afterwards,
    pre.remove()
    post.remove()                            # their handles still working
    opt.step()
    assert called == ["pre", "post"]
    assert rec["opt_called"] is not True and scheduler.optimizer is opt

    opt.register_step_pre_hook(lambda *a: called.append("again"))
    lr_find(model, opt, batches, nn.CrossEntropyLoss(), end_lr=1e-3, num_iter=10,
            run_optimizer_hooks=True)
    assert called == ["pre", "post"] + ["again"] * 10


def test_restored_when_the_loss_raises_mid_sweep():
    model = rich_model()
    opt = torch.optim.Adam(model.parameters(), lr=0.003)
    opt.param_groups[0]["lr"] = torch.tensor(0.003)     # a tensor lr is refilled in place
    lr_tensor = opt.param_groups[0]["lr"]
    x, y = class_batch(64)
    rec = capture(model, opt)
    calls = []

    def flaky(out, target):
        calls.append(1)
        if len(calls) == 6:
            raise RuntimeError("boom")
        return nn.functional.cross_entropy(out, target)

    with pytest.raises(RuntimeError, match="boom"):
        lr_find(model, opt, [(x, y)], flaky)
    assert len(calls) == 6
    assert opt.state == {}                   # Adam's state, created mid-sweep, is gone
    assert opt.param_groups[0]["lr"] is lr_tensor and float(lr_tensor) == pytest.approx(0.003)
    rec["opt_groups"][0]["lr"] = lr_tensor
    assert_restored(model, rec, opt)

    calls.clear()
    with pytest.raises(RuntimeError, match="boom"):
        overfit_one_batch(model, (x, y), flaky)
    assert_restored(model, rec, opt)


def test_requires_grad_flags_changed_by_a_forward_hook_are_restored():
    x, y, model, loss_fn = regression(0)

    def forward(m, batch):
        m[0].weight.requires_grad_(False)
        m[2].bias.requires_grad_(False)
        return loss_fn(m(batch[0]), batch[1])

    rec = capture(model)
    lr_find(model, torch.optim.SGD(model.parameters(), lr=0.1), [(x, y)], forward=forward,
            num_iter=5)
    assert_restored(model, rec)
    overfit_one_batch(model, (x, y), forward=forward, max_steps=5)
    assert_restored(model, rec)


def test_lazy_modules_are_refused_before_anything_changes():
    with pytest.raises(ValueError, match="lazy"):
        overfit_one_batch(nn.LazyLinear(3), class_batch(4), nn.CrossEntropyLoss())


# ---------------------------------------------------------------------------
# plots
# ---------------------------------------------------------------------------


def test_plots_are_written(tmp_path):
    pytest.importorskip("matplotlib")
    x, y, model, loss_fn = regression(0)
    batches = [(x[i:i + 32], y[i:i + 32]) for i in range(0, len(x), 32)]
    found = lr_find(model, torch.optim.SGD(model.parameters(), lr=0.01), batches, loss_fn)
    fig = found.plot(tmp_path / "lr.png")
    assert (tmp_path / "lr.png").stat().st_size > 0
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any(label.startswith("suggestion") for label in labels)
    fitted = overfit_one_batch(mlp(), class_batch(8), nn.CrossEntropyLoss())
    fitted.plot(tmp_path / "fit.png")
    assert (tmp_path / "fit.png").stat().st_size > 0


def test_plot_without_matplotlib_says_how_to_install(monkeypatch):
    result = LRFinderResult([1e-3], [1.0], [1.0], None, None, False, "done")
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r'pip install "trainlint\[plot\]"'):
        result.plot()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_model_with_cpu_batches():
    model = rich_model().cuda()
    opt = trained_sgd(model)
    rec = capture(model, opt)
    x, y = class_batch(64)
    assert lr_find(model, opt, [(x, y)], nn.CrossEntropyLoss(), num_iter=20).lrs
    assert overfit_one_batch(model, (x, y), nn.CrossEntropyLoss()).losses
    assert_restored(model, rec, opt)
