"""Project-wide facts: a model class defined in one module, trained or evaluated in another.

Each test writes a small multi-file project to tmp_path and lints one file of it through
the CLI (as pre-commit does), so the import resolution, the module summaries, the cache
and the pre-check are all on the path.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from trainlint.analysis.project import Project
from trainlint.engine import lint_text


def write(root: Path, files: dict) -> None:
    for name, src in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(src))


def codes(run_cli, *args):
    r = run_cli(*args, "--format", "json")
    assert r.exit_code in (0, 1), r.output
    return sorted((f["path"].replace("\\", "/"), f["code"], f["line"]) for f in json.loads(r.stdout))


SOFTMAX_NET = """
    import torch.nn as nn
    import torch.nn.functional as F

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(10, 3)

        def forward(self, x):
            return F.softmax(self.fc(x), dim=1)
"""
LOG_SOFTMAX_NET = SOFTMAX_NET.replace("F.softmax", "F.log_softmax")
LOGITS_NET = SOFTMAX_NET.replace("F.softmax(self.fc(x), dim=1)", "self.fc(x)")

TRAIN = """
    import torch.nn as nn
    {import_line}

    model = {make}()
    criterion = nn.CrossEntropyLoss()
    for x, y in train_loader:
        loss = criterion(model(x), y)
        loss.backward()
"""


def train_importing(line: str, make: str = "Net") -> str:
    return TRAIN.format(import_line=line, make=make)


@pytest.mark.parametrize(
    "files,linted",
    [
        # a sibling module, imported by a script
        ({"net.py": SOFTMAX_NET, "train.py": train_importing("from net import Net")}, "train.py"),
        # a module of a package, absolute and as `import ... as`
        ({"models/__init__.py": "", "models/net.py": SOFTMAX_NET, "train.py": train_importing("from models.net import Net")}, "train.py"),
        ({"utils.py": SOFTMAX_NET, "train.py": train_importing("import utils as U", "U.Net")}, "train.py"),
        # a relative import inside a package
        ({"pkg/__init__.py": "", "pkg/models.py": SOFTMAX_NET, "pkg/train.py": train_importing("from .models import Net")}, "pkg/train.py"),
        # a package that re-exports the class from its __init__.py
        ({"models/__init__.py": "from .net import Net\n", "models/net.py": SOFTMAX_NET, "train.py": train_importing("from models import Net")}, "train.py"),
        # star imports, of the package itself and of its module
        ({"pkg/__init__.py": "from .net import *\n", "pkg/net.py": SOFTMAX_NET, "pkg/train.py": train_importing("from . import *")}, "pkg/train.py"),
        # the package's own absolute name, from a module inside it
        ({"pkg/__init__.py": "", "pkg/models.py": SOFTMAX_NET, "pkg/train.py": train_importing("from pkg.models import Net")}, "pkg/train.py"),
    ],
)
def test_softmax_model_from_another_module_fed_to_cross_entropy(run_cli, tmp_path, files, linted):
    write(tmp_path, files)
    assert ("TL201" in {c for _, c, _ in codes(run_cli, linted, "--select", "TL201", "--no-cache")})
    r = run_cli(linted, "--select", "TL201", "--no-cache")
    assert "`Net` from " in r.stdout and "F.softmax" in r.stdout


@pytest.mark.parametrize(
    "files",
    [
        # the imported model ends in log_softmax: harmless before cross-entropy
        {"net.py": LOG_SOFTMAX_NET, "train.py": train_importing("from net import Net")},
        # returns logits
        {"net.py": LOGITS_NET, "train.py": train_importing("from net import Net")},
        # a same-named class in an unrelated module: the import names another module
        {"net.py": SOFTMAX_NET, "other/__init__.py": "", "other/net.py": LOGITS_NET, "train.py": train_importing("from other.net import Net")},
        # a module outside the project (not on disk): nothing is known
        {"train.py": train_importing("from some_library.models import Net")},
        # the package's __init__ does not re-export it: not the class Python would import
        {"models/__init__.py": "", "models/net.py": SOFTMAX_NET, "train.py": train_importing("from models import Net")},
    ],
)
def test_near_misses_stay_silent(run_cli, tmp_path, files):
    write(tmp_path, files)
    assert codes(run_cli, "train.py", "--select", "TL201", "--no-cache") == []


def test_a_script_outside_the_working_folder_does_not_import_its_modules(run_cli, tmp_path, monkeypatch):
    # `trainlint check /elsewhere/train.py` run from a project folder: Python would put
    # /elsewhere on sys.path, not the working folder, so the working folder's net.py is
    # not the `net` the script imports; its own folder's is.
    write(tmp_path, {"proj/net.py": SOFTMAX_NET, "elsewhere/train.py": train_importing("from net import Net")})
    monkeypatch.chdir(tmp_path / "proj")
    outside = tmp_path / "elsewhere" / "train.py"
    assert codes(run_cli, outside, "--select", "TL201", "--no-cache") == []
    write(tmp_path, {"elsewhere/net.py": SOFTMAX_NET})
    assert [c for _, c, _ in codes(run_cli, outside, "--select", "TL201", "--no-cache")] == ["TL201"]


def test_without_project_facts_the_import_is_unknown(tmp_path):
    """The library entry point reads other modules only when given a project."""
    write(tmp_path, {"net.py": SOFTMAX_NET})
    src = textwrap.dedent(train_importing("from net import Net"))
    path = str(tmp_path / "train.py")
    assert lint_text(src, path, frozenset({"TL201"})).findings == []
    found = lint_text(src, path, frozenset({"TL201"}), project=Project(tmp_path))
    assert [f.code for f in found.findings] == ["TL201"]
    assert list(found.deps) == [str(tmp_path / "net.py")] and found.deps[str(tmp_path / "net.py")]


def test_sigmoid_model_from_another_module_fed_to_bce_with_logits(run_cli, tmp_path):
    net = SOFTMAX_NET.replace("F.softmax(self.fc(x), dim=1)", "torch.sigmoid(self.fc(x))").replace("import torch.nn as nn", "import torch\n    import torch.nn as nn")
    train = train_importing("from net import Net").replace("nn.CrossEntropyLoss()", "nn.BCEWithLogitsLoss()")
    write(tmp_path, {"net.py": net, "train.py": train})
    assert [c for _, c, _ in codes(run_cli, "train.py", "--no-cache", "--select", "TL202")] == ["TL202"]


TUPLE_NET = """
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class SegNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(10, 3)

        def forward(self, x):
            logits = self.fc(x)
            probs = F.softmax(logits, dim=1)
            return logits, probs
