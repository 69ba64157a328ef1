"""GuardTrainerCallback inside a transformers Trainer catches what the plain guard
catches. Nothing is downloaded: the models are built locally."""
import os
import warnings

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

import torch  # noqa: E402
from torch import nn  # noqa: E402
from transformers import (EarlyStoppingCallback, PretrainedConfig, PreTrainedModel,  # noqa: E402
                          Trainer, TrainingArguments)

from guard import GuardWarning, NonFiniteError, TrainingGuard  # noqa: E402
from guard.integrations.huggingface import GuardTrainerCallback, guarded_train  # noqa: E402
from guard_helpers import assert_detached, data, guard_warnings, warning_causes  # noqa: E402


@pytest.fixture(autouse=True)
def _offline_one_thread(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class TinyConfig(PretrainedConfig):
    model_type = "guard-tiny"

    def __init__(self, n_in=20, hidden=32, num_labels=5, logit_scale=1.0, unused=False,
                 **kwargs):
        super().__init__(num_labels=num_labels, **kwargs)
        self.n_in, self.hidden = n_in, hidden
        self.logit_scale, self.unused = logit_scale, unused


class TinyClassifier(PreTrainedModel):
    config_class = TinyConfig

    def __init__(self, config):
        super().__init__(config)
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(config.n_in, config.hidden), nn.ReLU(),
                                 nn.Linear(config.hidden, config.num_labels))
        if config.unused:   # trainable, in the optimizer, never used in forward
            self.extra = nn.Linear(config.n_in, config.num_labels)
        self.losses = []

    def _init_weights(self, module):
        pass   # keep PyTorch's default initialisation

    def forward(self, x, labels=None):
        logits = self.net(x) * self.config.logit_scale
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = nn.functional.cross_entropy(logits, labels)
            if self.training:
                self.losses.append(out["loss"].item())
        return out


