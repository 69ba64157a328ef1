"""data: the first batches -- normalisation, blank or repeated batches, index and
target ranges, broadcasting loss shapes, BatchNorm over a tiny batch."""
import warnings

import pytest
import torch
from torch import nn

from guard import GuardError, TrainingGuard
from guard_helpers import CNN, TinyTransformer, assert_detached, data, guard_warnings, mlp


def _loop(model, batches, *, loss_fn=None, steps=6, guard_kw=None, twice=False, opt=None,
          kwargs_batch=False):
    """Train on ``batches(step) -> (x, y)``; return (guard, data-check warnings, error)."""
    torch.manual_seed(0)
    crit = loss_fn or nn.CrossEntropyLoss()
    opt = opt or torch.optim.SGD(model.parameters(), 0.01)
    kw = dict(loss_fn=crit, check_every=5)
    kw.update(guard_kw or {})
    error = None
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        g = TrainingGuard(model, opt, **kw)
        try:
            with g:
                for step in range(steps):
                    x, y = batches(step)
                    opt.zero_grad()
                    out = model(x=x) if kwargs_batch else model(x)
                    loss = crit(out, y)
                    if twice:   # R-drop style: a second forward of the same batch
                        loss = loss + crit(model(x), y)
                    loss.backward()
                    opt.step()
        except (GuardError, IndexError, RuntimeError) as e:
            error = e
    return g, [w for w in guard_warnings(rec) if w.check == "data"], error


def _shuffled(x, y, batch=32):
    def get(step):
        g = torch.Generator().manual_seed(step)
        idx = torch.randint(0, len(x), (batch,), generator=g)
        return x[idx], y[idx]
    return get


def _causes(warned):
    return [(w.cause, w.step) for w in warned]


# ----------------------------------------------------------------- normalisation
def test_raw_pixels_are_named():
    torch.manual_seed(0)
    x, y = data("img")
    pixels = torch.randint(0, 256, x.shape).float()
    g, warned, err = _loop(CNN(), _shuffled(pixels, y))
    assert _causes(warned) == [("pixel-range", 0)]
    assert warned[0].param == "features.0" and "0-255" in str(warned[0])