"""

TUPLE_TRAIN = """
    import torch
    from model import SegNet

    def train():
        for x, y in train_loader:
            {unpack} = model(x)
            loss = criterion({fed}, y)
            loss.backward()

    if __name__ == "__main__":
        if torch.cuda.is_available():
            model = SegNet().cuda()
            criterion = torch.nn.CrossEntropyLoss().cuda()
        else:
            model = SegNet()
            criterion = torch.nn.CrossEntropyLoss()
        train()
"""


@pytest.mark.parametrize(
    "net,unpack,fed,reported",
    [
        # pytorch-segnet (say4n/pytorch-segnet#5): `forward` returns (logits, softmax), and
        # the training script of another module feeds the second element to cross-entropy
        (TUPLE_NET, "predicted, softmaxed", "softmaxed", True),
        # the near miss: the logits element is fed
        (TUPLE_NET, "predicted, softmaxed", "predicted", False),
        # an unpacking of another width: which element is which cannot be told
        (TUPLE_NET, "predicted, softmaxed, extra", "softmaxed", False),
        # one return gives the elements in the other order: the element is not always probs
        (TUPLE_NET.replace("            return logits, probs", "            if x is None:\n                return probs, logits\n            return logits, probs"),
         "predicted, softmaxed", "softmaxed", False),
        # the tuple holds log_softmax: harmless before cross-entropy
        (TUPLE_NET.replace("F.softmax", "F.log_softmax"), "predicted, softmaxed", "softmaxed", False),
    ],
)
def test_an_element_of_the_tuple_forward_returns_in_another_module(run_cli, tmp_path, net, unpack, fed, reported):
    write(tmp_path, {"model.py": net, "train.py": TUPLE_TRAIN.format(unpack=unpack, fed=fed)})
    found = codes(run_cli, "train.py", "--select", "TL201", "--no-cache")
    assert [c for _, c, _ in found] == (["TL201"] if reported else [])
    if reported:
        assert "as element 2 of 2" in run_cli("train.py", "--select", "TL201", "--no-cache").stdout


def test_a_sigmoid_element_of_another_module_fed_to_bce_with_logits(run_cli, tmp_path):
    net = TUPLE_NET.replace("F.softmax(logits, dim=1)", "torch.sigmoid(logits)").replace("return logits, probs", "return probs, logits")
    train = TUPLE_TRAIN.replace("torch.nn.CrossEntropyLoss()", "torch.nn.BCEWithLogitsLoss()")
    write(tmp_path, {"model.py": net, "train.py": train.format(unpack="pred, feats", fed="pred")})
    assert [c for _, c, _ in codes(run_cli, "train.py", "--select", "TL202", "--no-cache")] == ["TL202"]
    write(tmp_path, {"train.py": train.format(unpack="pred, feats", fed="feats")})
    assert codes(run_cli, "train.py", "--select", "TL202", "--no-cache") == []


FOCAL_LOSS = """
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class WeightedFocalLoss(nn.Module):
        def __init__(self, alpha=.25, gamma=2):
            super().__init__()
            self.gamma = gamma

        def forward(self, inputs, targets):
            {body}
            pt = torch.exp(-bce)
            return ((1 - pt) ** self.gamma * bce).mean()
"""

FOCAL_TRAIN = """
    import torch
    from model import SegNet
    from losses import WeightedFocalLoss

    model = SegNet().cuda()
    criterion = WeightedFocalLoss(alpha=.5).cuda()
    for x, y in train_loader:
        pred, _ = model(x)
        pred = torch.squeeze(pred)
        loss = criterion(pred.type(torch.cuda.FloatTensor), y)
        loss.backward()
"""


@pytest.mark.parametrize(
    "body,reported",
    [
        # LMFD-PAD (meilfang/LMFD-PAD#1): the model's sigmoid element, in model.py, is fed in
        # train.py to a focal loss of losses.py built on the with-logits BCE
        ("bce = F.binary_cross_entropy_with_logits(inputs, targets, reduction='none')", True),
        # near misses: the loss class wants probabilities, or makes logits of them first
        ("bce = F.binary_cross_entropy(inputs, targets, reduction='none')", False),
        ("bce = F.binary_cross_entropy_with_logits(torch.logit(inputs), targets, reduction='none')", False),
        # it feeds its other argument as the input
        ("bce = F.binary_cross_entropy_with_logits(targets, inputs, reduction='none')", False),
    ],
)
def test_a_loss_class_of_another_module_that_hands_its_input_to_bce_with_logits(run_cli, tmp_path, body, reported):
    net = TUPLE_NET.replace("F.softmax(logits, dim=1)", "torch.sigmoid(logits)").replace("return logits, probs", "return probs, logits")
    write(tmp_path, {"model.py": net, "losses.py": FOCAL_LOSS.format(body=body), "train.py": FOCAL_TRAIN})
    found = codes(run_cli, "train.py", "--select", "TL202", "--no-cache")
    assert [c for _, c, _ in found] == (["TL202"] if reported else [])
    if reported:
        assert "(through `WeightedFocalLoss` from losses.py)" in run_cli("train.py", "--select", "TL202", "--no-cache").stdout


# -- TL301: the model's class decides whether eval mode matters -------------------------------

def net_with(layer: str) -> str:
    return f"""
    import torch.nn as nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(10, 3)
            self.extra = {layer}

        def forward(self, x):
            return self.extra(self.fc(x))
    """


EVALUATE = """
    import torch
    {import_line}

    model = Net()

    @torch.no_grad()
    def evaluate(loader):
        return [model(x) for x, _ in loader]
