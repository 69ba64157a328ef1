from __future__ import annotations

from typing import Iterator, Optional

import libcst as cst

from trainlint.rules.base import Replacement, Report, Rule


def insert_before_pass(p, statement: str, description: str) -> Optional[Replacement]:
    """A fix that puts `statement` before an evaluation loop, or first in an evaluation function."""
    stmt = cst.parse_statement(statement + "\n")
    if p.kind == "loop":
        if not isinstance(p.loop.node, cst.For):
            return None  # a comprehension: its statement is not known here
        return Replacement(p.loop.node, cst.FlattenSentinel([stmt, p.loop.node]), "unsafe", description)
    fn = p.function.node
    if not isinstance(fn.body, cst.IndentedBlock):
        return None
    body = list(fn.body.body)
    at = 1 if body and _is_docstring(body[0]) else 0
    new_body = fn.body.with_changes(body=[*body[:at], stmt, *body[at:]])
    return Replacement(fn, fn.with_changes(body=new_body), "unsafe", description)


def _is_docstring(stmt: cst.CSTNode) -> bool:
    return (
        isinstance(stmt, cst.SimpleStatementLine)
        and len(stmt.body) == 1
        and isinstance(stmt.body[0], cst.Expr)
        and isinstance(stmt.body[0].value, (cst.SimpleString, cst.ConcatenatedString))
    )


