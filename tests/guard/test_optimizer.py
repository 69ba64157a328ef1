"""optimizer: configuration notes on entry (info by default: no warning)."""
import json
import warnings

import pytest
import torch
from torch import nn

from guard import GuardError, TrainingGuard
from guard_helpers import TinyTransformer, data, guard_warnings, mlp


def _enter(model, opt, **kw):
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        with TrainingGuard(model, opt, loss_fn=nn.CrossEntropyLoss(), **kw) as g:
            pass
    return g, guard_warnings(rec)


def _notes(g):
    return [(n["cause"], n["param"]) for n in g._notes]


def test_adam_with_weight_decay_is_a_note_not_a_warning():
    model = mlp()
    g, warned = _enter(model, torch.optim.Adam(model.parameters(), 1e-3, weight_decay=1e-2))
    assert warned == [] and g._events == []
    causes = [c for c, _ in _notes(g)]
    assert causes == ["adam-weight-decay", "decay-on-bias-norm"]
    report = g.report()
    assert "the run looks healthy" in report   # notes are not findings
    assert "[info] optimizer/adam-weight-decay" in report and "AdamW" in report


def test_notes_are_in_the_json_summary(tmp_path):
    model = mlp()
    g, _ = _enter(model, torch.optim.Adam(model.parameters(), 1e-3, weight_decay=1e-2))
    g.to_json(tmp_path / "g.json")
    doc = json.loads((tmp_path / "g.json").read_text())
    assert [n["cause"] for n in doc["summary"]["notes"]] == ["adam-weight-decay",
                                                             "decay-on-bias-norm"]


def test_warn_mode_emits_guard_warnings():
    model = mlp()
    g, warned = _enter(model, torch.optim.Adam(model.parameters(), 1e-3, weight_decay=1e-2),
                       checks={"optimizer": "warn"})
    assert {(w.check, w.cause) for w in warned} == {("optimizer", "adam-weight-decay"),
                                                    ("optimizer", "decay-on-bias-norm")}
    assert g._notes == []


def test_raise_mode_raises_on_entry_and_leaves_nothing_attached():
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), 1e-3, weight_decay=1e-2)
    with pytest.raises(GuardError) as e:
        with TrainingGuard(model, opt, checks={"optimizer": "raise"}):
            pass
    assert e.value.check == "optimizer" and e.value.cause == "adam-weight-decay"
    assert not opt._optimizer_step_pre_hooks


def test_bias_and_norm_decay_names_the_parameters():
    torch.manual_seed(0)
    model = TinyTransformer()
    g, warned = _enter(model, torch.optim.AdamW(model.parameters(), 1e-3, weight_decay=0.1))
    notes = dict(_notes(g))
    assert set(notes) == {"decay-on-bias-norm", "decay-on-embedding"}
    assert notes["decay-on-embedding"] == "emb.weight"
    msg = g._notes[0]["message"]
    assert "norm.weight" in msg or "bias" in msg


def test_the_usual_two_group_recipe_is_silent():
    """Near miss: AdamW with decay on the weight matrices only."""
    torch.manual_seed(0)
    model = TinyTransformer()
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and not n.startswith("emb")]
    rest = [p for n, p in model.named_parameters() if p.dim() < 2 or n.startswith("emb")]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": rest, "weight_decay": 0.0}], 1e-3)
    g, warned = _enter(model, opt)
    assert g._notes == [] and warned == []


@pytest.mark.parametrize("make", [
    lambda ps: torch.optim.Adam(ps, 1e-3),                                   # no decay
    lambda ps: torch.optim.AdamW(ps, 1e-3, weight_decay=0.0),
    lambda ps: torch.optim.Adam(ps, 1e-3, weight_decay=0.0),
])
def test_no_decay_no_note(make):
    model = mlp()
    g, warned = _enter(model, make(model.parameters()))
    assert g._notes == []


def test_decoupled_adam_is_not_called_l2():
    model = nn.Linear(4, 4, bias=False)
    g, _ = _enter(model, torch.optim.Adam(model.parameters(), 1e-3, weight_decay=0.01,
                                          decoupled_weight_decay=True))
    assert g._notes == []


def test_off_mode_records_nothing():
    model = mlp()
    g, _ = _enter(model, torch.optim.Adam(model.parameters(), 1e-3, weight_decay=1e-2),
                  checks={"optimizer": "off"})
    assert g._notes == []
    assert "notes" not in g.report()
