from __future__ import annotations

from typing import Iterator

import libcst as cst

from trainlint.analysis.names import dotted
from trainlint.analysis.training import BACKWARD, STEP, ZERO_GRAD
from trainlint.rules.base import Replacement, Report, Rule


class MissingZeroGrad(Rule):
    """## What it does
    Finds a training loop that runs `backward()` and `optimizer.step()` every iteration
    but never clears the gradients (`optimizer.zero_grad()`, `model.zero_grad()`,
    `p.grad = None`), also when the step lives in a helper called from the loop.

    ## Why is this bad?
    `backward()` *adds* into `.grad`. Without clearing, every step uses the sum of all
    gradients since the start of training: the effective learning rate grows without
    bound and training diverges or stalls, silently. Gradient accumulation that clears
    every k iterations is fine and is not reported.

    ## Example
    ```python
    for x, y in loader:
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
    ```

    ## Use instead
    ```python
    for x, y in loader:
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
    ```
    """

    code = "TL101"
    name = "missing-zero-grad"
    severity = "error"
    fixable = "unsafe"

    VALID = (
        """
        import torch
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for x, y in loader:
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
        """,
        """
        import torch
        # gradient accumulation: clears every k steps
        for i, (x, y) in enumerate(tqdm(loader)):
            loss = loss_fn(model(x), y) / accum
            loss.backward()
            if (i + 1) % accum == 0:
                optimizer.step()
                optimizer.zero_grad()
        """,
        """
        import torch
        # clearing by hand
        for x, y in loader:
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            for p in model.parameters():
                p.grad = None
        """,
        """
        import torch
        # the step is in a helper that also clears
        def train_step(model, optimizer, batch):
            optimizer.zero_grad()
            loss = model(batch).mean()
            loss.backward()
            optimizer.step()

        for epoch in range(10):
            for batch in loader:
                train_step(model, optimizer, batch)
        """,
        """
        import torch
        # GAN: each optimizer's gradients are cleared through its network
        for real in loader:
            netD.zero_grad()
            errD = criterion(netD(real), ones)
            errD.backward()
            optD.step()
            netG.zero_grad()
            errG = criterion(netD(netG(noise)), ones)
            errG.backward()
            optG.step()
        """,
        """
        import torch
        # a scheduler and an RL environment also have step(); no backward there
        for epoch in range(10):
            obs, reward, done, info = env.step(action)
            scheduler.step()
        """,
        """
        import torch
        # LBFGS: the closure clears and backpropagates
        for i in range(20):
            def closure():
                optimizer.zero_grad()
                loss = loss_fn(model(x), y)
                loss.backward()
                return loss
            optimizer.step(closure)
        """,
        """
        import torch
        # the trainer method clears through self
        class Trainer:
            def __init__(self, model):
                self.model = model
                self.optimizer = torch.optim.Adam(model.parameters())

            def step(self, batch):
                self.model.zero_grad()
                loss = self.model(batch).sum()
                loss.backward()
                self.optimizer.step()

            def fit(self, loader):
                for batch in loader:
                    self.step(batch)
        """,
    )
    INVALID = (
        """
        import torch
        # GAN: `netD.zero_grad()` does not clear the generator's optimizer
        optD = torch.optim.Adam(netD.parameters(), lr=2e-4)
        optG = torch.optim.Adam(netG.parameters(), lr=2e-4)
        for real in loader:
            netD.zero_grad()
            lossD = criterion(netD(real), ones)
            lossD.backward()
            optD.step()
            lossG = criterion(netD(netG(noise)), ones)
            lossG.backward()
            optG.step()  # !
        """,
        """
        import torch
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        for x, y in loader:
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()  # !
        """,
        """
        import torch
        # zero_grad once before training is not enough
        optimizer.zero_grad()
        it = iter(loader)
        while True:
            x, y = next(it)
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()  # !
        """,
        """
        import torch
        # the step lives in a helper called from the epoch loop
        def train_step(model, opt, x, y):
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()

        for epoch in range(5):
            for x, y in loader:
                train_step(model, optimizer, x, y)  # !
        """,
        """
        import torch
        # GAN: the generator's gradients are never cleared
        for real in loader:
            optD.zero_grad()
            errD = criterion(netD(real), ones)
            errD.backward()
            optD.step()
            errG = criterion(netD(netG(noise)), ones)
            errG.backward()
            optG.step()  # !
        """,
        """
        import torch
        # AMP: scaler.step(optimizer) is the optimizer step
        scaler = torch.cuda.amp.GradScaler()
        for x, y in loader:
            with torch.autocast("cuda"):
                loss = criterion(model(x), y)
            scaler.scale(loss).backward()
            scaler.step(optimizer)  # !
            scaler.update()
        """,
    )

    def check(self, ctx) -> Iterator[Report]:
        if not ctx.uses_torch:
            return
        tr = ctx.training
        for loop in ctx.loops:
            events = tr.iteration_events(loop)
            if not any(e.kind == BACKWARD for e in events):
                continue
            steps = [e for e in events if e.kind == STEP and not e.closure]
            if not steps:
                continue
            clears = [e for e in tr.all_events(loop) if e.kind == ZERO_GRAD]
            reported = set()
            for step in steps:
                if self._built_each_iteration(ctx, loop, step):
                    continue  # a fresh optimizer per iteration: a one-off step, not a training loop
                if step.target in reported or self._cleared(ctx, tr, step, clears):
                    continue
                reported.add(step.target)
                opt = step.target or "optimizer"
                yield Report(
                    step.anchor.node,
                    f"`{opt}.step()` runs every iteration of this loop but its gradients are never "
                    f"cleared: `backward()` adds into `.grad`, so each step uses the sum of all earlier "
                    f"gradients. Call `{opt}.zero_grad()` once per iteration (or every k iterations "
                    f"when accumulating).",
                    self._fix(loop, step),
                )

    @staticmethod
    def _built_each_iteration(ctx, loop, step) -> bool:
        site = step.site
        opt = site.receiver if dotted(site.receiver) == step.target else site.positional(0)
        if opt is None or step.chain:
            return False
        sites = [s for v, s in ctx.constructions(opt, site) if isinstance(v, cst.Call)]
        return bool(sites) and all(s.function is loop.function and loop.contains(s.order) for s in sites)

    @staticmethod
    def _cleared(ctx, tr, step, clears) -> bool:
        owner = None  # the model whose parameters the optimizer holds, when visible
        for c in clears:
            if c.target is None or step.target is None or c.target == step.target:
                return True
            recv = getattr(c.site, "receiver", None)
            if recv is None or tr.is_optimizer(recv, c.site):
                continue  # another optimizer's zero_grad clears only its own parameters
            # `netD.zero_grad()` clears optG's gradients only if optG holds netD's parameters.
            owner = owner or _optimizer_owner(ctx, step) or "?"
            if owner == "?" or _same_model(owner, c.target):
                return True
        return False

    @staticmethod
    def _fix(loop, step):
        if step.chain or not step.target or not isinstance(loop.node.body, cst.IndentedBlock):
            return None
        stmt = cst.parse_statement(f"{step.target}.zero_grad()\n")
        body = loop.node.body
        new = loop.node.with_changes(body=body.with_changes(body=[stmt, *body.body]))
        return Replacement(loop.node, new, "unsafe", f"insert `{step.target}.zero_grad()` at the top of the loop body")


def _same_model(a: str, b: str) -> bool:
    """`model` and `self.model` (a constructor argument kept on self), or a model and its part."""
    if a == b or a.startswith(b + ".") or b.startswith(a + "."):
        return True
    return a.rsplit(".", 1)[-1] == b.rsplit(".", 1)[-1]


def _optimizer_owner(ctx, step) -> str:
    """`netG` for an optimizer built as `Adam(netG.parameters(), ...)`; "?" when not visible."""
    site = step.site
    opt = site.receiver if dotted(site.receiver) == step.target else site.positional(0)
    if opt is None:
        return "?"
    owners = set()
    for value, _ in ctx.constructions(opt, site):
        params = value.args[0].value if isinstance(value, cst.Call) and value.args else None
        if not (isinstance(params, cst.Call) and isinstance(params.func, cst.Attribute) and params.func.attr.value == "parameters"):
            return "?"
        owners.add(dotted(params.func.value) or "?")
    return owners.pop() if len(owners) == 1 else "?"


RULE = MissingZeroGrad
