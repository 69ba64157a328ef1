"""Evaluation passes: where the model runs without training, and in which modes.

An evaluation pass is either
- a function named like evaluate/validate/test/predict/infer that runs a model and never
  calls `backward()`/`step()` (Lightning's `*_step` hooks are not, and pytest modules are
  skipped: the framework sets the modes), or
- a loop over a validation/test loader that runs a model and never trains.
A function that only feeds the model synthetic tensors (`net(torch.randn(1, 3, 32, 32))`
to print the output's shape) is a smoke test, not an evaluation pass: it reads no held-out
data and computes no metric over it, so its modes change nothing anyone reads.
Modes are read from the pass itself, from what runs before it in its function, and from
the function's same-module callers.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import cached_property
from typing import List, Optional, Tuple

import libcst as cst

from trainlint.analysis.callables import parameter_named_like_function, passes_own_weights, plain_function
from trainlint.analysis.context import TORCH_ROOTS, FileContext
from trainlint.analysis.facts import Block, CallSite, ClassInfo, FunctionInfo, Site, iter_children, walk
from trainlint.analysis.inputs import constructor_arguments
from trainlint.analysis.mode_free import mode_free_helper_call
from trainlint.analysis.names import dotted, expression_facts
from trainlint.analysis.project import constructor_summary, passed_models
from trainlint.analysis.torch_api import MODE_DEPENDENT_LAYER, SET_GRAD_ENABLED
from trainlint.analysis.training import BACKWARD, EVAL, MODE, STEP, TRAIN

EVAL_FUNCTION_NAME = re.compile(
    r"(^|_)(eval|evaluate|evaluation|validate|validation|valid|val|test|testing|predict|prediction|inference|infer)(_|$)",
    re.I,
)
EVAL_DATA_NAME = re.compile(r"(^|_)(val|valid|validation|test|testing|eval|evaluation|dev|holdout)(_|$|loader|dl|data|set|ds|iter)", re.I)
FRAMEWORK_HOOK = re.compile(r"^(validation|test|predict|val)_step$|_epoch_end$|^on_", re.I)
PLAIN_BASES = {"?.object", "?.ABC", "?.Generic", "?.Protocol", "?.NamedTuple", "?.dict", "?.list"}
# Tensor factories whose output is made-up data, not a sample of any data set.
SYNTHETIC_TENSORS = {
    f"torch.{n}"
    for n in (
        "randn", "rand", "randint", "randn_like", "rand_like", "randint_like", "zeros", "ones", "empty",
        "full", "zeros_like", "ones_like", "empty_like", "full_like", "arange", "linspace", "eye", "randperm",
    )
}
# Converters: made-up data only when what they convert is (`torch.tensor([[1.0, 2.0]])`, not
# `torch.Tensor(obs)`).
TENSOR_CONVERTERS = {
    *(f"torch.{n}" for n in ("tensor", "Tensor", "FloatTensor", "LongTensor", "as_tensor", "from_numpy")),
    "torch.autograd.Variable",  # pre-0.4 code: `Variable(torch.randn(1, 3, 32, 32))`
    "torch.autograd.variable.Variable",
}
# Where a smoke test looks at a model's output: its shape, printed, asserted.
_INSPECTING_ATTRS = {"size", "shape", "dtype", "device", "ndim", "dim", "numel"}
_INSPECTING_CALLS = {"print", "len", "type", "isinstance"}
_MODULE_METHODS = {"load_state_dict", "eval", "train", "parameters", "named_parameters", "state_dict", "modules", "apply"}
# nn.Module's own API and persistence helpers: calling one of these on a model runs no forward.
_NOT_FORWARD_METHODS = {
    *_MODULE_METHODS, "to", "cuda", "cpu", "float", "half", "double", "bfloat16", "type", "requires_grad_",
    "zero_grad", "share_memory", "children", "named_children", "named_modules", "buffers", "named_buffers",
    "add_module", "register_module", "register_buffer", "register_parameter", "get_submodule", "get_parameter",
    "get_buffer", "extra_repr", "save", "save_pretrained", "push_to_hub", "load", "from_pretrained",
    "load_weights", "save_weights", "summary", "cast", "compile", "fit", "set_", "register_forward_hook",
    "register_forward_pre_hook", "register_full_backward_hook", "register_backward_hook", "set_adapter",
}
_NEEDS_GRAD = {"grad", "backward", "requires_grad_", "enable_grad", "generate", "jacobian", "hessian", "vjp", "jvp"}


def iterates_eval_data(expr: Optional[cst.BaseExpression]) -> bool:
    """A loop's iterable names validation/test data: `val_loader`, `enumerate(testloader)`,
    `loaders["dev"]`."""
    if expr is None:
        return False
    for node in walk(expr):
        if isinstance(node, cst.Name) and EVAL_DATA_NAME.search(node.value):
            return True
        if isinstance(node, cst.SimpleString) and EVAL_DATA_NAME.search(node.value.strip("'\"")):
            return True
    return False


@dataclass(eq=False)
class EvalPass:
    kind: str  # "function" or "loop"
    report_node: cst.CSTNode
    function: Optional[FunctionInfo]  # the evaluation function, or the loop's function
    loop: Optional[Block]
    model_call: CallSite
    description: str

    @property
    def start(self) -> int:
        return self.loop.start if self.loop is not None else self.function.start  # type: ignore[union-attr]


def _bound_names(targets: List[cst.BaseExpression]) -> Optional[List[str]]:
    """The names `y = ...` or `y, feats = ...` binds; None for any other target (an
    attribute, a subscript, a starred element)."""
    out: List[str] = []
    for t in targets:
        if isinstance(t, cst.Name):
            out.append(t.value)
        elif isinstance(t, (cst.Tuple, cst.List)) and t.elements and all(
            isinstance(e, cst.Element) and isinstance(e.value, cst.Name) for e in t.elements
        ):
            out.extend(e.value.value for e in t.elements)  # type: ignore[attr-defined]
        else:
            return None
    return out


def _outputs_only_inspected(fn: FunctionInfo, model_calls: List[CallSite]) -> bool:
    """The model's outputs are only looked at -- printed, their shape read, asserted -- not
    scored: a metric over noise fed to a generator (`fid(G(z))`) is an evaluation."""
    calls = {id(c.node) for c in model_calls}
    assigned, names = set(), set()
    # A model handed in as a parameter and fed another model's output is one more stage of
    # the same smoke test (`features = backbone(x); qvalues = head(features)`).
    params = {p.name.value for p in fn.node.params.params}
    assigns = [n for n in walk(fn.node.body) if isinstance(n, cst.Assign)]
    changed = True
    while changed:
        changed = False
        for node in assigns:
            value = node.value
            if id(value) not in calls and not (
                isinstance(value, cst.Call) and isinstance(value.func, cst.Name) and value.func.value in params
                and any(isinstance(a.value, cst.Name) and a.value.value in names for a in value.args)
            ):
                continue
            bound = _bound_names([t.target for t in node.targets])
            if id(value) not in assigned and bound is not None:
                calls.add(id(value))
                assigned.add(id(value))
                names.update(bound)
                changed = True

    def fine(node: cst.CSTNode, inspecting: bool) -> bool:
        if id(node) in calls:
            return inspecting or id(node) in assigned
        if isinstance(node, cst.Name):
            return inspecting or node.value not in names
        if isinstance(node, cst.Assign):
            return fine(node.value, inspecting)  # the targets are bindings, not uses
        if isinstance(node, cst.Attribute) and node.attr.value in _INSPECTING_ATTRS:
            return fine(node.value, True)
        if isinstance(node, cst.Call) and isinstance(node.func, cst.Name) and node.func.value in _INSPECTING_CALLS:
            return all(fine(a.value, True) for a in node.args)
        if isinstance(node, cst.Assert):
            return fine(node.test, True) and (node.msg is None or fine(node.msg, True))
        return all(fine(child, inspecting) for child in iter_children(node))

    return fine(fn.node.body, False)


class Evaluation:
    def __init__(self, ctx: FileContext) -> None:
        self.ctx = ctx
        self.tr = ctx.training
        self._method_forwards: set = set()  # ids of `model.method(x)` calls taken as forwards

    def model_expr(self, call: CallSite) -> cst.BaseExpression:
        """The model a forward call runs: `model` in `model(x)`, `model.forward(x)` and
        `model.get_action(x)`."""
        if id(call.node) in self._method_forwards and call.receiver is not None:
            return call.receiver
        func = call.func
        if isinstance(func, cst.Attribute) and func.attr.value == "forward":
            func = func.value
        return func

    # -- finding passes ---------------------------------------------------------------
    @cached_property
    def passes(self) -> List[EvalPass]:
        ctx, out = self.ctx, []
        # A module without a PyTorch import: only an evaluation function that callers in
        # other (PyTorch) modules hand a model (analysis/project.py, `passed_models`).
        if ctx.is_test_file or not (ctx.uses_torch or ctx.project is not None):
            return out
        eval_functions = set()
        for fn in ctx.facts.functions:
            if not EVAL_FUNCTION_NAME.search(fn.name) or self._framework_hook(fn):
                continue
            if not ctx.uses_torch and (fn.cls is not None or fn.parent is not None or not ctx.project.called_from_torch([fn.name])):
                continue  # no PyTorch module names it: nothing read further (scikit-learn, Keras code)
            if fn.cls is not None and self.tr.is_module_class(fn.cls):
                continue  # the model's own method (`predict()` inside forward): not a pass
            if self._called_while_training(fn):
                continue
            if any(id(p) in eval_functions for p in ctx.enclosing_function_chain(fn.parent)):
                continue
            calls = self._all_calls(fn)
            model_calls = self._forward_calls(calls)
            if not model_calls or self._trains(self.tr.function_events(fn)) or self._needs_grad(calls) or self._imported_trains(calls):
                continue
            forwards = {id(c.node) for c in model_calls}
            if all(self.feeds_synthetic_data(c, forwards) for c in model_calls) and _outputs_only_inspected(fn, model_calls):
                continue  # a shape smoke test: `y = net(torch.randn(1, 3, 32, 32)); print(y.size())`
            if not ctx.uses_torch and not self._given_torch_models(fn, model_calls[0]):
                continue
            eval_functions.add(id(fn))
            out.append(EvalPass("function", fn.node.name, fn, None, model_calls[0], f"`{fn.name}()`"))
        if not ctx.uses_torch:
            return out
        eval_loops: List[Block] = []
        # `for` loops, and comprehensions: `sum(loss_fn(model(x), y) for x, y in val_dl)`
        comprehensions = [b for b in ctx.facts.blocks if b.kind == "comp"]
        for loop in [*ctx.loops, *comprehensions]:
            if loop.kind not in ("for", "comp") or not self._iterates_eval_data(loop.iter):
                continue
            if any(id(f) in eval_functions for f in ctx.enclosing_function_chain(loop.function)):
                continue
            if any(o.function is loop.function and o.contains(loop.start) for o in eval_loops):
                continue  # nested inside an evaluation loop already reported
            eval_loops.append(loop)
            calls = ctx.calls_within(loop)
            model_calls = self._forward_calls(calls)
            if not model_calls or self._trains(self.tr.all_events(loop)) or self._needs_grad(calls) or self._imported_trains(calls):
                continue
            it = ctx.module.code_for_node(loop.iter)  # type: ignore[arg-type]
            out.append(EvalPass("loop", loop.node, loop.function, loop, model_calls[0], f"the loop over `{it}`"))
        return out

    def _forward_calls(self, calls: List[CallSite]) -> List[CallSite]:
        """The model calls among `calls` that run a forward pass. `model = Model(envs).to(dev)`
        followed by `model(obs)` constructs the model (a class passed in as a parameter
        looks like a model by name): a call whose result is a name later called as a model,
        or used as a module, is a construction, not a forward."""
        model_calls = [c for c in calls if self.tr.is_model_call(c)]
        modules = {self.tr.model_key(c) for c in model_calls}
        # ... or a name that module-only methods are called on (`agent.load_state_dict(...)`).
        modules.update(dotted(c.receiver) for c in calls if c.attr in _MODULE_METHODS and c.receiver is not None)
        constructed = set()
        for a in self.ctx.facts.assigns:
            if a.op != "=" or a.value is None or not any(isinstance(t, cst.Name) and t.value in modules for t in a.targets):
                continue
            inner = self.ctx.unwrap_model(a.value)
            if isinstance(inner, cst.Call):
                constructed.add(id(inner))
        forwards = [c for c in model_calls if id(c.node) not in constructed]
        # A custom method of a model that takes an input (`agent.get_action(obs)`,
        # `model.get_action_and_value(x)`): it runs (part of) the forward pass. Only on a
        # name that runs a forward itself, or that gets both weights (`load_state_dict`)
        # and a mode switch (`eval()`/`train()`) -- an environment's `env.eval()` or a
        # trainer's `load_state_dict()` alone does not make it a model --, and never
        # nn.Module's own API.
        loaded = {dotted(c.receiver) for c in calls if c.attr == "load_state_dict" and c.receiver is not None}
        switched = {dotted(c.receiver) for c in calls if c.attr in ("eval", "train") and c.receiver is not None}
        models = {self.tr.model_key(c) for c in forwards} | (loaded & switched)
        known = {id(c.node) for c in forwards}
        for c in calls:
            if (
                id(c.node) not in known and c.attr not in _NOT_FORWARD_METHODS and c.receiver is not None
                and c.qualname is None and dotted(c.receiver) in models and c.positional(0) is not None
            ):
                forwards.append(c)
                self._method_forwards.add(id(c.node))
        return sorted(forwards, key=lambda c: c.order)

    def feeds_synthetic_data(self, call: CallSite, forwards: frozenset = frozenset()) -> bool:
        """Every input of the model call is made-up data: a tensor factory (`torch.randn`,
        `torch.zeros`, ...), followed through local assignments and tensor methods
        (`.to(device)`, `.unsqueeze(0)`), a literal, or the output of another forward call
        (ids in `forwards`) that is itself fed made-up data (`head(backbone(noise))`)."""
        args = [a.value for a in call.node.args]  # type: ignore[attr-defined]
        return bool(args) and all(self._synthetic(v, call, 0, forwards) for v in args)

    def _synthetic(self, expr: cst.BaseExpression, at: Site, depth: int, forwards: frozenset = frozenset()) -> bool:
        if depth > 6:
            return False
        if isinstance(expr, (cst.Integer, cst.Float)):
            return True
        if isinstance(expr, cst.Name) and expr.value in ("True", "False", "None"):
            return True
        if isinstance(expr, (cst.Tuple, cst.List)):
            return bool(expr.elements) and all(self._synthetic(e.value, at, depth + 1, forwards) for e in expr.elements)
        if isinstance(expr, cst.BinaryOperation):
            return self._synthetic(expr.left, at, depth + 1, forwards) and self._synthetic(expr.right, at, depth + 1, forwards)
        if isinstance(expr, cst.UnaryOperation):
            return self._synthetic(expr.expression, at, depth + 1, forwards)
        if isinstance(expr, cst.Call):
            if id(expr) in forwards:  # a forward's output: made up if its inputs are
                site = self.ctx.call_site(expr)
                return site is not None and bool(expr.args) and all(
                    self._synthetic(a.value, site, depth + 1, forwards) for a in expr.args)
            q = self.ctx.qualname(expr.func)
            if q in SYNTHETIC_TENSORS:
                return True
            if q in TENSOR_CONVERTERS:
                return bool(expr.args) and all(self._synthetic(a.value, at, depth + 1, forwards) for a in expr.args if a.keyword is None)
            # A tensor method on made-up data is still made-up data: `.to(device)`, `.view(...)`.
            f = expr.func
            return isinstance(f, cst.Attribute) and self._synthetic(f.value, at, depth + 1, forwards)
        if isinstance(expr, cst.Name):
            values = self.ctx.resolve(expr, at)
            return bool(values) and all(
                v is not expr and self._synthetic(v, site, depth + 1, forwards) for v, site in values
            )
        return False

    def _called_while_training(self, fn: FunctionInfo) -> bool:
        """A same-module caller trains around it (`infer()` used by the training step), or,
        with no such caller, one in another module of the project does."""
        if not self._callers(fn):
            return any(c["trains"] for c in self._external_callers(fn) or ())
        for c in self._callers(fn):
            if self.tr.under_no_grad(c):
                continue
            # The call's result flows into a loss that is backpropagated (skorch's `infer()`
            # inside `train_step`), not merely an eval called from the training loop.
            if self._feeds_backward(c):
                return True
        return False

    def _callers(self, fn: FunctionInfo) -> List[CallSite]:
        """Where `fn` runs: its same-module calls, and for a nested helper the calls through
        a name its enclosing function binds to it (`infer_fn = [basic, mirror][level]`), so
        that the helper inherits the modes and the no_grad in effect there."""
        cache = self.__dict__.setdefault("_callers_cache", {})
        if id(fn) not in cache:
            cache[id(fn)] = [*self.ctx.callers(fn), *self.ctx.alias_callers(fn)]
        return cache[id(fn)]

    def _feeds_backward(self, call: CallSite) -> bool:
        ctx = self.ctx
        assigns = [a for a in ctx.facts.assigns if a.function is call.function and a.op in ("=", "+=")]
        derived = set()
        for a in assigns:
            v = a.value if a.value is not None else a.whole_value
            if v is not None and (v is call.node or id(call.node) in expression_facts(v).nodes):
                derived.update(t.value for t in a.targets if isinstance(t, cst.Name))
        returned = any(r.value is not None and id(call.node) in expression_facts(r.value).nodes for r in ctx.returns_of(call.function)) if call.function else False
        for _ in range(3):
            for a in assigns:
                v = a.value if a.value is not None else a.whole_value
                if a.order > call.order and v is not None and expression_facts(v).names & derived:
                    derived.update(t.value for t in a.targets if isinstance(t, cst.Name))
        for site in ctx.calls_in(call.function):
            if site.order > call.order and site.attr == "backward" and site.receiver is not None:
                if expression_facts(site.receiver).names & derived:
                    return True
        # `return self.infer(x)` from a function whose own callers train on it: too far to follow.
        return returned and call.function is not None and any(
            e.kind == BACKWARD for c in ctx.callers(call.function) for e in self.tr.site_events(c)
        )

    def _imported(self, calls: List[CallSite]) -> List[Tuple[CallSite, dict]]:
        """The calls of functions of other project modules, with what those functions do
        (analysis/project.py: trains, the mode they leave a model in)."""
        view = self.ctx.project
        if view is None:
            return []
        out = []
        for c in calls:
            q = c.qualname
            if q is not None and (q.startswith(".") or q.split(".", 1)[0] not in TORCH_ROOTS):
                summary = view.function_summary(q)
                if summary is not None:
                    out.append((c, summary))
        return out

    def _external_callers(self, fn: FunctionInfo) -> Optional[List[dict]]:
        """The calls of `fn` from other modules of the project (analysis/project.py), for a
        module-level evaluation-named function only; [] when there are none or the project
        is not being read; None when it is too large to look through."""
        view = self.ctx.project
        if view is None or fn.cls is not None or fn.parent is not None or not EVAL_FUNCTION_NAME.search(fn.name):
            return []
        cache = self.__dict__.setdefault("_external", {})
        if fn.name not in cache:
            cache[fn.name] = view.external_callers(fn.name)
        return cache[fn.name]

    def _given_torch_models(self, fn: FunctionInfo, model_call: CallSite) -> bool:
        """Every caller (all in other modules, all importing PyTorch) passes the function a
        model known to be an `nn.Module`."""
        func = model_call.func
        if isinstance(func, cst.Attribute) and func.attr.value == "forward":
            func = func.value
        passed = passed_models(self, fn, func, model_call)
        callers = self._external_callers(fn) or []
        return bool(passed) and all(c.get("torch") for c in callers) and all(s is not None and s["module"] for s in passed)

    def _imported_trains(self, calls: List[CallSite]) -> bool:
        """A helper of another module does the backward or the optimizer step."""
        return any(s.get("trains") for _, s in self._imported(calls))

    def _all_calls(self, fn: FunctionInfo) -> List[CallSite]:
        return [c for c in self.ctx.facts.calls if c.function is fn]

    def _framework_hook(self, fn: FunctionInfo) -> bool:
        """A method of a class built on a framework class we cannot see (Lightning, a HF
        pipeline, a project's base trainer): the framework may set the modes around it."""
        if fn.cls is None:
            return False
        if FRAMEWORK_HOOK.search(fn.name):
            return True
        return any(b not in PLAIN_BASES and not b.startswith(("typing.", "abc.")) for b in self.ctx.base_qualnames(fn.cls))

    @staticmethod
    def _trains(events) -> bool:
        return any(e.kind in (BACKWARD, STEP) for e in events)

    def _needs_grad(self, calls: List[CallSite]) -> bool:
        return any(c.attr in _NEEDS_GRAD or c.qualname == "torch.autograd.grad" for c in calls)

    def _iterates_eval_data(self, expr: Optional[cst.BaseExpression]) -> bool:
        return iterates_eval_data(expr)

    # -- modes ----------------------------------------------------------------------------
    def sets_eval_mode(self, p: EvalPass) -> bool:
        """An `eval()` (or a `train(flag)` we cannot read) is in effect when the model runs."""
        first = p.model_call.order
        if self.tr.under_mode_context(p.model_call):
            return True
        if p.kind == "function":
            inside = [e for e in self.tr.function_events(p.function) if e.order < first]  # type: ignore[arg-type]
        else:
            inside = [e for e in self.tr.all_events(p.loop) if e.order < first]  # type: ignore[arg-type]
        if any(e.kind in (EVAL, MODE) for e in inside):
            return True
        region = self._all_calls(p.function) if p.kind == "function" else self.ctx.calls_within(p.loop)  # type: ignore[arg-type]
        if any(s.get("mode") in ("eval", "mode") for c, s in self._imported([c for c in region if c.order < first])):
            return True  # a helper of another module switches to eval mode (or cannot be read)
        if self._loaded_in_eval_mode(p):
            return True
        if self._wrapper_sets_eval(p):
            return True
        if p.kind == "loop":
            state = self._mode_before(p.function, p.loop.start, 0)  # type: ignore[union-attr]
        else:
            state = self._mode_from_callers(p.function, 0)  # type: ignore[arg-type]
        return state is not False

    def _loaded_in_eval_mode(self, p: EvalPass) -> bool:
        """The model was loaded in the pass's own function by `from_pretrained`, which
        returns it in eval mode (transformers, diffusers, peft), and nothing switched it
        back to training before it runs."""
        call = p.model_call
        found = self.ctx.constructions(self.model_expr(call), call)  # type: ignore[attr-defined]
        if not found or not all(
            isinstance(v, cst.Call) and isinstance(v.func, cst.Attribute) and v.func.attr.value == "from_pretrained"
            and site is not None and site.function is call.function
            for v, site in found
        ):
            return False
        events = self.tr.function_events(call.function)  # type: ignore[arg-type]  # None: module level
        return not any(e.kind in (TRAIN, MODE) and e.order < call.order for e in events)

    def _wrapper_sets_eval(self, p: EvalPass) -> bool:
        """The model is an attribute of a wrapper class (`self._model`) that its `__init__`
        switches to eval mode, and no method of the class switches back to training:
        every method runs it in eval mode."""
        name = dotted(self.model_expr(p.model_call)) or ""
        cls = self.ctx.method_class(p.function)
        if cls is None or not name.startswith("self."):
            return False
        in_init = False
        for c in self.ctx.facts.calls:
            if c.attr not in ("eval", "train") or c.receiver is None or dotted(c.receiver) != name:
                continue
            if self.ctx.method_class(c.function) is not cls:
                continue
            kinds = {e.kind for e in self.tr.site_events(c)}
            if kinds & {TRAIN, MODE}:
                return False  # switched back somewhere: the mode depends on the order of calls
            if EVAL in kinds and any(f.name == "__init__" and f.cls is cls for f in self.ctx.enclosing_function_chain(c.function)):
                in_init = True
        return in_init

    def _passes_eval_model(self, call: CallSite) -> bool:
        """The call hands over a model switched to eval mode in its arguments:
        `demo(net.eval(), transform)` (`eval()` returns the module itself)."""
        for arg in call.node.args:  # type: ignore[attr-defined]
            value = arg.value
            while isinstance(value, cst.Call) and isinstance(value.func, cst.Attribute):
                attr = value.func.attr.value
                if attr == "eval" and not value.args:
                    return True
                if attr not in ("to", "cuda", "cpu", "float", "half", "double", "bfloat16"):
                    break
                value = value.func.value
        return False

    def _mode_before(self, function: Optional[FunctionInfo], order: int, depth: int) -> Optional[bool]:
        """True: eval mode; False: train mode (or nothing sets eval); None: cannot tell."""
        modes = [(e.order, e.kind) for e in self.tr.events_before(function, order) if e.kind in (EVAL, TRAIN, MODE)]
        # Helpers of other project modules called before, by the mode they leave the model in.
        helper_kinds = {"eval": EVAL, "train": TRAIN, "mode": MODE}
        modes.extend((c.order, helper_kinds[s["mode"]]) for c, s in self._imported([c for c in self.ctx.calls_in(function) if c.order < order]) if s.get("mode") in helper_kinds)
        if modes:
            return max(modes, key=lambda m: m[0])[1] != TRAIN
        if function is None:
            return False
        return self._mode_from_callers(function, depth)

    def _mode_from_callers(self, function: FunctionInfo, depth: int) -> Optional[bool]:
        callers = self._callers(function)
        if not callers:
            external = self._external_callers(function)
            if external is None:
                return None  # a project too large to look through: cannot tell
            if not external:
                return False
            states = [c["mode"] for c in external]
            if any(s is False for s in states):
                return False
            return True if all(states) else None
        if depth > 3:
            return None
        states = [True if self._passes_eval_model(c) else self._mode_before(c.function, c.order, depth + 1) for c in callers]
        if any(s is False for s in states):
            return False
        return True if all(s for s in states) else None

    def runs_without_grad(self, p: EvalPass) -> bool:
        call = p.model_call
        if self.tr.under_mode_context(call):
            return True
        if self.tr.under_no_grad(call) or self._grad_disabled_before(call.function, call.order):
            return True
        fn = p.function
        if fn is None:
            return False
        return self._callers_no_grad(fn, 0)

    def _grad_disabled_before(self, function: Optional[FunctionInfo], order: int) -> bool:
        for c in self.ctx.calls_in(function):
            if c.order < order and c.qualname in SET_GRAD_ENABLED and c.node.args:  # type: ignore[attr-defined]
                v = c.node.args[0].value  # type: ignore[attr-defined]
                if isinstance(v, cst.Name) and v.value == "False" and not c.withs:
                    return True
        return False

    def _callers_no_grad(self, fn: FunctionInfo, depth: int) -> bool:
        callers = self._callers(fn)
        if not callers and depth <= 3:
            external = self._external_callers(fn)
            return bool(external) and all(c["no_grad"] for c in external)  # type: ignore[union-attr]
        if not callers or depth > 3:
            return False
        for c in callers:
            if self.tr.under_no_grad(c) or self._grad_disabled_before(c.function, c.order):
                continue
            if c.function is None or not self._callers_no_grad(c.function, depth + 1):
                return False
        return True

    # -- the model ----------------------------------------------------------------------
    def model_has_mode_layers(self, p: EvalPass) -> bool:
        """False only when the model's definition is visible and has no dropout/norm layer,
        when its class is imported from a module that cannot be seen, or when it is a plain
        function (analysis/callables.py), here or in what every caller passes."""
        func = self.model_expr(p.model_call)
        # by callers in other modules, also through same-module callers that hand it on
        passed = passed_models(self, p.model_call.function, func, p.model_call, through_callers=True)
        if passed is not None:
            return any(s is None or s["mode_layers"] for s in passed)
        cands = self._through_wrappers(self.ctx.constructions(func, p.model_call))
        if not cands:
            return True
        for value, site in cands:
            if plain_function(self.ctx, value, site):
                continue  # a function (`net = linreg`, a lambda) has no mode at all
            if not isinstance(value, cst.Call):
                # Not followed (a parameter no caller fills in): a call handing it its own
                # weights (`rnn(X, state, params)`), or a parameter named after a function of
                # the module, shows a function, not a module.
                if passes_own_weights(self.ctx, p.model_call) or parameter_named_like_function(self.ctx, value, site):
                    continue
                return True
            if self._construction_has_mode_layers(value, set()):
                return True
        return False

    def _through_wrappers(self, cands, depth: int = 0):
        """A model held by a wrapper (`self.model = model` in `__init__`): what the module's
        `Wrapper(model, ...)` calls pass for that parameter. A model taken from a container
        (`for model in models`): what the container holds (`ctx.element_values`)."""
        out = []
        for value, site in cands:
            fn = site.function if site is not None else None
            loop_target = [s for s in self.ctx.reaching(value.value, site) if s.op == "for"] if isinstance(value, cst.Name) and site is not None else []
            if depth < 3 and len(loop_target) == 1 and len(loop_target[0].targets) == 1 and loop_target[0].whole_value is not None:
                elements = self.ctx.element_values(loop_target[0].whole_value, loop_target[0])
                if not elements:
                    out.append((value, site))
                for elem, at in elements or ():
                    out.extend(self._through_wrappers(self.ctx.constructions(elem, at), depth + 1))
            elif (
                depth < 3 and isinstance(value, cst.Name) and fn is not None and fn.name == "__init__"
                and fn.cls is not None and value.value in fn.params and not self.ctx.reaching(value.value, site)
            ):
                passed = constructor_arguments(self.ctx, fn, value.value)
                if not passed:
                    out.append((value, site))
                for arg, at in passed:
                    out.extend(self._through_wrappers(self.ctx.constructions(arg, at), depth + 1))
            else:
                out.append((value, site))
        return out

    def _construction_has_mode_layers(self, call: cst.Call, seen: set) -> bool:
        q = self.ctx.qualname(call.func)
        if q is not None:
            if MODE_DEPENDENT_LAYER.search(q):
                return True
            if q == "torch.nn.Sequential" or q.startswith("torch.nn.") and q.rsplit(".", 1)[-1] in ("ModuleList", "ModuleDict"):
                # `nn.ReLU() if relu else nn.Tanh()`: either layer may be built
                layers = [b for a in call.args for b in ((a.value.body, a.value.orelse) if isinstance(a.value, cst.IfExp) else (a.value,))]
                return any(not isinstance(v, cst.Call) or self._construction_has_mode_layers(v, seen) for v in layers)
            # Other torch.nn layers (Linear, Conv, ReLU, LayerNorm...) behave the same in both modes.
            if q.startswith("torch.nn."):
                return False
            return self._imported_class_has_mode_layers(q)
        if isinstance(call.func, cst.Name):
            cls = self.ctx.class_named(call.func.value)
            if cls is not None:
                return self._class_has_mode_layers(cls, seen)
            factory = self.ctx.function_named(call.func.value)
            if factory is not None and factory.name not in seen:
                # `def ResNet18(): return ResNet(BasicBlock, [2, 2, 2, 2])`: what it returns.
                seen.add(factory.name)
                returns = [r.value for r in self.ctx.returns_of(factory)]
                return not returns or any(
                    not isinstance(v, cst.Call) or self._construction_has_mode_layers(v, seen) for v in returns
                )
            found = constructor_summary(self.ctx, call.func)  # `from models import *`
            if found is not None:
                return bool(found[0].get("mode_layers"))
        return True

    def _imported_class_has_mode_layers(self, q: str) -> bool:
        """A model built by an imported name. A class of another project module: its summary
        says (analysis/project.py). A PyTorch-family library's (torchvision, timm,
        transformers): its models have such layers. Anything else cannot be seen, and the
        answer depends on it: not known to have them, so the rule stays silent."""
        if not q.startswith(".") and q.split(".", 1)[0] in TORCH_ROOTS:
            return True
        found = self.ctx.project.class_summary(q) if self.ctx.project is not None else None
        return bool(found is not None and found[0].get("mode_layers"))

    def _class_has_mode_layers(self, cls: ClassInfo, seen: set) -> bool:
        if cls.name in seen:
            return False
        seen.add(cls.name)
        for base in self.ctx.base_qualnames(cls):
            if not base.startswith("torch.nn"):
                return True
        for call in self.ctx.facts.calls:
            if not (cls.start < call.order < cls.end):
                continue
            q = call.qualname
            if q is None:
                if call.attr and MODE_DEPENDENT_LAYER.search(call.attr):
                    return True
                if isinstance(call.func, cst.Name) and self.ctx.class_named(call.func.value) is not None:
                    if self._class_has_mode_layers(self.ctx.class_named(call.func.value), seen):  # type: ignore[arg-type]
                        return True
                continue
            if MODE_DEPENDENT_LAYER.search(q) or q.endswith(".dropout") or "dropout" in q.rsplit(".", 1)[-1]:
                return True
            if not q.startswith(("torch.", "math.", "numpy.", "np.")):
                # A layer from elsewhere: a project class's summary says, else cannot tell --
                # unless it is a helper call the modes cannot reach (analysis/mode_free.py).
                found = self.ctx.project.class_summary(q) if self.ctx.project is not None else None
                if found is None and mode_free_helper_call(self.ctx, cls, call):
                    continue
                if found is None or found[0].get("mode_layers"):
                    return True
        return False

    def model_name(self, p: EvalPass) -> str:
        key = dotted(self.model_expr(p.model_call))
        return key or "model"
