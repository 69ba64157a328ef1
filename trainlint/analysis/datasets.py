"""Map-style datasets defined in the module: what their `__getitem__` does with the index.

A dataset whose `__getitem__` draws a fresh random sample -- it ignores the index, or uses
it only to seed a generator -- yields i.i.d. samples in any index order: shuffling its
loader changes nothing (TL401). Only a same-module class is judged; anything else is
unknown (None).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Set

import libcst as cst

from trainlint.analysis.facts import FunctionInfo, walk

if TYPE_CHECKING:  # pragma: no cover
    from trainlint.analysis.context import FileContext
    from trainlint.analysis.facts import ClassInfo, Site

# Calls that seed a generator: `torch.manual_seed(i)`, `np.random.default_rng(seed + i)`,
# `random.Random(i)`, `g.manual_seed(i)`.
SEEDING = {"seed", "manual_seed", "default_rng", "RandomState", "Random", "Generator", "PRNGKey", "SeedSequence"}
# Calls that draw random numbers, by method or function name (`torch.randn`, `np.random.normal`,
# `rng.integers`, `random.choice`).
DRAWS = {
    "rand", "randn", "randint", "random", "normal", "uniform", "choice", "choices", "integers", "sample",
    "shuffle", "permutation", "randperm", "multinomial", "bernoulli", "beta", "poisson", "standard_normal",
    "randrange", "gauss", "exponential", "binomial", "rand_like", "randn_like", "randint_like", "normal_", "uniform_",
}


def draws_fresh_samples(ctx: "FileContext", dataset: cst.BaseExpression, at: "Site") -> bool:
    """`dataset` is an instance of a same-module class whose `__getitem__` draws random
    data and reads the index only to seed a generator, if at all."""
    cls = ctx.instance_class(dataset, at)
    if cls is None:
        return False
    getitem = ctx.method(cls, "__getitem__")
    return getitem is not None and _random_getitem(ctx, getitem, cls)


def _random_getitem(ctx: "FileContext", fn: FunctionInfo, cls: "ClassInfo") -> bool:
    params = [p for p in fn.params if p not in ("self", "cls")]
    if not params:
        return False
    index = params[0]
    body = fn.node.body
    uses = [n for n in walk(body) if isinstance(n, cst.Name) and n.value == index]
    seed_uses: Set[int] = set()
    draws = False
    for node in walk(body):
        if not isinstance(node, cst.Call):
            continue
        name = _call_name(node.func)
        if name in SEEDING:
            seed_uses.update(id(n) for a in node.args for n in walk(a.value) if isinstance(n, cst.Name) and n.value == index)
        elif name in DRAWS or _draws_in_method(ctx, cls, node, index):
            draws = True
    return draws and all(id(u) in seed_uses for u in uses)


def _draws_in_method(ctx: "FileContext", cls: "ClassInfo", call: cst.Call, index: str) -> bool:
    """`self._sample()`: a method of the class that draws, called without the index."""
    f = call.func
    if not (isinstance(f, cst.Attribute) and isinstance(f.value, cst.Name) and f.value.value == "self"):
        return False
    method: Optional[FunctionInfo] = ctx.method(cls, f.attr.value)
    if method is None or any(isinstance(n, cst.Name) and n.value == index for a in call.args for n in walk(a.value)):
        return False
    return any(isinstance(n, cst.Call) and _call_name(n.func) in DRAWS for n in walk(method.node.body))


def _call_name(func: cst.BaseExpression) -> Optional[str]:
    if isinstance(func, cst.Attribute):
        return func.attr.value
    if isinstance(func, cst.Name):
        return func.value
    return None


# Functions that shuffle a sequence in place: `random.shuffle(xs)`, `np.random.shuffle(xs)`,
# `rng.shuffle(xs)`.
_IN_PLACE_SHUFFLE = "shuffle"


def shuffles_itself(ctx: "FileContext", cls: "ClassInfo") -> bool:
    """A map-style dataset that reshuffles its own sample list after construction: a method
    other than `__init__` (its `__getitem__`, or a `shuffleSamples()` the training loop calls
    every epoch) shuffles a `self.` attribute in place. Its loader's order is already random
    (and such datasets often build their batches themselves)."""
    classes = [cls]
    for base in cls.bases:
        local = ctx.class_named(base.value) if isinstance(base, cst.Name) else None
        if local is not None and local is not cls:
            classes.append(local)
    for c in ctx.facts.calls:
        if c.attr != _IN_PLACE_SHUFFLE or not c.node.args:  # type: ignore[attr-defined]
            continue
        if ctx.method_class(c.function) not in classes or c.function is None or c.function.name == "__init__":
            continue
        target = c.node.args[0].value  # type: ignore[attr-defined]
        if isinstance(target, cst.Attribute) and isinstance(target.value, cst.Name) and target.value.value == "self":
            return True
    return False


def is_iterable_dataset_class(ctx: "FileContext", cls: "ClassInfo") -> bool:
    """A subclass of `IterableDataset` (directly or through same-module bases): its loader
    cannot shuffle (`shuffle=True` raises); the dataset orders its own stream."""
    return any(b.rsplit(".", 1)[-1] == "IterableDataset" for b in ctx.base_qualnames(cls))
