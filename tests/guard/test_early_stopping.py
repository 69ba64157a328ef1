"""early stopping: patience, min_delta, mode and restore_best (Keras semantics)."""
import torch
from torch import nn

from guard import TrainingGuard


def _guard(**kw):
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), 0.1)
    return model, opt, TrainingGuard(model, opt, **kw)


def _calls(g, metrics, model=None, bump=None):
    out = []
    for i, m in enumerate(metrics):
        if model is not None:
            with torch.no_grad():
                model.weight.fill_(float(i))      # a different model at every check
        out.append(g.early_stop(m))
        if out[-1]:
            break
    return out


def test_min_mode_patience():
    model, opt, g = _guard(patience=2)
    with g:
        out = _calls(g, [1.0, 0.8, 0.9, 0.85, 0.7])
    assert out == [False, False, False, True]
    assert g.stopped and g.best_metric == 0.8


def test_max_mode_with_min_delta():
    model, opt, g = _guard(patience=2, mode="max", min_delta=0.05)
    with g:
        out = _calls(g, [0.5, 0.6, 0.62, 0.64, 0.7])   # +0.02 steps are not improvements
    assert out == [False, False, False, True]
    assert g.best_metric == 0.6


def test_restore_best_min():
    model, opt, g = _guard(patience=2, restore_best=True)
    with g:
        out = _calls(g, [3.0, 1.0, 2.0, 2.5], model=model)
    assert out[-1] is True
    assert torch.all(model.weight == 1.0)      # weights from the best check (index 1)
    assert "best weights restored" in g.report()


def test_restore_best_max_keeps_a_cpu_copy():
    model, opt, g = _guard(patience=1, mode="max", restore_best=True)
    with g:
        out = _calls(g, [0.1, 0.9, 0.5], model=model)
    assert out == [False, False, True]
    assert torch.all(model.weight == 1.0)
    assert all(t.device.type == "cpu" for t in g._early._best_state.values())


def test_patience_none_never_stops_but_tracks_best():
    model, opt, g = _guard()
    with g:
        out = _calls(g, [1.0, 2.0, 3.0, 4.0, 5.0])
    assert not any(out) and g.best_metric == 1.0 and not g.stopped


def test_nan_metric_is_no_improvement():
    model, opt, g = _guard(patience=1)
    with g:
        out = _calls(g, [1.0, float("nan")])
    assert out == [False, True]


def test_tensor_metric():
    model, opt, g = _guard(patience=1)
    with g:
        assert g.early_stop(torch.tensor(1.0)) is False
    assert g.best_metric == 1.0
