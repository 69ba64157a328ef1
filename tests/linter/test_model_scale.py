"""The shared model-scale analysis behind TL502 (is the model an optimizer trains visibly
deep, visibly small, or not visible), pinned on small sources."""

import textwrap

import libcst as cst
import pytest

from trainlint.analysis.context import FileContext
from trainlint.analysis.model_scale import DEEP, SMALL, optimizer_model_scale


def _scale(src: str, own_key=None):
    """The verdict for the parameters of the source's `torch.optim.Adam(...)` call."""
    text = textwrap.dedent(src)
    ctx = FileContext(cst.parse_module(text), text, "train.py")
    site = next(c for c in ctx.facts.calls if c.attr == "Adam")
    return optimizer_model_scale(ctx, site.arg(0, "params"), site, own_key)[0]


@pytest.mark.parametrize(
    "src,verdict",
    [
        # three linear layers in a class
        (
            """
            import torch
            from torch import nn
            class Net(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.a = nn.Linear(4, 8)
                    self.b = nn.Linear(8, 8)
                    self.c = nn.Linear(8, 2)
            net = Net().cuda()
            torch.optim.Adam(net.parameters(), lr=0.01)
            """,
            SMALL,
        ),
        # a block class used twice counts its layers each time it is built in the model
        (
            """
            import torch
            from torch import nn
            class Block(nn.Module):
                def __init__(self, c):
                    super().__init__()
                    self.c1 = nn.Conv2d(c, c, 3)
                    self.c2 = nn.Conv2d(c, c, 3)
                    self.c3 = nn.Conv2d(c, c, 1)
            class Net(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.b1 = Block(8)
                    self.b2 = Block(16)
                    self.b3 = Block(32)
            torch.optim.Adam(Net().parameters(), lr=0.01)
            """,
            DEEP,
        ),
        # parameter groups: the deep part decides
        (
            """
            import torch, torchvision
            model = torchvision.models.resnet18()
            head = torch.nn.Linear(512, 2)
            torch.optim.Adam([{"params": head.parameters()}, {"params": model.parameters(), "lr": 1e-4}], lr=1e-2)
            """,
            DEEP,
        ),
        # only a backbone's head (a sub-module): its size is not visible
        (
            """
            import torch, torchvision
            model = torchvision.models.resnet18()
            torch.optim.Adam(model.fc.parameters(), lr=1e-2)
            """,
            None,
        ),
        # raw tensors
        (
            """
            import torch
            w = torch.randn(3, requires_grad=True)
            b = torch.zeros(1, requires_grad=True)
            torch.optim.Adam([w, b], lr=0.1)
            """,
            SMALL,
        ),
        # a model from another module
        (
            """
            import torch
            from models import Net
            torch.optim.Adam(Net().parameters(), lr=0.1)
            """,
            None,
        ),
        # a class built on an imported base
        (
            """
            import torch
            from base import BaseModel
            class Net(BaseModel):
                def __init__(self):
                    super().__init__()
                    self.fc = torch.nn.Linear(2, 2)
            torch.optim.Adam(Net().parameters(), lr=0.1)
            """,
            None,
        ),
        # a depth chosen by a loop over a configuration (dense layers): cannot tell
        (
            """
            import torch
            from torch import nn
            class MLP(nn.Module):
                def __init__(self, sizes):
                    super().__init__()
                    self.layers = nn.ModuleList([nn.Linear(a, b) for a, b in zip(sizes, sizes[1:])])
            torch.optim.Adam(MLP([4, 8, 2]).parameters(), lr=0.1)
            """,
            None,
        ),
        # an LSTM counts its num_layers
        (
            """
            import torch
            from torch import nn
            model = nn.Sequential(nn.LSTM(8, 8, num_layers=8))
            torch.optim.Adam(model.parameters(), lr=0.01)
            """,
            DEEP,
        ),
    ],
)
def test_optimizer_model_scale(src, verdict):
    assert _scale(src) == verdict


def test_groups_with_their_own_option_are_left_out():
    src = """
    import torch, torchvision
    model = torchvision.models.resnet18()
    head = torch.nn.Linear(512, 2)
    torch.optim.Adam([{"params": head.parameters()}, {"params": model.parameters(), "lr": 1e-4}], lr=1e-2)
    """
    # the backbone has an lr of its own: the optimizer's lr=1e-2 trains only the head
    assert _scale(src, own_key="lr") == SMALL
    assert _scale(src) == DEEP
