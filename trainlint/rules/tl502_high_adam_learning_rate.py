from __future__ import annotations

import re
from typing import Iterator, Optional, Tuple

import libcst as cst

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
THRESHOLD = 0.01
# Small policies trained on an environment loop (CartPole-style policy gradient, actor-critic)
# routinely and successfully use Adam at 1e-2..3e-2: there only a rate an order of magnitude
# off is reported.
RL_THRESHOLD = 0.1
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
    Finds `torch.optim.Adam` / `AdamW` created with a literal learning rate of 0.01 or more
    (as `lr=`, as the second positional argument, or through a module-level constant).

    ## Why is this bad?
    Adam normalises each step by the running gradient scale, so its step size is roughly the
    learning rate itself, whatever the gradients' magnitude. Its default is 1e-3 and most
    models train with 1e-4 to 3e-3; at 0.01 and above training often diverges, oscillates or
    settles far from the minimum. A value copied from SGD (where 0.1 is usual) is a common
    cause. Files that use `OneCycleLR`/`CyclicLR` (which overwrite the rate) and test modules are
    not reported.

    Where it applies: supervised and self-supervised training, at 0.01 and above. A file that
    trains a reinforcement-learning policy on an environment loop (it calls `env.step(...)`
    in a loop, or makes a `gym`/`gymnasium` environment and samples actions from a
    `torch.distributions` policy) is held to a stricter threshold of 0.1: tiny policies
    (CartPole-style REINFORCE, actor-critic) routinely train well with Adam at 1e-2..3e-2.

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
    )
    INVALID = (
        """
        import torch
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
        import torch
        # near-miss: a gym dependency, but no environment loop and no policy distribution
        spaces = gym.spaces.Box(low=0, high=1, shape=(4,))
        optimizer = torch.optim.Adam(model.parameters(), lr=2e-2)  # !
        """,
        """
        import torch.optim as optim
        opt = optim.AdamW(net.parameters(), 1e-2)  # !
        """,
        """
        from torch.optim import AdamW
        LEARNING_RATE = 0.05
        def make_optimizer(model):
            return AdamW(model.parameters(), lr=LEARNING_RATE)  # !
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
        threshold = RL_THRESHOLD if rl else THRESHOLD
        for call in calls:
            lr = call.arg(1, "lr")
            try:
                found = self._value(ctx, lr, call)
            except RecursionError:  # FileContext.constructions loops on `self.x = self.x.to(dev)`
                continue
            if found is None:
                continue
            value, how = found
            if value < threshold:
                continue
            shown = ctx.module.code_for_node(lr)
            usual = (
                "even the small policies of environment-loop RL train at 1e-2..3e-2 at most"
                if rl
                else "at >= 0.01 training often diverges or oscillates (default 1e-3, usual range 1e-4..3e-3)"
            )
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
