"""history, report(), to_json(), plot()."""
import json
import sys

import pytest
import torch

from guard_helpers import data, mlp, train


def _run(**kw):
    torch.manual_seed(0)
    model = mlp()
    x, y = data()
    return train(model, torch.optim.Adam(model.parameters(), 1e-3), x, y, steps=25, **kw)


def test_history_records():
    g, rec, _ = _run(guard_kw=dict(max_grad_norm=0.01))
    h = g.history
    assert [r["step"] for r in h] == list(range(25))
    keys = {"step", "loss", "grad_norm", "applied_grad_norm", "update_ratio", "nonfinite",
            "skipped", "scaler_skipped", "spike_skipped", "lr"}
    assert set(h[0]) == keys
    assert all(r["applied_grad_norm"] <= 0.01 + 1e-9 for r in h)
    assert all(r["grad_norm"] > r["applied_grad_norm"] for r in h)


def test_report_mentions_findings_with_remedies():
    g, rec, _ = _run(logit_scale=100.0)
    text = g.report()
    assert "steps: 25" in text and "initial-loss/too-high" in text and "Remedies" in text


def test_to_json(tmp_path):
    g, rec, _ = _run(nan_steps=(3,), guard_kw=dict(on_nonfinite="skip"))
    path = tmp_path / "guard.json"
    g.to_json(path)
    doc = json.loads(path.read_text())
    assert doc["summary"]["skipped_steps"] == 1 and len(doc["history"]) == 25
    assert doc["history"][3]["skipped"] is True and doc["history"][3]["loss"] is None
    assert doc["summary"]["events"][0]["check"] == "finite"
    assert doc["param_names"][0] == "0.weight"


def test_plot(tmp_path):
    pytest.importorskip("matplotlib")
    g, rec, _ = _run()
    g.plot(tmp_path / "guard.png")
    assert (tmp_path / "guard.png").read_bytes()[:4] == b"\x89PNG"


def test_plot_without_matplotlib_is_a_clear_error(tmp_path, monkeypatch):
    g, rec, _ = _run()
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match="trainlint\\[plot\\]"):
        g.plot(tmp_path / "guard.png")


def test_history_inside_the_block_reads_back():
    torch.manual_seed(0)
    model = mlp()
    x, y = data()
    opt = torch.optim.SGD(model.parameters(), 0.1)
    crit = torch.nn.CrossEntropyLoss()
    from guard import TrainingGuard
    with TrainingGuard(model, opt, loss_fn=crit, check_every=100) as g:
        for i in range(3):
            opt.zero_grad()
            crit(model(x[:16]), y[:16]).backward()
            opt.step()
        assert len(g.history) == 3
