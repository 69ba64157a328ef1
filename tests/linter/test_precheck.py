"""The text pre-check: sharp enough to skip files, never so sharp that it hides a finding.

The generic rule tests run every rule's examples with and without the pre-check; these
tests pin the near misses of the needles themselves.
"""

import subprocess
import sys
import textwrap

import pytest

from trainlint.engine import lint_text
from trainlint.precheck import CATALOGUE, applicable


def passes(code, src, path="train.py"):
    return CATALOGUE[code].passes(textwrap.dedent(src), path)


@pytest.mark.parametrize(
    "code,src",
    [
        # evaluation passes: a function or a loop named for evaluation
        ("TL301", "import torch\ndef validate(model, x):\n    return model(x)\n"),
        ("TL301", "import torch\ndef run_eval_epoch(model, x):\n    return model(x)\n"),
        ("TL301", "import torch\nfor x in loaders['val']:\n    model(x)\n"),
        ("TL302", "import torch\nfor x in testloader:\n    model(x)\n"),
        ("TL302", "import torch\nfor x in dev_data:\n    model(x)\n"),
        # torch.special.expit is a sigmoid; SWALR and a `warmup` are schedulers
        ("TL202", "import torch\nloss = F.binary_cross_entropy_with_logits(torch.special.expit(z), y)\n"),
        ("TL203", "import torch\np = torch.log(expit(z))\n"),
        ("TL107", "import torch\nfrom torch.optim.swa_utils import SWALR\nswa = SWALR(opt, 0.05)\nswa.step()\n"),
        # a hand-written softmax
        ("TL203", "import torch\np = torch.exp(z) / torch.exp(z).sum(1, keepdim=True)\n"),
        # the in-place method's name assigned as an attribute is a typo
        ("TL503", "import torch\np.requires_grad_ = False\n"),
        ("TL503", "import torch\np.require_grad = False\n"),
        ("TL503", "import torch\nx = torch.zeros(3, requries_grad=True)\n"),
        # statistics then a single-slice split, with nested brackets in the slice
        ("TL402", "import numpy as np\nX = X / X.max()\nX_tr = X[:idx[0]]\n"),
        ("TL402", "from sklearn.preprocessing import StandardScaler\ns = StandardScaler().fit(X_test)\n"),
        # numpy-only weight matrices need no torch import
        ("TL501", "import numpy as np\nW1 = np.zeros((784, 128))\nW2 = np.zeros((128, 10))\n"),
        ("TL602", "from torch import load as torch_load\nsd = torch_load(path)\n"),
    ],
)
def test_needles_let_real_cases_through(code, src):
    assert passes(code, src)


@pytest.mark.parametrize(
    "code,src",
    [
        # the words inside longer names do not count
        ("TL301", "import torch\ninterval = value + 1\ndef forward(self, x):\n    return self.evaluator(x)\n"),
        ("TL203", "import torch\nlogits = torch.softmax(z, 1)\nlogger.info(logits)\n"),
        # correct spellings
        ("TL503", "import torch\np.requires_grad = False\np.requires_grad_(False)\n"),
        # no PyTorch-family import: the torch rules cannot fire
        ("TL101", "for x in data:\n    loss.backward()\n    opt.step()\n"),
        ("TL204", "import jax\np = jax.nn.softmax(z)\n"),
        # a statistic with no split, no held-out data, and only multi-dimensional slices
        ("TL402", "import torch\ny = x.mean(dim=1)\nz = x[:, :4]\n"),
        # load/save only as parts of other names
        ("TL602", "import torch\nmodel.load_state_dict(sd)\ndownload(url)\n"),
        ("TL601", "import torch\nsave_dir = 'out'\n"),
    ],
)
def test_needles_skip_near_misses(code, src):
    assert not passes(code, src)


_TRAIN_THEN_EVAL = """
import torch
model.train()
for epoch in range(10):
    for x, y in train_loader:
        opt.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        opt.step()
    {switch}
    with torch.no_grad():
        for x, y in val_loader:
            val_loss = criterion(model(x), y)
"""


