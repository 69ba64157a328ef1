"""GuardCallback inside a Lightning Trainer catches what the plain guard catches."""
import math
import warnings

import pytest
import torch
from torch import nn

pl = pytest.importorskip("lightning.pytorch")

from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from guard import GuardWarning, NonFiniteError, TrainingGuard  # noqa: E402
from guard.integrations.lightning import GuardCallback  # noqa: E402
from guard_helpers import assert_detached, data, guard_warnings, warning_causes  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny models: more threads only add contention on a busy CI machine.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class Classifier(pl.LightningModule):
    def __init__(self, lr=1e-2, logit_scale=1.0, unused=False, fail_at=None):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 5))
        self.criterion = nn.CrossEntropyLoss()
        if unused:   # trainable, in the optimizer, never used in forward
            self.extra = nn.Linear(20, 5)
        self.lr, self.logit_scale, self.fail_at = lr, logit_scale, fail_at
        self.losses = []

    def forward(self, x):
        return self.net(x) * self.logit_scale

    def training_step(self, batch, batch_idx):
        if self.fail_at is not None and batch_idx == self.fail_at:
            raise KeyError("broken batch")
        x, y = batch
        loss = self.criterion(self(x), y)
        self.losses.append(loss.item())
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", self.criterion(self(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)


def _loader(n=128, seed=0):
    x, y = data(n=n, seed=seed)
    return DataLoader(TensorDataset(x, y), batch_size=32)


def _fit(module, callback, val=False, **kw):
    kw.setdefault("max_epochs", 2)
    trainer = pl.Trainer(accelerator="cpu", devices=1, callbacks=[callback], logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, **kw)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        trainer.fit(module, _loader(), _loader(64, seed=1) if val else None)
    _fit.notes = [str(r.message) for r in rec if not isinstance(r.message, GuardWarning)]
    return trainer, guard_warnings(rec)


def _plain_guardwarning_causes(module, steps):
    """The same module and data in a plain loop under TrainingGuard."""
    opt = module.configure_optimizers()
    x, y = data(n=128)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        with TrainingGuard(module, opt, loss_fn=module.criterion):
            for k in range(steps):
                i = (k % 4) * 32
                opt.zero_grad()
                module.criterion(module(x[i:i + 32]), y[i:i + 32]).backward()
                opt.step()
    return warning_causes(guard_warnings(rec))


def test_healthy_run_is_silent_and_detaches():
    module, cb = Classifier(), GuardCallback()
    trainer, ws = _fit(module, cb)
    assert ws == []
    g = cb.guard
    assert g.optimizer is trainer.optimizers[0]
    assert isinstance(g.optimizer, torch.optim.SGD)   # the real optimizer, not Lightning's
    hist = g.history
    assert len(hist) == trainer.global_step == 8
    # The loss of each step is the one training_step returned (not one step late).
    assert [r["loss"] for r in hist] == pytest.approx(module.losses, rel=1e-5)
    assert all(r["grad_norm"] is not None and r["grad_norm"] > 0 for r in hist)
    assert "findings: none" in g.report()
    assert_detached(module, g.optimizer)


def test_nan_from_a_huge_learning_rate_raises_through_fit_and_detaches():
    module, cb = Classifier(lr=1e6), GuardCallback()
    with pytest.raises(NonFiniteError) as err:
        _fit(module, cb)
    assert err.value.check == "finite"
    # "raise": the non-finite update was never applied.
    assert all(torch.isfinite(p).all() for p in module.parameters())
    assert_detached(module, cb.guard.optimizer)


def test_nan_with_skip_keeps_training_and_counts_skipped_steps():
    module, cb = Classifier(lr=1e6), GuardCallback(on_nonfinite="skip", checks={
        "divergence": "off", "gradient-norm": "off", "update": "off"})
    trainer, _ = _fit(module, cb)
    assert trainer.global_step == 8
    assert sum(r["skipped"] for r in cb.guard.history) >= 1
    assert_detached(module, cb.guard.optimizer)


