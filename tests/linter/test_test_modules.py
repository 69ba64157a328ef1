"""Which files count as test modules: judged by content, and only for the rules that exempt tests.

A script named `test_on_image.py` that loads a checkpoint named on the command line, or a
library module named `test_time_pool.py`, is linted like any other file; a pytest or unittest
module is exempt from the rules that exempt tests (TL401 here), not from the others.
"""

import textwrap

import pytest

from trainlint.engine import lint_text

UNSHUFFLED = """
import torch
from torch.utils.data import DataLoader
loader = DataLoader(train_set, batch_size=4)
"""


def codes(src, path):
    return sorted({f.code for f in lint_text(textwrap.dedent(src), path).findings})


@pytest.mark.parametrize(
    "path,src",
    [
        # imports pytest: a test module whatever its name
        ("tests/test_data.py", "import pytest\n" + UNSHUFFLED),
        ("helpers.py", "import pytest\n" + UNSHUFFLED),
        # a unittest.TestCase
        ("check_loader.py", UNSHUFFLED + "import unittest\nclass LoaderTest(unittest.TestCase):\n    def test_shape(self):\n        self.assertEqual(model(torch.ones(4)).shape, (2,))\n"),
        # named for pytest, a test function taking a fixture
        ("test_loader.py", UNSHUFFLED + "def test_save(tmp_path):\n    torch.save(model.state_dict(), tmp_path / 'm.pt')\n"),
        # named for pytest, a test function with a bare assert
        ("pkg/loader_test.py", UNSHUFFLED + "def test_shape():\n    assert model(torch.ones(4)).shape == (2,)\n"),
        # a Test* class's method asserting through a helper
        ("test_loader.py", UNSHUFFLED + "class TestLoader:\n    def test_zero(self):\n        torch.testing.assert_close(model(torch.ones(4)), torch.zeros(2))\n"),
    ],
)
def test_a_test_module_is_exempt_from_the_rules_that_exempt_tests(path, src):
    assert "loader" not in src.split("batch_size=4)", 1)[1]  # the loader is not read: only the exemption can silence it
    assert codes(src, path) == []


def test_the_loader_alone_is_reported():
    assert codes(UNSHUFFLED, "train.py") == ["TL401"]


@pytest.mark.parametrize(
    "path,src",
    [
        # named for pytest, but a script: no test function at all
        ("test_on_image.py", UNSHUFFLED + "train(model, loader)\n"),
        # a test_* function the module calls itself: the script's own step
        ("test_loader.py", UNSHUFFLED + "def test_len(loader):\n    assert len(loader) == 3\ntest_len(loader)\n"),
        # a test_* function with neither fixtures nor asserts: a demo
        ("test_time_pool.py", UNSHUFFLED + "def test_pool():\n    print(pool(torch.ones(4)))\n"),
        # asserts and fixtures, but in a file pytest would not collect
        ("train.py", UNSHUFFLED + "def test_shape(tmp_path):\n    assert model(torch.ones(4)).shape == (2,)\n"),
    ],
)
def test_a_file_named_like_a_test_but_not_one_is_linted(path, src):
    assert codes(src, path) == ["TL401"]


def test_a_script_named_test_loading_a_checkpoint_from_argparse_is_linted():
    src = """
    import argparse
    import torch
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint")
    opt = parser.parse_args()
    model.load_state_dict(torch.load(opt.checkpoint, weights_only=False))
    """
    assert codes(src, "test_on_image.py") == ["TL602"]
    assert codes("import pytest\n" + textwrap.dedent(src), "test_on_image.py") == []


def test_a_test_module_is_still_checked_by_the_rules_that_do_not_exempt_tests():
    src = """
    import pytest
    import torch
    def test_training_reduces_loss(model, opt, loader):
        for x, y in loader:
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            opt.step()
    """
    assert codes(src, "tests/test_train.py") == ["TL101"]
