from __future__ import annotations

from typing import Iterator

from trainlint.analysis.losses import NLL_FUNCS, NLL_MODULES, is_loss_call
from trainlint.analysis.outputs import LOGITS, SOFTMAX, final_output
from trainlint.analysis.values import snippet
from trainlint.rules.base import Report, Rule


class NllLossOnRawLogits(Rule):
    """## What it does
    Finds `nn.NLLLoss` / `F.nll_loss` fed a tensor that did not go through `log_softmax`:
    the raw output of a Linear (or convolution) layer — directly, through a variable, a
    helper, or a model whose `forward` or `nn.Sequential` visibly ends in that layer, also
    one built by a factory function of the module (`model = make_mlp()`) — or `softmax`
    probabilities.

    ## Why is this bad?
    `NLLLoss` expects log-probabilities: it only picks `-input[target]` and averages. On
    raw scores nothing ties the classes together, so the loss falls without bound by
    growing the target logit (the loss goes to -inf while accuracy stays poor); on
    probabilities it maximises `p` instead of `log p`, with gradients that vanish for
    confidently wrong examples. Nothing fails.

    It stays silent when the model ends in `log_softmax`/`nn.LogSoftmax`, when its last
    layer cannot be seen (a torchvision or `transformers` model, `nn.Sequential(*layers)`,
    arithmetic on the output) and when the forward's branches end differently.

    ## Example
    ```python
    model = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
    loss = F.nll_loss(model(x), y)
    ```

    ## Use instead
    ```python
    loss = F.nll_loss(F.log_softmax(model(x), dim=1), y)
    # or, in one step:
    loss = F.cross_entropy(model(x), y)
    ```
    """

    code = "TL205"
    name = "nll-loss-on-raw-logits"
    severity = "error"

    VALID = (
        """
        from torch import nn
        # the factory's network ends in LogSoftmax; the other factory's result is changed
        # after it is built
        def make_mlp(n_in, n_classes):
            return nn.Sequential(nn.Linear(n_in, 128), nn.ReLU(), nn.Linear(128, n_classes), nn.LogSoftmax(dim=1))

        def make_head(n_in, n_classes):
            head = nn.Sequential(nn.Linear(n_in, n_classes))
            head.append(nn.LogSoftmax(dim=1))
            return head

        criterion = nn.NLLLoss()
        loss = criterion(make_mlp(784, 10)(x), y) + criterion(make_head(784, 10)(x), y)
        """,
        """
        import torch.nn as nn
        import torch.nn.functional as F
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc1 = nn.Linear(784, 128)
                self.fc2 = nn.Linear(128, 10)
            def forward(self, x):
                x = F.relu(self.fc1(x))
                x = self.fc2(x)
                return F.log_softmax(x, dim=1)
        model = Net()
        for x, y in loader:
            loss = F.nll_loss(model(x), y)
        """,
        """
        import torch.nn as nn
        # the log-softmax is applied outside the model
        model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 3))
        criterion = nn.NLLLoss()
        logp = nn.LogSoftmax(dim=1)(model(x))
        loss = criterion(logp, y)
        """,
        """
        import torch.nn as nn
        import torchvision
        # the last layer is not visible here
        model = torchvision.models.resnet18(num_classes=10)
        loss = nn.NLLLoss()(model(x), y)
        """,
        """
        import torch
        import torch.nn as nn
        import torch.nn.functional as F
        class Decoder(nn.Module):
            def __init__(self):
                super().__init__()
                self.out = nn.Linear(256, 1000)
            def forward(self, x, h):
                out, h = self.gru(x, h)
                return F.log_softmax(self.out(out[0]), dim=1), h
        decoder = Decoder()
        out, h = decoder(x, h)
        loss = nn.NLLLoss()(out, y)
        """,
        """
        import torch.nn as nn
        import torch.nn.functional as F
        # raw scores, but fed to cross-entropy; the NLL loss gets log-probabilities
        head = nn.Linear(128, 10)
        logits = head(feats)
        ce = F.cross_entropy(logits, y)
        nll = F.nll_loss(logits.log_softmax(-1), y)
        """,
        """
        import torch.nn as nn
        import torch.nn.functional as F
        class Net(nn.Module):
            def forward(self, x):
                x = self.fc(x)
                if self.use_log_probs:
                    x = F.log_softmax(x, dim=1)
                return x
        net = Net()
        loss = F.nll_loss(net(x), y)
        """,
        """
        import torch.nn as nn
        import torch.nn.functional as F
        # raw scores only on one branch; the name is copied before the loss
        head = nn.Linear(128, 10)
        out = F.log_softmax(head(h), dim=1)
        if debug_raw:
            out = head(h)
        scores = out
        loss = F.nll_loss(scores, y)
        """,
        """
        import torch
        import torch.nn as nn
        # a LogSoftmax layer kept under the name `softmax`
        class RNN(nn.Module):
            def __init__(self, n_in, n_hidden, n_out):
                super().__init__()
                self.i2h = nn.Linear(n_in + n_hidden, n_hidden)
                self.i2o = nn.Linear(n_in + n_hidden, n_out)
                self.softmax = nn.LogSoftmax(dim=1)
            def forward(self, x, hidden):
                combined = torch.cat((x, hidden), 1)
                hidden = self.i2h(combined)
                output = self.softmax(self.i2o(combined))
                return output, hidden
        rnn = RNN(57, 128, 18)
        criterion = nn.NLLLoss()
        output, hidden = rnn(line[0], hidden)
        loss = criterion(output, category)
        """,
    )
    INVALID = (
        """
        from torch import nn
        # the classifier comes from a factory function of the module
        def make_mlp(n_in, n_classes):
            net = nn.Sequential(nn.Linear(n_in, 128), nn.ReLU(), nn.Linear(128, n_classes))
            return net

        model = make_mlp(784, 10)
        criterion = nn.NLLLoss()
        loss = criterion(model(x), y)  # !
        """,
        """
        import torch.nn as nn
        import torch.nn.functional as F
        model = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
        for x, y in loader:
            out = model(x.view(-1, 784))
            loss = F.nll_loss(out, y)  # !
        """,
        """
        import torch.nn as nn
        import torch.nn.functional as F
        class Classifier(nn.Module):
            def __init__(self, n_classes):
                super().__init__()
                self.conv = nn.Conv2d(1, 32, 3)
                self.fc = nn.Linear(5408, n_classes)
            def forward(self, x):
                x = F.relu(self.conv(x)).flatten(1)
                return self.fc(x)

        class Trainer:
            def __init__(self):
                self.model = Classifier(10).to("cuda")
                self.criterion = nn.NLLLoss()
            def train_step(self, x, y):
                logits = self.model(x)
                return self.criterion(logits, y)  # !
        """,
        """
        from torch import nn
        from torch.nn.functional import nll_loss, softmax
        def predict(model, x):
            return softmax(model(x), dim=1)

        def train(model, loader):
            for x, y in loader:
                loss = nll_loss(predict(model, x), y)  # !
        """,
        """
        import torch.nn as nn
        import torch.nn.functional as F
        class RNN(nn.Module):
            def __init__(self):
                super().__init__()
                self.rnn = nn.GRU(50, 128)
                self.decoder = nn.Linear(128, 5000)
            def forward(self, x, hidden):
                out, hidden = self.rnn(x, hidden)
                return self.decoder(out), hidden
        rnn = RNN()
        loss_fn = nn.NLLLoss()
        output, hidden = rnn(x, hidden)
        loss = loss_fn(output.view(-1, 5000), y.view(-1))  # !
        """,
        """
        import torch
        from torch import nn
        # a model that trains itself, with the loss attached from outside (after a real
        # text-classification repository: softmax probabilities into NLLLoss)
        class TextCNN(nn.Module):
            def __init__(self, vocab, n_classes):
                super().__init__()
                self.embeddings = nn.Embedding(vocab, 300)
                self.fc = nn.Linear(300, n_classes)
                self.softmax = nn.Softmax(dim=1)
            def forward(self, x):
                return self.softmax(self.fc(self.embeddings(x).mean(1)))
            def add_loss_op(self, loss_op):
                self.loss_op = loss_op
            def run_epoch(self, iterator):
                for batch in iterator:
                    y_pred = self.__call__(batch.text)
                    loss = self.loss_op(y_pred, batch.label)  # !
                    loss.backward()

        model = TextCNN(20000, 4)
        model.add_loss_op(nn.NLLLoss())
        model.run_epoch(train_iterator)
        """,
    )

    def check(self, ctx) -> Iterator[Report]:
        for call in ctx.facts.calls:
            if call.has_star_args or not is_loss_call(ctx, call, NLL_FUNCS, NLL_MODULES):
                continue
            inp = call.arg(0, "input")
            out = final_output(ctx, inp, call) if inp is not None else None
            if out is None or out.kind not in (LOGITS, SOFTMAX):
                continue
            text = snippet(ctx, inp)
            if out.kind == LOGITS:
                what = (f"`{text}` is raw scores (from {out.why}), not log-probabilities: NLL loss only "
                        f"takes `-input[target]`, so it falls without bound as the target score grows")
            else:
                what = (f"`{text}` is softmax probabilities (from {out.why}), not log-probabilities: NLL "
                        f"loss becomes `-p[target]`, always negative, with gradients that vanish for "
                        f"confident mistakes")
            yield Report(
                inp,
                f"{what}. Apply `log_softmax(..., dim=1)` first (or use `cross_entropy` on the raw logits).",
            )


RULE = NllLossOnRawLogits