"""


@pytest.mark.parametrize(
    "layer,reported",
    [("nn.Dropout(0.5)", True), ("nn.BatchNorm1d(3)", True), ("nn.ReLU()", False), ("nn.LayerNorm(3)", False)],
)
def test_eval_mode_uses_the_imported_class_layers(run_cli, tmp_path, layer, reported):
    write(tmp_path, {"models/__init__.py": "from .net import Net\n", "models/net.py": net_with(layer),
                     "evaluate.py": EVALUATE.format(import_line="from models import Net")})
    found = [c for _, c, _ in codes(run_cli, "evaluate.py", "--select", "TL301", "--no-cache")]
    assert found == (["TL301"] if reported else [])


@pytest.mark.parametrize(
    "import_line,reported",
    [
        ("from some_library import Net", False),  # outside the project: cannot be seen
        ("from models.missing import Net", False),  # a project path that does not exist
        ("from torchvision.models import resnet18 as Net", True),  # a model zoo: BatchNorm
    ],
)
def test_eval_mode_stays_silent_on_a_class_it_cannot_see(run_cli, tmp_path, import_line, reported):
    write(tmp_path, {"models/__init__.py": "", "evaluate.py": EVALUATE.format(import_line=import_line)})
    found = [c for _, c, _ in codes(run_cli, "evaluate.py", "--select", "TL301", "--no-cache")]
    assert found == (["TL301"] if reported else [])


def test_a_project_class_used_as_a_layer_is_read_too(run_cli, tmp_path):
    """A visible model built from a project block without dropout/norm: eval mode changes nothing."""
    block = net_with("nn.ReLU()").replace("class Net", "class Block")
    model = """
    import torch
    import torch.nn as nn
    from blocks import Block

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = Block()

        def forward(self, x):
            return self.body(x)

    model = Net()

    @torch.no_grad()
    def evaluate(loader):
        return [model(x) for x, _ in loader]
    """
    write(tmp_path, {"blocks.py": block, "evaluate.py": model})
    assert codes(run_cli, "evaluate.py", "--select", "TL301", "--no-cache") == []
    write(tmp_path, {"blocks.py": net_with("nn.Dropout(0.1)").replace("class Net", "class Block")})
    assert [c for _, c, _ in codes(run_cli, "evaluate.py", "--select", "TL301", "--no-cache")] == ["TL301"]


# -- the cache -----------------------------------------------------------------------------------

def test_changing_the_model_module_changes_the_finding_in_the_training_file(run_cli, tmp_path):
    write(tmp_path, {"models/__init__.py": "", "models/net.py": LOGITS_NET, "train.py": train_importing("from models.net import Net")})
    assert codes(run_cli, "train.py") == []
    assert codes(run_cli, "train.py") == []  # served from the cache
    write(tmp_path, {"models/net.py": SOFTMAX_NET})  # train.py itself is unchanged
    assert codes(run_cli, "train.py") == [("train.py", "TL201", 8)]
    write(tmp_path, {"models/net.py": LOG_SOFTMAX_NET})
    assert codes(run_cli, "train.py") == []


def test_a_module_that_appears_later_is_noticed(run_cli, tmp_path):
    write(tmp_path, {"train.py": train_importing("from net import Net")})
    assert codes(run_cli, "train.py") == []
    write(tmp_path, {"net.py": SOFTMAX_NET})
    assert codes(run_cli, "train.py") == [("train.py", "TL201", 8)]


def test_a_one_file_run_reads_the_other_modules_summary_from_the_cache(run_cli, tmp_path, monkeypatch):
    write(tmp_path, {"net.py": SOFTMAX_NET, "train.py": train_importing("from net import Net")})
    assert codes(run_cli, ".") == [("train.py", "TL201", 8)]  # lints (and summarises) net.py
    import trainlint.analysis.project as project_mod

    monkeypatch.setattr(project_mod, "_PROJECTS", {})  # a fresh process: nothing in memory
    monkeypatch.setattr(project_mod, "_read_summary", lambda *a: (_ for _ in ()).throw(AssertionError("parsed net.py")))
    write(tmp_path, {"train.py": train_importing("from net import Net") + "    print(1)\n"})
    assert codes(run_cli, "train.py") == [("train.py", "TL201", 8)]


def test_the_process_pool_gives_the_same_result(run_cli, tmp_path):
    files = {"net.py": SOFTMAX_NET}
    for i in range(6):
        files[f"train{i}.py"] = train_importing("from net import Net")
    write(tmp_path, files)
    one = codes(run_cli, ".", "--jobs", "1", "--no-cache")
    assert len(one) == 6 and {c for _, c, _ in one} == {"TL201"}
    assert codes(run_cli, ".", "--jobs", "3") == one


def test_a_broken_or_huge_module_gives_no_facts_and_no_crash(run_cli, tmp_path):
    write(tmp_path, {"net.py": "class Net(:\n", "train.py": train_importing("from net import Net")})
    r = run_cli("train.py", "--select", "TL201")
    assert r.exit_code == 0, r.output


def test_stdin_with_a_filename_reads_the_project(run_cli, tmp_path):
    write(tmp_path, {"net.py": SOFTMAX_NET})
    src = textwrap.dedent(train_importing("from net import Net"))
    r = run_cli("-", "--stdin-filename", "train.py", "--select", "TL201", input=src)
    assert r.exit_code == 1 and "TL201" in r.stdout


# -- star imports and factories (`from models import *`; `def ResNet18(): return ResNet(...)`) ---

FACTORY = """
    import torch.nn as nn
    import torch.nn.functional as F

    class ResNet(nn.Module):
        def __init__(self, blocks):
            super().__init__()
            self.fc = nn.Linear(10, 3)
            self.extra = {layer}

        def forward(self, x):
            return {out}

    def ResNet18():
        return ResNet([2, 2, 2, 2])