@pytest.mark.parametrize(
    "code,src",
    [
        # evaluation data names where the suffix only starts the rest of the part
        ("TL301", "import torch\ndef run(model, testdataloader):\n    for x, y in testdataloader:\n        out = model(x)\n"),
        ("TL302", "import torch\nmodel = torch.nn.Linear(3, 2)\nfor x in my_valloaders:\n    print(model(x))\n"),
        # `re.I` folds the long s: `teſt` is `test` to the analysis
        ("TL301", "import torch\ndef teſt(model, loader):\n    for x in loader:\n        print(model(x))\n"),
        ("TL301", "import torch\ndef run(model, teſt_loader):\n    for x in teſt_loader:\n        print(model(x))\n"),
        # a scaler fitted on held-out data named without an underscore
        ("TL402", "from sklearn.preprocessing import StandardScaler\nscaler = StandardScaler()\nscaler.fit(testdataset)\n"),
        # a single slice with a comma inside a call, or spread over lines
        ("TL402", "import numpy as np\nX = (X - X.mean(0)) / X.std(0)\nX_train = X[:min(800, len(X))]\n"),
        ("TL402", "import numpy as np\nX = (X - X.mean(0)) / X.std(0)\nX_train = X[\n    :800\n]\n"),
        # the in-place method's name assigned through parentheses, a tuple, a continuation
        ("TL503", "import torch\np = torch.zeros(3)\n(p.requires_grad_) = True\n"),
        ("TL503", "import torch\np = torch.zeros(3)\np.requires_grad_, n = True, 1\n"),
        ("TL503", "import torch\np = torch.zeros(3)\np.requires_grad_ \\\n    = True\n"),
        # a scheduler named in capitals
        ("TL107", "import torch\ndef train(model, opt, loader, Warmup):\n    for x in loader:\n        loss = model(x)\n"
                  "        loss.backward()\n        Warmup.step()\n        opt.step()\n        opt.zero_grad()\n"),
        # eval mode by any spelling the analysis reads
        ("TL303", _TRAIN_THEN_EVAL.format(switch="model.eval( )")),
        ("TL303", _TRAIN_THEN_EVAL.format(switch="model.train(mode=False)")),
        ("TL303", _TRAIN_THEN_EVAL.format(switch="model.train( False )")),
    ],
)
def test_spellings_a_text_needle_could_miss_still_reach_the_rule(code, src):
    """Found by a review: each of these once fell through the pre-check."""
    with_precheck = lint_text(src, "train.py").findings
    assert code in {f.code for f in lint_text(src, "train.py", precheck=False).findings}
    assert with_precheck == lint_text(src, "train.py", precheck=False).findings


def test_no_entry_skips_a_file_by_its_name():
    """Test modules are told apart by content after parsing (a `test_*.py` script is linted):
    a name alone never lets the pre-check skip a file, so it cannot disagree with the parse."""
    src = "import torch\nfrom torch.utils.data import DataLoader\nloader = DataLoader(train_set)\n"
    for path in ("pkg/train.py", "test.py", "tests/test_data.py", "pkg/test_loader.py", "loader_test.py", "conftest.py"):
        assert passes("TL401", src, path)
    pytest_module = "import pytest\n" + src
    for path in ("tests/test_data.py", "train.py"):
        assert lint_text(pytest_module, path).findings == lint_text(pytest_module, path, precheck=False).findings == []


def test_codes_outside_the_catalogue_always_apply():
    assert applicable(["TL990", "TL101"], "x = 1\n", "a.py") == ["TL990"]


