"""How big the model an optimizer trains visibly is: deep, small, or not visible.

Used by the learning-rate rule: a rate that a small network (a tabular MLP, a softmax
regression, a toy RNN, a few raw tensors) trains well with can be far too high for a deep
one, so the rule needs to know which it is looking at, and to stay silent when it cannot.

`optimizer_model_scale(ctx, params, at)` looks at the optimizer's first argument
(`model.parameters()`, `filter(..., model.parameters())`, `[{"params": net.fc.parameters()}]`,
`self.parameters()` in a Lightning module, `[w, b]` raw tensors), follows the owners to their
constructions (same-module classes, factory functions, `nn.Sequential`, model zoos) and
counts what it sees.

- "deep": a model-zoo or pretrained backbone (`torchvision.models.*`, `timm.create_model`,
  `transformers`, `torch.hub.load`, `*.from_pretrained`), a transformer or attention layer,
  convolutions built in a loop (ResNet's `_make_layer`: a repeated block), or at least
  `DEEP_LAYERS` weight layers (convolutions, linear layers, recurrent layers counting their
  `num_layers`).
- "small": every part is visible, and none of the above.
- None: some part cannot be seen (a class from another module, a parameter, a layer count
  that depends on a loop over a configuration).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import libcst as cst

from trainlint.analysis.context import FileContext
from trainlint.analysis.facts import ClassInfo, Site, walk
from trainlint.analysis.names import dotted

DEEP, SMALL = "deep", "small"
# Weight layers from which a stack counts as deep. Small tutorial models (a four-conv
# autoencoder, a two-block MNIST ResNet with 4-channel convolutions, a 3-layer MLP) stay below.
DEEP_LAYERS = 8
MAX_DEPTH = 6

_ZOO_PREFIXES = ("torchvision.models.", "timm.", "transformers.", "torch.hub.load", "segmentation_models_pytorch.", "open_clip.")
_ATTENTION = re.compile(r"^(Transformer(Encoder|Decoder)?(Layer)?|MultiheadAttention)$")
_CONV = re.compile(r"^(Lazy)?Conv(Transpose)?[123]d$")
_DENSE = re.compile(r"^(Lazy)?(Linear|Bilinear)$")
_RECURRENT = re.compile(r"^(LSTM|GRU|RNN)$")
_TENSOR_FACTORIES = {
    "torch.tensor", "torch.randn", "torch.rand", "torch.zeros", "torch.ones", "torch.empty", "torch.full",
    "torch.nn.Parameter", "torch.nn.parameter.Parameter", "torch.Tensor", "torch.FloatTensor",
}


@dataclass
class Scale:
    """What a model's visible definition holds."""

    layers: int = 0  # weight layers counted
    deep_because: Optional[str] = None  # set once the model is known to be deep
    unknown: bool = False  # some part cannot be seen
    repeated_conv: bool = False
    why: List[str] = field(default_factory=list)

    def add(self, other: "Scale") -> None:
        self.layers += other.layers
        self.unknown = self.unknown or other.unknown
        self.repeated_conv = self.repeated_conv or other.repeated_conv
        if self.deep_because is None:
            self.deep_because = other.deep_because

    @property
    def verdict(self) -> Optional[str]:
        if self.deep_because is not None:
            return DEEP
        if self.repeated_conv:
            return DEEP
        if self.layers >= DEEP_LAYERS:
            return DEEP
        return None if self.unknown else SMALL

    def reason(self) -> str:
        if self.deep_because is not None:
            return self.deep_because
        if self.repeated_conv:
            return "convolution blocks built in a loop"
        return f"{self.layers} weight layers"


def optimizer_model_scale(
    ctx: FileContext, params: Optional[cst.BaseExpression], at: Site, own_key: Optional[str] = None
) -> Tuple[Optional[str], str]:
    """(DEEP / SMALL / None, why) for the parameters an optimizer is built from. With
    `own_key` ("lr"), parameter groups that set that option themselves (`{"params": ...,
    "lr": 1e-4}`) are left out: the optimizer's own argument does not apply to them."""
    if params is None:
        return None, ""
    if own_key is not None and isinstance(params, (cst.List, cst.Tuple)):
        groups = [el.value for el in params.elements]
        if groups and all(isinstance(g, cst.Dict) for g in groups):
            kept = [g for g in groups if _dict_value(g, own_key) is None]  # type: ignore[arg-type]
            if not kept:
                return None, ""
            values = [_dict_value(g, "params") for g in kept]  # type: ignore[arg-type]
            if any(v is None for v in values):
                return None, ""
            params = cst.List([cst.Element(v) for v in values])  # type: ignore[arg-type]
    try:
        scale = _params_scale(ctx, params, at, 0)
    except RecursionError:
        return None, ""
    verdict = scale.verdict
    return verdict, scale.reason() if verdict == DEEP else ""


