"""The shared facts the data-leakage and selection rules stand on (analysis/splits.py,
containers.py, checkpoints.py, selection.py), with near misses."""

import textwrap

import libcst as cst
import pytest

from trainlint.analysis.checkpoints import holds_optimizer_state, holds_scheduler_state, literal_path, loaded_checkpoint, saved_checkpoints
from trainlint.analysis.containers import dict_entry
from trainlint.analysis.context import FileContext
from trainlint.analysis.names import dotted
from trainlint.analysis.selection import selections
from trainlint.analysis.splits import built_as_heldout_split, is_heldout_name, is_train_name, later_split, scopes, wrapped


def ctx_of(src):
    text = textwrap.dedent(src)
    return FileContext(cst.parse_module(text), text, "train.py")


@pytest.mark.parametrize("name", ["val_ds", "X_test", "testset", "valid_loader", "test_tf", "transform_val", "self.val_transform", "dev_data"])
def test_heldout_names(name):
    assert is_heldout_name(name) and not is_train_name(name)


@pytest.mark.parametrize("name", ["device", "latest", "interval", "validate_args", "train_val_ds", "contest", "evaluator"])
def test_not_heldout_names(name):
    assert not is_heldout_name(name)


def test_train_names():
    assert is_train_name("train_loader") and is_train_name("X_train")
    assert not is_train_name("train_val_split_test")  # names both: neither


def test_heldout_split_keywords():
    def call(src):
        return cst.parse_expression(src)

    assert built_as_heldout_split(call("CIFAR10(root, train=False)"))
    assert built_as_heldout_split(call("load_dataset('imdb', split='test')"))
    assert built_as_heldout_split(call("VOCSegmentation(root, image_set='val')"))
    assert not built_as_heldout_split(call("CIFAR10(root, train=True)"))
    assert not built_as_heldout_split(call("load_dataset('imdb', split='train+test')"))
    assert not built_as_heldout_split(call("CIFAR10(root, train=flag)"))


def test_dict_entry_follows_names_and_literal_keys_only():
    ctx = ctx_of(
        """
        tfs = {"train": make_train(), "val": make_val()}
        a = tfs["val"]
        b = tfs[phase]
        c = tfs["test"]
        """
    )
    subs = {dotted(a.targets[0]): a for a in ctx.facts.assigns if isinstance(a.value, cst.Subscript)}
    found = dict_entry(ctx, subs["a"].value, subs["a"])
    assert [dotted(v.func) for v, _ in found] == ["make_val"]
    assert dict_entry(ctx, subs["b"].value, subs["b"]) == []  # a variable key
    assert dict_entry(ctx, subs["c"].value, subs["c"]) == []  # no such key


def test_split_found_through_wrapping_and_not_for_other_data():
    ctx = ctx_of(
        """
        Z = pca.fit_transform(X)
        ds = TensorDataset(torch.tensor(Z), y)
        tr, va = random_split(ds, [8, 2])
        other_tr, other_va = random_split(other, [8, 2])
        """
    )
    (calls, assigns), = scopes(ctx)
    first = assigns[0]
    names = wrapped(assigns, first.order, {"Z"})
    assert "ds" in names and "other" not in names
    assert later_split(ctx, calls, assigns, first.order, names) == "`random_split`"
    assert later_split(ctx, calls, assigns, first.order, {"nothing"}) is None


def test_saved_checkpoint_keys_include_keys_set_one_by_one_and_callers_dicts():
    ctx = ctx_of(
        """
        import torch
        ckpt = {"model": model.state_dict()}
        ckpt["optimizer"] = opt.state_dict()
        torch.save(ckpt, "a.pt")
        def save(state):
            torch.save(state, "b.pt")
        save({"net": net.state_dict(), "epoch": 3})
        torch.save(model.state_dict(), "weights.pt")
        """
    )
    keys = sorted(sorted(k for k, _, _ in d.entries) for d in saved_checkpoints(ctx))
    assert keys == [["epoch", "net"], ["model", "optimizer"]]
    paths = sorted(literal_path(ctx, d.path, d.save) for d in saved_checkpoints(ctx))
    assert paths == ["a.pt", "b.pt"]


def test_checkpoint_entry_holds_optimizer_state_by_its_value_whatever_the_key():
    ctx = ctx_of(
        """
        import torch
        optG = torch.optim.Adam(netG.parameters())
        sched = torch.optim.lr_scheduler.StepLR(optG, 10)
        torch.save({"G": netG.state_dict(), "optG": optG.state_dict(), "s": sched.state_dict(), "none": None}, "a.pt")
        """
    )
    (saved,) = saved_checkpoints(ctx)
    opt = {k for k, v, s in saved.entries if holds_optimizer_state(ctx, k, v, s)}
    sched = {k for k, v, s in saved.entries if holds_scheduler_state(ctx, k, v, s)}
    assert opt == {"optG"} and sched == {"s"}


def test_loaded_checkpoint_reads():
    ctx = ctx_of(
        """
        import torch
        ck = torch.load(p)
        a = ck["model"]
        b = torch.load(p)["net"]
        c = ck.get("ema")
        d = other["model"]
        """
    )
    got = {dotted(a.targets[0]): loaded_checkpoint(ctx, a.value, a) for a in ctx.facts.assigns if dotted(a.targets[0]) in "abcd"}
    assert got == {"a": ("model", "ck"), "b": ("net", None), "c": ("ema", "ck"), "d": None}


def test_selections_need_a_kept_winner():
    ctx = ctx_of(
        """
        import torch
        for epoch in range(10):
            acc = evaluate(model, loader)
            if acc > best_acc:
                best_acc = acc
                torch.save(model.state_dict(), "best.pt")
            if acc > best_seen:
                best_seen = acc  # only the value itself: not a selection
            is_best = acc > best_acc
            save_checkpoint(state, is_best)
        """
    )
    found = [cst.Module([]).code_for_node(s.comparison) for s in selections(ctx)]
    assert found == ["acc > best_acc", "acc > best_acc"]


def test_accumulating_loops_name_the_batch_loop_a_metric_is_summed_in():
    from trainlint.analysis.accumulators import accumulating_loops

    ctx = ctx_of(
        """
        for epoch in range(3):
            running = 0.0
            for x, y in train_loader:
                loss = crit(model(x), y)
                loss.backward()
                opt.step()
                running += loss.item()
            hits = 0
            for x, y in test_loader:
                hits += 1
            epoch_loss = running / len(train_loader)
            acc = hits / 10
        """
    )
    by_target = {a.targets[0].value: a for a in ctx.facts.assigns if a.op == "=" and isinstance(a.targets[0], cst.Name)}
    for metric, iterated in (("epoch_loss", "train_loader"), ("acc", "test_loader")):
        site = by_target[metric]
        ((name, loop),) = accumulating_loops(ctx, site.value, site)
        assert ctx.module.code_for_node(loop.iter) == iterated
    assert ctx.training.training_accumulator(by_target["epoch_loss"].value, by_target["epoch_loss"]) == "running"
    assert ctx.training.training_accumulator(by_target["acc"].value, by_target["acc"]) is None
