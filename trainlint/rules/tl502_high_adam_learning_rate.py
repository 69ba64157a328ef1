from __future__ import annotations

import re
from typing import Iterator, Optional, Tuple

import libcst as cst

from trainlint.analysis.model_scale import DEEP, SMALL, optimizer_model_scale
from trainlint.analysis.names import dotted
from trainlint.rules.base import Report, Rule

ADAM = {
    "torch.optim.Adam",
    "torch.optim.AdamW",
    "torch.optim.adam.Adam",
    "torch.optim.adamw.AdamW",
}
# Schedulers that overwrite the optimizer's learning rate with their own (`max_lr`, `base_lr`).
LR_OVERRIDING_SCHEDULERS = ("OneCycleLR", "CyclicLR")
# A deep model (a model-zoo backbone, attention layers, a conv stack built in a loop, eight
# weight layers or more) is reported from 0.01: such networks train at 1e-4..3e-3.
DEEP_THRESHOLD = 0.01
# Small models (tabular MLPs, softmax regression, MNIST nets, toy RNNs, CartPole DQNs) train
# fine with Adam at 0.01..0.05, so a model that cannot be seen is reported only from 0.1, ten
# times above any usual setting; a model visibly small (raw tensors, a few layers) not at all.
ANY_THRESHOLD = 0.1
ENV_PACKAGES = {"gym", "gymnasium", "envpool", "pettingzoo", "procgen", "minigrid", "dm_control", "vizdoom", "gym_super_mario_bros"}
ENV_NAME = re.compile(r"(^|_)(envs?|environment|vec_env|venv)$", re.I)


def literal_number(expr: Optional[cst.BaseExpression]) -> Optional[float]:
    """The value of a numeric literal (`0.1`, `1e-2`, `3`), else None."""
    if isinstance(expr, (cst.Float, cst.Integer)):
        try:
            return float(expr.evaluated_value)
        except (TypeError, ValueError, OverflowError):
            return None
    return None


def _trains_rl_policy(ctx) -> bool:
    """The file trains a policy on an environment loop: it steps an environment inside a loop
    (`env.step(action)`, `self.envs.step(...)`), or makes one (`gym.make`) and samples
    actions from a `torch.distributions` policy (`Categorical`, `Normal`, `log_prob`)."""
    made = policy = False
    for c in ctx.facts.calls:
        q = c.qualname or ""
        if q.split(".", 1)[0] in ENV_PACKAGES:
            made = True
        if q.startswith("torch.distributions.") or c.attr == "log_prob":
            policy = True
        if c.attr == "step" and c.receiver is not None and c.loops:
            name = (dotted(c.receiver) or "").rsplit(".", 1)[-1]
            if ENV_NAME.search(name):
                return True
    return made and policy