def test_a_file_no_rule_can_fire_on_never_imports_libcst(tmp_path):
    """The one-file pre-commit case: no libcst import, but TL000 is still reported."""
    code = textwrap.dedent(
        """
        import sys
        from trainlint.engine import lint_text
        ok = lint_text("import os\\nprint(os.getcwd())\\n", "setup.py")
        bad = lint_text("def f(:\\n", "broken.py")
        assert ok.findings == [], ok.findings
        assert [f.code for f in bad.findings] == ["TL000"], bad.findings
        assert "libcst" not in sys.modules, "libcst was imported"
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr


def test_precheck_off_parses_and_finds_the_same():
    src = "import torch\nfor x, y in loader:\n    loss = F.cross_entropy(model(x), y)\n    loss.backward()\n    opt.step()\n"
    assert [f.code for f in lint_text(src, "train.py").findings] == ["TL101"]
    assert lint_text(src, "train.py").findings == lint_text(src, "train.py", precheck=False).findings


_BCE_LOGITS_MODEL = """
import torch
import torch.nn as nn
model = nn.Sequential(nn.Linear(30, 16), nn.ReLU(), nn.Linear(16, 1))
criterion = nn.BCEWithLogitsLoss()
logits = model(x)
loss = criterion(logits, y)
{use}
"""


def test_every_random_augmentation_the_rule_knows_passes_the_needle():
    """TL404's needle is a list of substrings: each name in the rule's vocabulary holds one."""
    from trainlint.rules import tl404_random_augmentation_in_eval_transform as tl404

    names = (
        tl404.TORCHVISION_RANDOM | tl404.TORCHVISION_WITH_P | tl404.ALBUMENTATIONS_RANDOM
        | tl404.ALBUMENTATIONS_WITH_P | {"RandomAffine", "ColorJiggle", "RandFlipd"}
    )
    for name in sorted(names):
        src = f"import torchvision.transforms as T\nval_tf = T.Compose([T.{name}()])\n"
        assert passes("TL404", src), name
    # no random augmentation, or no held-out data: skipped
    assert not passes("TL404", "import torchvision.transforms as T\nval_tf = T.Compose([T.Resize(256)])\n")
    assert not passes("TL404", "import torchvision.transforms as T\nmy_tf = T.Compose([T.RandomCrop(32)])\n")


@pytest.mark.parametrize(
    "code,src",
    [
        # 0.5 written without its leading zero; a rounding method
        ("TL208", _BCE_LOGITS_MODEL.format(use="preds = (logits >= .5).float()")),
        ("TL208", _BCE_LOGITS_MODEL.format(use="preds = logits.round()")),
        # a cut by float() and a copy by torch.tensor(), no .detach()/.item() in the file
        ("TL109", "import torch\nfor x, y in loader:\n    out = model(x)\n    loss = torch.tensor(float(out.sum()), requires_grad=True)\n    loss.backward()\n"),
        ("TL109", "import torch\nfor x, y in loader:\n    loss = torch.tensor(net(x), requires_grad=True).mean()\n    loss.backward()\n"),
        # AdamW's default weight decay, no `weight_decay=` in the file
        ("TL504", "import torch\nfrom torch import nn\nnet = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))\nopt = torch.optim.AdamW(net.parameters())\n"),
        # a convolution's raw output into NLL loss; ReLU6 before cross-entropy
        ("TL205", "import torch\nfrom torch import nn\nnet = nn.Sequential(nn.Conv2d(3, 5, 1))\nloss = nn.NLLLoss()(net(x), y)\n"),
        ("TL207", "import torch\nfrom torch import nn\nnet = nn.Sequential(nn.Linear(3, 5), nn.ReLU6())\nloss = nn.CrossEntropyLoss()(net(x), y)\n"),
    ],
)
def test_new_rules_reach_spellings_a_needle_could_miss(code, src):
    without = lint_text(src, "train.py", precheck=False).findings
    assert code in {f.code for f in without}
    assert lint_text(src, "train.py").findings == without


@pytest.mark.parametrize(
    "code,src",
    [
        # every K-fold splitter analysis/splits.py knows
        ("TL406", "from sklearn.decomposition import PCA\nfrom sklearn.model_selection import LeaveOneGroupOut\n"
                  "Z = PCA(5).fit_transform(X)\nfor tr, te in LeaveOneGroupOut().split(Z, y, groups):\n    pass\n"),
        # held-out data by any name the analysis reads as held out
        ("TL406", "from sklearn.impute import SimpleImputer\nX_eval = SimpleImputer().fit_transform(X_eval)\n"),
        ("TL405", "import torch\nfor x, y in loaders['dev']:\n    loss(model(x), y).backward()\n    opt.step()\n"),
    ],
)
def test_new_rule_needles_let_real_cases_through(code, src):
    with_precheck = lint_text(src, "train.py").findings
    assert code in {f.code for f in lint_text(src, "train.py", precheck=False).findings}
    assert with_precheck == lint_text(src, "train.py", precheck=False).findings


@pytest.mark.parametrize(
    "code,src",
    [
        # NLL loss with no layer, softmax or convolution named in the file: nothing to show
        ("TL205", "import torch\nloss = F.nll_loss(model(x), y)\n"),
        ("TL206", "import torch\nloss = nn.BCELoss()(model(x), y)\n"),
        # weight decay in a file without normalisation layers
        ("TL504", "import torch\nopt = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=5e-4)\n"),
        # no cut in a file that backpropagates
        ("TL109", "import torch\nloss = criterion(model(x), y)\nloss.backward()\n"),
    ],
)
def test_new_rules_needles_skip_near_misses(code, src):
    assert not passes(code, src)


@pytest.mark.parametrize(
    "code,src",
    [
        # a concatenation of training parts only, and a word that merely contains `cat`
        ("TL405", "import torch\nfull = torch.utils.data.ConcatDataset([train_a, train_b])\ncategory = 1\n"),
        # fitting without an estimator library
        ("TL406", "import torch\nmodel.fit(X_test)\n"),
        # two samplings, nothing named for training
        ("TL408", "import pandas as pd\npreview = df.sample(5)\nval_rows = df.sample(100)\n"),
        # a resume that never saves anything in the file
        ("TL603", "import torch\nmodel.load_state_dict(torch.load(p)['model'])\nloss.backward()\nopt.step()\n"),
        # a best-so-far comparison with no test-named metric or data
        ("TL407", "import torch\nif val_acc > best_acc:\n    torch.save(model.state_dict(), 'b.pt')\n"),
    ],
)
def test_new_rule_needles_skip_near_misses(code, src):
    assert not passes(code, src)


@pytest.mark.parametrize("code", ["TL404", "TL405", "TL406", "TL408", "TL407", "TL603"])
def test_data_rules_leave_test_modules_alone(code):
    """Test modules build random transforms, splits and `test_loader` fixtures on purpose: the
    rule is silent there, with or without the pre-check, and fires on the same code elsewhere."""
    from trainlint.registry import all_rules

    src = textwrap.dedent(all_rules()[code].INVALID[0])
    assert code in {f.code for f in lint_text(src, "pkg/train.py", precheck=False).findings}
    # a test module is told by its content (analysis/pytest_modules.py), not its name
    test_src = "import pytest\n" + src
    for path in ("tests/test_data.py", "pkg/test_split.py"):
        assert code not in {f.code for f in lint_text(test_src, path).findings}
        assert code not in {f.code for f in lint_text(test_src, path, precheck=False).findings}
    # the same code in a script named test_*.py is linted like any other
    assert code in {f.code for f in lint_text(src, "pkg/test_split.py").findings}