class PlainModule(nn.Module):
    """No transformers base class: a module returning a dict with "loss"."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 5))

    def forward(self, x, labels=None):
        logits = self.net(x)
        return {"loss": nn.functional.cross_entropy(logits, labels), "logits": logits}


class Data(torch.utils.data.Dataset):
    def __init__(self, n=128, seed=0, fail_at=None):
        self.x, self.y = data(n=n, seed=seed)
        self.fail_at = fail_at

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "labels": self.y[i]}


def _args(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path), report_to=[], use_cpu=True, num_train_epochs=2,
                per_device_train_batch_size=32, per_device_eval_batch_size=64,
                learning_rate=1e-2, save_strategy="no", disable_tqdm=True,
                logging_strategy="no", dataloader_num_workers=0, seed=0)
    base.update(kw)
    return TrainingArguments(**base)


def _train(model, callback, tmp_path, eval_data=False, extra_callbacks=(), **kw):
    trainer = Trainer(model=model, args=_args(tmp_path, **kw), train_dataset=Data(),
                      eval_dataset=Data(64, seed=1) if eval_data else None,
                      callbacks=[callback, *extra_callbacks])
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        trainer.train()
    _train.notes = [str(r.message) for r in rec if not isinstance(r.message, GuardWarning)]
    return trainer, guard_warnings(rec)


def test_healthy_run_is_silent_and_detaches(tmp_path):
    model, cb = TinyClassifier(TinyConfig()), GuardTrainerCallback()
    trainer, ws = _train(model, cb, tmp_path)
    assert ws == []
    g = cb.guard
    # The real torch optimizer, not accelerate's AcceleratedOptimizer.
    assert type(g.optimizer) is torch.optim.AdamW
    assert g.optimizer is trainer.optimizer.optimizer
    hist = g.history
    assert len(hist) == trainer.state.global_step == 8
    # Each step has its own loss (read from the model's output before the step).
    assert [r["loss"] for r in hist] == pytest.approx(model.losses, rel=1e-5)
    assert "findings: none" in g.report()
    assert_detached(model, g.optimizer)


def test_a_plain_module_returning_a_loss_dict_works(tmp_path):
    model, cb = PlainModule(), GuardTrainerCallback()
    trainer, ws = _train(model, cb, tmp_path)
    assert ws == []
    assert len(cb.guard.history) == 8
    assert all(r["loss"] is not None for r in cb.guard.history)
    assert_detached(model, cb.guard.optimizer)


def test_nan_from_a_huge_learning_rate_raises_through_train_and_detaches(tmp_path):
    model, cb = TinyClassifier(TinyConfig()), GuardTrainerCallback()
    with pytest.raises(NonFiniteError) as err:
        _train(model, cb, tmp_path, learning_rate=1e6, optim="sgd", max_grad_norm=0.0)
    assert err.value.check == "finite"
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert_detached(model, cb.guard.optimizer)


def _plain_guardwarning_causes(model, steps=8, lr=1e-2):
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    x, y = data(n=128)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        crit = nn.CrossEntropyLoss()
        with TrainingGuard(model, opt, loss_fn=crit, max_grad_norm=1.0):
            for k in range(steps):
                i = (k % 4) * 32
                opt.zero_grad()
                crit(model(x[i:i + 32])["logits"], y[i:i + 32]).backward()
                opt.step()
    return warning_causes(guard_warnings(rec))


PATHOLOGIES = {
    # kind: (config options, Trainer arguments, the finding it must give)
    "unused-parameter": (dict(unused=True), {}, ("update", "no-grad")),
    "logits-x100": (dict(logit_scale=100.0), {}, ("initial-loss", "too-high")),
    # The Trainer must not clip here: the guard sees gradients after the Trainer's clip.
    "exploding": (dict(logit_scale=1e5), dict(max_grad_norm=0.0, learning_rate=1e-9),
                  ("gradient-norm", "exploding")),
}


@pytest.mark.parametrize("kind", sorted(PATHOLOGIES))
def test_same_pathologies_as_the_plain_guard(kind, tmp_path):
    options, train_args, expected = PATHOLOGIES[kind]
    cb = GuardTrainerCallback()
    _, ws = _train(TinyClassifier(TinyConfig(**options)), cb, tmp_path, **train_args)
    plain = _plain_guardwarning_causes(TinyClassifier(TinyConfig(**options)),
                                lr=train_args.get("learning_rate", 1e-2))
    assert expected in warning_causes(ws)
    assert warning_causes(ws) == plain


class GradNormLog(transformers.TrainerCallback):
    """The Trainer's own log of each step's gradient norm (measured before it clips)."""

    def __init__(self):
        self.norms = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "grad_norm" in logs:
            self.norms.append(float(logs["grad_norm"]))


def test_trainer_clips_the_guard_does_not_and_reports_unclipped_norms(tmp_path):
    model, cb, log = TinyClassifier(TinyConfig()), GuardTrainerCallback(max_grad_norm=5.0), GradNormLog()
    _, ws = _train(model, cb, tmp_path, extra_callbacks=[log], max_grad_norm=0.05,
                   logging_strategy="steps", logging_steps=1)
    assert any("already clips" in n for n in _train.notes)
    assert ws == []
    g = cb.guard
    assert cb.clipping == "trainer"
    assert g.max_grad_norm is None and g.clip_value is None
    hist = g.history
    # The norms before the Trainer's clipping, as the Trainer itself logs them; the
    # update used the clipped ones.
    assert len(log.norms) == len(hist) and any(n > 0.05 for n in log.norms)
    assert [r["grad_norm"] for r in hist] == pytest.approx(log.norms, rel=1e-4)
    assert [r["applied_grad_norm"] for r in hist] == pytest.approx([min(n, 0.05) for n in log.norms], rel=1e-3)


def test_exploding_gradients_are_seen_through_the_trainers_clipping(tmp_path):
    model = TinyClassifier(TinyConfig(logit_scale=1e4))
    cb = GuardTrainerCallback(checks={"gradient-norm": {"exploding": 100.0}, "update": "off",
                                      "initial-loss": "off", "init": "off"})
    _, ws = _train(model, cb, tmp_path, learning_rate=1e-4, max_grad_norm=1.0,
                   gradient_accumulation_steps=2)
    assert ("gradient-norm", "exploding") in warning_causes(ws)
    assert max(r["grad_norm"] for r in cb.guard.history) > 100.0


def test_no_measurement_before_clipping_where_gradients_change_after_backward():
    """fp16 (still scaled), DDP (averaged later), sharded: the guard keeps its own
    measurement (clipped norms) rather than report wrong ones."""
    from types import SimpleNamespace

    cb = GuardTrainerCallback()
    cb.guard = SimpleNamespace(_sharded=False)
    assert cb._gradients_final_after_backward(SimpleNamespace(fp16=False, world_size=1))
    assert not cb._gradients_final_after_backward(SimpleNamespace(fp16=True, world_size=1))
    assert not cb._gradients_final_after_backward(SimpleNamespace(fp16=False, world_size=2))
    cb.guard = SimpleNamespace(_sharded=True)
    assert not cb._gradients_final_after_backward(SimpleNamespace(fp16=False, world_size=1))


def test_the_guard_clips_when_the_trainer_does_not(tmp_path):
    model, cb = TinyClassifier(TinyConfig()), GuardTrainerCallback(max_grad_norm=0.05)
    _train(model, cb, tmp_path, max_grad_norm=0.0)
    assert cb.clipping == "guard" and cb.guard.max_grad_norm == 0.05
    hist = cb.guard.history
    assert any(r["grad_norm"] > 0.05 for r in hist)
    assert all(r["applied_grad_norm"] <= 0.05 * (1 + 1e-4) for r in hist)


def test_guard_early_stopping_stops_the_trainer(tmp_path):
    model = TinyClassifier(TinyConfig())
    cb = GuardTrainerCallback(patience=2, checks={"update": "off"})
    trainer, _ = _train(model, cb, tmp_path, eval_data=True, learning_rate=0.0,
                        num_train_epochs=10, eval_strategy="epoch")
    assert cb.early_stopping == "guard" and cb.guard.stopped
    assert trainer.state.global_step < 10 * 4
    assert cb.guard.best_metric is not None


def test_trainer_early_stopping_is_not_doubled(tmp_path):
    model = TinyClassifier(TinyConfig())
    cb = GuardTrainerCallback(patience=1, checks={"update": "off"})
    es = EarlyStoppingCallback(early_stopping_patience=3)
    trainer, _ = _train(model, cb, tmp_path, eval_data=True, extra_callbacks=[es],
                        learning_rate=0.0, num_train_epochs=10, eval_strategy="epoch",
                        save_strategy="epoch", load_best_model_at_end=True,
                        metric_for_best_model="eval_loss", save_total_limit=1)
    assert any("EarlyStoppingCallback" in n for n in _train.notes)
    assert cb.early_stopping == "trainer"
    assert not cb.guard.stopped
    assert trainer.state.global_step >= 3 * 4   # the Trainer's patience decided
    assert cb.guard.best_metric is not None


def test_an_error_in_forward_detaches_without_on_train_end(tmp_path):
    class Failing(TinyClassifier):
        calls = 0

        def forward(self, x, labels=None):
            Failing.calls += 1
            if Failing.calls == 3:
                raise KeyError("broken forward")
            return super().forward(x, labels)

    model, cb = Failing(TinyConfig()), GuardTrainerCallback()
    with pytest.raises(KeyError):
        _train(model, cb, tmp_path)
    assert_detached(model, cb.guard.optimizer)
    assert len(cb.guard.history) == 2


def test_guarded_train_detaches_when_the_data_loader_fails(tmp_path):
    class Broken(Data):
        def __getitem__(self, i):
            if i >= 64:
                raise KeyError("broken sample")
            return super().__getitem__(i)

    model = TinyClassifier(TinyConfig())
    trainer = Trainer(model=model, args=_args(tmp_path, dataloader_drop_last=False),
                      train_dataset=Broken())
    with pytest.raises(KeyError):
        guarded_train(trainer)
    cb = next(c for c in trainer.callback_handler.callbacks
              if isinstance(c, GuardTrainerCallback))
    assert_detached(model, cb.guard.optimizer)


def test_gradient_accumulation_one_record_per_step(tmp_path):
    model, cb = TinyClassifier(TinyConfig()), GuardTrainerCallback()
    trainer, ws = _train(model, cb, tmp_path, gradient_accumulation_steps=2)
    assert ws == []
    hist = cb.guard.history
    assert len(hist) == trainer.state.global_step == 4
    pairs = [(model.losses[i] + model.losses[i + 1]) / 2 for i in range(0, 8, 2)]
    assert [r["loss"] for r in hist] == pytest.approx(pairs, rel=1e-5)


def test_tensorboard_history_in_a_log_dir(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    model, cb = TinyClassifier(TinyConfig()), GuardTrainerCallback(tensorboard=tmp_path / "tb")
    _train(model, cb, tmp_path / "out")
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert len(acc.Scalars("guard/loss")) == 8
