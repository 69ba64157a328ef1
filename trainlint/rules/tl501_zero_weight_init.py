from __future__ import annotations

import re
from typing import Iterator, List, Optional, Tuple

import libcst as cst

from trainlint.analysis.facts import AssignSite, CallSite, Site
from trainlint.analysis.layers import (
    applied_layers,
    built_in_chain,
    conditions,
    looped_layers,
    other_weight_layer,
    has_later_numbered_sibling,
    is_weight_layer_qualname,
    sibling_names,
    specific_layers,
    type_guard,
)
from trainlint.analysis.names import dotted
from trainlint.rules.base import Report, Rule

_INIT_CONST = {"zeros_": "zeros", "ones_": "ones", "constant_": "constant", "constant": "constant"}
_INIT_MODULES = ("torch.nn.init",)
_TENSOR_CONST = {
    "torch.zeros": "zeros", "torch.ones": "ones", "torch.full": "constant",
    "torch.zeros_like": "zeros", "torch.ones_like": "ones", "torch.full_like": "constant",
}
_ARRAY_CONST = {
    "numpy.zeros": "zeros", "numpy.ones": "ones", "numpy.full": "constant",
    "torch.zeros": "zeros", "torch.ones": "ones", "torch.full": "constant",
}
_PARAMETER = {"torch.nn.Parameter", "torch.nn.parameter.Parameter"}
# A norm layer by its name: `bn1`, `norm`, `ln_f`, `gn`, `layer_norm`.
_NORM_NAME = re.compile(r"(^|_)(bn|ln|gn)\d*($|_)|norm", re.I)
# Layers deliberately zero-initialised: output heads, residual-branch projections, gates.
_OUTPUT_NAME = re.compile(r"head|out|last|final|classif|cls|logit|pred|readout|proj|zero|gate|resid|^fc$|lora_b|adapter|offset", re.I)
# Hand-written weight matrices: `W1`, `w_2`, `weights1`, `self.W2`.
_WEIGHT_MATRIX = re.compile(r"^[Ww](eights?)?_?\d+$")


def _init_kind(ctx, call: CallSite) -> Optional[Tuple[str, cst.BaseExpression]]:
    """(kind, target) for `nn.init.zeros_(t)`, `t.data.zero_()`, `t.fill_(c)`, ..."""
    q = call.qualname
    if q:
        module, _, last = q.rpartition(".")
        if last in _INIT_CONST and (module in _INIT_MODULES or module.rsplit(".", 1)[-1] in ("init", "initialization")):
            target = call.arg(0, "tensor")
            return (_INIT_CONST[last], target) if target is not None else None
        return None
    if call.attr in ("zero_", "fill_") and call.receiver is not None:
        return ("zeros" if call.attr == "zero_" else "constant"), call.receiver
    return None


def _weight_of(expr: cst.BaseExpression) -> Optional[cst.BaseExpression]:
    """`X` for `X.weight` / `X.weight.data`; else None."""
    if isinstance(expr, cst.Attribute) and expr.attr.value == "data":
        expr = expr.value
    if isinstance(expr, cst.Attribute) and expr.attr.value == "weight":
        return expr.value
    return None


def _const_value_kind(ctx, value: cst.BaseExpression, table) -> Optional[Tuple[str, cst.Call]]:
    if isinstance(value, cst.Call) and ctx.qualname(value.func) in _PARAMETER and value.args:
        value = value.args[0].value
    if isinstance(value, cst.Call):
        kind = table.get(ctx.qualname(value.func) or "")
        if kind:
            return kind, value
    return None


