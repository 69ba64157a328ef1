"""The shared analyses behind TL205-TL208 (what a tensor's last operation was) and TL109
(whether a gradient can flow back to a model), pinned on small sources."""

import textwrap

import libcst as cst
import pytest

from trainlint.analysis.context import FileContext
from trainlint.analysis.gradflow import CUT, DATA, MODEL, UNKNOWN, gradient_source
from trainlint.analysis.outputs import LOG_SOFTMAX, LOGITS, RELU, SOFTMAX, final_output


def _probe(src: str):
    """The context and the call site of `probe(expr)` on the source's last line."""
    text = textwrap.dedent(src)
    ctx = FileContext(cst.parse_module(text), text, "train.py")
    site = next(c for c in ctx.facts.calls if c.attr == "probe")
    return ctx, site.node.args[0].value, site


def _kind(src):
    ctx, expr, site = _probe(src)
    out = final_output(ctx, expr, site)
    return out.kind if out is not None else None


@pytest.mark.parametrize(
    "src,kind",
    [
        # the last element of an OrderedDict-style Sequential
        (
            """
            import torch.nn as nn
            from collections import OrderedDict
            net = nn.Sequential(OrderedDict([("fc", nn.Linear(4, 3)), ("out", nn.LogSoftmax(dim=1))]))
            probe(net(x))
            """,
            LOG_SOFTMAX,
        ),
        # a backbone handed to the model's constructor, averaged over instances
        (
            """
            import torch
            import torch.nn as nn
            class Wrapper(nn.Module):
                def __init__(self, inner):
                    super().__init__()
                    self.inner = inner
                def forward(self, x):
                    return torch.mean(self.inner(x), dim=1)
            model = Wrapper(nn.Linear(8, 1))
            probe(model(x))
            """,
            LOGITS,
        ),
        # a LogSoftmax layer kept as `self.softmax`
        (
            """
            import torch.nn as nn
            class Net(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.fc = nn.Linear(4, 3)
                    self.softmax = nn.LogSoftmax(dim=1)
                def forward(self, x):
                    return self.softmax(self.fc(x))
            probe(Net()(x))
            """,
            LOG_SOFTMAX,
        ),
        # the tensor method, through a shape change and an index
        ("import torch\nprobe(scores.softmax(-1).view(-1, 3)[:, 0])\n", SOFTMAX),
        ("import torch\nimport torch.nn.functional as F\nprobe(F.relu(z))\n", RELU),
        # assigned on one branch only, even one copy away: unknown
        (
            """
            import torch.nn as nn
            import torch.nn.functional as F
            head = nn.Linear(4, 3)
            out = F.log_softmax(head(h), dim=1)
            if raw:
                out = head(h)
            copy = out
            probe(copy)
            """,
            None,
        ),
        # a head swapped from outside the class: the class's own layer is not what runs
        (
            """
            import torch.nn as nn
            class Net(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.fc = nn.Linear(4, 1)
                def forward(self, x):
                    return self.fc(x)
            net = Net()
            net.fc = nn.Sequential(nn.Linear(4, 1), nn.Sigmoid())
            probe(net(x))
            """,
            None,
        ),
        # arithmetic on the output: unknown
        ("import torch.nn as nn\nfc = nn.Linear(4, 3)\nprobe(fc(x) / temperature)\n", None),
    ],
)
def test_final_output(src, kind):
    assert _kind(src) == kind


def _flow(src):
    ctx, expr, site = _probe(src)
    return gradient_source(ctx, expr, site).kind


@pytest.mark.parametrize(
    "src,kind",
    [
        ("import torch\nfor x, y in loader:\n    out = model(x)\n    probe(out.detach() - y)\n", CUT),
        ("import torch\nfor x, y in loader:\n    out = model(x)\n    probe(out - y)\n", MODEL),
        # a detached value of unknown origin carries no gradient, but no model was cut
        ("import torch\ndef f(z, y):\n    probe(z.detach() - y)\n", DATA),
        # a trainable leaf built from a number: unknown (it may be what is trained)
        ("import torch\nprobe(torch.tensor(init_value, requires_grad=True))\n", UNKNOWN),
        # both branches of an if/else assign it: followed (one of them cuts a model output)
        (
            "import torch\nfor x, y in loader:\n    if done:\n        t = y\n    else:\n        t = y + model(x).max().item()\n    probe(t)\n",
            CUT,
        ),
        # detached on one branch only: the attached value reaches the use too
        (
            "import torch\nfor x, y in loader:\n    t = model(x)\n    if done:\n        t = t.detach()\n    probe(t)\n",
            MODEL,
        ),
        # assigned on one branch only, nothing before: unknown
        ("import torch\ndef f(x, t):\n    if done:\n        t = model(x).detach()\n    probe(t)\n", UNKNOWN),
        # a list that starts empty holds what is appended or extended to it
        ("import torch\nouts = []\nfor x in xs:\n    outs.append(model(x))\nprobe(torch.cat(outs))\n", MODEL),
        (
            "import torch\nlps = []\nfor x in xs:\n    lps.extend(model(x).tolist())\n"
            "probe(torch.tensor(lps, requires_grad=True))\n",
            CUT,
        ),
        # ... unless something else may fill it: a helper it is handed to, an item assignment
        ("import torch\nouts = []\nfill(outs, xs)\nouts.append(model(x).detach())\nprobe(outs)\n", UNKNOWN),
        ("import torch\nouts = []\nouts.append(model(x).detach())\nouts[0] = y\nprobe(outs)\n", UNKNOWN),
        # a callee whose parameters an optimizer trains is a model
        (
            "import torch\nclass A:\n    def __init__(self, q):\n        self.Q = q\n        self.opt = torch.optim.Adam(self.Q.parameters())\n"
            "    def step(self, s):\n        probe(self.Q(s))\n",
            MODEL,
        ),
        # a method followed from `self.forward(x)` uses `self`, which no argument binds
        # (examples/mnist_forward_forward crashed the linter here)
        (
            "from mylib import Base\nclass Layer(Base):\n    def forward(self, x):\n        return self.relu(x)\n"
            "    def fit(self, x):\n        probe(self.forward(x).mean())\n",
            UNKNOWN,
        ),
    ],
)
def test_gradient_source(src, kind):
    assert _flow(src) == kind


def test_a_factory_handing_back_its_argument_is_followed_once(monkeypatch):
    # `model = fit(model, ...)` in several cells: each call's argument is the previous
    # call's result. Following the factory through every call site at every hop never
    # finished on a real notebook; a factory already being followed is not re-entered.
    calls = "\n".join("model = Net()\nmodel = fit(model, 1)" for _ in range(6))
    src = f"""
    import torch.nn as nn
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3)
        def forward(self, x):
            return self.fc(x)
    def fit(model, epochs):
        model.to("cpu")
        return model
{textwrap.indent(calls, "    ")}
    probe(model(x))
    """
    ctx, expr, site = _probe(src)
    entered = []
    original = FileContext.factory_returns

    def counted(self, *args):
        entered.append(1)
        if len(entered) > 50:  # fail fast instead of running for hours
            raise AssertionError("the factory is followed through every call site again")
        return original(self, *args)

    monkeypatch.setattr(FileContext, "factory_returns", counted)
    # what `fit` hands back is whatever its callers pass: not a construction to follow
    assert final_output(ctx, expr, site) is None