PATHOLOGIES = {
    # kind: (module options, the finding it must give)
    "unused-parameter": (dict(unused=True), ("update", "no-grad")),
    "logits-x100": (dict(logit_scale=100.0), ("initial-loss", "too-high")),
    "exploding": (dict(logit_scale=1e5, lr=1e-9), ("gradient-norm", "exploding")),
}


@pytest.mark.parametrize("kind", sorted(PATHOLOGIES))
def test_same_pathologies_as_the_plain_guard(kind):
    options, expected = PATHOLOGIES[kind]
    cb = GuardCallback()
    _, ws = _fit(Classifier(**options), cb)
    plain = _plain_guardwarning_causes(Classifier(**options), steps=8)
    assert expected in warning_causes(ws)
    assert warning_causes(ws) == plain


def test_an_error_in_training_step_detaches():
    module, cb = Classifier(fail_at=2), GuardCallback()
    with pytest.raises(KeyError):
        _fit(module, cb)
    assert_detached(module, cb.guard.optimizer)
    assert len(cb.guard.history) == 2


class NormRecorder(Classifier):
    """Records the global gradient norm before and after Lightning's clipping."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.before, self.after = [], []

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        self.before.append(_total_norm(grads))
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
        self.after.append(_total_norm(grads))


def _total_norm(grads):
    return float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))


def test_lightning_clips_the_guard_does_not_and_reports_unclipped_norms():
    module, cb = NormRecorder(lr=0.1), GuardCallback(max_grad_norm=5.0)
    trainer, ws = _fit(module, cb, gradient_clip_val=0.05)
    assert any("already clips" in n for n in _fit.notes)
    assert ws == []
    g = cb.guard
    assert cb.clipping == "lightning"
    assert g.max_grad_norm is None and g.clip_value is None
    hist = g.history
    # Lightning clipped (every step's applied norm <= 0.05) ...
    assert len(module.after) == len(hist) and max(module.after) <= 0.05 * (1 + 1e-4)
    # ... and the guard reports the norms from before that clipping as `grad_norm`, the
    # clipped ones the update used as `applied_grad_norm`.
    assert any(b > 0.05 for b in module.before)
    assert [r["grad_norm"] for r in hist] == pytest.approx(module.before, rel=1e-4)
    assert [r["applied_grad_norm"] for r in hist] == pytest.approx(module.after, rel=1e-4)
    clipped = sum(1 for b in module.before if b > 0.05)
    assert f"clipped: {clipped}" in g.report()


class HandClipped(Classifier):
    """Clips in an overridden configure_gradient_clipping, without gradient_clip_val."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.before = []

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        self.before.append(float(torch.nn.utils.clip_grad_norm_(self.parameters(), 0.05)))


def test_clipping_in_configure_gradient_clipping_is_seen_through_too():
    module, cb = HandClipped(lr=0.1), GuardCallback()
    _, ws = _fit(module, cb)
    assert cb.clipping is None   # nobody clips as far as the trainer's settings say
    hist = cb.guard.history
    assert any(b > 0.05 for b in module.before)
    assert [r["grad_norm"] for r in hist] == pytest.approx(module.before, rel=1e-4)


def test_exploding_gradients_are_seen_through_lightnings_clipping():
    module = Classifier(lr=1e-3, logit_scale=1e4)   # huge logits: huge gradients
    cb = GuardCallback(checks={"gradient-norm": {"exploding": 100.0}, "update": "off",
                               "initial-loss": "off", "init": "off"})
    _, ws = _fit(module, cb, gradient_clip_val=1.0)
    assert ("gradient-norm", "exploding") in warning_causes(ws)
    assert max(r["grad_norm"] for r in cb.guard.history) > 100.0