"""


def factory(layer="nn.ReLU()", out="self.fc(self.extra(x))"):
    return FACTORY.format(layer=layer, out=out)


@pytest.mark.parametrize(
    "layer,reported",
    [("nn.BatchNorm1d(10)", True), ("nn.ReLU()", False)],
)
def test_a_factory_behind_a_star_import_is_followed(run_cli, tmp_path, layer, reported):
    """pytorch-cifar's layout: models/__init__.py star-imports every model module."""
    write(tmp_path, {
        "models/__init__.py": "from .vgg import *\nfrom .resnet import *\n",
        "models/vgg.py": "import torch.nn as nn\n\ndef VGG11():\n    return nn.Sequential(nn.Linear(2, 2))\n",
        "models/resnet.py": factory(layer),
        "main.py": EVALUATE.format(import_line="from models import *").replace("model = Net()", "model = ResNet18()"),
    })
    found = [c for _, c, _ in codes(run_cli, "main.py", "--select", "TL301", "--no-cache")]
    assert found == (["TL301"] if reported else [])


def test_a_factory_of_a_softmax_model_is_reported(run_cli, tmp_path):
    write(tmp_path, {"models.py": factory(out="F.softmax(self.fc(x), dim=-1)"),
                     "train.py": train_importing("from models import ResNet18", "ResNet18")})
    assert [c for _, c, _ in codes(run_cli, "train.py", "--select", "TL201", "--no-cache")] == ["TL201"]


@pytest.mark.parametrize(
    "body,reported",
    [
        ("    return torchvision.models.resnet18()\n", True),  # a model zoo's model: BatchNorm
        ("    if name == 'a':\n        return torchvision.models.resnet18()\n    return Plain()\n", True),  # one of them has it
        ("    return make_anything(name)\n", False),  # cannot be seen
    ],
)
def test_factories_returning_other_models(run_cli, tmp_path, body, reported):
    plain = "class Plain(nn.Module):\n    def forward(self, x):\n        return x\n\n"
    module = "import torchvision\nimport torch.nn as nn\nfrom lib import make_anything\n\n" + plain + "def get_model(name):\n" + body
    write(tmp_path, {"zoo.py": module, "evaluate.py": EVALUATE.format(import_line="from zoo import get_model").replace("model = Net()", "model = get_model('a')")})
    found = [c for _, c, _ in codes(run_cli, "evaluate.py", "--select", "TL301", "--no-cache")]
    assert found == (["TL301"] if reported else [])


@pytest.mark.parametrize("layer,reported", [("nn.Dropout(0.1)", True), ("nn.ReLU()", False)])
def test_an_alternative_constructor_stands_for_its_class(run_cli, tmp_path, layer, reported):
    """nanoGPT: `model = GPT.from_pretrained(...)` with GPT from the sibling model.py."""
    write(tmp_path, {"model.py": net_with(layer).replace("class Net", "class GPT"),
                     "evaluate.py": EVALUATE.format(import_line="from model import GPT").replace("model = Net()", "model = GPT.from_pretrained('gpt2')")})
    found = [c for _, c, _ in codes(run_cli, "evaluate.py", "--select", "TL301", "--no-cache")]
    assert found == (["TL301"] if reported else [])


# -- functions of other modules: the mode they leave the model in, whether they train --------------

HELPERS = """
    import torch

    def set_eval(model):
        model.eval()

    def set_train(model):
        model.train()

    def validate(model, loader):
        model.eval()
        out = [model(x) for x in loader]
        model.train()
        return out

    def update(loss, optimizer):
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def log(value):
        print(value)
"""

MAIN = """
    import torch
    import torch.nn as nn
    import helpers as H

    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    {before}
    with torch.no_grad():
        for x, y in val_loader:
            out = model(x)
            {inside}
"""


@pytest.mark.parametrize(
    "before,inside,reported",
    [
        ("H.set_eval(model)", "H.log(out)", False),  # eval mode set by a helper of another module
        ("H.set_train(model)", "H.log(out)", True),
        ("H.validate(model, test_loader)", "H.log(out)", True),  # it switches back to training
        ("H.set_eval(model)\nH.set_train(model)", "H.log(out)", True),  # the last switch wins
        ("import other_lib\nother_lib.set_eval(model)", "H.log(out)", True),  # outside the project: as before
        ("pass", "H.log(out)", True),
    ],
)
def test_the_mode_a_helper_of_another_module_leaves(run_cli, tmp_path, before, inside, reported):
    main = MAIN.format(before=before.replace("\n", "\n    "), inside=inside)
    write(tmp_path, {"helpers.py": HELPERS, "main.py": main})
    found = [c for _, c, _ in codes(run_cli, "main.py", "--select", "TL301", "--no-cache")]
    assert found == (["TL301"] if reported else [])


def test_a_loop_that_trains_through_a_helper_of_another_module_is_not_an_evaluation(run_cli, tmp_path):
    main = MAIN.format(before="pass", inside="H.update(nn.functional.mse_loss(out, y), optimizer)").replace("with torch.no_grad():", "if True:")
    write(tmp_path, {"helpers.py": HELPERS, "main.py": main})
    assert codes(run_cli, "main.py", "--select", "TL301,TL302", "--no-cache") == []
    # the near miss: the helper only logs, so the loop over val_loader is an evaluation
    write(tmp_path, {"main.py": main.replace("H.update(", "H.log(")})
    assert sorted(c for _, c, _ in codes(run_cli, "main.py", "--select", "TL301,TL302", "--no-cache")) == ["TL301", "TL302"]


def test_a_factory_choosing_between_classes_counts_every_branch(run_cli, tmp_path):
    """pytorch-cifar100's get_network: `net = ...` in each branch, one `return net`; a
    softmax in one branch's class is not the factory's output."""
    module = SOFTMAX_NET + textwrap.indent(textwrap.dedent("""
        class Plain(nn.Module):
            def forward(self, x):
                return x

        def get_network(name):
            if name == "plain":
                net = Plain()
            else:
                net = Net()
            return net
    """), "    ")
    write(tmp_path, {"zoo.py": module, "train.py": train_importing("from zoo import get_network", "get_network")})
    assert codes(run_cli, "train.py", "--select", "TL201", "--no-cache") == []
    write(tmp_path, {"zoo.py": module.replace("return x", "return torch.softmax(x, 1)").replace("import torch.nn as nn", "import torch\n    import torch.nn as nn")})
    assert [c for _, c, _ in codes(run_cli, "train.py", "--select", "TL201", "--no-cache")] == ["TL201"]