def _matrix_shape(call: cst.Call) -> bool:
    """A shape of two or more dimensions: `zeros((784, 128))`, `zeros(784, 128)`, `size=(a, b)`."""
    pos = [a.value for a in call.args if a.keyword is None and not a.star]
    size = next((a.value for a in call.args if a.keyword is not None and a.keyword.value in ("size", "shape")), None)
    if size is None and pos:
        if isinstance(pos[0], (cst.Tuple, cst.List)):
            size = pos[0]
        elif len([p for p in pos if isinstance(p, (cst.Integer, cst.Name, cst.Attribute, cst.BinaryOperation))]) >= 2 and "full" not in (dotted(call.func) or ""):
            return True
    return isinstance(size, (cst.Tuple, cst.List)) and len(size.elements) >= 2


def _guarded(fn, *args):
    """One site's analysis; a RecursionError in value following (FileContext.constructions on
    `self.x = self.x.to(dev)`) makes that site unknown instead of ending the rule for the file."""
    try:
        return fn(*args)
    except RecursionError:
        return None


def _string_key(target: cst.BaseExpression) -> Optional[str]:
    """"W1" for `params["W1"]` / `self.params['W1']`; None for any other target."""
    if not (isinstance(target, cst.Subscript) and len(target.slice) == 1 and isinstance(target.slice[0].slice, cst.Index)):
        return None
    v = target.slice[0].slice.value
    if isinstance(v, cst.SimpleString) and isinstance(v.evaluated_value, str):
        return v.evaluated_value
    return None


def _container_keys(ctx, container: str, a: AssignSite) -> set:
    """The string keys a parameter dict gets in the same function or class: `params["W2"] = ...`
    and `params = {"W2": ...}` (hand-written networks keep their matrices in one dict)."""
    cls = ctx.method_class(a.function) if container.startswith("self.") else None
    keys = set()
    for other in ctx.facts.assigns:
        if other.op != "=":
            continue
        if cls is not None and ctx.method_class(other.function) is not cls:
            continue
        if cls is None and other.function is not a.function:
            continue
        for t in other.targets:
            k = _string_key(t)
            if k is not None and dotted(t.value) == container:  # type: ignore[attr-defined]
                keys.add(k)
            elif dotted(t) == container and isinstance(other.value, cst.Dict):
                for el in other.value.elements:
                    if isinstance(el, cst.DictElement) and isinstance(el.key, cst.SimpleString) and isinstance(el.key.evaluated_value, str):
                        keys.add(el.key.evaluated_value)
    return keys


