from __future__ import annotations

from typing import Iterator

from trainlint.analysis.gradflow import CUT, gradient_source
from trainlint.analysis.training import BACKWARD
from trainlint.analysis.values import snippet
from trainlint.rules.base import Report, Rule


class LossFromDetachedOutput(Rule):
    """## What it does
    Finds a `backward()` on a loss that was computed only from model outputs whose graph
    was cut: `out.detach()`, `out.data`, `out.item()` / `.tolist()` / `.numpy()` /
    `float(out)`, or a tensor rebuilt from them (`torch.tensor(out.item(),
    requires_grad=True)`). Values are followed through variables, `self.` attributes,
    loss modules (`criterion = nn.MSELoss()`), arithmetic and the tensor methods that
    compute from their inputs.

    ## Why is this bad?
    No gradient reaches the model: either `backward()` fails ("element 0 of tensors does
    not require grad"), or — after the usual "fix" of rebuilding the loss with
    `requires_grad=True` — it runs, the parameters get no gradient, and the optimizer steps
    nothing while the loss curve is printed as if training were happening.

    It reports only when every path to a gradient was cut: a loss that also depends on a
    model output left attached (a GAN's `D(G(z).detach())`, a distillation target
    `teacher(x).detach()`), on a trainable leaf (`nn.Parameter`, a temperature learned on
    detached logits) or on anything it cannot follow stays silent.

    ## Example
    ```python
    out = model(x)
    loss = torch.tensor(criterion(out, y).item(), requires_grad=True)
    loss.backward()
    ```

    ## Use instead
    ```python
    out = model(x)
    loss = criterion(out, y)
    loss.backward()
    running_loss += loss.item()  # a number for logging only
    ```
    """

    code = "TL109"
    name = "loss-from-detached-output"
    severity = "error"

    VALID = (
        """
        import torch
        import torch.nn as nn
        # GAN: the generator's output is detached for the discriminator's loss
        criterion = nn.BCELoss()
        for real, _ in loader:
            fake = netG(torch.randn(64, 100))
            loss_D = criterion(netD(fake.detach()), torch.zeros(64))
            loss_D.backward()
            optD.step()
        """,
        """
        import torch
        import torch.nn.functional as F
        # distillation: the teacher's output is the (detached) target
        for x, y in train_loader:
            s_logits = student(x)
            t_logits = teacher(x).detach()
            loss = F.kl_div(F.log_softmax(s_logits, 1), F.softmax(t_logits, 1), reduction="batchmean")
            loss.backward()
        """,
        """
        import torch
        import torch.nn as nn
        import torch.nn.functional as F
        # temperature scaling: a parameter learned on detached logits
        class Calibrator(nn.Module):
            def __init__(self):
                super().__init__()
                self.temperature = nn.Parameter(torch.ones(1))
            def fit(self, model, loader):
                for x, y in loader:
                    logits = model(x).detach()
                    loss = F.cross_entropy(logits / self.temperature, y)
                    loss.backward()
        """,
        """
        import torch
        # the detached copy is for logging; the attached loss is backpropagated
        for x, y in loader:
            out = model(x)
            loss = criterion(out, y)
            logged = loss.detach()
            running += loss.item()
            loss.backward()
        """,
        """
        import torch
        # truncated backpropagation through time: the hidden state is detached
        for x, y in loader:
            hidden = hidden.detach()
            out, hidden = model(x, hidden)
            loss = criterion(out, y)
            loss.backward()
        """,
        """
        import torch
        import torch.nn.functional as F
        # outputs collected in a list: what the list holds is not followed
        outs = []
        for x in chunks:
            outs.append(model(x))
        target = teacher(batch).detach()
        loss = F.mse_loss(torch.cat(outs), target)
        loss.backward()
        """,
        """
        import torch
        # a fallback for models that return a plain number: the rebuild is conditional
        for batch in train_loader:
            loss = model(**batch)
            if not isinstance(loss, torch.Tensor):
                loss = torch.tensor(loss, requires_grad=True)
            loss.backward()
        """,
        """
        import torch
        # a branch detaches only in one configuration: not every path is cut
        for x, y in loader:
            out = model(x)
            if freeze_head:
                out = out.detach()
            loss = criterion(out, y)
            loss.backward()
        """,
    )
    INVALID = (
        """
        import torch
        import torch.nn as nn
        criterion = nn.MSELoss()
        for x, y in train_loader:
            out = model(x)
            loss = criterion(out.detach(), y)  # !
            loss.backward()
            optimizer.step()
        """,
        """
        import torch
        import torch.nn.functional as F
        def train_step(model, optimizer, x, y):
            pred = model(x)
            loss_value = F.cross_entropy(pred, y).item()  # !
            loss = torch.tensor(loss_value, requires_grad=True)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        """,
        """
        import torch
        import torch.nn as nn
        class Trainer:
            def __init__(self, model):
                self.model = model
                self.criterion = nn.L1Loss()
            def step(self, batch):
                x, y = batch
                out = self.model(x).data  # !
                loss = self.criterion(out, y)
                loss.backward()
        """,
        """
        import torch
        import torch.optim as optim
        from config import *
        # a DQN agent (after a real repository): the summed loss is copied into a new leaf
        class Agent:
            def __init__(self, q_net):
                self.Q = q_net
                self.optimizer = optim.Adam(self.Q.parameters(), lr=1e-4)
            def train(self, states, actions, rewards, next_states):
                loss = 0
                for i in range(batch):
                    if dones[i]:
                        y = rewards[i]
                    else:
                        y = rewards[i] + gamma * torch.max(self.target_Q(next_states[i])).item()
                    loss += (y - self.Q(states[i])[actions[i]]) ** 2
                loss /= batch
                loss = torch.tensor(loss, requires_grad=True)  # !
                self.optimizer.zero_grad()
                loss.backward()
                self.optimizer.step()
        """,
        """
        import numpy as np
        import torch
        for x, y in loader:
            preds = net(x).cpu().numpy()  # !
            loss = torch.tensor(np.mean((preds - y.numpy()) ** 2), requires_grad=True)
            loss.backward()
        """,
    )

    def check(self, ctx) -> Iterator[Report]:
        if not ctx.uses_torch:
            return
        tr = ctx.training
        for call in ctx.facts.calls:
            events = tr.site_events(call)
            if not any(e.kind == BACKWARD for e in events):
                continue
            loss = tr.backward_loss(call)
            if loss is None:
                continue
            flow = gradient_source(ctx, loss, call)
            if flow.kind != CUT or flow.cut is None:
                continue
            yield Report(
                flow.cut,
                f"`{snippet(ctx, flow.cut)}` cuts the model's output off the autograd graph, and "
                f"`{snippet(ctx, call.node)}` backpropagates a loss built only from such values: no "
                f"gradient reaches the model (backward fails, or with `requires_grad=True` the "
                f"parameters never change). Compute the loss from the attached output; use "
                f"`.item()`/`.detach()` only for logging.",
            )


RULE = LossFromDetachedOutput