# -- an evaluate() whose callers live in other modules ------------------------------------------

UTILS = """
    import torch

    def evaluate(model, loader):
        return [model(x) for x, _ in loader]
"""

CALLER = """
    import torch
    import torch.nn as nn
    {import_line}

    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.2))
    {before}
    {call}
"""


def caller(before="pass", call="utils.evaluate(model, val_loader)", import_line="import utils"):
    return CALLER.format(before=before, call=call.replace("\n", "\n    "), import_line=import_line)


@pytest.mark.parametrize(
    "main,found",
    [
        (caller("model.eval()", "with torch.no_grad():\n    utils.evaluate(model, val_loader)"), []),
        (caller("model.eval()"), ["TL302"]),
        (caller("model.train()", "with torch.no_grad():\n    utils.evaluate(model, val_loader)"), ["TL301"]),
        (caller("pass"), ["TL301", "TL302"]),
        # by another spelling of the import
        (caller("model.eval()", "with torch.no_grad():\n    evaluate(model, val_loader)", "from utils import evaluate"), []),
        # a same-named function of another module is not this one: as if there were no caller
        (caller("model.eval()", "with torch.no_grad():\n    other.evaluate(model, val_loader)", "import other"), ["TL301", "TL302"]),
    ],
)
def test_an_evaluate_function_reads_its_callers_in_other_modules(run_cli, tmp_path, main, found):
    write(tmp_path, {"utils.py": UTILS, "main.py": main, "other.py": UTILS})
    assert [c for _, c, _ in codes(run_cli, "utils.py", "--select", "TL301,TL302", "--no-cache")] == found


def test_callers_in_two_modules_must_both_set_the_mode(run_cli, tmp_path):
    write(tmp_path, {"utils.py": UTILS, "main.py": caller("model.eval()"), "finetune.py": caller("model.train()")})
    assert [c for _, c, _ in codes(run_cli, "utils.py", "--select", "TL301", "--no-cache")] == ["TL301"]


def test_a_caller_edited_or_added_later_changes_the_cached_result(run_cli, tmp_path):
    write(tmp_path, {"utils.py": UTILS, "main.py": caller("model.train()")})
    assert [c for _, c, _ in codes(run_cli, "utils.py", "--select", "TL301")] == ["TL301"]
    write(tmp_path, {"main.py": caller("model.eval()")})  # utils.py itself unchanged
    assert codes(run_cli, "utils.py", "--select", "TL301") == []
    write(tmp_path, {"scripts/__init__.py": "", "finetune.py": caller("model.train()")})  # a new caller
    assert [c for _, c, _ in codes(run_cli, "utils.py", "--select", "TL301")] == ["TL301"]


def test_a_helper_whose_callers_train_through_it_is_not_an_evaluation(run_cli, tmp_path):
    utils = UTILS.replace("def evaluate(model, loader):\n        return [model(x) for x, _ in loader]", "def infer(model, x):\n        return model(x)")
    main = caller("opt = torch.optim.SGD(model.parameters(), lr=0.1)",
                  "for x, y in train_loader:\n    loss = (utils.infer(model, x) - y).pow(2).mean()\n    loss.backward()\n    opt.step()")
    write(tmp_path, {"utils.py": utils, "main.py": main})
    assert codes(run_cli, "utils.py", "--select", "TL301,TL302", "--no-cache") == []
    write(tmp_path, {"main.py": main.replace("loss.backward()", "print(loss)").replace("opt.step()", "pass")})
    assert [c for _, c, _ in codes(run_cli, "utils.py", "--select", "TL301,TL302", "--no-cache")] == ["TL301", "TL302"]


# -- dataset classes of another module (TL401) and flag-gated activations (TL201) ----------
DATASETS = """
    import random
    from torch.utils.data import Dataset, IterableDataset

    class Combined(IterableDataset):
        def __iter__(self):
            yield from self.streams

    class Reshuffled(Dataset):
        def shuffle_samples(self):
            random.shuffle(self.samples)
        def __getitem__(self, i):
            return self.samples[i]

    class ShuffledOnce(Dataset):
        def __init__(self, samples):
            self.samples = list(samples)
            random.shuffle(self.samples)
        def __getitem__(self, i):
            return self.samples[i]

    class Plain(Dataset):
        def __getitem__(self, i):
            return self.samples[i]
"""
TRAIN_LOADER = """
    from torch.utils.data import DataLoader
    from data import {cls}

    class Bench({cls}):
        pass

    train_loader = DataLoader({make}(), batch_size=8, shuffle=False)
"""


@pytest.mark.parametrize(
    "cls,make,reported",
    [
        ("Combined", "Combined", False),  # an IterableDataset: shuffle=True would raise
        ("Reshuffled", "Reshuffled", False),  # reshuffles its own samples after construction
        ("Reshuffled", "Bench", False),  # a local subclass of such a class
        ("ShuffledOnce", "ShuffledOnce", True),  # one shuffle at construction: same order every epoch
        ("Plain", "Plain", True),
        ("Plain", "Bench", True),
    ],
)
def test_a_dataset_class_of_another_module_that_orders_itself(run_cli, tmp_path, cls, make, reported):
    write(tmp_path, {"data.py": DATASETS, "train.py": TRAIN_LOADER.format(cls=cls, make=make)})
    found = codes(run_cli, "train.py", "--select", "TL401", "--no-cache")
    assert bool(found) == reported, found


FLAG_NET = """
    import torch.nn as nn
    import torch.nn.functional as F

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(10, 3)

        def forward(self, x, apply_softmax={default}):
            y = self.fc(x)
            if apply_softmax:
                y = F.softmax(y, dim=1)
            return y
"""