def test_uint8_images_cast_in_forward_to_a_flat_mlp_are_named():
    """MNIST-style: uint8 batches, `x.float().flatten(1)` in forward, a Linear first."""
    class Flat(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = mlp(nin=64)

        def forward(self, x):
            return self.net(x.float().flatten(1))
    torch.manual_seed(0)
    x, y = data("img")
    pixels = torch.randint(0, 256, x.shape, dtype=torch.uint8)
    g, warned, err = _loop(Flat(), _shuffled(pixels, y))
    assert [(w.cause, w.param) for w in warned] == [("pixel-range", "net.0")]


def test_small_integer_features_are_fine():
    """Near miss: sklearn's digits (pixel counts 0..16) -- integral, but on a small scale."""
    torch.manual_seed(0)
    x, y = data()
    counts = torch.randint(0, 17, x.shape).float()
    g, warned, err = _loop(mlp(), _shuffled(counts, y))
    assert warned == []


def test_pixels_divided_in_forward_are_fine():
    """Near miss: the raw batch holds 0-255, but the model normalises it itself."""
    class Scaled(CNN):
        def forward(self, x):
            return super().forward(x / 255.0 - 0.5)
    torch.manual_seed(0)
    x, y = data("img")
    pixels = torch.randint(0, 256, x.shape).float()
    g, warned, err = _loop(Scaled(), _shuffled(pixels, y))
    assert warned == [] and err is None


def test_unit_range_images_are_fine():
    """Near miss: ToTensor() without Normalize ([0, 1]) is common and trains."""
    torch.manual_seed(0)
    x, y = data("img")
    g, warned, err = _loop(CNN(), _shuffled(torch.rand(x.shape), y))
    assert warned == []


def test_unscaled_tabular_features_are_named():
    torch.manual_seed(0)
    x, y = data()
    x = x * 300 + 2000   # e.g. years and prices as raw numbers
    g, warned, err = _loop(mlp(), _shuffled(x, y))
    assert _causes(warned) == [("not-normalised", 0)]


def test_batchnorm_first_normalises_unscaled_features():
    """Near miss: a BatchNorm before the first weight layer standardises the input."""
    torch.manual_seed(0)
    x, y = data()
    model = nn.Sequential(nn.BatchNorm1d(20), mlp())
    g, warned, err = _loop(model, _shuffled(x * 300 + 2000, y))
    assert warned == []


# ------------------------------------------------------------ blank / repeated
def test_blank_batch_is_named():
    torch.manual_seed(0)
    x, y = data("img")
    g, warned, err = _loop(CNN(), lambda s: (torch.zeros(32, 1, 8, 8), y[s:s + 32]))
    # one finding: blank batches are also "the same batch", which would only repeat it
    assert _causes(warned) == [("constant-batch", 0)]


def test_one_sample_repeated_in_the_batch_is_named():
    torch.manual_seed(0)
    x, y = data()
    g, warned, err = _loop(mlp(), lambda s: (x[s:s + 1].expand(32, -1), y[s:s + 1].expand(32)))
    assert _causes(warned) == [("identical-samples", 0)]


def test_constant_feature_column_is_fine():
    """Near miss: a constant column (a bias feature of ones) in a varied batch."""
    torch.manual_seed(0)
    x, y = data()
    x[:, 0] = 1.0
    g, warned, err = _loop(mlp(), _shuffled(x, y))
    assert warned == []


def test_the_same_batch_every_step_is_named():
    torch.manual_seed(0)
    x, y = data()
    g, warned, err = _loop(mlp(), lambda s: (x[:32], y[:32]))
    assert _causes(warned) == [("same-batch", 2)]
    assert "steps 0, 1, 2" in str(warned[0])


def test_same_batch_can_be_switched_off_for_a_deliberate_overfit():
    torch.manual_seed(0)
    x, y = data()
    g, warned, err = _loop(mlp(), lambda s: (x[:32], y[:32]),
                           guard_kw=dict(checks={"data": {"same_batch": False}}))
    assert warned == []


def test_full_batch_lbfgs_is_not_a_repeat():
    """Near miss: L-BFGS trains on the full batch every step by design."""
    torch.manual_seed(0)
    x, y = data()
    model = mlp()
    crit = nn.CrossEntropyLoss()
    opt = torch.optim.LBFGS(model.parameters(), lr=0.5, max_iter=4)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        with TrainingGuard(model, opt, loss_fn=crit) as g:
            for step in range(4):
                def closure():
                    opt.zero_grad()
                    loss = crit(model(x), y)
                    loss.backward()
                    return loss
                opt.step(closure)
    assert [w for w in guard_warnings(rec) if w.check == "data"] == []
    assert len(g.history) == 4


def test_two_forwards_of_one_batch_per_step_are_not_a_repeat():
    """Near miss: R-drop / consistency losses run the same batch twice in one step."""
    torch.manual_seed(0)
    x, y = data()
    g, warned, err = _loop(mlp(), _shuffled(x, y), twice=True)
    assert warned == []


# ------------------------------------------------------------------ embeddings
def test_token_ids_beyond_the_vocabulary_are_named_before_the_lookup():
    torch.manual_seed(0)
    x, y = data("tok")
    model = TinyTransformer(vocab=40)   # the data uses ids 0..49
    g, warned, err = _loop(model, _shuffled(x, y))
    assert [(w.cause, w.param) for w in warned] == [("embedding-index", "emb")]
    assert "num_embeddings=40" in str(warned[0])
    assert isinstance(err, IndexError)   # PyTorch's own error follows the warning


def test_negative_token_ids_raise_in_raise_mode():
    torch.manual_seed(0)
    x, y = data("tok")
    x[:, -1] = -100   # a loss's ignore marker used as an input id
    model = TinyTransformer()
    opt = torch.optim.SGD(model.parameters(), 0.01)
    g, warned, err = _loop(model, _shuffled(x, y), opt=opt,
                           guard_kw=dict(checks={"data": "raise"}))
    assert isinstance(err, GuardError) and err.cause == "embedding-index" and err.step == 0
    assert "negative index -100" in str(err)
    assert_detached(model, opt)


def test_tokens_in_range_with_padding_idx_are_fine():
    torch.manual_seed(0)
    x, y = data("tok")
    x[:, -3:] = 0   # padding
    model = TinyTransformer()
    model.emb = nn.Embedding(50, 32, padding_idx=0)
    g, warned, err = _loop(model, _shuffled(x, y))
    assert warned == [] and err is None


# --------------------------------------------------------------------- targets
def test_labels_counted_from_one_are_named():
    torch.manual_seed(0)
    x, y = data()
    g, warned, err = _loop(mlp(), _shuffled(x, y + 1))   # 1..5 with 5 classes
    assert _causes(warned)[0] == ("target-range", 0)
    assert "class index 5" in str(warned[0])


def test_ignore_index_targets_are_fine():
    torch.manual_seed(0)
    x, y = data()
    y = y.clone()
    y[::7] = -100
    g, warned, err = _loop(mlp(), _shuffled(x, y))
    assert warned == [] and err is None


def test_soft_targets_are_fine():
    torch.manual_seed(0)
    x, y = data()
    soft = torch.softmax(torch.randn(len(y), 5), 1)
    g, warned, err = _loop(mlp(), _shuffled(x, soft))
    assert warned == [] and err is None


def test_bce_targets_outside_unit_range_are_named():
    torch.manual_seed(0)
    x, _ = data()
    y = torch.where(x[:, :1] > 0, 1.0, -1.0)   # SVM-style labels
    g, warned, err = _loop(mlp(ncls=1), _shuffled(x, y), loss_fn=nn.BCEWithLogitsLoss())
    assert _causes(warned) == [("target-range", 0)]


def test_bce_with_label_smoothing_is_fine():
    torch.manual_seed(0)
    x, _ = data()
    y = torch.where(x[:, :1] > 0, 0.95, 0.05)
    g, warned, err = _loop(mlp(ncls=1), _shuffled(x, y), loss_fn=nn.BCEWithLogitsLoss())
    assert warned == []


@pytest.mark.parametrize("loss_fn", [nn.MSELoss(), nn.L1Loss(), nn.SmoothL1Loss()])
def test_regression_shapes_that_broadcast_are_named(loss_fn):
    torch.manual_seed(0)
    x, _ = data()
    y = x[:, 0] * 2   # shape (N,), the model outputs (N, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)   # PyTorch's own size warning
        g, warned, err = _loop(mlp(ncls=1), _shuffled(x, y), loss_fn=loss_fn)
    assert _causes(warned) == [("broadcast-shapes", 0)]
    assert "(32, 1)" in str(warned[0]) and "(32, 32)" in str(warned[0])


def test_regression_with_matching_shapes_is_fine():
    torch.manual_seed(0)
    x, _ = data()
    y = x[:, :1] * 2
    g, warned, err = _loop(mlp(ncls=1), _shuffled(x, y), loss_fn=nn.MSELoss())
    assert warned == []


# ------------------------------------------------------------------ batch norm
def test_batchnorm_over_a_tiny_batch_is_named():
    torch.manual_seed(0)
    x, y = data("img")
    g, warned, err = _loop(CNN(), _shuffled(x, y, batch=4))
    assert _causes(warned) == [("small-batch-batchnorm", 0)]
    assert warned[0].param == "features.1"


def test_batchnorm_in_eval_mode_with_a_tiny_batch_is_fine():
    """Near miss: frozen BatchNorm (eval mode), as in detection fine-tuning."""
    torch.manual_seed(0)
    x, y = data("img")
    model = CNN()
    model.features[1].eval()
    model.train = lambda mode=True: model   # keep it frozen
    g, warned, err = _loop(model, _shuffled(x, y, batch=4))
    assert warned == []


# -------------------------------------------------------------- the contract
def test_hooks_are_gone_after_the_inspected_steps():
    torch.manual_seed(0)
    x, y = data("tok")
    model = TinyTransformer()
    crit = nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), 0.01)
    with TrainingGuard(model, opt, loss_fn=crit, checks={"init": "off"}) as g:
        for step in range(5):
            opt.zero_grad()
            crit(model(x[:16]), y[:16]).backward()
            opt.step()
        # after 3 steps nothing of the data check is left on the model or the loss
        assert g._data_probe._handles == []
        assert not model.emb._forward_pre_hooks and not model._forward_pre_hooks
    assert_detached(model, opt)