def _dict_value(d: cst.Dict, key: str) -> Optional[cst.BaseExpression]:
    for el in d.elements:
        if isinstance(el, cst.DictElement) and isinstance(el.key, cst.SimpleString) and el.key.evaluated_value == key:
            return el.value
    return None


def _params_scale(ctx: FileContext, params: cst.BaseExpression, at: Site, depth: int) -> Scale:
    scale = Scale()
    if depth > MAX_DEPTH:
        scale.unknown = True
        return scale
    owners = [n for n in walk(params) if isinstance(n, cst.Call) and isinstance(n.func, cst.Attribute)
              and n.func.attr.value in ("parameters", "named_parameters")]
    if owners:
        for call in owners:
            scale.add(_owner_scale(ctx, call.func.value, at, depth))  # type: ignore[attr-defined]
        return scale
    # No `.parameters()`: a name holding them, or raw tensors (`[w, b]`, `[params]`).
    if isinstance(params, (cst.List, cst.Tuple)):
        if not params.elements:
            scale.unknown = True
        for el in params.elements:
            scale.add(_params_scale(ctx, el.value, at, depth + 1))
        return scale
    if isinstance(params, cst.Name):
        cands = ctx.resolve(params, at)
        if not cands or any(v is params for v, _ in cands):
            scale.unknown = True
            return scale
        for value, site in cands:
            if isinstance(value, cst.Call) and ctx.qualname(value.func) in _TENSOR_FACTORIES:
                continue  # a raw tensor: a parameter of a hand-written model
            scale.add(_params_scale(ctx, value, site, depth + 1))
        return scale
    if isinstance(params, cst.Call) and ctx.qualname(params.func) in _TENSOR_FACTORIES:
        return scale
    scale.unknown = True
    return scale


def _owner_scale(ctx: FileContext, owner: cst.BaseExpression, at: Site, depth: int) -> Scale:
    """The scale of the module whose `.parameters()` are trained."""
    scale = Scale()
    if isinstance(owner, cst.Name) and owner.value == "self":
        cls = ctx.method_class(at.function)
        if cls is None:
            scale.unknown = True
        else:
            scale.add(_class_scale(ctx, cls, set(), depth + 1))
        return scale
    cands = ctx.constructions(owner, at)
    if not cands:
        scale.unknown = True
    for value, site in cands:
        if isinstance(value, cst.Call):
            scale.add(_construction_scale(ctx, value, site, set(), depth + 1))
        elif isinstance(value, cst.Attribute) and isinstance(value.value, cst.Name) and value.value.value == "self":
            scale.unknown = True  # `self.net` never assigned a visible construction
        else:
            scale.unknown = True
    return scale


def _construction_scale(ctx: FileContext, call: cst.Call, site: Site, seen: set, depth: int) -> Scale:
    scale = Scale()
    if depth > MAX_DEPTH:
        scale.unknown = True
        return scale
    q = ctx.qualname(call.func)
    if isinstance(call.func, cst.Attribute) and call.func.attr.value == "from_pretrained":
        scale.deep_because = f"a pretrained `{ctx.module.code_for_node(call.func)}` model"
        return scale
    if q is not None:
        if q.startswith(_ZOO_PREFIXES):
            scale.deep_because = f"a `{q}` model"
            return scale
        if q.startswith("torch.nn."):
            last = q.rsplit(".", 1)[-1]
            if last in ("Sequential", "ModuleList", "ModuleDict"):
                for a in call.args:
                    scale.add(_element_scale(ctx, a.value, site, seen, depth + 1))
                return scale
            return _layer_scale(ctx, last, call)
        scale.unknown = True  # a class or factory from another module
        return scale
    if isinstance(call.func, cst.Name):
        cls = ctx.class_named(call.func.value)
        if cls is not None:
            return _class_scale(ctx, cls, seen, depth + 1)
        factory = ctx.function_named(call.func.value)
        if factory is not None and factory.name not in seen:
            # `def resnet101(n): return ResNet(Bottleneck, [3, 4, 23, 3], n)`: what it returns.
            seen = seen | {factory.name}
            returns = [r for r in ctx.returns_of(factory) if r.value is not None]
            if not returns:
                scale.unknown = True
            for r in returns:
                scale.add(_element_scale(ctx, r.value, r, seen, depth + 1))  # type: ignore[arg-type]
            return scale
    scale.unknown = True
    return scale


def _element_scale(ctx: FileContext, expr: cst.BaseExpression, site: Site, seen: set, depth: int) -> Scale:
    """A part handed to `nn.Sequential(...)` or returned by a factory."""
    if isinstance(expr, cst.Call):
        return _construction_scale(ctx, expr, site, seen, depth)
    scale = Scale()
    if isinstance(expr, (cst.List, cst.Tuple)):
        for el in expr.elements:
            scale.add(_element_scale(ctx, el.value, site, seen, depth + 1))
        return scale
    if isinstance(expr, cst.Name) and depth <= MAX_DEPTH:
        cands = ctx.constructions(expr, site)
        if cands and not any(v is expr for v, _ in cands):
            for value, s in cands:
                scale.add(_element_scale(ctx, value, s, seen, depth + 1))
            return scale
    scale.unknown = True  # `nn.Sequential(*layers)`, a comprehension: a count the loop decides
    return scale