def test_the_guard_clips_when_lightning_does_not():
    module, cb = Classifier(), GuardCallback(max_grad_norm=0.05)
    _fit(module, cb)
    assert cb.clipping == "guard" and cb.guard.max_grad_norm == 0.05
    hist = cb.guard.history
    assert any(r["grad_norm"] > 0.05 for r in hist)
    assert all(r["applied_grad_norm"] <= 0.05 * (1 + 1e-4) for r in hist)


def test_guard_early_stopping_stops_the_trainer():
    # lr 0: the validation loss never improves.
    module = Classifier(lr=0.0)
    cb = GuardCallback(monitor="val_loss", patience=2, checks={"update": "off"})
    trainer, _ = _fit(module, cb, val=True, max_epochs=10)
    assert cb.early_stopping == "guard"
    assert cb.guard.stopped and trainer.should_stop
    assert trainer.current_epoch < 5
    assert cb.guard.best_metric is not None and math.isfinite(cb.guard.best_metric)


def test_lightning_early_stopping_is_not_doubled():
    module = Classifier(lr=0.0)
    es = pl.callbacks.EarlyStopping(monitor="val_loss", patience=3)
    cb = GuardCallback(monitor="val_loss", patience=1, checks={"update": "off"})
    trainer = pl.Trainer(accelerator="cpu", devices=1, callbacks=[cb, es], logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, max_epochs=10)
    with pytest.warns(UserWarning, match="EarlyStopping"):
        trainer.fit(module, _loader(), _loader(64, seed=1))
    assert cb.early_stopping == "lightning"
    assert not cb.guard.stopped              # patience=1 would have stopped at epoch 1
    assert es.stopped_epoch >= 2             # Lightning's patience (3) decided the stop
    assert cb.guard.best_metric is not None  # still tracked


def test_accumulated_gradients_report_the_unscaled_loss():
    module, cb = Classifier(), GuardCallback()
    trainer, ws = _fit(module, cb, accumulate_grad_batches=2)
    assert ws == []
    hist = cb.guard.history
    assert len(hist) == 4     # 8 batches, one optimizer step per 2
    pairs = [(module.losses[i] + module.losses[i + 1]) / 2 for i in range(0, 8, 2)]
    assert [r["loss"] for r in hist] == pytest.approx(pairs, rel=1e-5)


class NoForward(pl.LightningModule):
    """training_step calls the network directly: LightningModule.forward never runs."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 5))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def test_a_module_without_forward_guards_its_network():
    module, cb = NoForward(), GuardCallback()
    _, ws = _fit(module, cb)
    assert ws == []
    # The first-forward checks ran on (and left) the network that training_step calls.
    assert cb.guard.model is module.net
    assert all(r["loss"] is not None for r in cb.guard.history)
    assert_detached(module, cb.guard.optimizer)


def test_pytorch_lightning_package():
    ptl = pytest.importorskip("pytorch_lightning")
    if ptl is pl:
        pytest.skip("only one Lightning package installed")
    from guard.integrations.lightning import PLGuardCallback

    class Module(ptl.LightningModule):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.net = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 5))

        training_step = NoForward.training_step
        configure_optimizers = NoForward.configure_optimizers

    module, cb = Module(), PLGuardCallback()
    trainer = ptl.Trainer(accelerator="cpu", devices=1, max_epochs=1, callbacks=[cb],
                          logger=False, enable_checkpointing=False, enable_progress_bar=False,
                          enable_model_summary=False)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        trainer.fit(module, _loader())
    assert guard_warnings(rec) == []
    assert len(cb.guard.history) == 4
    assert_detached(module, cb.guard.optimizer)


def test_tensorboard_history_in_the_trainers_logger(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    module, cb = Classifier(), GuardCallback(tensorboard=True)
    logger = pl.loggers.TensorBoardLogger(str(tmp_path), name="run", version=0)
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=1, callbacks=[cb],
                         logger=logger, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, _loader())
    logger.experiment.flush()
    acc = EventAccumulator(logger.log_dir)
    acc.Reload()
    assert len(acc.Scalars("guard/grad_norm")) == 4