class ZeroWeightInit(Rule):
    """## What it does
    Finds layer weights (not biases) initialised to zero or to one constant:
    `nn.init.zeros_`/`ones_`/`constant_` on a `.weight`, `weight.data.zero_()`/`.fill_(c)`,
    `layer.weight.data = torch.zeros(...)`, and `np.zeros`/`torch.zeros` weight matrices of a
    hand-written network (`W1 = np.zeros((784, 128))`), where the layer is a hidden one:
    every `nn.Linear`/`nn.Conv*` of a model (a type test in an init function), an
    `nn.Sequential` element before the last, or `fc1` of a network that also has an `fc2`.

    ## Why is this bad?
    Units of a layer that start with the same weights compute the same output and receive the
    same gradient, so they stay identical: the layer behaves like a single unit. With zero
    weights, zero biases and ReLU nothing reaches the layers below at all. Normalisation layers
    (weight 1 is standard), biases, embedding padding rows, `eye_`/`orthogonal_`/`dirac_`, and
    a deliberately zero-initialised output or residual-branch layer (`head`, `proj`, `fc_out`,
    a LoRA `lora_B`, the last `nn.Sequential` layer, the last norm of a residual block) are
    fine. Inits under a name or flag condition (`if name.startswith("head")`) are not reported,
    nor a type-wide init when the file does not show at least two layers of that type (the
    only `nn.Linear` of a CNN is its classifier; a model built elsewhere cannot be seen), or
    when it is only `apply`-ed to a sub-block built here that holds fewer than two
    (`block2.apply(init_fn)` reaches `block2`'s layers, not the whole model's).

    ## Example
    ```python
    for m in self.modules():
        if isinstance(m, nn.Linear):
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)
    ```

    ## Use instead
    ```python
    for m in self.modules():
        if isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)
    ```
    """

    code = "TL501"
    name = "zero-weight-init"
    severity = "error"

    VALID = (
        """
        import torch.nn as nn
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(3, 16, 3)
                self.bn = nn.BatchNorm2d(16)
                self.fc = nn.Linear(16, 10)
                for m in self.modules():
                    if isinstance(m, nn.Conv2d):
                        nn.init.kaiming_normal_(m.weight, mode="fan_out")
                        nn.init.zeros_(m.bias)
                    elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                        nn.init.constant_(m.weight, 1)
                        nn.init.constant_(m.bias, 0)
        """,
        """
        import torch.nn as nn
        def init_weights(module, name):
            if isinstance(module, nn.Linear):
                if name.startswith("head"):
                    nn.init.zeros_(module.weight)
                else:
                    nn.init.trunc_normal_(module.weight, std=0.02)
        """,
        """
        import torch.nn as nn
        class Block(nn.Module):
            def __init__(self, dim):
                super().__init__()
                self.fc1 = nn.Linear(dim, 4 * dim)
                self.proj = nn.Linear(4 * dim, dim)
                nn.init.zeros_(self.proj.weight)  # residual branch starts as identity
        """,
        """
        import torch.nn as nn
        class LoRALinear(nn.Module):
            def __init__(self, d, r):
                super().__init__()
                self.lora_A = nn.Linear(d, r, bias=False)
                self.lora_B = nn.Linear(r, d, bias=False)
                nn.init.kaiming_uniform_(self.lora_A.weight)
                nn.init.zeros_(self.lora_B.weight)
        """,
        """
        import numpy as np
        # logistic regression: one weight matrix, zero init is standard
        W = np.zeros((784, 10))
        b = np.zeros(10)
        W1 = np.random.randn(784, 128) * 0.01
        b1 = np.zeros((1, 128))
        """,
        """
        import torch.nn as nn
        net = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
        net[0].weight.data.normal_(0, 0.01)
        net[0].bias.data.fill_(0)
        net[2].weight.data.zero_()
        emb = nn.Embedding(100, 16, padding_idx=0)
        emb.weight.data[0].zero_()
        """,
        """
        import torch.nn as nn
        def weights_init(m):
            classname = m.__class__.__name__
            if classname.find("Conv") != -1:
                nn.init.normal_(m.weight.data, 0.0, 0.02)
            elif classname.find("BatchNorm") != -1:
                nn.init.normal_(m.weight.data, 1.0, 0.02)
                nn.init.constant_(m.bias.data, 0)
        """,
        """
        import torch.nn as nn
        import torchvision
        # the model is built elsewhere (resnet18 has a single Linear, its classifier)
        model = torchvision.models.resnet18(num_classes=10)
        for m in model.modules():
            if isinstance(m, nn.Linear):
                nn.init.zeros_(m.weight)
        """,
        """
        import numpy as np
        import torch.nn as nn
        # parallel task heads built in a loop after the trunk; a one-matrix numpy model
        class MultiTask(nn.Module):
            def __init__(self, d, classes):
                super().__init__()
                self.trunk = nn.Linear(d, d)
                self.tasks = nn.ModuleList([nn.Linear(d, c) for c in classes])
                for t in self.tasks:
                    nn.init.zeros_(t.weight)

        class Softmax:
            def __init__(self, d, c):
                self.params = {}
                self.params["W1"] = np.zeros((d, c))
                self.params["b1"] = np.zeros(c)
        """,
        """
        import torch.nn as nn
        # heads built in a loop are the only Linear layers the file shows
        class Heads(nn.Module):
            def __init__(self, d, classes):
                super().__init__()
                self.towers = nn.ModuleList([nn.Linear(d, c) for c in classes])
                self.apply(self._init)

            def _init(self, m):
                if isinstance(m, nn.Linear):
                    nn.init.zeros_(m.weight)
        """,
        """
        import torch
        from torch import nn
        # `apply` on a sub-block reaches that block's layers only: here the model's last one
        block1 = nn.Sequential(nn.Linear(2, 5, bias=False), nn.ReLU())
        block2 = nn.Sequential(nn.Linear(5, 5, bias=False))
        model = nn.Sequential(block1, block2)
        def xavier(m):
            if type(m) == nn.Linear:
                torch.nn.init.xavier_uniform_(m.weight)
        def init_42(m):
            if type(m) == nn.Linear:
                torch.nn.init.constant_(m.weight, 42)
        block1.apply(xavier)
        block2.apply(init_42)
        """,
        """
        import torch
        from torch import nn
        # the same, with the blocks filled by add_module
        block1 = nn.Sequential()
        block1.add_module("Linear_1", nn.Linear(2, 5, bias=False))
        block1.add_module("relu", nn.ReLU())
        block2 = nn.Sequential()
        block2.add_module("Linear_2", nn.Linear(5, 5, bias=False))
        model = nn.Sequential()
        model.add_module("first", block1)
        model.add_module("second", block2)
        def init_42(m):
            if type(m) == nn.Linear:
                torch.nn.init.constant_(m.weight, 42)
        block2.apply(init_42)
        """,
    )
    INVALID = (
        """
        import torch.nn as nn
        class MLP(nn.Module):
            def __init__(self):
                super().__init__()
                self.layers = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
                for m in self.modules():
                    if isinstance(m, nn.Linear):
                        nn.init.zeros_(m.weight)  # !
                        nn.init.zeros_(m.bias)
        """,
        """
        import torch.nn as nn
        def init_weights(m):
            if type(m) == nn.Linear:
                nn.init.constant_(m.weight, 0.5)  # !
        net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
        net.apply(init_weights)
        """,
        """
        import numpy as np
        W1 = np.zeros((784, 128))  # !
        b1 = np.zeros(128)
        W2 = np.random.randn(128, 10) * 0.01
        b2 = np.zeros(10)
        """,
        """
        import torch
        import torch.nn as nn
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc1 = nn.Linear(784, 128)
                self.fc2 = nn.Linear(128, 10)
                self.fc1.weight.data = torch.zeros(128, 784)  # !
        """,
        """
        import torch.nn as nn
        net = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
        if __name__ == "__main__":
            net[0].weight.data.fill_(0.01)  # !
        """,
        """
        import torch.nn as nn
        def weights_init(m):
            classname = m.__class__.__name__
            if classname.find("Conv") != -1:
                m.weight.data.zero_()  # !
        netD = nn.Sequential(nn.Conv2d(3, 64, 4, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(64, 1, 4, 1, 0))
        netD.apply(weights_init)
        """,
        """
        import torch.nn as nn
        # the layers are built in a loop: the file shows one nn.Linear call, the net has several
        class MLP(nn.Module):
            def __init__(self, sizes):
                super().__init__()
                layers = []
                for a, b in zip(sizes[:-1], sizes[1:]):
                    layers += [nn.Linear(a, b), nn.ReLU()]
                self.net = nn.Sequential(*layers[:-1])
                self.apply(self._init_weights)

            def _init_weights(self, m):
                if isinstance(m, nn.Linear):
                    nn.init.zeros_(m.weight)  # !
                    nn.init.zeros_(m.bias)
        """,
        """
        import torch.nn as nn
        # a text CNN's parallel convolutions, all feeding the classifier
        class TextCNN(nn.Module):
            def __init__(self, vocab, emb=128, n_cls=2):
                super().__init__()
                self.embedding = nn.Embedding(vocab, emb)
                self.convs = nn.ModuleList([nn.Conv1d(emb, 100, k) for k in (3, 4, 5)])
                self.fc = nn.Linear(300, n_cls)
                for conv in self.convs:
                    nn.init.constant_(conv.weight, 0.01)  # !
                    nn.init.constant_(conv.bias, 0.0)
        """,
        """
        import numpy as np
        # CS231n style: the matrices in a parameter dict (the output matrix W2 may start at zero)
        class TwoLayerNet:
            def __init__(self, input_size, hidden_size, output_size):
                self.params = {}
                self.params["W1"] = np.zeros((input_size, hidden_size))  # !
                self.params["b1"] = np.zeros(hidden_size)
                self.params["W2"] = np.zeros((hidden_size, output_size))
                self.params["b2"] = np.zeros(output_size)
        """,
        """
        import torch
        from torch import nn
        # near-miss of `apply` on a sub-block: that block holds two Linear layers
        block1 = nn.Sequential()
        block1.add_module("Linear_1", nn.Linear(2, 5, bias=False))
        block2 = nn.Sequential()
        block2.add_module("Linear_2", nn.Linear(5, 5, bias=False))
        block2.add_module("relu", nn.ReLU())
        block2.add_module("Linear_3", nn.Linear(5, 5, bias=False))
        model = nn.Sequential(block1, block2)
        def init_42(m):
            if type(m) == nn.Linear:
                torch.nn.init.constant_(m.weight, 42)  # !
        block2.apply(init_42)
        """,
        """
        import torch
        from torch import nn
        # near-miss of `apply` on a sub-block: the whole model gets it too
        block1 = nn.Sequential(nn.Linear(2, 5, bias=False), nn.ReLU())
        block2 = nn.Sequential(nn.Linear(5, 5, bias=False))
        model = nn.Sequential(block1, block2)
        def init_42(m):
            if type(m) == nn.Linear:
                torch.nn.init.constant_(m.weight, 42)  # !
        block2.apply(init_42)
        model.apply(init_42)
        """,
    )

    def check(self, ctx) -> Iterator[Report]:
        if ctx.is_test_file:
            return
        for call in ctx.facts.calls:
            found = _init_kind(ctx, call)
            if found is None:
                continue
            kind, target = found
            layer = _weight_of(target)
            if layer is None:
                continue
            msg = _guarded(self._layer_finding, ctx, layer, call, kind)
            if msg:
                yield Report(call.node, msg)
        for a in ctx.facts.assigns:
            if a.op != "=" or a.value is None or len(a.targets) != 1:
                continue
            t = a.targets[0]
            layer = _weight_of(t)
            if layer is not None:
                found = _const_value_kind(ctx, a.value, _TENSOR_CONST)
                if found:
                    msg = _guarded(self._layer_finding, ctx, layer, a, found[0])
                    if msg:
                        yield Report(a.node, msg)
                continue
            msg = _guarded(self._matrix_finding, ctx, t, a)
            if msg:
                yield Report(a.node, msg)

    # -- layers ---------------------------------------------------------------------------
    def _layer_finding(self, ctx, layer: cst.BaseExpression, site: Site, kind: str) -> Optional[str]:
        name = dotted(layer) or ctx.module.code_for_node(layer)
        last = name.rsplit(".", 1)[-1]
        if _NORM_NAME.search(last):
            return None
        what = {"zeros": "zeros", "ones": "ones", "constant": "one constant"}[kind]
        if conditions(ctx, site):
            guard = type_guard(ctx, layer, site)
            if guard is None or guard.kind != "weight":
                return None
            if not isinstance(layer, cst.Name) or self._output_scope(ctx, layer, site):
                return None
            if self._single_layer(ctx, guard):
                return None
            # `block.apply(init_fn)` reaches that block's layers only (the model's last one,
            # say): count those.
            applied = applied_layers(ctx, site.function) if site.function is not None else None
            if applied is not None and self._guarded_count(ctx, guard, [ctx.call_site(n) for n in {id(n): n for n in applied}.values()]) < 2:
                return None
            return (
                f"every `{guard.label}` layer's weight is set to {what}: the units of each layer start "
                f"identical, get identical gradients and stay identical (with ReLU and zero bias nothing "
                f"learns). Use a random init (the layer's default, `kaiming_normal_`, `xavier_uniform_`); "
                f"zero-init only a final or residual-branch layer."
            )
        refs = specific_layers(ctx, layer, site)
        if not refs:
            return self._looped_layers_finding(ctx, layer, site, what)
        if not all(self._hidden(ctx, layer, r, site) for r in refs):
            return None
        return (
            f"the weight of hidden layer `{name}` ({refs[0].qualname.rsplit('.', 1)[-1]}) is set to {what}: "
            f"its units start identical, get identical gradients and stay identical (with ReLU and zero "
            f"bias nothing flows back through it). Keep the layer's random default or use "
            f"`kaiming_normal_`/`xavier_uniform_`; zero-init only the output layer."
        )

    def _looped_layers_finding(self, ctx, layer, site: Site, what: str) -> Optional[str]:
        """`for conv in self.convs: nn.init.constant_(conv.weight, c)` over an
        `nn.ModuleList` of weight layers beside another weight layer of the class (the
        list feeds it: hidden), or `for m in [self.fc1, self.fc2]` with a hidden layer among
        the elements."""
        looped = looped_layers(ctx, layer, site)
        if looped is None:
            return None
        kind, source, items = looped
        if kind == "list":
            hidden = None
            for item in items:
                refs = specific_layers(ctx, item, site)
                if not refs:
                    return None
                if hidden is None and all(self._hidden(ctx, item, r, site) for r in refs):
                    hidden = (dotted(item) or ctx.module.code_for_node(item), refs[0].qualname)
            if hidden is None:
                return None
            name, q = hidden
        else:
            name = dotted(source) or ""
            if not name or _OUTPUT_NAME.search(name.rsplit(".", 1)[-1]) or _NORM_NAME.search(name.rsplit(".", 1)[-1]):
                return None
            if not (isinstance(source, cst.Attribute) and isinstance(source.value, cst.Name) and source.value.value == "self"):
                return None
            cls = ctx.method_class(site.function)
            if cls is None or not other_weight_layer(ctx, cls, source.attr.value):
                return None
            q = items[0]
            name = f"{name}[...]"
        return (
            f"the weight of hidden layer `{name}` ({q.rsplit('.', 1)[-1]}) is set to {what}: "
            f"its units start identical, get identical gradients and stay identical (with ReLU and zero "
            f"bias nothing flows back through it). Keep the layer's random default or use "
            f"`kaiming_normal_`/`xavier_uniform_`; zero-init only the output layer."
        )

    @staticmethod
    def _hidden(ctx, layer, ref, site) -> bool:
        if ref.position is not None:
            return ref.position == "hidden"
        last = ref.name.rsplit(".", 1)[-1]
        if _OUTPUT_NAME.search(last):
            return False
        if isinstance(layer, cst.Attribute):
            owner = layer.value
            if isinstance(owner, cst.Name) and owner.value == "self":
                cls = ctx.method_class(site.function)
            else:
                cls = ctx.instance_class(owner, site)
            if cls is None:
                return False
            siblings = sibling_names(ctx, cls=cls)
        else:
            siblings = sibling_names(ctx, function=site.function)
        return has_later_numbered_sibling(last, siblings) or bool(re.match(r"^hidden", last, re.I))

    @staticmethod
    def _single_layer(ctx, guard) -> bool:
        """The file does not show two or more layers of the guarded types. With one, the init
        targets that layer (typically the classifier: deliberate); with none, the model is
        built elsewhere (`resnet18()` has a single Linear) and the analysis cannot tell."""
        return ZeroWeightInit._guarded_count(ctx, guard, ctx.facts.calls) < 2

    @staticmethod
    def _guarded_count(ctx, guard, calls) -> int:
        """How many layers of the guarded types `calls` build (one built in a chain counts
        as several)."""
        wanted = [part.strip() for part in guard.label.split(",")]
        names = {w.rsplit(".", 1)[-1] for w in wanted if not w.startswith(("'", '"'))}
        subs = [w.strip("'\"") for w in wanted if w.startswith(("'", '"'))]
        built = 0
        for c in calls:
            if c is None or not is_weight_layer_qualname(c.qualname):
                continue
            last = (c.qualname or "").rsplit(".", 1)[-1]
            if last in names or any(sub in last for sub in subs):
                built += 2 if built_in_chain(ctx, c) else 1
        return built

    @staticmethod
    def _output_scope(ctx, layer: cst.Name, site: Site) -> bool:
        """The generic init runs on an output part only: `for m in self.head.modules()`,
        `self.head.apply(init_fn)`, or an init function named for it (`zero_init_head`)."""
        for loop in site.loops:
            if loop.iter is not None and _OUTPUT_NAME.search(ctx.module.code_for_node(loop.iter)):
                return True
        fn = site.function
        if fn is None:
            return False
        if _OUTPUT_NAME.search(fn.name):
            return True
        for c in ctx.facts.calls:
            if c.attr == "apply" and c.receiver is not None and any(
                isinstance(a.value, cst.Name) and a.value.value == fn.name for a in c.args
            ):
                if _OUTPUT_NAME.search(ctx.module.code_for_node(c.receiver)):
                    return True
        return False

    # -- hand-written weight matrices -------------------------------------------------------
    def _matrix_finding(self, ctx, target: cst.BaseExpression, a: AssignSite) -> Optional[str]:
        key = _string_key(target)
        if isinstance(target, cst.Name):
            name, siblings = target.value, None
        elif isinstance(target, cst.Attribute) and isinstance(target.value, cst.Name) and target.value.value == "self":
            name, siblings = target.attr.value, None
        elif key is not None and dotted(target.value):  # type: ignore[attr-defined]
            name, siblings = key, None
        else:
            return None
        if not _WEIGHT_MATRIX.match(name):
            return None
        found = _const_value_kind(ctx, a.value, _ARRAY_CONST)
        if not found or not _matrix_shape(found[1]) or conditions(ctx, a):
            return None
        if key is not None:
            siblings = _container_keys(ctx, dotted(target.value), a)  # type: ignore[attr-defined]
        elif isinstance(target, cst.Name):
            siblings = sibling_names(ctx, function=a.function)
        else:
            cls = ctx.method_class(a.function)
            siblings = sibling_names(ctx, cls=cls) if cls is not None else set()
        if not has_later_numbered_sibling(name, siblings):
            return None  # the only or the last weight matrix: an output layer may start at zero
        if self._reassigned(ctx, target, a):
            return None  # a placeholder that an init step fills in later
        what = {"zeros": "zeros", "ones": "ones", "constant": "one constant"}[found[0]]
        return (
            f"weight matrix `{name}` of a hidden layer starts as {what}: all its units compute the same "
            f"value and get the same gradient, so they never become different (with ReLU nothing learns). "
            f"Initialise it randomly, e.g. `np.random.randn(...) * np.sqrt(2 / fan_in)`."
        )

    @staticmethod
    def _reassigned(ctx, target, a: AssignSite) -> bool:
        """The matrix gets a fresh value elsewhere (`W1 = np.zeros(...)` as a placeholder)."""
        text = ctx.module.code_for_node(target)
        cls = ctx.method_class(a.function) if isinstance(target, cst.Attribute) else None
        for other in ctx.facts.assigns:
            if other is a or other.op != "=" or other.value is None:
                continue
            if text in ctx.module.code_for_node(other.value):
                continue  # `W1 = W1 - lr * dW1`: an update, not a fresh init
            if isinstance(target, cst.Name) and other.function is not a.function:
                continue
            if cls is not None and ctx.method_class(other.function) is not cls:
                continue
            if any(ctx.module.code_for_node(t) == text for t in other.targets):
                return True
        return False


RULE = ZeroWeightInit