class HighAdamLearningRate(Rule):
    """## What it does
    Finds `torch.optim.Adam` / `AdamW` with a learning rate too high for the model it trains:
    0.01 or more on a visibly deep model, 0.1 or more on a model not visibly small. The rate
    is a literal (as `lr=`, as the second positional argument, or through a module-level
    constant).

    ## Why is this bad?
    Adam normalises each step by the running gradient scale, so its step size is roughly the
    learning rate itself, whatever the gradients' magnitude. Its default is 1e-3 and deep
    networks train with 1e-4 to 3e-3; at 0.01 and above they often diverge, oscillate or
    settle far from the minimum. A value copied from SGD (where 0.1 is usual) is a common
    cause.

    Where it applies: the rule follows the optimizer's parameters (`model.parameters()`,
    `self.parameters()` in a Lightning module, parameter groups, raw tensors) to the model's
    construction in the same file. A model counts as deep when it is a model-zoo or
    pretrained backbone (`torchvision.models`, `timm`, `transformers`, `torch.hub.load`,
    `from_pretrained`), has transformer/attention layers, builds convolution blocks in a loop
    (ResNet's `_make_layer`), or has eight weight layers or more (convolutions, linear
    layers, recurrent layers counting `num_layers`): there 0.01 and above is reported. Small
    models (a tabular MLP, softmax regression, an MNIST CNN, a toy RNN, a CartPole DQN)
    converge with Adam at 0.01..0.05, so a model that is not visibly deep is reported only
    from 0.1, and one visibly small (a few layers, a few raw tensors) not at all. A file
    that trains a reinforcement-learning policy on an environment loop (it calls
    `env.step(...)` in a loop, or makes a `gym`/`gymnasium` environment and samples actions
    from a `torch.distributions` policy) is held to 0.1 whatever the model. Files that use
    `OneCycleLR`/`CyclicLR` (which overwrite the rate) and test modules are not reported.

    ## Example
    ```python
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    ```

    ## Use instead
    ```python
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    ```
    """

    code = "TL502"
    name = "high-adam-learning-rate"
    severity = "info"

    VALID = (
        """
        import torch
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        """,
        """
        import torch
        # SGD with a high rate is normal
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        """,
        """
        import torch
        optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
        """,
        """
        from torch.optim import Adam
        from torch.optim.lr_scheduler import OneCycleLR
        opt = Adam(model.parameters(), lr=0.01)
        sched = OneCycleLR(opt, max_lr=3e-3, total_steps=1000)
        """,
        """
        import torch.optim as optim
        LR = 3e-4
        opt = optim.Adam(model.parameters(), LR, betas=(0.9, 0.99))
        """,
        """
        import torch
        # `eps` and `weight_decay` are not the learning rate
        opt = torch.optim.Adam(model.parameters(), eps=0.1, weight_decay=0.01)
        """,
        """
        import gym
        import torch
        from torch.distributions import Categorical
        # a tiny CartPole policy trained with REINFORCE: 1e-2 is usual there
        env = gym.make("CartPole-v1")
        policy = Policy()
        optimizer = torch.optim.Adam(policy.parameters(), lr=1e-2)
        for episode in range(1000):
            state, _ = env.reset()
            for t in range(500):
                action = Categorical(policy(state)).sample()
                state, reward, done, _, _ = env.step(action.item())
        """,
        """
        import torch
        # actor-critic on an environment held by the agent
        class Agent:
            def __init__(self, env):
                self.env = env
                self.optimizer = torch.optim.Adam(self.net.parameters(), lr=3e-2)
            def run_episode(self):
                state = self.env.reset()
                while True:
                    state, reward, done, _ = self.env.step(self.act(state))
                    if done:
                        break
        """,
        """
        import torch
        from torch import nn
        # a small tabular MLP: Adam at 0.01 converges there
        class Net(nn.Module):
            def __init__(self, in_count, out_count):
                super().__init__()
                self.fc1 = nn.Linear(in_count, 50)
                self.fc2 = nn.Linear(50, 25)
                self.fc3 = nn.Linear(25, out_count)
        model = Net(x.shape[1], 3).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
        """,
        """
        import torch
        import torch.optim as optim
        # two raw parameters of a linear model: even 0.1 converges
        params = torch.tensor([1.0, 0.0], requires_grad=True)
        learning_rate = 1e-1
        optimizer = optim.Adam([params], lr=learning_rate)
        """,
        """
        import torch
        from torch import nn
        # a toy one-layer RNN, visibly small, at 0.1
        class Model(nn.Module):
            def __init__(self):
                super().__init__()
                self.rnn = nn.RNN(input_size=5, hidden_size=5, batch_first=True)
        model = Model()
        optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
        """,
        """
        import torch
        from mypkg.models import build_model
        # the model is built elsewhere: 0.05 may suit it
        model = build_model(cfg)
        optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
        """,
        """
        import torch
        from torch import nn
        # near-miss of the repeated blocks: dense layers in a loop may be two of a small MLP
        class MLP(nn.Module):
            def __init__(self, n_hidden):
                super().__init__()
                layers = []
                for _ in range(n_hidden):
                    layers.append(nn.Linear(32, 32))
                self.body = nn.Sequential(*layers)
        model = MLP(2)
        optimizer = torch.optim.Adam(model.parameters(), lr=0.03)
        """,
        """
        import torch
        from torch import nn
        # a small MNIST CNN: two convolutions and two linear layers
        model = nn.Sequential(
            nn.Conv2d(1, 16, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3), nn.ReLU(), nn.Flatten(),
            nn.Linear(800, 128), nn.ReLU(), nn.Linear(128, 10),
        )
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
        """,
        """
        import torch
        import torchvision
        # the pretrained backbone has a rate of its own: 1e-2 trains only the new head
        backbone = torchvision.models.resnet50(weights="DEFAULT")
        head = torch.nn.Linear(1000, 5)
        optimizer = torch.optim.Adam(
            [{"params": backbone.parameters(), "lr": 1e-4}, {"params": head.parameters()}], lr=1e-2
        )
        """,
    )
    INVALID = (
        """
        import torch
        # a rate ten times above any usual one, on a model that cannot be seen
        optimizer = torch.optim.Adam(model.parameters(), lr=0.1)  # !
        """,
        """
        import gym
        import torch
        # an RL policy, but a rate an order of magnitude above even RL's usual range
        env = gym.make("CartPole-v1")
        optimizer = torch.optim.Adam(policy.parameters(), lr=0.5)  # !
        for episode in range(1000):
            state, _ = env.reset()
            done = False
            while not done:
                state, reward, done, _, _ = env.step(policy.act(state))
        """,
        """
        import gym
        import torchvision
        import torch
        # near-miss of RL: a gym dependency, but no environment loop and no policy distribution;
        # the model is a torchvision ResNet
        spaces = gym.spaces.Box(low=0, high=1, shape=(4,))
        model = torchvision.models.resnet18(num_classes=10)
        optimizer = torch.optim.Adam(model.parameters(), lr=2e-2)  # !
        """,
        """
        import torch.optim as optim
        from torchvision import models
        # a pretrained backbone fine-tuned at 0.01
        net = models.resnet50(weights="IMAGENET1K_V2").to("cuda")
        opt = optim.AdamW(net.parameters(), 1e-2)  # !
        """,
        """
        from torch import nn
        from torch.optim import AdamW
        LEARNING_RATE = 0.05
        class Encoder(nn.Module):
            def __init__(self, d):
                super().__init__()
                layer = nn.TransformerEncoderLayer(d, nhead=8)
                self.encoder = nn.TransformerEncoder(layer, num_layers=6)
                self.head = nn.Linear(d, 2)
        def make_optimizer(model):
            return AdamW(model.parameters(), lr=LEARNING_RATE)  # !
        optimizer = make_optimizer(Encoder(512))
        """,
        """
        import torch
        from torch import nn
        # ResNet built with `_make_layer`: convolution blocks repeated in a loop
        class Block(nn.Module):
            def __init__(self, c):
                super().__init__()
                self.conv1 = nn.Conv2d(c, c, 3, padding=1)
                self.conv2 = nn.Conv2d(c, c, 3, padding=1)
        class ResNet(nn.Module):
            def __init__(self, layers):
                super().__init__()
                self.stem = nn.Conv2d(3, 64, 7)
                self.layer1 = self._make_layer(64, layers[0])
                self.fc = nn.Linear(64, 10)
            def _make_layer(self, c, n):
                blocks = []
                for _ in range(n):
                    blocks.append(Block(c))
                return nn.Sequential(*blocks)
        def resnet34():
            return ResNet([3, 4, 6, 3])
        model = resnet34()
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)  # !
        """,
        """
        import lightning as L
        import timm
        import torch
        # a Lightning module around a timm backbone: `self.parameters()`
        class Classifier(L.LightningModule):
            def __init__(self):
                super().__init__()
                self.backbone = timm.create_model("vit_base_patch16_224", pretrained=True)
            def configure_optimizers(self):
                return torch.optim.AdamW(self.parameters(), lr=0.01)  # !
        """,
        """
        import torch
        from torch import nn
        # near-miss of a small MLP: nine linear layers in one stack
        model = nn.Sequential(
            nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
            nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
            nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
            nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
            nn.Linear(256, 10),
        )
        optimizer = torch.optim.Adam(model.parameters(), lr=0.02)  # !
        """,
    )

    def check(self, ctx) -> Iterator[Report]:
        if ctx.is_test_file:
            return
        calls = [c for c in ctx.facts.calls if c.qualname in ADAM]
        if not calls:
            return
        if any((c.qualname or "").endswith(LR_OVERRIDING_SCHEDULERS) and "lr_scheduler" in (c.qualname or "") for c in ctx.facts.calls):
            return
        rl = _trains_rl_policy(ctx)
        for call in calls:
            lr = call.arg(1, "lr")
            try:
                found = self._value(ctx, lr, call)
            except RecursionError:  # FileContext.constructions loops on `self.x = self.x.to(dev)`
                continue
            if found is None:
                continue
            value, how = found
            if value < DEEP_THRESHOLD:
                continue
            scale, why = optimizer_model_scale(ctx, call.arg(0, "params"), call, own_key="lr")
            shown = ctx.module.code_for_node(lr)
            if value >= ANY_THRESHOLD and scale != SMALL:
                usual = (
                    "even the small policies of environment-loop RL train at 1e-2..3e-2 at most"
                    if rl
                    else "0.1 and above is ten to a hundred times the usual range (default 1e-3, "
                    "1e-4..3e-3 for most models), where training diverges or oscillates"
                )
            elif scale == DEEP and not rl:
                usual = (
                    f"the model it trains ({why}) is deep: such networks train at 1e-4..3e-3 (default 1e-3), "
                    f"and at >= 0.01 they often diverge or stall"
                )
            else:
                continue
            yield Report(
                lr,
                f"{call.attr} with learning rate {shown}{how}: Adam's step size is about the learning "
                f"rate itself, and {usual}. Lower it (e.g. `lr=1e-3`) unless this was tuned.",
            )

    @staticmethod
    def _value(ctx, expr, call) -> Optional[Tuple[float, str]]:
        if expr is None:
            return None
        direct = literal_number(expr)
        if direct is not None:
            return direct, ""
        if not isinstance(expr, cst.Name):
            return None
        cands = ctx.resolve(expr, call)
        values = [literal_number(v) for v, _ in cands]
        if not values or any(v is None for v in values):
            return None
        # Only a constant: every assignment a literal, and a single value.
        if len(set(values)) != 1:
            return None
        return values[0], f" (= {ctx.module.code_for_node(cands[0][0])})"  # type: ignore[return-value]


RULE = HighAdamLearningRate
