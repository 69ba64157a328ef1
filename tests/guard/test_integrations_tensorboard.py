"""The guard's history as TensorBoard scalars."""
import math
import sys

import pytest
import torch
from torch import nn

from guard import GuardWarning, TrainingGuard
from guard.integrations.tensorboard import HistoryWriter, history_scalars, log_history
from guard_helpers import data, mlp


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _run(steps=12, lr=1e-2, max_grad_norm=1.0, **kw):
    torch.manual_seed(0)
    model, crit = mlp(), nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    x, y = data()
    with TrainingGuard(model, opt, loss_fn=crit, max_grad_norm=max_grad_norm, check_every=4,
                       **kw) as g:
        for k in range(steps):
            i = (k % 8) * 32
            opt.zero_grad()
            crit(model(x[i:i + 32]), y[i:i + 32]).backward()
            opt.step()
    return g


class FakeWriter:
    """Anything with add_scalar works (Lightning's logger.experiment, ...)."""

    def __init__(self):
        self.scalars, self.texts = [], []

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))

    def add_text(self, tag, text, step):
        self.texts.append((tag, text, step))


def test_history_scalars_cover_every_field():
    g = _run()
    triples = history_scalars(g.history)
    tags = {t for t, _, _ in triples}
    assert {"guard/loss", "guard/grad_norm", "guard/applied_grad_norm", "guard/update_ratio",
            "guard/lr", "guard/skipped_steps", "guard/nonfinite_steps",
            "guard/scaler_skipped_steps"} <= tags
    losses = [(v, s) for t, v, s in triples if t == "guard/loss"]
    assert [s for _, s in losses] == list(range(12))
    assert [v for v, _ in losses] == pytest.approx([r["loss"] for r in g.history])
    assert all(math.isfinite(v) for _, v, _ in triples)


def test_skipped_steps_are_counted_cumulatively():
    with pytest.warns(GuardWarning, match="skipped"):
        g = _run(steps=8, lr=1e6, max_grad_norm=None, on_nonfinite="skip",
                 checks={"divergence": "off", "gradient-norm": "off", "update": "off"})
    skipped = sum(r["skipped"] for r in g.history)
    assert skipped >= 1
    counts = [v for t, v, _ in history_scalars(g.history) if t == "guard/skipped_steps"]
    assert counts == sorted(counts) and counts[-1] == skipped


def test_log_history_to_any_writer_and_prefix():
    g = _run()
    w = FakeWriter()
    assert log_history(g, w, prefix="train/guard/") == 12
    assert all(t.startswith("train/guard/") for t, _, _ in w.scalars)
    assert w.texts and "TrainingGuard report" in w.texts[0][1]


def test_history_writer_writes_each_step_once():
    torch.manual_seed(0)
    model, crit = mlp(), nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    x, y = data()
    w = FakeWriter()
    with TrainingGuard(model, opt, loss_fn=crit, check_every=4) as g:
        hw = HistoryWriter(g, w)
        for k in range(10):
            opt.zero_grad()
            crit(model(x[:32]), y[:32]).backward()
            opt.step()
            if k % 3 == 2:
                hw.write()
    hw.close()
    steps = [s for t, _, s in w.scalars if t == "guard/grad_norm"]
    assert steps == list(range(10))


def test_event_files_are_written(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    g = _run()
    log_history(g, tmp_path / "run")
    acc = EventAccumulator(str(tmp_path / "run"))
    acc.Reload()
    assert "guard/loss" in acc.Tags()["scalars"]
    assert len(acc.Scalars("guard/loss")) == 12


def test_a_clear_error_without_tensorboard(monkeypatch, tmp_path):
    # Simulate a missing tensorboard package.
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    g = _run(steps=2)
    with pytest.raises(ImportError, match="pip install tensorboard"):
        log_history(g, tmp_path / "run")
    log_history(g, FakeWriter())   # a writer object needs no tensorboard