def test_validation_batches_are_not_inspected():
    torch.manual_seed(0)
    x, y = data()
    model = mlp()
    crit = nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), 0.01)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        with TrainingGuard(model, opt, loss_fn=crit) as g:
            for step in range(4):
                opt.zero_grad()
                crit(model(x[step * 32:(step + 1) * 32]), y[step * 32:(step + 1) * 32]).backward()
                opt.step()
                with torch.no_grad():   # the same validation batch each time
                    crit(model(torch.zeros(8, 20)), y[:8])
    assert guard_warnings(rec) == []


@pytest.mark.parametrize("seed", range(3))
def test_healthy_runs_over_seeds_are_silent(seed):
    torch.manual_seed(seed)
    for kind, model in (("vec", mlp()), ("img", CNN()), ("tok", TinyTransformer())):
        x, y = data(kind, seed=seed)
        g, warned, err = _loop(model, _shuffled(x, y))
        assert warned == [] and err is None, kind


class _KwargsLM(nn.Module):
    """A transformers-style call: model(input_ids=..., attention_mask=...)."""

    def __init__(self):
        super().__init__()
        self.lm = TinyTransformer()

    def forward(self, input_ids=None, attention_mask=None):
        return self.lm(input_ids * attention_mask)


def test_keyword_batches_with_an_all_ones_mask_are_fine():
    """Near miss: the attention mask is identical in every sample; it is not the input."""
    torch.manual_seed(0)
    x, y = data("tok")
    model = _KwargsLM()
    crit = nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), 0.01)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        with TrainingGuard(model, opt, loss_fn=crit) as g:
            for step in range(5):
                xb, yb = x[step * 16:(step + 1) * 16], y[step * 16:(step + 1) * 16]
                opt.zero_grad()
                crit(model(input_ids=xb, attention_mask=torch.ones_like(xb)), yb).backward()
                opt.step()
    assert [w for w in guard_warnings(rec) if w.check == "data"] == []


def test_an_input_the_check_cannot_measure_does_not_stop_training():
    """A complex-valued batch: the data check looks away, training goes on."""
    class Complex(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(20, 5)

        def forward(self, z):
            return self.lin(z.abs())
    torch.manual_seed(0)
    x, y = data()
    z = torch.polar(x.abs() + 0.1, x)
    g, warned, err = _loop(Complex(), _shuffled(z, y))
    assert err is None and len(g.history) == 6