def _layer_scale(ctx: FileContext, name: str, call: cst.Call) -> Scale:
    scale = Scale()
    if _ATTENTION.match(name):
        scale.deep_because = f"`nn.{name}` attention layers"
    elif _CONV.match(name) or _DENSE.match(name):
        scale.layers = 1
    elif _RECURRENT.match(name):
        n = _keyword(call, "num_layers", 2)
        scale.layers = int(n.evaluated_value) if isinstance(n, cst.Integer) else 1  # type: ignore[arg-type]
        if n is not None and not isinstance(n, cst.Integer):
            scale.unknown = True
    return scale


def _keyword(call: cst.Call, name: str, index: int) -> Optional[cst.BaseExpression]:
    for a in call.args:
        if a.keyword is not None and a.keyword.value == name:
            return a.value
    positional = [a for a in call.args if a.keyword is None and not a.star]
    return positional[index].value if len(positional) > index else None


def _class_scale(ctx: FileContext, cls: ClassInfo, seen: set, depth: int) -> Scale:
    """Every layer a same-module `nn.Module` class constructs (its helpers included)."""
    scale = Scale()
    if cls.name in seen or depth > MAX_DEPTH:
        scale.unknown = cls.name not in seen
        return scale
    seen = seen | {cls.name}
    for base in ctx.base_qualnames(cls):
        if base.startswith(_ZOO_PREFIXES) or "PreTrainedModel" in base:
            scale.deep_because = f"a subclass of `{base}`"
            return scale
        if not base.startswith(("torch.nn", "lightning", "pytorch_lightning")):
            scale.unknown = True  # built on a class from elsewhere
    for call in ctx.facts.calls:
        if not (cls.start < call.order < cls.end):
            continue
        q = call.qualname
        looped = any(cls.start < loop.start < cls.end for loop in call.loops)
        part: Optional[Scale] = None
        if isinstance(call.func, cst.Attribute) and call.func.attr.value == "from_pretrained":
            part = _construction_scale(ctx, call.node, call, seen, depth + 1)  # type: ignore[arg-type]
        elif q is not None and q.startswith(_ZOO_PREFIXES):
            part = _construction_scale(ctx, call.node, call, seen, depth + 1)  # type: ignore[arg-type]
        elif q is not None and q.startswith("torch.nn.") and not q.startswith(("torch.nn.functional.", "torch.nn.init.", "torch.nn.utils.")):
            last = q.rsplit(".", 1)[-1]
            if last in ("Sequential", "ModuleList", "ModuleDict"):
                continue  # their elements are calls of their own, counted where they stand
            part = _layer_scale(ctx, last, call.node)  # type: ignore[arg-type]
        elif q is None and isinstance(call.func, cst.Name) and ctx.class_named(call.func.value) is not None:
            part = _class_scale(ctx, ctx.class_named(call.func.value), seen, depth + 1)  # type: ignore[arg-type]
        elif q is None and isinstance(call.func, cst.Name) and call.func.value in seen:
            continue
        if part is None:
            continue
        if looped or _in_comprehension(ctx, call, cls):
            # Built in a loop: how many depends on the loop. Convolutions repeated so (ResNet's
            # `_make_layer`, a VGG `cfg` list) make a deep network; repeated dense layers may
            # be two of a small MLP.
            if part.layers and (part.repeated_conv or _has_conv(ctx, call, part)):
                part.repeated_conv = True
            elif part.layers:
                part.unknown = True
        scale.add(part)
    return scale


def _has_conv(ctx: FileContext, call, part: Scale) -> bool:
    q = call.qualname or ""
    if _CONV.match(q.rsplit(".", 1)[-1]):
        return True
    # a block class with convolutions of its own
    if q == "" and isinstance(call.func, cst.Name):
        cls = ctx.class_named(call.func.value)
        if cls is not None:
            return any(cls.start < c.order < cls.end and _CONV.match((c.qualname or "").rsplit(".", 1)[-1]) for c in ctx.facts.calls)
    return False


def _in_comprehension(ctx: FileContext, call, cls: ClassInfo) -> bool:
    """The call is the element of a list comprehension or generator (`[nn.Linear(d, d) for _ in
    range(n)]`): CallSite.loops holds `for` statements only."""
    for block in ctx.facts.blocks:
        if block.kind == "comp" and block.contains(call.order) and cls.start < block.start < cls.end:
            return True
    return False