@pytest.mark.parametrize("default,reported", [("False", False), ("True", True)])
def test_a_softmax_behind_a_flag_in_another_module(run_cli, tmp_path, default, reported):
    """The summary describes a call that passes no flag: off by default means logits."""
    write(tmp_path, {"net.py": FLAG_NET.format(default=default), "train.py": train_importing("from net import Net")})
    found = codes(run_cli, "train.py", "--select", "TL201", "--no-cache")
    assert bool(found) == reported, found




# -- an evaluate() in a module without a PyTorch import; a model whose class cannot be seen ------

PLAIN_VALIDATE = """
    def validate(model, loader, loss_fn):
        running = 0.0
        for x, y in loader:
            running += loss_fn(model(x), y).item()
        return running / len(loader)
"""

DROPOUT_MODEL = """
    import torch.nn as nn

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), {layer}, nn.Linear(8, 1))

        def forward(self, x):
            return self.net(x)
"""

TORCH_TRAIN = """
    import torch
    from torch import nn
    {imports}
    from helpers import validate

    model = {make}
    loss_fn = nn.MSELoss()
    for epoch in range(3):
        model.train()
        {before}
        print(validate(model, val_loader, loss_fn))
"""


def torch_train(make="MLP()", imports="from model import MLP", before="pass"):
    return TORCH_TRAIN.format(make=make, imports=imports, before=before)


@pytest.mark.parametrize(
    "layer,train,found",
    [
        # a plain-Python helper handed a project model with dropout, neither eval() nor no_grad
        ("nn.Dropout(0.2)", torch_train(), ["TL301", "TL302"]),
        # the same helper built inline from torch.nn, and with the model's class in train.py
        ("nn.Dropout(0.2)", torch_train("nn.Sequential(nn.Linear(4, 1), nn.Dropout(0.1))", ""), ["TL301", "TL302"]),
        # near misses: the caller sets both; the model has no dropout/normalisation
        ("nn.Dropout(0.2)", torch_train(before="model.eval()\n        torch.set_grad_enabled(False)"), []),
        ("nn.ReLU()", torch_train(), ["TL302"]),
        # a model whose class cannot be seen: not known to be a PyTorch model
        ("nn.Dropout(0.2)", torch_train("Booster()", "from xgboost_like import Booster"), []),
    ],
)
def test_a_helper_module_without_torch_is_read_through_its_torch_callers(run_cli, tmp_path, layer, train, found):
    write(tmp_path, {"helpers.py": PLAIN_VALIDATE, "model.py": DROPOUT_MODEL.format(layer=layer), "train.py": train})
    assert [c for _, c, _ in codes(run_cli, "helpers.py", "--select", "TL301,TL302", "--no-cache")] == found
    assert [(p, c) for p, c, _ in codes(run_cli, ".", "--select", "TL301,TL302", "--no-cache")] == [("helpers.py", c) for c in found]


@pytest.mark.parametrize(
    "caller",
    [
        # scikit-learn: an estimator's evaluate() called from a module without PyTorch
        "from sklearn.ensemble import RandomForestClassifier\nfrom helpers import validate\n"
        "model = RandomForestClassifier()\nprint(validate(model, val_loader, loss_fn))\n",
        # Keras: a model called like a PyTorch one, from a TensorFlow script
        "import tensorflow as tf\nfrom helpers import validate\n"
        "model = tf.keras.Sequential([tf.keras.layers.Dropout(0.2)])\nprint(validate(model, val_loader, loss_fn))\n",
        # a PyTorch script passing something it received, not a model it built
        "import torch\nfrom helpers import validate\n\ndef run(model):\n    return validate(model, val_loader, loss_fn)\n",
    ],
)
def test_a_helper_module_without_torch_stays_silent_for_other_callers(run_cli, tmp_path, caller):
    write(tmp_path, {"helpers.py": PLAIN_VALIDATE, "main.py": caller})
    assert codes(run_cli, "helpers.py", "--select", "TL301,TL302", "--no-cache") == []
    assert codes(run_cli, ".", "--select", "TL301,TL302", "--no-cache") == []


def test_a_helper_without_torch_follows_its_callers_through_the_cache(run_cli, tmp_path):
    """The pre-check's answer for helpers.py depends on train.py: an edit there is seen."""
    write(tmp_path, {"helpers.py": PLAIN_VALIDATE, "model.py": DROPOUT_MODEL.format(layer="nn.Dropout(0.2)"), "train.py": torch_train()})
    assert [c for _, c, _ in codes(run_cli, "helpers.py", "--select", "TL301")] == ["TL301"]
    write(tmp_path, {"train.py": torch_train(before="model.eval()")})
    assert codes(run_cli, "helpers.py", "--select", "TL301") == []
    write(tmp_path, {"train.py": "print('no caller left')\n"})
    assert codes(run_cli, "helpers.py", "--select", "TL301") == []
    write(tmp_path, {"train.py": torch_train()})
    assert [c for _, c, _ in codes(run_cli, "helpers.py", "--select", "TL301")] == ["TL301"]


def test_the_precheck_needs_a_torch_caller_in_the_project(tmp_path):
    """Without the project, or with only non-PyTorch callers, the module is not parsed for TL301/TL302."""
    write(tmp_path, {"helpers.py": PLAIN_VALIDATE, "main.py": "from helpers import validate\nvalidate(m, val_loader, f)\n"})
    text = (tmp_path / "helpers.py").read_text()
    path = str(tmp_path / "helpers.py")
    assert lint_text(text, path, frozenset({"TL301", "TL302"})).findings == []
    result = lint_text(text, path, frozenset({"TL301", "TL302"}), project=Project(tmp_path))
    assert result.findings == [] and any(k.startswith("scan:") for k in result.deps)


EXTERNAL_CALLER = """
    import torch
    import torch.nn as nn
    {imports}
    import utils as U

    def main():
        model = {make}
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
        for epoch in range(5):
            for img, mask in train_loader:
                optimizer.zero_grad()
                nn.functional.mse_loss(model(img), mask).backward()
                optimizer.step()
            print(epoch, U.evaluate(model, val_loader))
"""

NO_GRAD_EVALUATE = """
    import torch

    @torch.no_grad()
    def evaluate(model, loader):
        return sum((model(img) - mask).abs().sum().item() for img, mask in loader)
"""


