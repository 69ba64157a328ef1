from __future__ import annotations

from typing import Iterator, Optional

import libcst as cst

from trainlint.rules.base import Replacement, Report, Rule


class EvalWithoutNoGrad(Rule):
    """## What it does
    Finds an evaluation pass (see TL301) that runs the model with gradient tracking on:
    no `torch.no_grad()` / `torch.inference_mode()` context or decorator around it, before
    it, or around every same-module call of it.

    ## Why is this bad?
    With autograd on, every forward pass keeps its activations alive for a backward pass
    that never comes: evaluation uses several times the memory it needs (often the cause of
    an out-of-memory error at validation time) and runs slower.

    ## Example
    ```python
    model.eval()
    for x, y in val_loader:
        preds.append(model(x))
    ```

    ## Use instead
    ```python
    model.eval()
    with torch.no_grad():
        for x, y in val_loader:
            preds.append(model(x))
    ```
    """

    code = "TL302"
    name = "eval-without-no-grad"
    severity = "warning"
    fixable = "unsafe"

    VALID = (
        """
        import torch
        model.eval()
        with torch.inference_mode():
            for x, y in test_loader:
                preds = model(x)
        """,
        """
        import torch
        @torch.no_grad()
        def evaluate(model, loader):
            model.eval()
            return [model(x) for x, _ in loader]
        """,
        """
        import torch
        def evaluate(model, loader):
            model.eval()
            return [model(x) for x, _ in loader]

        with torch.no_grad():
            evaluate(net, val_loader)
        """,
        """
        import torch
        # gradients are wanted here (saliency maps)
        def predict_saliency(model, x):
            model.eval()
            x.requires_grad_(True)
            out = model(x)
            return torch.autograd.grad(out.sum(), x)
        """,
        """
        import torch
        torch.set_grad_enabled(False)
        model.eval()
        for x in val_loader:
            model(x)
        """,
        """
        import torch
        model.eval()
        with torch.no_grad():
            val_loss = sum(loss_func(model(xb), yb) for xb, yb in val_dl)
        """,
        """
        import torch
        # a shape smoke test in a model file: made-up input, only the shape is printed
        def test_resnext():
            net = ResNeXt29_2x64d()
            x = torch.randn(1, 3, 32, 32)
            y = net(x)
            print(y.size())
        """,
        """
        import torch
        # nested helpers run where their enclosing function calls them: under no_grad,
        # also through a name bound to one of them
        def infer(model, loader, tta_level=0):
            def infer_basic(inputs, net):
                return net(inputs).clone()

            def infer_mirror(inputs, net):
                return 0.5 * net(inputs) + 0.5 * net(inputs.flip(-1))

            def infer_mirror_twice(inputs, net):
                return infer_mirror(inputs, net) + infer_mirror(inputs.flip(-2), net)

            model.eval()
            infer_fn = [infer_basic, infer_mirror, infer_mirror_twice][tta_level]
            with torch.no_grad():
                return torch.cat([infer_fn(x, model) for x in loader])
        """,
        """
        import torch
        # a custom method of the model runs the forward: here under no_grad
        def evaluate(model_path, make_env, Model):
            envs = make_env()
            agent = Model(envs)
            agent.load_state_dict(torch.load(model_path, weights_only=True))
            agent.eval()
            obs = envs.reset()
            with torch.no_grad():
                return agent.get_action(torch.Tensor(obs))
        """,
        """
        import torch
        # not models: an environment switched to its evaluation mode, a trainer given weights
        def test(args, agent):
            env = Env(args)
            env.eval()
            state = env.reset()
            state, reward, done = env.step(agent.act(state))
            trainer = CharRNNTrainer(args)
            trainer.load_state_dict(args.load_model)
            return trainer.predict(args.begin, args.predict_len)
        """,
        """
        import torch
        # `net` here is the module's helper function, not a parameter: a plain call
        def net(X):
            return X.softmax(1)

        def evaluate(val_loader):
            return [net(X) for X, _ in val_loader]
        """,
    )
    INVALID = (
        """
        import torch
        # the model (built from a class parameter) runs through its own method, autograd on
        def evaluate(model_path, make_env, Model):  # !
            envs = make_env()
            agent = Model(envs).to("cpu")
            agent.load_state_dict(torch.load(model_path, weights_only=True))
            agent.eval()
            obs, returns = envs.reset(), []
            while len(returns) < 10:
                actions = agent.get_action(torch.Tensor(obs))
                obs, reward = envs.step(actions.numpy())
                returns.append(reward)
            return returns
        """,
        """
        import torch
        # near-miss: the helper is called outside the enclosing function's no_grad block
        def infer(model, loader, tta_level=0):
            def infer_basic(inputs, net):
                return net(inputs).clone()

            def infer_mirror(inputs, net):  # !
                return 0.5 * net(inputs) + 0.5 * net(inputs.flip(-1))

            model.eval()
            infer_fn = [infer_basic, infer_mirror][tta_level]
            with torch.no_grad():
                first = infer_fn(loader[0], model)
            return first, infer_mirror(loader[1], model)
        """,
        """
        import torch
        # near-miss of a smoke test: a real validation batch, and a loss over it
        def validate(model, criterion):  # !
            model.eval()
            x, y = next(iter(val_loader))
            x = x.to("cuda")
            return criterion(model(x), y).item()
        """,
        """
        import torch
        model.eval()
        # the validation loss as in "What is torch.nn really?", but without no_grad
        val_loss = sum(loss_func(model(xb), yb).item() for xb, yb in val_dl)  # !
        """,
        """
        import torch
        model.eval()
        for x, y in val_loader:  # !
            preds = model(x)
        """,
        """
        import torch
        def evaluate(model, loader):  # !
            model.eval()
            correct = 0
            for x, y in loader:
                correct += (model(x).argmax(1) == y).sum().item()
            return correct
        """,
        """
        import torch
        class Trainer:
            def validate(self):  # !
                self.model.eval()
                return [self.model(x) for x in self.val_loader]
            def fit(self):
                for epoch in range(3):
                    self.validate()
        """,
        """
        import torch
        # a parameter `rnn` hides the module's `def rnn`: whatever is passed in runs here,
        # its weights requiring grad (a functional RNN handed its params)
        def rnn(inputs, state, params):
            W, b = params
            return [x @ W + b for x in inputs], state

        def predict_rnn(prefix, rnn, params, state):  # !
            Y, state = rnn([torch.tensor(prefix)], state, params)
            return Y[0].argmax(1)
        """,
    )

    def check(self, ctx) -> Iterator[Report]:
        ev = ctx.evaluation
        for p in ev.passes:
            if ev.runs_without_grad(p):
                continue
            yield Report(
                p.report_node,
                f"{p.description} runs the model with autograd on: every forward keeps its "
                f"activations for a backward that never comes (memory, speed). Wrap it in "
                f"`with torch.no_grad():` or `torch.inference_mode()`.",
                self._fix(ctx, p),
            )

    @staticmethod
    def _fix(ctx, p) -> Optional[Replacement]:
        if ctx.imports.alias.get("torch") != "torch":
            return None
        if p.kind == "loop":
            loop = p.loop.node
            if not isinstance(loop, cst.For):
                return None  # a comprehension: its statement is not known here
            wrapped = cst.With(
                items=[cst.WithItem(cst.parse_expression("torch.no_grad()"))],
                body=cst.IndentedBlock(body=[loop.with_changes(leading_lines=[])]),
                leading_lines=loop.leading_lines,
            )
            return Replacement(loop, wrapped, "unsafe", "wrap the loop in `with torch.no_grad():`")
        fn = p.function.node
        deco = cst.Decorator(cst.parse_expression("torch.no_grad()"))
        return Replacement(fn, fn.with_changes(decorators=[deco, *fn.decorators]), "unsafe", "decorate with `@torch.no_grad()`")


RULE = EvalWithoutNoGrad