class EvalWithoutEvalMode(Rule):
    """## What it does
    Finds an evaluation pass — a loop (or comprehension) over a validation/test loader, or
    a function named like `evaluate`/`validate`/`test`/`predict`, that runs the model
    without `backward()` — where the model is still in training mode: no `model.eval()` in
    the pass, before it in the same function, or in every same-module caller (a nested helper
    runs where its enclosing function calls it, also through a name bound to it; a caller may
    hand the model over as `f(net.eval(), ...)`). A model the pass loads itself with
    `from_pretrained` starts in eval mode, and a wrapper class whose `__init__` calls
    `self.model.eval()` (and no method switches it back) keeps it there.

    ## Why is this bad?
    In training mode dropout keeps dropping units and BatchNorm normalises with the batch's
    statistics and updates its running averages. Validation numbers come out noisy and too
    pessimistic, depend on the batch size, and the BatchNorm statistics drift towards the
    validation data. The rule stays silent when the model's class is visible and has no
    dropout or normalisation layer (then the modes behave the same), followed through a
    wrapper's constructor and through a list of models (`for model in models`); a helper the
    class calls that is handed no submodule, no `self` and no `self.training` does not make
    its layers unknown. It stays silent, too, when the model is a plain function (from-scratch
    code: `net = linreg`, a lambda, a callable handed its own trainable weights as in
    `rnn(X, state, params)`), which has no mode at all.

    ## Example
    ```python
    for x, y in train_loader:
        ...
    for x, y in val_loader:
        val_loss += criterion(model(x), y).item()
    ```

    ## Use instead
    ```python
    model.eval()
    with torch.no_grad():
        for x, y in val_loader:
            val_loss += criterion(model(x), y).item()
    model.train()
    ```
    """

    code = "TL301"
    name = "eval-without-eval-mode"
    severity = "error"
    fixable = "unsafe"

    VALID = (
        """
        import torch

        # a two-stage shape smoke test: the head is fed the backbone's output of noise
        @torch.no_grad()
        def test_network_part_shapes(backbone, head):
            inp = torch.rand(3, 4, 84, 84)
            features = backbone(inp)
            qvalues = head(features)
            assert features.ndim == 2, features.shape
            assert qvalues.shape[0] == 3, qvalues.shape

        test_network_part_shapes(backbone=ConvBackbone(4), head=DuelingHead(6))
        """,
        """
        import torch
        model.train()
        for x, y in train_loader:
            step(x, y)
        model.eval()
        with torch.no_grad():
            for x, y in val_loader:
                out = model(x)
        """,
        """
        import torch
        @torch.no_grad()
        def evaluate(model, loader):
            model.eval()
            return sum(model(x).sum() for x, _ in loader)
        """,
        """
        import torch
        # evaluate() itself does not switch modes, but its only caller does
        def evaluate(model, loader):
            return [model(x) for x, _ in loader]

        def main():
            model.eval()
            with torch.no_grad():
                evaluate(model, val_loader)
        """,
        """
        import lightning as L
        class Lit(L.LightningModule):
            def validation_step(self, batch, idx):
                x, y = batch
                return self.model(x)
        """,
        """
        import torch.nn as nn
        # no dropout or normalisation anywhere: both modes compute the same thing
        class MLP(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc1 = nn.Linear(4, 8)
                self.fc2 = nn.Linear(8, 2)
            def forward(self, x):
                return self.fc2(self.fc1(x).relu())
        model = MLP()
        for x, y in test_loader:
            pred = model(x)
        """,
        """
        import torch
        # skorch/ignite style: the mode is set from a flag we cannot read
        def validation_pass(model, loader, training=False):
            model.train(training)
            return [model(x) for x in loader]
        """,
        """
        import torch
        # a training loop over a dev split still trains
        for x, y in dev_loader:
            opt.zero_grad()
            loss = crit(model(x), y)
            loss.backward()
            opt.step()
        """,
        """
        import torch
        from transformers import GPT2LMHeadModel
        @torch.no_grad()
        def evaluate(model_type, batches):
            model = GPT2LMHeadModel.from_pretrained(model_type)  # returned in eval mode
            model.to("cuda")
            return [model(b).logits for b in batches]
        """,
        """
        import torch
        import torch.nn as nn
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(3, 8, 3)
                self.bn = nn.BatchNorm2d(8)
            def forward(self, x):
                return self.bn(self.conv(x))

        # shape smoke tests: made-up input, the output's shape looked at, nothing measured
        def test():
            net = Net()
            x = torch.randn(2, 3, 32, 32).to("cpu")
            y = net(x)
            print(y.size())

        def test_net():
            net = Net()
            assert net(torch.zeros(1, 3, 8, 8)).shape == (1, 8, 6, 6), "bad shape"

        class TwoHeads(nn.Module):
            def __init__(self):
                super().__init__()
                self.bn = nn.BatchNorm2d(3)
            def forward(self, x):
                x = self.bn(x)
                return x.mean(1), x

        # two outputs, unpacked, their shapes printed (LMFD-PAD's model/mfad.py `_test()`)
        def _test():
            image_x = torch.randn(4, 3, 32, 32)
            heads = TwoHeads()
            y, map_y = heads(image_x)
            print("binary output shape:", y.shape, "feature map shape:", map_y.shape)
        """,
        """
        import torch
        import torch.nn as nn
        def make_mlp():
            return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))

        # under no_grad, and the model (built by a factory here) has no dropout/normalisation
        @torch.no_grad()
        def predict(batch):
            model = make_mlp()
            return model(batch)
        """,
        """
        import torch
        # the model class is a parameter: `Model(envs)` builds the model, eval() precedes its use
        def evaluate(model_path, make_env, Model):
            envs = make_env()
            model = Model(envs)
            model.load_state_dict(torch.load(model_path))
            model.eval()
            obs = envs.reset()
            with torch.no_grad():
                return model(torch.Tensor(obs))
        """,
        """
        import torch
        # nested helpers run where their enclosing function calls them: after model.eval(),
        # under no_grad, also through a name bound to one of them
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
        # a wrapper whose __init__ switches the model it holds to eval mode, for good
        class PyTorchModel:
            def __init__(self, model):
                self._model = model
                self._model.eval()
            def predict(self, dataset):
                with torch.no_grad():
                    return [self._model(x) for x in dataset]
        """,
        """
        import torch
        # the model is switched to eval mode where it is handed over: `eval()` returns it
        def demo(net, frames):
            def predict(frame):
                with torch.no_grad():
                    return net(frame)
            return [predict(f) for f in frames]

        demo(net.eval().to("cuda"), frames)
        """,
        """
        import torch
        import torch.nn.functional as F
        # a wrapper (for a plotting library) around a model with no dropout/normalisation
        class SoftmaxRegression(torch.nn.Module):
            def __init__(self, num_features, num_classes):
                super().__init__()
                self.linear = torch.nn.Linear(num_features, num_classes)
            def forward(self, x):
                return F.softmax(self.linear(x), dim=1)

        class ModelWrapper:
            def __init__(self, model, device):
                self.model = model
                self.device = device
            def predict(self, X):
                return self.model(torch.tensor(X, device=self.device)).argmax(1).numpy()

        mymodel = ModelWrapper(SoftmaxRegression(2, 3), device=torch.device("cpu"))
        """,
        """
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        # the tokenizer is not the model; the model (eval mode from from_pretrained) generates
        tokenizer = AutoTokenizer.from_pretrained("some/chat-model")
        model = AutoModelForCausalLM.from_pretrained("some/chat-model")
        def predict(message):
            model_inputs = tokenizer([message], return_tensors="pt")
            return Thread(target=model.generate, kwargs=dict(model_inputs)).start()
        """,
        """
        import torch
        import torch.nn as nn
        # models kept in a list; none has dropout or normalisation (ReLU or Tanh variants)
        models = list()
        for k in range(10):
            model = nn.Sequential(nn.Linear(1, 100), nn.ReLU() if k < 5 else nn.Tanh(), nn.Linear(100, 1))
            models.append(model)

        def dense_prediction(models):
            preds = []
            for model in models:
                with torch.no_grad():
                    preds.append(model(torch.linspace(-4, 4, 1001).unsqueeze(1)))
            return preds

        dense_prediction(models[:5])
        """,
        """
        import torch
        # a plain function as the model (from-scratch linear regression): no train/eval mode
        def linreg(X, w, b):
            return torch.mm(X, w) + b

        def train(features, labels, loader):
            net = linreg
            w = torch.zeros((features.shape[1], 1), requires_grad=True)
            b = torch.zeros(1, requires_grad=True)
            def eval_loss():
                return ((net(features, w, b) - labels) ** 2).mean().item()
            for X, y in loader:
                ((net(X, w, b) - y) ** 2).mean().backward()
            return eval_loss()
        """,
        """
        import torch
        # the only caller hands over a lambda
        def linreg(X, w, b):
            return torch.mm(X, w) + b

        def evaluate_loss(net, data_iter, loss):
            return sum(loss(net(X), y).sum().item() for X, y in data_iter)

        def train(data_iter, loss, w, b):
            net = lambda X: linreg(X, w, b)
            with torch.no_grad():
                return evaluate_loss(net, data_iter, loss)
        """,
        """
        import torch
        # a functional RNN: no caller says what `rnn` is, but it is handed its weights, which
        # the training loop updates by hand from their gradients
        def predict_rnn(prefix, num_chars, rnn, params, state, vocab):
            output = [vocab[prefix[0]]]
            for t in range(num_chars):
                X = torch.nn.functional.one_hot(torch.tensor([output[-1]]), len(vocab)).float()
                Y, state = rnn(X, state, params)
                output.append(int(Y.argmax(dim=1).item()))
            return output

        def train_and_predict_rnn(rnn, params, data_iter, state, vocab, loss):
            for X, Y in data_iter:
                outputs, state = rnn(X, state, params)
                loss(outputs, Y).backward()
                with torch.no_grad():
                    for p in params:
                        p -= 0.1 * p.grad
            print(predict_rnn("ab", 10, rnn, params, state, vocab))
        """,
        """
        import torch
        import torch.nn as nn
        import mylib
        # an outside helper in forward that gets no module, no `self`, no `self.training`
        # (only a number kept on self) cannot depend on the mode: the class has no dropout/norm
        class RNNModel(nn.Module):
            def __init__(self, rnn_layer, vocab_size):
                super().__init__()
                self.rnn = rnn_layer
                self.vocab_size = vocab_size
                self.dense = nn.Linear(rnn_layer.hidden_size, vocab_size)
            def forward(self, inputs, state):
                X = mylib.to_onehot(inputs, self.vocab_size)
                Y, state = self.rnn(torch.stack(X), state)
                return self.dense(Y.view(-1, Y.shape[-1])), state

        model = RNNModel(nn.RNN(input_size=10, hidden_size=256), 10)
        @torch.no_grad()
        def predict(loader):
            return [model(x, None) for x in loader]
        """,
        """
        import torch
        # a parameter named after the module's own functional model, no caller in sight
        def rnn(inputs, state, params):
            W, b = params
            return [x @ W + b for x in inputs], state

        def predict_rnn(prefix, rnn, params, state):
            Y, state = rnn([torch.tensor(prefix)], state, params)
            return Y[0].argmax(1)
        """,
    )
    INVALID = (
        """
        import torch
        import torch.nn as nn

        class Backbone(nn.Module):
            def __init__(self):
                super().__init__()
                self.net = nn.Sequential(nn.Conv2d(4, 8, 3), nn.BatchNorm2d(8), nn.Flatten())

            def forward(self, x):
                return self.net(x)

        # the same two stages over held-out data, scored: an evaluation pass
        def evaluate(backbone, head, val_loader):  # !
            correct = 0
            for x, y in val_loader:
                features = backbone(x)
                correct += (head(features).argmax(1) == y).sum().item()
            return correct

        print(evaluate(Backbone(), nn.Linear(8, 6), val_loader))
        """,
        """
        import torch
        import torch.nn as nn
        # near-miss of the list of models: these have dropout
        models = []
        for k in range(10):
            models.append(nn.Sequential(nn.Linear(1, 100), nn.Dropout(0.2), nn.Linear(100, 1)))

        def dense_prediction(models):  # !
            preds = []
            with torch.no_grad():
                for model in models:
                    preds.append(model(x_test))
            return preds

        dense_prediction(models[:5])
        """,
        """
        import torch
        # near-miss of the wrapper: the model it holds has dropout
        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.linear = torch.nn.Linear(2, 3)
                self.drop = torch.nn.Dropout(0.5)
            def forward(self, x):
                return self.linear(self.drop(x))

        class ModelWrapper:
            def __init__(self, model):
                self.model = model
            def predict(self, X):  # !
                return self.model(torch.tensor(X)).argmax(1).numpy()

        mymodel = ModelWrapper(Net())
        """,
        """
        import torch
        # near-miss of the wrapper: another method switches the model back to training
        class PyTorchModel:
            def __init__(self, model):
                self._model = model
                self._model.eval()
            def finetune(self, x, y):
                self._model.train()
                return self._model(x)
            def predict(self, dataset):  # !
                with torch.no_grad():
                    return [self._model(x) for x in dataset]
        """,
        """
        import torch
        # near-miss of the hand-over: moved to the GPU, never switched to eval mode
        def demo(net, frames):
            def predict(frame):  # !
                with torch.no_grad():
                    return net(frame)
            return [predict(f) for f in frames]

        demo(net.to("cuda"), frames)
        """,
        """
        import torch
        # near-miss: the enclosing function never switches the model to eval mode
        def infer(model, loader, tta_level=0):
            def infer_basic(inputs, net):  # !
                return net(inputs).clone()

            def infer_mirror(inputs, net):  # !
                return 0.5 * net(inputs) + 0.5 * net(inputs.flip(-1))

            infer_fn = [infer_basic, infer_mirror][tta_level]
            with torch.no_grad():
                return torch.cat([infer_fn(x, model) for x in loader])
        """,
        """
        import torch
        from torch.autograd import Variable
        # near-miss of a smoke test: noise is a generator's real input, and it is scored
        @torch.no_grad()
        def evaluate_generator(netG):  # !
            z = Variable(torch.randn(64, 100, 1, 1))
            fake = netG(z)
            return inception_score(fake)
        """,
        """
        import torch
        # near-miss of a smoke test: the input is held-out data converted to a tensor
        def predict(model):  # !
            x = torch.tensor(X_test, dtype=torch.float32)
            return model(x).argmax(1)
        """,
        """
        import torch
        import torch.nn as nn
        net_pair = nn.Sequential(nn.Linear(8, 8), nn.Dropout(0.5))
        # near-miss of a smoke test with two outputs: one of them is scored
        def _test():  # !
            image_x = torch.randn(4, 8)
            y, map_y = net_pair(image_x)
            return (y.argmax(1) == 0).float().mean()
        """,
        """
        import torch
        # one real batch of the test set
        @torch.no_grad()
        def test(net):  # !
            images, labels = next(iter(test_loader))
            print(net(images).argmax(1), labels)
        """,
        """
        import torch
        from transformers import GPT2LMHeadModel
        @torch.no_grad()
        def evaluate(model_type, batches):  # !
            model = GPT2LMHeadModel.from_pretrained(model_type)
            model.train()  # switched back to training mode before the evaluation
            return [model(b).logits for b in batches]
        """,
        """
        import torch
        for epoch in range(10):
            model.train()
            for x, y in train_loader:
                train_step(x, y)
            with torch.no_grad():
                for x, y in val_loader:  # !
                    val_loss = criterion(model(x), y)
        """,
        """
        import torch
        @torch.no_grad()
        def evaluate(model, loader):  # !
            total = 0
            for x, y in loader:
                total += (model(x).argmax(1) == y).sum().item()
            return total
        """,
        """
        import torch
        import torch.nn as nn
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(10, 10)
                self.drop = nn.Dropout(0.5)
            def forward(self, x):
                return self.drop(self.fc(x))

        def validate(net, loader):  # !
            with torch.no_grad():
                return [net(x) for x, _ in loader]

        net = Net()
        for epoch in range(3):
            net.train()
            validate(net, val_loader)
        """,
        """
        import torch
        class Trainer:
            def test(self):  # !
                preds = []
                for batch in self.test_loader:
                    preds.append(self.model(batch))
                return preds
        """,
        """
        import torch
        # near-miss of the functional RNN: the state handed over is no weight (no gradient
        # read, no optimizer), so `rnn` may be any module
        def predict_rnn(prefix, num_chars, rnn, vocab):  # !
            state = torch.zeros(1, 256)
            output = [vocab[prefix[0]]]
            for t in range(num_chars):
                Y, state = rnn(torch.tensor([[output[-1]]]), state)
                output.append(int(Y.argmax(dim=1).item()))
            return output
        """,
        """
        import torch
        # near-miss: the input that requires grad is the first argument, not a weight
        def predict(model, images):  # !
            x = torch.tensor(images, requires_grad=True)
            return model(x).argmax(1)
        """,
        """
        import torch
        import torch.nn as nn
        # near-miss of the lambda: the only caller passes a module with dropout
        def evaluate_loss(net, data_iter, loss):  # !
            return sum(loss(net(X), y).sum().item() for X, y in data_iter)

        def train(data_iter, loss):
            net = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 1))
            with torch.no_grad():
                return evaluate_loss(net, data_iter, loss)
        """,
        """
        import torch
        import torch.nn as nn
        import mylib
        # near-miss of the outside helper: what it builds is kept as a child (outside __init__)
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(10, 10)
                self.blocks = nn.ModuleList()
            def grow(self):
                self.blocks.append(mylib.make_block(10))
            def forward(self, x):
                for block in self.blocks:
                    x = block(x)
                return self.fc(x)

        model = Net()
        @torch.no_grad()
        def predict(loader):  # !
            return [model(x) for x in loader]
        """,
        """
        import torch
        import torch.nn as nn
        import mylib
        # near-miss of the outside helper: it is told the mode
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(10, 10)
            def forward(self, x):
                return self.fc(mylib.noise(x, self.training))

        model = Net()
        @torch.no_grad()
        def predict(loader):  # !
            return [model(x) for x in loader]
        """,
        """
        import torch
        import torch.nn as nn
        import mylib
        # near-miss of the outside helper: it is handed the model itself
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(10, 10)
            def forward(self, x):
                return self.fc(mylib.run_blocks(self, x))

        model = Net()
        @torch.no_grad()
        def predict(loader):  # !
            return [model(x) for x in loader]
        """,
        """
        import torch
        import torch.nn as nn
        import mylib
        # near-miss of the outside helper: it builds a child the file cannot see
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(10, 10)
                self.extra = mylib.make_block(10)
            def forward(self, x):
                return self.fc(self.extra(x))

        model = Net()
        @torch.no_grad()
        def predict(loader):  # !
            return [model(x) for x in loader]
        """,
    )

    def check(self, ctx) -> Iterator[Report]:
        ev = ctx.evaluation
        for p in ev.passes:
            if ev.sets_eval_mode(p) or not ev.model_has_mode_layers(p):
                continue
            model = ev.model_name(p)
            yield Report(
                p.report_node,
                f"{p.description} evaluates `{model}` without `{model}.eval()`: dropout stays active "
                f"and BatchNorm uses (and updates) batch statistics, so the numbers are wrong. "
                f"Call `{model}.eval()` before it (and `{model}.train()` after).",
                insert_before_pass(p, f"{model}.eval()", f"insert `{model}.eval()`"),
            )


RULE = EvalWithoutEvalMode