@pytest.mark.parametrize(
    "imports,make,reported",
    [
        # a class from a package outside the project: cannot be seen, TL301 stays silent (as inline)
        ("from fancy_seg_lib.models import SegNet", "SegNet(in_channels=3, classes=1)", False),
        ("from fancy_seg_lib.models import SegNet", "SegNet.from_pretrained('x').to('cuda')", False),
        # near misses: a project class with dropout, a model zoo's, a torch.nn one with BatchNorm
        ("from segnet import SegNet", "SegNet()", True),
        ("from segnet import SegNet", "SegNet.from_pretrained('x')", True),
        ("import torchvision", "torchvision.models.resnet18()", True),
        ("", "nn.Sequential(nn.Conv2d(3, 1, 3), nn.BatchNorm2d(1))", True),
        # a visible model without dropout/normalisation
        ("", "nn.Sequential(nn.Conv2d(3, 1, 3), nn.ReLU())", False),
        # a model this module cannot follow (a parameter of a loader): as before, reported
        ("", "torch.load('model.pt')", True),
    ],
)
def test_an_evaluate_in_another_module_decides_on_the_callers_model_as_inline(run_cli, tmp_path, imports, make, reported):
    segnet = DROPOUT_MODEL.format(layer="nn.Dropout(0.2)").replace("class MLP", "class SegNet")
    write(tmp_path, {"utils.py": NO_GRAD_EVALUATE, "segnet.py": segnet, "train.py": EXTERNAL_CALLER.format(imports=imports, make=make)})
    assert [c for _, c, _ in codes(run_cli, "utils.py", "--select", "TL301", "--no-cache")] == (["TL301"] if reported else [])
    # the same evaluate() moved into train.py (a same-module caller) gives the same answer
    inline = EXTERNAL_CALLER.format(imports=imports, make=make).replace("import utils as U\n", "").replace("U.evaluate", "evaluate")
    write(tmp_path, {"train.py": inline + textwrap.indent(textwrap.dedent(NO_GRAD_EVALUATE).replace("import torch\n", ""), "    ")})
    assert [c for _, c, _ in codes(run_cli, "train.py", "--select", "TL301", "--no-cache")] == (["TL301"] if reported else [])


def test_one_caller_with_a_visible_dropout_model_is_enough(run_cli, tmp_path):
    segnet = DROPOUT_MODEL.format(layer="nn.Dropout(0.2)").replace("class MLP", "class SegNet")
    write(tmp_path, {
        "utils.py": NO_GRAD_EVALUATE, "segnet.py": segnet,
        "train.py": EXTERNAL_CALLER.format(imports="from fancy_seg_lib.models import SegNet", make="SegNet()"),
        "finetune.py": EXTERNAL_CALLER.format(imports="from segnet import SegNet", make="SegNet()"),
    })
    assert [c for _, c, _ in codes(run_cli, "utils.py", "--select", "TL301", "--no-cache")] == ["TL301"]


def test_a_module_without_torch_reads_no_caller_module_unless_one_imports_torch(tmp_path, monkeypatch):
    """scikit-learn code parsed anyway (here without the pre-check, as other rules may): its
    evaluate() is not looked up in the callers' modules unless one of them imports PyTorch."""
    utils = """
        from sklearn.preprocessing import StandardScaler

        def evaluate(model, X_test, y_test):
            X = StandardScaler().fit_transform(X_test)
            return (model(X) == y_test).mean()
    """
    main = "from sklearn.svm import SVC\nimport utils\nmodel = SVC()\nprint(utils.evaluate(model, X_test, y_test))\n"
    write(tmp_path, {"utils.py": utils, "main.py": main})
    import trainlint.analysis.project as project_mod

    monkeypatch.setattr(project_mod, "_read_summary", lambda *a: (_ for _ in ()).throw(AssertionError("parsed main.py")))
    text, path = (tmp_path / "utils.py").read_text(), str(tmp_path / "utils.py")
    assert lint_text(text, path, frozenset({"TL301", "TL302"}), precheck=False, project=Project(tmp_path)).findings == []
    # the near miss: a PyTorch caller's module is read (and parsing it is what this test forbids)
    write(tmp_path, {"main.py": "import torch\n" + main})
    with pytest.raises(AssertionError, match="parsed main.py"):
        lint_text(text, path, frozenset({"TL301", "TL302"}), precheck=False, project=Project(tmp_path))


# -- TL205-TL208: what a model of another module ends in ------------------------------
LOGITS_MLP = """
    import torch.nn as nn
    import torch.nn.functional as F

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(20, 64)
            self.fc2 = nn.Linear(64, {out})

        def forward(self, x):
            return {last}
"""
LOG_PROBS_MLP = LOGITS_MLP.format(out=3, last="F.log_softmax(self.fc2(F.relu(self.fc1(x))), dim=1)")
RAW_MLP = LOGITS_MLP.format(out=3, last="self.fc2(F.relu(self.fc1(x)))")
RELU_MLP = LOGITS_MLP.format(out=3, last="F.relu(self.fc2(F.relu(self.fc1(x))))")
RAW_BINARY = LOGITS_MLP.format(out=1, last="self.fc2(F.relu(self.fc1(x))).squeeze(1)")
PROB_BINARY = LOGITS_MLP.format(out=1, last="torch.sigmoid(self.fc2(F.relu(self.fc1(x)))).squeeze(1)").replace(
    "import torch.nn as nn", "import torch\n    import torch.nn as nn"
)
FACTORIES = """
    from torch import nn

    def make_scorer(n):
        return nn.Sequential(nn.Linear(n, 32), nn.ReLU(), nn.Linear(32, 1))

    def make_prob_scorer(n):
        return nn.Sequential(nn.Linear(n, 32), nn.ReLU(), nn.Linear(32, 1), nn.Sigmoid())
"""
NLL_TRAIN = """
    import torch.nn.functional as F
    from models import Net
    model = Net()
    for x, y in loader:
        loss = F.nll_loss(model(x), y)
        loss.backward()
"""
CE_TRAIN = """
    import torch.nn as nn
    from models import Net
    model = Net()
    criterion = nn.CrossEntropyLoss()
    for x, y in loader:
        loss = criterion(model(x), y)
        loss.backward()
"""
BCE_TRAIN = """
    import torch
    import torch.nn as nn
    from models import {make}
    model = {make}({arg})
    criterion = nn.BCELoss()
    for x, y in loader:
        loss = criterion(model(x).squeeze(-1), y)
        loss.backward()
"""
THRESHOLD_TRAIN = """
    import torch
    import torch.nn as nn
    from models import Net
    model = Net()
    criterion = nn.BCEWithLogitsLoss()
    for x, y in loader:
        loss = criterion(model(x), y)
        loss.backward()
    with torch.no_grad():
        preds = {pred}
"""


