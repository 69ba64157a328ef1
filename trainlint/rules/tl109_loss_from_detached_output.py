from __future__ import annotations

from typing import Iterator

import libcst as cst

from trainlint.analysis.gradflow import CUT, computed_loss, gradient_source
from trainlint.analysis.names import dotted
from trainlint.analysis.training import BACKWARD
from trainlint.analysis.values import snippet
from trainlint.rules.base import Report, Rule


class LossFromDetachedOutput(Rule):
    """## What it does
    Finds a `backward()` on a loss that was computed only from model outputs whose graph
    was cut: `out.detach()`, `out.data`, `out.item()` / `.tolist()` / `.numpy()` /
    `float(out)`, or a tensor rebuilt from them (`torch.tensor(out.item(),
    requires_grad=True)`). Values are followed through variables, `self.` attributes,
    loss modules (`criterion = nn.MSELoss()`), same-module helper functions
    (`def rmsle(pred, true): ...` called on `model(x).detach().numpy()`), arithmetic and the
    tensor methods that compute from their inputs; labels and masks built from data
    (`(torch.rand(...) > 0.7).float()`, sliced per batch) stay data.

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
        # a synthetic leaf standing in for a loss (a framework test), and an input that
        # needs gradients (an adversarial example)
        def training_step(self, batch, batch_idx):
            loss = torch.randn(1)
            loss.requires_grad = True
            loss.backward()
            x_adv = batch.clone()
            x_adv.requires_grad = True
            adv_loss = F.cross_entropy(model(x_adv), y)
            adv_loss.backward()
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
        """
        import torch
        # a same-module dice helper: called on the attached probabilities for the loss, on
        # detached ones only for the logged score
        def dice_loss(probs, mask, smooth=1.0):
            inter = (probs * mask).sum()
            return 1 - (2.0 * inter + smooth) / (probs.sum() + mask.sum() + smooth)
        masks = (torch.rand(40, 1, 64, 64) > 0.7).float()
        for i in range(0, 40, 8):
            logits = model(images[i:i + 8])
            loss = dice_loss(torch.sigmoid(logits), masks[i:i + 8])
            loss.backward()
            score = dice_loss(torch.sigmoid(logits).detach(), masks[i:i + 8]).item()
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
        import torch
        import torch.nn as nn
        import torch.nn.functional as F
        # generate() returns token ids: no graph; setting requires_grad hides the error
        loss_fct = nn.CrossEntropyLoss()
        for epoch in range(3):
            for batch, label in data:
                optimizer.zero_grad()
                outputs = lora_model.generate(**batch, max_new_tokens=190)
                outputs = F.softmax(outputs.float(), dim=-1)
                loss = loss_fct(outputs, label)
                loss.requires_grad = True  # !
                loss.backward()
                optimizer.step()
        """,
        """
        import torch
        import torch.nn.functional as F
        class PseudoLabeller:
            def update(self, loader):
                for batch in loader:
                    preds = self.model(batch.x).argmax(1).float()
                    loss = F.mse_loss(preds, batch.y)
                    loss.requires_grad_()  # !
                    loss.backward()
        """,
        """
        import numpy as np
        import torch
        for x, y in loader:
            preds = net(x).cpu().numpy()  # !
            loss = torch.tensor(np.mean((preds - y.numpy()) ** 2), requires_grad=True)
            loss.backward()
        """,
        """
        import numpy as np
        import torch
        # the metric computed by a same-module numpy helper, wrapped back into a tensor
        def rmsle(pred, true, eps=0.0):
            return np.sqrt(np.mean((np.log1p(pred) - np.log1p(true)) ** 2)) + eps
        y = np.abs(np.random.randn(8000, 1)).astype(np.float32)
        for i in range(0, 8000, 256):
            xb, yb = X[i:i + 256], y[i:i + 256]
            preds = model(xb).detach().cpu().numpy()  # !
            loss = torch.tensor(rmsle(preds, yb), requires_grad=True)
            loss.backward()
        """,
        """
        import torch
        # a dice loss on detached probabilities: the ground-truth mask (a thresholded random
        # tensor, sliced per batch) is data and cannot re-attach the graph
        masks = (torch.rand(40, 1, 64, 64) > 0.7).float()
        for epoch in range(5):
            for i in range(0, 40, 8):
                img, mask = images[i:i + 8], masks[i:i + 8]
                logits = model(img)
                probs = torch.sigmoid(logits).detach()  # !
                inter = (probs * mask).sum()
                dice = (2.0 * inter + 1.0) / (probs.sum() + mask.sum() + 1.0)
                loss = 1 - dice
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
        yield from self._requires_grad_on_loss(ctx, tr)

    def _requires_grad_on_loss(self, ctx, tr) -> Iterator[Report]:
        """`loss.requires_grad = True` (or `loss.requires_grad_()`) before `loss.backward()`:
        PyTorch allows it only on a leaf, so the loss has no graph back to the model."""
        backwards = {}
        for call in ctx.facts.calls:
            if any(e.kind == BACKWARD for e in tr.site_events(call)):
                loss = tr.backward_loss(call)
                name = dotted(loss) if loss is not None else None
                if name:
                    backwards.setdefault((id(call.function), name), []).append(call)
        for site, target in _requires_grad_sets(ctx):
            name = dotted(target)
            later = [b for b in backwards.get((id(site.function), name), []) if b.order > site.order]
            if not later or not computed_loss(ctx, target, site):
                continue
            yield Report(
                site.node,
                f"`{snippet(ctx, site.node)}` only works on a tensor with no autograd graph: this loss is "
                f"not connected to the model, so `{snippet(ctx, later[0].node)}` gives its parameters no "
                f"gradient. Find where the graph is cut (`.item()`, `.detach()`, `torch.tensor(...)`, "
                f"`argmax`, `generate()`) and compute the loss from the model's output.",
            )


def _requires_grad_sets(ctx):
    """(site, tensor) for `x.requires_grad = True` and `x.requires_grad_()` / `(True)`."""
    for a in ctx.facts.assigns:
        if a.op != "=" or len(a.targets) != 1 or not (isinstance(a.value, cst.Name) and a.value.value == "True"):
            continue
        t = a.targets[0]
        if isinstance(t, cst.Attribute) and t.attr.value == "requires_grad" and dotted(t.value):
            yield a, t.value
    for c in ctx.facts.calls:
        if c.attr != "requires_grad_" or c.receiver is None or not dotted(c.receiver):
            continue
        args = c.node.args
        if not args or (len(args) == 1 and isinstance(args[0].value, cst.Name) and args[0].value.value == "True"):
            yield c, c.receiver


RULE = LossFromDetachedOutput
