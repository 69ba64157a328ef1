"""The guard against its peers on the same pathological and healthy runs.

Peers (PyPI): ``torch-audit`` (Auditor: data, optimizer, gradient and
activation rules TA1xx-TA5xx), ``stabilityguard`` (GuardedOptimizer: per-layer
gradient-norm spikes against an EMA, NaN/Inf; skip/rollback/raise) and
``torchmortem`` (Autopsy: a post-mortem of collected statistics). Each run is
one small CPU training loop, written once and wrapped the way each tool asks:
the guard as a context manager, torch-audit through ``Auditor.forward /
backward / optimizer_step`` (audit every step), StabilityGuard as the
optimizer wrapper (``spike_threshold=10``), torchmortem with ``Autopsy`` and
``autopsy.step(loss=...)``.

What a tool "says" is every warning-or-worse finding (the guard: warnings,
errors and its info notes; torch-audit: WARN/ERROR/FATAL findings;
StabilityGuard: spikes/skips; torchmortem: WARNING/CRITICAL findings). A
pathological run counts as *caught* when the tool names the pathology (the
per-tool keywords of the scenario); a healthy run counts as a *false alarm* when
the tool says anything (torch-audit's TA2xx hardware/performance hints are listed
but not counted). Runs that crash in PyTorch itself (an index out of
range) count as caught only when the tool spoke before the crash.

Not part of the test suite (the peers are not dependencies). Run by hand in an
environment where the peers are installed next to torch:

    pip install torch-audit stabilityguard torchmortem
    python benchmarks/guard_vs_peers.py [--json out.json] [--only NAME]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from guard import GuardError, GuardWarning, TrainingGuard  # noqa: E402


# ------------------------------------------------------------------- models, data
def mlp(nin=20, hidden=64, depth=2, ncls=5, act=nn.ReLU):
    layers, d = [], nin
    for _ in range(depth):
        layers += [nn.Linear(d, hidden), act()]
        d = hidden
    return nn.Sequential(*layers, nn.Linear(d, ncls))


class CNN(nn.Module):
    def __init__(self, ncls=5, bn=True):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8) if bn else nn.Identity(), nn.ReLU(),
            nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.head = nn.Linear(16, ncls)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


class TinyLM(nn.Module):
    def __init__(self, vocab=50, d=32, ncls=5):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.block = nn.TransformerEncoderLayer(d, 4, 64, dropout=0.0, batch_first=True)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, ncls)

    def forward(self, x):
        return self.head(self.norm(self.block(self.emb(x))).mean(1))


def vec_data(n=512, nin=20, ncls=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, nin, generator=g)
    return x, x[:, :ncls].argmax(1)


def img_data(n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 8, 8, generator=g)          # [0, 1], as ToTensor() gives
    return x, x[:, 0, :5, :].mean(-1).argmax(1)


def tok_data(n=256, vocab=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, vocab, (n, 12), generator=g)
    return x, x[:, 0] % 5


def sampler(x, y, batch=32, seed=0):
    def get(step):
        g = torch.Generator().manual_seed(seed * 100003 + step)
        idx = torch.randint(0, len(x), (batch,), generator=g)
        return x[idx], y[idx]
    return get


@dataclass
class Scenario:
    name: str
    make: Callable[[], tuple]        # -> (model, optimizer, loss_fn, batches(step) -> (x, y))
    steps: int = 150
    clip: Optional[float] = None     # max_grad_norm (the guard) / clip_grad_norm_ (the peers)
    healthy: bool = False
    # Per tool: substrings of its labels that name this pathology.
    keys: Dict[str, List[str]] = field(default_factory=dict)


def _seeded(seed, fn):
    torch.manual_seed(seed)
    return fn()


def scenarios() -> List[Scenario]:
    S = []
    for seed in range(3):
        S.append(Scenario(f"healthy-mlp-adam-s{seed}", lambda s=seed: _seeded(s, lambda: (
            (m := mlp()), torch.optim.Adam(m.parameters(), 1e-3), nn.CrossEntropyLoss(),
            sampler(*vec_data(seed=s), seed=s))), healthy=True, clip=1.0))
        S.append(Scenario(f"healthy-cnn-adamw-s{seed}", lambda s=seed: _seeded(s, lambda: (
            (m := CNN()), torch.optim.AdamW(m.parameters(), 3e-3, weight_decay=0.0),
            nn.CrossEntropyLoss(), sampler(*img_data(seed=s), seed=s))), healthy=True))
        S.append(Scenario(f"healthy-lm-adamw-groups-s{seed}", lambda s=seed: _seeded(s, lambda: (
            (m := TinyLM()), torch.optim.AdamW(
                # the usual recipe: decay on weight matrices, not on 1-D params or embeddings
                [{"params": [p for n, p in m.named_parameters()
                             if p.dim() >= 2 and not n.startswith("emb")], "weight_decay": 0.05},
                 {"params": [p for n, p in m.named_parameters()
                             if p.dim() < 2 or n.startswith("emb")], "weight_decay": 0.0}],
                1e-3), nn.CrossEntropyLoss(), sampler(*tok_data(seed=s), seed=s))),
            healthy=True, clip=1.0))
        S.append(Scenario(f"healthy-mlp-sgd-s{seed}", lambda s=seed: _seeded(s, lambda: (
            (m := mlp(depth=3)), torch.optim.SGD(m.parameters(), 0.05, momentum=0.9),
            nn.CrossEntropyLoss(), sampler(*vec_data(seed=s), batch=8, seed=s))), healthy=True))

    def lr_too_high():
        m = mlp()
        return m, torch.optim.SGD(m.parameters(), 30.0), nn.CrossEntropyLoss(), \
            sampler(*vec_data())
    S.append(Scenario("lr-too-high", lr_too_high, keys={
        "guard": ["divergence", "exploding", "finite/"], "torch-audit": ["TA100", "TA102"],
        "stabilityguard": ["spike", "nan"], "torchmortem": ["diverg", "explod", "spike", "nan"]}))

    def nan_batch():
        m = mlp()
        x, y = vec_data()
        get = sampler(x, y)

        def batches(step):
            xb, yb = get(step)
            if step == 60:
                xb = xb.clone()
                xb[0, 0] = float("nan")
            return xb, yb
        return m, torch.optim.Adam(m.parameters(), 1e-3), nn.CrossEntropyLoss(), batches
    S.append(Scenario("nan-batch", nan_batch, keys={
        # StabilityGuard reports a NaN gradient as a spike (and skips the step)
        "guard": ["finite/"], "torch-audit": ["TA100"], "stabilityguard": ["spike"],
        "torchmortem": ["nan", "non-finite", "inf"]}))

    def corrupt_batch():
        m = mlp()
        get = sampler(*vec_data())

        def batches(step):
            xb, yb = get(step)
            return (xb * 30, yb) if step == 100 else (xb, yb)
        return m, torch.optim.Adam(m.parameters(), 1e-3), nn.CrossEntropyLoss(), batches
    S.append(Scenario("grad-spike-corrupt-batch", corrupt_batch, clip=1.0, keys={
        # torch-audit audits every batch's range, so it sees the x30 batch itself (TA301)
        "guard": ["spike"], "torch-audit": ["TA102", "TA301"], "stabilityguard": ["spike"],
        "torchmortem": ["spike", "explod"]}))

    def wrong_labels():
        m = mlp()
        get = sampler(*vec_data())

        def batches(step):
            xb, yb = get(step)
            return (xb, (yb + 2) % 5) if step == 120 else (xb, yb)
        return m, torch.optim.Adam(m.parameters(), 3e-3), nn.CrossEntropyLoss(), batches
    S.append(Scenario("loss-spike-wrong-labels", wrong_labels, steps=160, clip=1.0, keys={
        "guard": ["loss-spike"], "torch-audit": ["TA102"], "stabilityguard": ["spike"],
        "torchmortem": ["spike", "catapult"]}))

    def pixels():
        m = CNN()
        x, y = img_data()
        return m, torch.optim.Adam(m.parameters(), 1e-3), nn.CrossEntropyLoss(), \
            sampler((x * 255).round(), y)
    S.append(Scenario("pixels-0-255", pixels, keys={
        "guard": ["pixel-range", "not-normalised"], "torch-audit": ["TA301"],
        "stabilityguard": [], "torchmortem": []}))

    def unscaled_tabular():
        m = mlp()
        x, y = vec_data()
        return m, torch.optim.Adam(m.parameters(), 1e-3), nn.CrossEntropyLoss(), \
            sampler(x * 300 + 2000, y)
    S.append(Scenario("unscaled-tabular", unscaled_tabular, keys={
        "guard": ["not-normalised"], "torch-audit": ["TA301"]}))

    def blank():
        m = CNN()
        x, y = img_data()
        return m, torch.optim.Adam(m.parameters(), 1e-3), nn.CrossEntropyLoss(), \
            sampler(torch.zeros_like(x), y)
    S.append(Scenario("blank-images", blank, keys={
        "guard": ["constant-batch"], "torch-audit": ["TA302"]}))

    def same_batch():
        m = mlp()
        x, y = vec_data()
        return m, torch.optim.Adam(m.parameters(), 1e-3), nn.CrossEntropyLoss(), \
            (lambda step: (x[:32], y[:32]))
    S.append(Scenario("same-batch-every-step", same_batch, keys={
        "guard": ["same-batch"]}))

    def negative_ids():
        m = TinyLM()
        x, y = tok_data()
        x = x.clone()
        x[:, -2:] = -100
        return m, torch.optim.AdamW(m.parameters(), 1e-3), nn.CrossEntropyLoss(), sampler(x, y)
    S.append(Scenario("negative-token-ids (crashes)", negative_ids, keys={
        "guard": ["embedding-index"], "torch-audit": ["TA305"]}))

    def oov_ids():
        m = TinyLM(vocab=40)
        return m, torch.optim.AdamW(m.parameters(), 1e-3), nn.CrossEntropyLoss(), \
            sampler(*tok_data(vocab=50))
    S.append(Scenario("token-ids-beyond-vocab (crashes)", oov_ids, keys={
        "guard": ["embedding-index"], "torch-audit": ["TA305"]}))

    def labels_from_one():
        m = mlp()
        x, y = vec_data()
        return m, torch.optim.Adam(m.parameters(), 1e-3), nn.CrossEntropyLoss(), \
            sampler(x, y + 1)
    S.append(Scenario("labels-1..C (crashes)", labels_from_one, keys={
        "guard": ["target-range"]}))

    def mse_broadcast():
        m = mlp(ncls=1)
        x, _ = vec_data()
        return m, torch.optim.Adam(m.parameters(), 1e-3), nn.MSELoss(), \
            sampler(x, x[:, 0] * 2)
    S.append(Scenario("mse-(N,1)-vs-(N,)", mse_broadcast, keys={
        "guard": ["broadcast-shapes"]}))

    def adam_wd():
        m = TinyLM()
        return m, torch.optim.Adam(m.parameters(), 1e-3, weight_decay=0.01), \
            nn.CrossEntropyLoss(), sampler(*tok_data())
    S.append(Scenario("adam-weight-decay-on-everything", adam_wd, keys={
        "guard": ["adam-weight-decay", "decay-on-bias-norm", "decay-on-embedding"],
        "torch-audit": ["TA401", "TA402", "TA403"]}))

    def tiny_bn():
        m = CNN()
        x, y = img_data()
        return m, torch.optim.Adam(m.parameters(), 1e-3), nn.CrossEntropyLoss(), \
            sampler(x, y, batch=4)
    S.append(Scenario("batchnorm-batch-of-4", tiny_bn, keys={
        "guard": ["small-batch-batchnorm"], "torch-audit": ["TA304"]}))

    def vanishing():
        m = mlp(depth=10, act=nn.Sigmoid)
        for mod in m:
            if isinstance(mod, nn.Linear):
                nn.init.normal_(mod.weight, std=0.05)
        return m, torch.optim.SGD(m.parameters(), 0.01), nn.CrossEntropyLoss(), \
            sampler(*vec_data())
    S.append(Scenario("vanishing-deep-sigmoid", vanishing, keys={
        "guard": ["vanishing", "init/"], "torch-audit": ["TA103", "TA104", "TA105"],
        "torchmortem": ["vanish", "gradient flow", "saturat"]}))

    def dead_relu():
        m = mlp()
        for mod in m:
            if isinstance(mod, nn.Linear):
                nn.init.constant_(mod.bias, -10.0)
        return m, torch.optim.Adam(m.parameters(), 1e-3), nn.CrossEntropyLoss(), \
            sampler(*vec_data())
    S.append(Scenario("dead-relus", dead_relu, keys={
        "guard": ["dead-relu", "no-grad", "zero-grad", "vanishing"],
        "torch-audit": ["TA103", "TA105"], "torchmortem": ["dead"]}))
    return S


# ------------------------------------------------------------------------ tools
def _clip(model, clip):
    if clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)


def run_guard(scn: Scenario) -> List[str]:
    model, opt, crit, batches = scn.make()
    labels: List[str] = []
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        g = TrainingGuard(model, opt, loss_fn=crit, max_grad_norm=scn.clip, check_every=10)
        try:
            with g:
                for step in range(scn.steps):
                    x, y = batches(step)
                    opt.zero_grad()
                    crit(model(x), y).backward()
                    opt.step()
        except GuardError as e:
            labels.append(f"{e.check}/{e.cause} (error)")
        except (IndexError, RuntimeError) as e:
            labels.append(f"CRASH {type(e).__name__}")
    labels = [f"{w.message.check}/{w.message.cause}" for w in rec
              if isinstance(w.message, GuardWarning)] + labels
    labels += [f"{n['check']}/{n['cause']} (info)" for n in g._notes]
    return labels


def run_torch_audit(scn: Scenario) -> List[str]:
    from torch_audit import Auditor
    model, opt, crit, batches = scn.make()
    labels: List[str] = []
    auditor = Auditor(model, optimizer=opt, every_n_steps=1, suppress_internal_errors=True)
    try:
        with auditor:
            auditor.audit_static()
            auditor.audit_init()
            for step in range(scn.steps):
                x, y = batches(step)
                opt.zero_grad()
                out = auditor.forward(x)
                auditor.backward(crit(out, y))
                _clip(model, scn.clip)
                auditor.optimizer_step()
    except (IndexError, RuntimeError) as e:
        labels.append(f"CRASH {type(e).__name__}")
    result = auditor.finish()
    seen = []
    for f in result.findings:
        if f.severity.value in ("WARN", "ERROR", "FATAL") and f.rule_id not in seen:
            seen.append(f.rule_id)
    return seen + labels


def run_stabilityguard(scn: Scenario) -> List[str]:
    from stabilityguard import GuardedOptimizer
    model, opt, crit, batches = scn.make()
    labels: List[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        gopt = GuardedOptimizer(opt, model, spike_threshold=10.0, nan_action="skip",
                                verbose=False, log_dir=tmp)
        try:
            for step in range(scn.steps):
                x, y = batches(step)
                gopt.zero_grad()
                loss = crit(model(x), y)
                loss.backward()
                _clip(model, scn.clip)
                gopt.step(loss=float(loss.detach()))
        except (IndexError, RuntimeError) as e:
            labels.append(f"CRASH {type(e).__name__}")
        spikes, skips = gopt.total_spikes, gopt.total_skips
        gopt.close()
    if spikes:
        labels.insert(0, f"spike x{spikes} (skipped {skips})")
    return labels


def run_torchmortem(scn: Scenario) -> List[str]:
    from torchmortem import Autopsy, Severity
    model, opt, crit, batches = scn.make()
    labels: List[str] = []
    autopsy = Autopsy(model, optimizer=opt)
    try:
        with autopsy:
            for step in range(scn.steps):
                x, y = batches(step)
                opt.zero_grad()
                loss = crit(model(x), y)
                loss.backward()
                _clip(model, scn.clip)
                opt.step()
                autopsy.step(loss=float(loss.detach()))
    except (IndexError, RuntimeError) as e:
        labels.append(f"CRASH {type(e).__name__}")
    report = autopsy.get_report()
    found = []
    for f in (report.findings if report else []):
        if f.severity >= Severity.WARNING:
            found.append(f"{f.detector}: {f.title}")
    return found + labels


TOOLS = {"guard": run_guard, "torch-audit": run_torch_audit,
         "stabilityguard": run_stabilityguard, "torchmortem": run_torchmortem}


def _quiet(fn, scn):
    """Run one tool with its prints and logs captured (peers print banners/ANSI)."""
    out = io.StringIO()
    logging.disable(logging.CRITICAL)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn(scn)
    except ImportError as e:
        return [f"NOT INSTALLED ({e.name})"]
    except Exception as e:   # a peer failing on a run is a result, not a stop
        return [f"TOOL ERROR {type(e).__name__}: {str(e)[:80]}"]
    finally:
        logging.disable(logging.NOTSET)


def verdict(scn: Scenario, tool: str, labels: List[str]) -> str:
    # torch-audit's TA2xx are hardware/performance hints (tensor-core alignment, memory
    # layout, AMP), not training pathologies: listed, but no alarm either way.
    said = [lab for lab in labels if not lab.startswith(("CRASH", "NOT INSTALLED",
                                                         "TOOL ERROR", "TA2"))]
    if scn.healthy:
        return "false alarm" if said else "silent"
    keys = [k.lower() for k in scn.keys.get(tool, [])]
    if any(k in lab.lower() for lab in said for k in keys):
        return "caught"
    return "other" if said else "missed"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write the raw results here")
    ap.add_argument("--only", help="run only scenarios whose name contains this")
    ap.add_argument("--tools", default=",".join(TOOLS))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    tools = [t for t in args.tools.split(",") if t]
    results = []
    for scn in scenarios():
        if args.only and args.only not in scn.name:
            continue
        row = {"scenario": scn.name, "healthy": scn.healthy, "tools": {}}
        for tool in tools:
            labels = _quiet(TOOLS[tool], scn)
            row["tools"][tool] = {"verdict": verdict(scn, tool, labels), "labels": labels}
        results.append(row)
        print(f"{scn.name}")
        for tool in tools:
            r = row["tools"][tool]
            print(f"  {tool:<15} {r['verdict']:<12} {'; '.join(r['labels'])[:160]}")
        sys.stdout.flush()
    print("\nsummary (caught / pathological runs; false alarms / healthy runs)")
    for tool in tools:
        bad = [r for r in results if not r["healthy"]]
        good = [r for r in results if r["healthy"]]
        caught = sum(r["tools"][tool]["verdict"] == "caught" for r in bad)
        alarms = sum(r["tools"][tool]["verdict"] == "false alarm" for r in good)
        print(f"  {tool:<15} caught {caught}/{len(bad)}   false alarms {alarms}/{len(good)}")
    missed_by_guard = [r["scenario"] for r in results if not r["healthy"]
                       and r["tools"].get("guard", {}).get("verdict") != "caught"
                       and any(r["tools"][t]["verdict"] == "caught" for t in tools
                               if t != "guard")]
    print(f"caught by a peer but not by the guard: {missed_by_guard or 'none'}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