@pytest.mark.parametrize(
    "model,train,code,reported",
    [
        (RAW_MLP, NLL_TRAIN, "TL205", True),
        (LOG_PROBS_MLP, NLL_TRAIN, "TL205", False),  # ends in log_softmax: what NLL takes
        (FACTORIES, BCE_TRAIN.format(make="make_scorer", arg="12"), "TL206", True),
        (FACTORIES, BCE_TRAIN.format(make="make_prob_scorer", arg="12"), "TL206", False),
        (PROB_BINARY, BCE_TRAIN.format(make="Net", arg=""), "TL206", False),
        (RELU_MLP, CE_TRAIN, "TL207", True),
        (RAW_MLP, CE_TRAIN, "TL207", False),
        (RAW_BINARY, THRESHOLD_TRAIN.format(pred="model(x) > 0.5"), "TL208", True),
        (RAW_BINARY, THRESHOLD_TRAIN.format(pred="torch.sigmoid(model(x)) > 0.5"), "TL208", False),
        (RAW_BINARY, THRESHOLD_TRAIN.format(pred="model(x) > 0"), "TL208", False),
    ],
)
def test_the_output_of_a_model_of_another_module(run_cli, tmp_path, model, train, code, reported):
    write(tmp_path, {"models.py": model, "train.py": train})
    found = [c for _, c, _ in codes(run_cli, "train.py", "--select", code, "--no-cache")]
    assert found == ([code] if reported else [])
    if reported:
        assert "from models.py" in run_cli("train.py", "--select", code, "--no-cache").stdout


def test_a_model_class_of_another_module_that_cannot_be_seen_stays_silent(run_cli, tmp_path):
    # `Net` is imported from a module that is not in the project: nothing is known
    write(tmp_path, {"train.py": NLL_TRAIN.replace("from models import Net", "from zoo.models import Net")})
    assert codes(run_cli, "train.py", "--select", "TL205", "--no-cache") == []



# -- TL301: a plain function handed over as the model by callers in other modules --------------

FUNCTION_CALLER = """
    import torch
    import torch.nn as nn
    import utils

    def linreg(X, w=torch.ones(4, 1), b=0.0):
        return torch.mm(X, w) + b

    net = {make}
    with torch.no_grad():
        utils.{call}(net, val_loader)
"""

HANDS_ON = """
    import torch

    def predict(net, loader):
        return [net(x).argmax(1) for x, _ in loader]

    def train_and_predict(net, loader, opt):
        for x, y in loader:
            torch.nn.functional.mse_loss(net(x), y).backward()
            opt.step()
        with torch.no_grad():
            return predict(net, loader)
"""


@pytest.mark.parametrize(
    "make,reported",
    [
        ("linreg", False),  # a function: no train/eval mode
        ("lambda X: linreg(X) * 2", False),
        ("nn.Sequential(nn.Linear(4, 1), nn.Dropout(0.2))", True),  # near miss: a module with dropout
    ],
)
def test_a_function_passed_as_the_model_from_another_module(run_cli, tmp_path, make, reported):
    write(tmp_path, {"utils.py": UTILS, "main.py": FUNCTION_CALLER.format(make=make, call="evaluate")})
    found = [c for _, c, _ in codes(run_cli, "utils.py", "--select", "TL301", "--no-cache")]
    assert found == (["TL301"] if reported else [])


@pytest.mark.parametrize(
    "make,reported",
    [
        ("linreg", False),
        ("nn.Sequential(nn.Linear(4, 1), nn.Dropout(0.2))", True),
    ],
)
def test_a_model_handed_on_by_a_same_module_caller_is_read_from_its_callers_in_other_modules(run_cli, tmp_path, make, reported):
    """`predict(net)` is only called by `train_and_predict(net, ...)`, whose own callers live in
    another module: what they pass decides."""
    main = FUNCTION_CALLER.format(make=make, call="train_and_predict").replace("val_loader)", "val_loader, opt)")
    write(tmp_path, {"utils.py": HANDS_ON, "main.py": main})
    found = [(c, line) for _, c, line in codes(run_cli, "utils.py", "--select", "TL301", "--no-cache")]
    assert found == ([("TL301", 4)] if reported else [])


def net_calling(helper_call: str) -> str:
    return f"""
    import torch.nn as nn
    import textlib

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(10, 3)
            self.size = 10

        def forward(self, x):
            return self.fc({helper_call})
    """


@pytest.mark.parametrize(
    "helper_call,reported",
    [
        ("textlib.one_hot(x, self.size)", False),  # handed nothing of the model: same in both modes
        ("textlib.noise(x, self.training)", True),  # near misses: told the mode,
        ("textlib.run(self, x)", True),  # or handed the model itself
    ],
)
def test_an_imported_class_calling_an_outside_helper(run_cli, tmp_path, helper_call, reported):
    """The summary of `models/net.py` says whether its class can depend on the mode when its
    forward calls a helper whose code cannot be seen."""
    write(tmp_path, {"models/__init__.py": "from .net import Net\n", "models/net.py": net_calling(helper_call),
                     "evaluate.py": EVALUATE.format(import_line="from models import Net")})
    found = [c for _, c, _ in codes(run_cli, "evaluate.py", "--select", "TL301", "--no-cache")]
    assert found == (["TL301"] if reported else [])
