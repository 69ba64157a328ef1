"""Tiny models, data and a training loop shared by the guard tests."""
from __future__ import annotations

import warnings
from contextlib import nullcontext

import torch
from torch import nn

from guard import GuardError, GuardWarning, TrainingGuard


def mlp(nin=20, hidden=64, depth=2, ncls=5, act=nn.ReLU):
    layers, d = [], nin
    for _ in range(depth):
        layers += [nn.Linear(d, hidden), act()]
        d = hidden
    return nn.Sequential(*layers, nn.Linear(d, ncls))


class CNN(nn.Module):
    def __init__(self, ncls=5):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.head = nn.Linear(16, ncls)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


class RNN(nn.Module):
    def __init__(self, nin=8, hidden=32, ncls=5, kind=nn.LSTM):
        super().__init__()
        self.rnn = kind(nin, hidden, batch_first=True)
        self.head = nn.Linear(hidden, ncls)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


class TinyTransformer(nn.Module):
    def __init__(self, vocab=50, d=32, ncls=5, tied=False):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.zeros(1, 16, d))
        self.block = nn.TransformerEncoderLayer(d, 4, 64, dropout=0.0, batch_first=True)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, ncls)

    def forward(self, x):
        h = self.block(self.emb(x) + self.pos[:, : x.shape[1]])
        return self.head(self.norm(h).mean(1))


def data(kind="vec", n=256, nin=20, ncls=5, seed=0):
    """A learnable classification task: labels are a function of the inputs."""
    g = torch.Generator().manual_seed(seed)
    if kind == "vec":
        x = torch.randn(n, nin, generator=g)
        y = x[:, :ncls].argmax(1)
    elif kind == "img":
        x = torch.randn(n, 1, 8, 8, generator=g)
        y = x[:, 0, :ncls, :].mean(-1).argmax(1)
    elif kind == "seq":
        x = torch.randn(n, 10, nin, generator=g)
        y = x[:, :, :ncls].mean(1).argmax(1)
    elif kind == "digits":
        # Like sklearn's digits: 8x8 images with pixel values 0..16 (scaled to 0..1),
        # 10 noisy class prototypes, and a first image column that is always blank.
        protos = (torch.rand(10, 64, generator=g) * 16).round()
        y = torch.randint(0, 10, (n,), generator=g)
        x = (protos[y] + 10 * torch.randn(n, 64, generator=g)).clamp(0, 16).round() / 16
        x[:, ::8] = 0
    elif kind == "tok":
        x = torch.randint(0, 50, (n, 12), generator=g)
        y = x[:, 0] % ncls
    else:
        raise ValueError(kind)
    return x, y


def guard_warnings(records):
    return [r.message for r in records if isinstance(r.message, GuardWarning)]


def warning_causes(warnings_):
    """{(check, cause)} of GuardWarnings (as `guard_warnings` returns them)."""
    return {(w.check, w.cause) for w in warnings_}


def assert_detached(model, optimizer):
    """Nothing the guard or a callback registered is left on the model, its parameters
    (the HF callback's post-accumulate-grad hooks) or the optimizer."""
    import torch.optim.optimizer as optim_mod

    for m in model.modules():
        for attr in ("_forward_hooks", "_forward_pre_hooks", "_forward_hooks_with_kwargs",
                     "_forward_hooks_always_called", "_backward_hooks"):
            assert not getattr(m, attr), (m, attr)
    for p in model.parameters():
        assert not getattr(p, "_post_accumulate_grad_hooks", None), p.shape
    assert not optimizer._optimizer_step_pre_hooks
    assert not optimizer._optimizer_step_post_hooks
    assert "step" not in vars(optimizer)
    assert not optim_mod._global_optimizer_pre_hooks
    assert not optim_mod._global_optimizer_post_hooks


def causes(records):
    return {(w.check, w.cause) for w in guard_warnings(records)}


def train(model, opt, x, y, *, steps=60, batch=32, loss_fn=None, guard_kw=None,
          accumulate=1, scheduler=None, nan_steps=(), logit_scale=1.0, autocast=None,
          scaler=None, observe=False, seed=0, expect_error=False):
    """Run a guarded training loop; return (guard, warning records, error or None)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # tiny models: one thread is fastest and stable under load
    try:
        return _train(model, opt, x, y, steps=steps, batch=batch, loss_fn=loss_fn,
                      guard_kw=guard_kw, accumulate=accumulate, scheduler=scheduler,
                      nan_steps=nan_steps, logit_scale=logit_scale, autocast=autocast,
                      scaler=scaler, observe=observe, seed=seed, expect_error=expect_error)
    finally:
        torch.set_num_threads(threads)


def _train(model, opt, x, y, *, steps, batch, loss_fn, guard_kw, accumulate, scheduler,
           nan_steps, logit_scale, autocast, scaler, observe, seed, expect_error):
    torch.manual_seed(seed)
    crit = nn.CrossEntropyLoss() if loss_fn is None else loss_fn
    kw = dict(loss_fn=None if observe else crit, check_every=10)
    kw.update(guard_kw or {})
    error = None
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        g = TrainingGuard(model, opt, **kw)
        try:
            with g:
                for step in range(steps):
                    if step % accumulate == 0:
                        opt.zero_grad()
                    for _ in range(1):
                        idx = torch.randint(0, len(x), (batch,))
                        xb, yb = x[idx].clone(), y[idx]
                        if step in nan_steps:
                            xb.view(-1)[0] = float("nan")
                        ctx = torch.autocast("cpu", dtype=autocast) if autocast else nullcontext()
                        with ctx:
                            out = model(xb) * logit_scale
                            loss = crit(out, yb)
                        if observe:
                            g.observe_loss(loss)
                        loss = loss / accumulate
                        (scaler.scale(loss) if scaler else loss).backward()
                    if (step + 1) % accumulate == 0:
                        if scaler:
                            scaler.step(opt)
                            scaler.update()
                        else:
                            opt.step()
                        if scheduler is not None:
                            scheduler.step()
        except GuardError as e:
            if not expect_error:
                raise
            error = e
    return g, rec, error
