"""history, report(), to_json(), plot()."""
import json
import sys
import warnings

import pytest
import torch

from guard import TrainingGuard
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
            "skipped", "scaler_skipped", "lr"}
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


def _labels(ax):
    return ax.get_legend_handles_labels()[1]


def _early_stopped_clipped_run():
    """Clipped steps, a finding (logits 100x too large at init) and early stopping."""
    torch.manual_seed(0)
    model = mlp()
    x, y = data()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    crit = torch.nn.CrossEntropyLoss()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with TrainingGuard(model, opt, loss_fn=crit, max_grad_norm=0.5, patience=2,
                           check_every=10) as g:
            for epoch in range(20):
                for i in range(0, 256, 32):
                    opt.zero_grad()
                    crit(model(x[i:i + 32]) * (100.0 if epoch == 0 and i == 0 else 1.0),
                         y[i:i + 32]).backward()
                    opt.step()
                if g.early_stop(1.0 if epoch > 0 else 0.5):   # best at the first check
                    break
    return g


def test_plot_shows_what_a_practitioner_reads(tmp_path):
    pytest.importorskip("matplotlib")
    g = _early_stopped_clipped_run()
    assert g.stopped and g._events
    fig = g.plot(tmp_path / "guard.png")
    assert (tmp_path / "guard.png").read_bytes()[:4] == b"\x89PNG"
    loss_ax, norm_ax, ratio_ax = fig.axes
    assert all(ax.get_ylabel() for ax in fig.axes) and ratio_ax.get_xlabel() == "optimizer step"
    assert norm_ax.get_yscale() == "log" and ratio_ax.get_yscale() == "log"
    labels = _labels(norm_ax)
    assert "before clipping" in labels and "after clipping (applied)" in labels
    assert any(lbl.startswith("clipped steps") for lbl in labels)
    assert "max_grad_norm = 0.5" in labels
    # The norm before clipping is drawn underneath, wider, in another style: visible
    # wherever the applied norm coincides with it.
    lines = {ln.get_label(): ln for ln in norm_ax.get_lines()}
    before, after = lines["before clipping"], lines["after clipping (applied)"]
    assert before.get_zorder() < after.get_zorder()
    assert before.get_linewidth() > after.get_linewidth()
    assert before.get_linestyle() != after.get_linestyle()
    loss_labels = _labels(loss_ax)
    assert "finding" in loss_labels
    assert any(lbl.startswith("early stop") for lbl in loss_labels)
    assert any(lbl.startswith("best metric") for lbl in loss_labels)
    notes = [t.get_text() for t in loss_ax.texts]
    assert "initial-loss/too-high" in notes
    stop = [ln for ln in loss_ax.get_lines() if ln.get_label().startswith("early stop")][0]
    assert stop.get_xdata()[0] == g._early.stop_step == g.history[-1]["step"]


def test_plot_of_an_unclipped_run_has_no_applied_curve(tmp_path):
    pytest.importorskip("matplotlib")
    g, rec, _ = _run()
    fig = g.plot(tmp_path / "guard.png")
    labels = _labels(fig.axes[1])
    assert "before clipping" in labels and "after clipping (applied)" not in labels
    assert "finding" not in _labels(fig.axes[0])


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
