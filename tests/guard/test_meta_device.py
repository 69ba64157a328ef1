"""A model on the meta device (deferred initialisation): the guard enters, notes what
it cannot measure, and measures once the model is materialised in place."""
import warnings

import torch
from torch import nn

from guard import TrainingGuard
from guard_helpers import assert_detached, guard_warnings


def _meta_mlp():
    with torch.device("meta"):
        return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))


def _steps(model, opt, crit, n, device="cpu"):
    for _ in range(n):
        x = torch.randn(16, 8, device=device)
        y = torch.randint(0, 3, (16,), device=device)
        opt.zero_grad()
        crit(model(x), y).backward()
        opt.step()


def test_entering_with_a_meta_model_notes_instead_of_crashing():
    model = _meta_mlp()
    opt = torch.optim.SGD(model.parameters(), 0.1)
    crit = nn.CrossEntropyLoss()
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        with TrainingGuard(model, opt, loss_fn=crit) as g:
            _steps(model, opt, crit, 3, device="meta")   # a dry run: shapes only
    assert guard_warnings(rec) == []
    assert g.step == 3 and g.history == []
    report = g.report()
    assert "meta device" in report and "0.weight" in report
    assert "looks healthy" not in report
    assert_detached(model, opt)


def test_a_model_materialised_in_place_is_measured_from_then_on():
    torch.manual_seed(0)
    model = _meta_mlp()
    opt = torch.optim.SGD(model.parameters(), 0.1)
    crit = nn.CrossEntropyLoss()
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        with TrainingGuard(model, opt, loss_fn=crit, check_every=5) as g:
            _steps(model, opt, crit, 2, device="meta")
            # With swapping on, to_empty() keeps the parameter objects (the optimizer's
            # too): the model is materialised in place.
            swap = torch.__future__.get_swap_module_params_on_conversion()
            torch.__future__.set_swap_module_params_on_conversion(True)
            try:
                model.to_empty(device="cpu")
            finally:
                torch.__future__.set_swap_module_params_on_conversion(swap)
            for m in model:
                if isinstance(m, nn.Linear):
                    m.reset_parameters()
            _steps(model, opt, crit, 12)
    assert guard_warnings(rec) == [], [str(w) for w in guard_warnings(rec)]
    assert [r["step"] for r in g.history] == list(range(2, 14))
    assert all(r["grad_norm"] is not None and r["grad_norm"] > 0 for r in g.history)


def test_a_real_model_has_no_note():
    model = nn.Linear(8, 3)
    opt = torch.optim.SGD(model.parameters(), 0.1)
    with TrainingGuard(model, opt) as g:
        pass
    assert g.notes == [] and "note:" not in g.report()
