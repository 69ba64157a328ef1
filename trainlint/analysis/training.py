"""Training events in program order: backward, step, zero_grad, eval/train, clip, ...

A rule about "one iteration of the training loop" asks for `iteration_events(loop)`:
the events of the loop body in order, with calls to same-module functions and methods
expanded in place (a `train_step()` helper's backward/step count as the loop's own),
but without the bodies of nested loops, which are iterations of their own.
`all_events(loop)` includes everything the loop runs, nested loops too.
`iteration_units()` lists every loop iteration and every function's loop-free body (a
training step a framework calls); `nested_iteration_units()` the loops whose iteration runs
inner (micro-batch) loops, flattened.

Order rules compare positions in one such list and ask `exclusive(a, b)` (different
branches of one `if`), `exits_before(a, b)` (`a` in a branch that returns/continues before
the later `b`), `conditions(e, loop)` / `is_conditional_wrt(a, b, loop)` (the `if`s
an event depends on), `Training.in_except(e)` (error-recovery code),
`Training.grad_enabled_at(site)` and `Training.backward_loss(site)` (the tensor a
backward differentiates).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import libcst as cst

from trainlint.analysis.accumulators import accumulating_loops
from trainlint.analysis.context import FileContext
from trainlint.analysis.facts import AssignSite, Block, CallSite, FunctionInfo, Site, walk
from trainlint.analysis.names import dotted
from trainlint.analysis.torch_api import (
    CLIP_FUNCS,
    MODEL_CONSTRUCTOR_PREFIXES,
    NO_GRAD_CONTEXTS,
    SET_GRAD_ENABLED,
    builds_model,
    is_optimizer_qualname,
    is_scheduler_qualname,
    looks_like_model_name,
    looks_like_optimizer_name,
    looks_like_scheduler_name,
)

BACKWARD, STEP, ZERO_GRAD, EVAL, TRAIN, MODE, CLIP, UNSCALE, SCHED_STEP = (
    "backward", "step", "zero_grad", "eval", "train", "mode", "clip", "unscale", "sched_step",
)
_CLEAR_METHOD_NAMES = {"zero_grad", "zero_grads", "clear_grad", "clear_grads", "reset_grad", "reset_grads", "zero_gradients", "optimizer_zero_grad", "zero_grad_"}
_GRAD_INPLACE_CLEAR = {"zero_", "fill_", "mul_", "detach_", "requires_grad_"}
MAX_EXPANSION_DEPTH = 4
# Objects whose `backward(loss)` differentiates the argument, not themselves.
FRAMEWORK_BACKWARD = re.compile(r"accelerator|engine|fabric|trainer|strategy|deepspeed|booster|precision", re.I)
ENABLE_GRAD_CONTEXTS = {"torch.enable_grad", "torch.autograd.enable_grad", "torch.autograd.grad_mode.enable_grad"}
MODE_CONTEXT_NAME = re.compile(r"no_grad|inference|eval|training_mode|train_mode|evaluating", re.I)


@dataclass(eq=False)
class Event:
    kind: str
    site: Site  # where it happens (possibly inside a called function)
    target: Optional[str] = None  # "optimizer", "self.model", None when unknown/any
    chain: Tuple[CallSite, ...] = ()  # calls from the unit's own body down to `site`
    closure: bool = False  # optimizer.step(closure)
    scaler: bool = False  # the step goes through a GradScaler-like `scaler.step(optimizer)`

    @property
    def anchor(self) -> Site:
        """The site in the unit's own body that leads to this event."""
        return self.chain[0] if self.chain else self.site

    @property
    def order(self) -> int:
        return self.anchor.order


class Training:
    """Event classification and loop/function event streams for one file (cached)."""

    def __init__(self, ctx: FileContext) -> None:
        self.ctx = ctx
        self._site_events: Dict[int, List[Event]] = {}
        self._fn_events: Dict[Tuple[int, bool], List[Event]] = {}
        self._handler_ids: Dict[int, set] = {}
        self._units: Optional[List[Tuple[Optional[Block], List[Event]]]] = None
        self._nested_units: Optional[List[Tuple[Block, List[Event]]]] = None

    # -- classification -----------------------------------------------------------------
    def is_optimizer(self, expr: cst.BaseExpression, at: Site) -> bool:
        quals = self.ctx.constructed_qualnames(expr, at)
        if any(is_scheduler_qualname(q) for q in quals):
            return False
        if any(is_optimizer_qualname(q) for q in quals):
            return True
        name = dotted(expr)
        return bool(name) and looks_like_optimizer_name(name) and not looks_like_scheduler_name(name)

    def is_scheduler(self, expr: cst.BaseExpression, at: Site) -> bool:
        quals = self.ctx.constructed_qualnames(expr, at)
        if any(is_scheduler_qualname(q) for q in quals):
            return True
        name = dotted(expr)
        return bool(name) and looks_like_scheduler_name(name)

    def is_scaler(self, expr: cst.BaseExpression, at: Site) -> bool:
        quals = self.ctx.constructed_qualnames(expr, at)
        if any(q and q.endswith("GradScaler") for q in quals):
            return True
        name = dotted(expr) or ""
        return "scaler" in name.rsplit(".", 1)[-1].lower()

    def site_events(self, site: Site) -> List[Event]:
        """The events one call or assignment is, without expanding calls."""
        cached = self._site_events.get(id(site))
        if cached is not None:
            return cached
        events = self._classify(site)
        self._site_events[id(site)] = events
        return events

    def _classify(self, site: Site) -> List[Event]:
        if isinstance(site, AssignSite):
            for t in site.targets:
                if isinstance(t, cst.Attribute) and t.attr.value == "grad" and site.op in ("=", "del"):
                    return [Event(ZERO_GRAD, site)]
            return []
        if not isinstance(site, CallSite):
            return []
        attr, recv, q = site.attr, site.receiver, site.qualname
        if attr == "backward" and recv is not None and not (isinstance(recv, cst.Call) and dotted(recv.func) == "super"):
            return [Event(BACKWARD, site)]
        if q == "torch.autograd.backward":
            return [Event(BACKWARD, site)]
        if attr == "step" and recv is not None:
            if self.is_scaler(recv, site):
                opt = site.positional(0) or site.keyword("optimizer")
                return [Event(STEP, site, dotted(opt) if opt is not None else None, scaler=True)]
            if self.is_scheduler(recv, site):
                return [Event(SCHED_STEP, site, dotted(recv))]
            if self.is_optimizer(recv, site):
                has_args = bool(site.node.args)  # type: ignore[attr-defined]
                return [Event(STEP, site, dotted(recv), closure=has_args)]
            return []
        if attr == "zero_grad":
            return [Event(ZERO_GRAD, site, dotted(recv) if recv is not None else None)]
        if attr in _CLEAR_METHOD_NAMES or (attr and "zero_grad" in attr):
            return [Event(ZERO_GRAD, site)]
        if attr in _GRAD_INPLACE_CLEAR and isinstance(recv, cst.Attribute):
            inner = recv.value if recv.attr.value == "data" and isinstance(recv.value, cst.Attribute) else recv
            if isinstance(inner, cst.Attribute) and inner.attr.value == "grad":
                return [Event(ZERO_GRAD, site)]
        if attr == "eval" and recv is not None and not site.node.args:  # type: ignore[attr-defined]
            return [Event(EVAL, site, dotted(recv))]
        if attr == "train" and recv is not None:
            args = site.node.args  # type: ignore[attr-defined]
            if not args:
                return [Event(TRAIN, site, dotted(recv))]
            value = args[0].value
            if isinstance(value, cst.Name) and value.value in ("True", "False"):
                return [Event(TRAIN if value.value == "True" else EVAL, site, dotted(recv))]
            return [Event(MODE, site, dotted(recv))]
        if q in CLIP_FUNCS or attr in ("clip_grad_norm_", "clip_grad_value_"):
            return [Event(CLIP, site)]
        if attr == "unscale_" or (attr and attr.startswith("unscale") and recv is not None):
            opt = site.positional(0) or site.keyword("optimizer")
            return [Event(UNSCALE, site, dotted(opt) if opt is not None else None)]
        return []

    # -- streams ---------------------------------------------------------------------------
    def _sites_of(self, function: Optional[FunctionInfo]) -> List[Site]:
        ctx = self.ctx
        sites: List[Site] = list(ctx.calls_in(function))
        sites.extend(a for a in ctx.facts.assigns if a.function is function and a.op in ("=", "del"))
        sites.sort(key=lambda s: s.order)
        return sites

    def _expand(self, sites: Sequence[Site], top_level_only: bool, depth: int, seen: Tuple[int, ...]) -> List[Event]:
        out: List[Event] = []
        for site in sites:
            out.extend(self.site_events(site))
            if isinstance(site, CallSite) and depth < MAX_EXPANSION_DEPTH:
                callee = self.ctx.callee(site)
                if callee is not None and id(callee) not in seen:
                    for ev in self.function_events(callee, top_level_only, depth + 1, seen + (id(callee),)):
                        out.append(dataclasses.replace(ev, chain=(site,) + ev.chain))
        return out

    def function_events(
        self, function: FunctionInfo, top_level_only: bool = False, depth: int = 0, seen: Tuple[int, ...] = ()
    ) -> List[Event]:
        """Events of a function body in order, calls expanded; `top_level_only` leaves out loops."""
        key = (id(function), top_level_only)
        if depth == 0 and key in self._fn_events:
            return self._fn_events[key]
        sites = self._sites_of(function)
        if top_level_only:
            sites = [s for s in sites if not s.loops]
        events = self._expand(sites, top_level_only, depth, seen or (id(function),))
        if depth == 0:
            self._fn_events[key] = events
        return events

    def iteration_events(self, loop: Block) -> List[Event]:
        """One iteration of `loop`: its own body's events (not nested loops'), calls expanded."""
        sites = [s for s in self._sites_of(loop.function) if s.loops and s.loops[-1] is loop]
        return self._expand(sites, True, 0, (id(loop.function),) if loop.function else ())

    def iteration_events_with_helper_loops(self, loop: Block) -> List[Event]:
        """One iteration of `loop` like `iteration_events`, but the loops inside the helpers it
        calls are kept: a `train_step()` whose micro-batch loop runs the backwards is part of
        this iteration (`in_helper_loop(e)` tells those events apart)."""
        sites = [s for s in self._sites_of(loop.function) if s.loops and s.loops[-1] is loop]
        return self._expand(sites, False, 0, (id(loop.function),) if loop.function else ())

    def all_events(self, loop: Block) -> List[Event]:
        """Everything `loop` runs, nested loops and called functions included."""
        sites = [s for s in self._sites_of(loop.function) if loop in s.loops]
        return self._expand(sites, False, 0, (id(loop.function),) if loop.function else ())

    def iteration_units(self) -> List[Tuple[Optional[Block], List[Event]]]:
        """Every stretch of code that runs as one training iteration: each loop's iteration
        (`iteration_events`) and each function's statements outside its loops (a
        `train_step()` called by a framework or another module), as (loop or None, events)."""
        if self._units is None:
            units: List[Tuple[Optional[Block], List[Event]]] = [(loop, self.iteration_events(loop)) for loop in self.ctx.loops]
            units += [(None, self.function_events(fn, top_level_only=True)) for fn in self.ctx.facts.functions]
            self._units = units
        return self._units

    def nested_iteration_units(self) -> List[Tuple[Block, List[Event]]]:
        """Loops whose iteration runs inner loops (micro-batches of gradient accumulation: the
        backwards in an inner loop, the clip and step after it), as (loop, `all_events(loop)`):
        the whole iteration in program order."""
        if self._nested_units is None:
            out: List[Tuple[Block, List[Event]]] = []
            for loop in self.ctx.loops:
                events = self.all_events(loop)
                if any(e.anchor.loops and e.anchor.loops[-1] is not loop for e in events):
                    out.append((loop, events))
            self._nested_units = out
        return self._nested_units

    def trains_in(self, loop: Block) -> bool:
        """One iteration of `loop` runs a backward pass and an optimizer step."""
        kinds = {e.kind for e in self.iteration_events(loop)}
        return BACKWARD in kinds and STEP in kinds

    def training_accumulator(self, value: cst.BaseExpression, at: Site) -> Optional[str]:
        """The name `value` reads that a training loop accumulates before `at`, in the same
        function (`running_loss += loss.item()` in a loop that runs backward and step): what
        makes `epoch_loss = running_loss / len(train_dl.dataset)` a training metric, whatever
        it is called."""
        for name, loop in accumulating_loops(self.ctx, value, at):
            if self.trains_in(loop):
                return name
        return None

    def events_before(self, function: Optional[FunctionInfo], order: int) -> List[Event]:
        """Events of `function`'s body (all nesting) that come before `order`, calls expanded."""
        sites = [s for s in self._sites_of(function) if s.order < order]
        return self._expand(sites, False, 0, (id(function),) if function else ())

    # -- contexts ----------------------------------------------------------------------------
    def is_no_grad_with(self, block: Block) -> bool:
        for item in block.items:
            if isinstance(item, cst.Call):
                q = self.ctx.qualname(item.func)
                if q in NO_GRAD_CONTEXTS:
                    return True
                if q in SET_GRAD_ENABLED and item.args:
                    v = item.args[0].value
                    # `set_grad_enabled(training)`: a flag we cannot read counts as off
                    # (precision first); only a literal True keeps gradients on.
                    if not (isinstance(v, cst.Name) and v.value == "True"):
                        return True
            elif self.ctx.qualname(item) in NO_GRAD_CONTEXTS:
                return True
        return False

    def under_mode_context(self, site: Site) -> bool:
        """Inside a project's own mode-switching context (`with self._set_training_mode(False):`,
        `with eval_mode(model):`): it sets the modes in ways we do not follow."""
        for w in site.withs:
            for item in w.items:
                if isinstance(item, cst.Call) and self.ctx.qualname(item.func) is None:
                    name = (dotted(item.func) or "").rsplit(".", 1)[-1]
                    if MODE_CONTEXT_NAME.search(name):
                        return True
        return False

    def function_is_no_grad(self, function: Optional[FunctionInfo]) -> bool:
        """Decorated with `@torch.no_grad()` / `@torch.inference_mode()` (or an enclosing function is)."""
        for f in self.ctx.enclosing_function_chain(function):
            for d in f.decorators:
                target = d.func if isinstance(d, cst.Call) else d
                if self.ctx.qualname(target) in NO_GRAD_CONTEXTS:
                    return True
        return False

    def under_no_grad(self, site: Site) -> bool:
        """Whether `site` runs with gradients off, as far as its own function shows."""
        if any(self.is_no_grad_with(w) for w in site.withs):
            return True
        return self.function_is_no_grad(site.function)


    # -- grad mode, except bodies, the differentiated tensor ---------------------------------
    def in_except(self, event: Event) -> bool:
        """Some site on the event's path lies in an `except` body (error recovery, e.g. an
        out-of-memory handler that clears gradients and skips the batch)."""
        for site in event_path(event):
            root = site.function.node if site.function is not None else self.ctx.module
            ids = self._handler_ids.get(id(root))
            if ids is None:
                ids = set()
                for node in walk(root):
                    if isinstance(node, cst.Try):
                        for h in node.handlers:
                            ids.update(id(n) for n in walk(h.body))
                self._handler_ids[id(root)] = ids
            if id(site.node) in ids:
                return True
        return False

    def grad_enabled_at(self, site: Site) -> Optional[bool]:
        """Grad mode at `site` as its own function shows it: False under `no_grad()`,
        `inference_mode()` or `set_grad_enabled(False)` (the innermost context wins over the
        function's decorator), True under `enable_grad()`/`set_grad_enabled(True)`, None when
        nothing says (the caller's mode) or a flag we cannot read decides."""
        ctx = self.ctx
        state: Optional[bool] = None
        if site.function is not None:
            for d in site.function.decorators:
                q = ctx.qualname(d.func if isinstance(d, cst.Call) else d)
                if q in NO_GRAD_CONTEXTS:
                    state = False
                elif q in ENABLE_GRAD_CONTEXTS:
                    state = True
        for w in site.withs:
            for item in w.items:
                call = item if isinstance(item, cst.Call) else None
                q = ctx.qualname(call.func if call is not None else item)
                if q in ENABLE_GRAD_CONTEXTS:
                    state = True
                elif q in NO_GRAD_CONTEXTS:
                    mode = call.args[0].value if call is not None and call.args and "inference_mode" in q else None
                    if mode is None or (isinstance(mode, cst.Name) and mode.value == "True"):
                        state = False
                    else:
                        state = True if isinstance(mode, cst.Name) and mode.value == "False" else None
                elif q in SET_GRAD_ENABLED and call is not None and call.args:
                    v = call.args[0].value
                    state = (v.value == "True") if isinstance(v, cst.Name) and v.value in ("True", "False") else None
        return state

    def backward_loss(self, site: Site) -> Optional[cst.BaseExpression]:
        """The tensor a backward call differentiates: `loss` in `loss.backward()`,
        `scaler.scale(loss).backward()`, `accelerator.backward(loss)`,
        `torch.autograd.backward(loss)`; None for other calls."""
        if not isinstance(site, CallSite):
            return None
        if site.qualname == "torch.autograd.backward":
            return site.arg(0, "tensors")
        recv = site.receiver
        if site.attr != "backward" or recv is None:
            return None
        if isinstance(recv, cst.Call) and isinstance(recv.func, cst.Attribute) and recv.func.attr.value == "scale" and recv.args:
            return recv.args[0].value if self.is_scaler(recv.func.value, site) else None
        if isinstance(recv, (cst.Name, cst.Attribute)) and FRAMEWORK_BACKWARD.search((dotted(recv) or "").rsplit(".", 1)[-1]):
            return site.arg(0, "loss")
        return recv

    # -- models ------------------------------------------------------------------------------
    def is_module_class(self, cls) -> bool:
        """An `nn.Module` subclass (also through `PreTrainedModel`-style framework bases)."""
        for b in self.ctx.base_qualnames(cls):
            last = b.rsplit(".", 1)[-1]
            if b.startswith(("torch.nn", "lightning", "pytorch_lightning")) or last.endswith(("Module", "PreTrainedModel", "Model", "ModelMixin")):
                return True
        return False

    def is_model_call(self, call: CallSite) -> bool:
        """A call that runs a model forward: `model(x)`, `self.net(x)`, `model.forward(x)`."""
        func = call.func
        if isinstance(func, cst.Attribute) and func.attr.value in ("forward",):
            func = func.value
        if not isinstance(func, (cst.Name, cst.Attribute)):
            return False
        if call.qualname is not None or (isinstance(func, cst.Name) and func.value in self.ctx.imports.alias):
            return False
        name = dotted(func) or ""
        if isinstance(func, cst.Name) and self.ctx.function_named(func.value, call.function) is not None and not any(
            func.value in f.params for f in self.ctx.enclosing_function_chain(call.function)
        ):
            return False  # a helper function, unless a parameter of that name hides it
        if isinstance(func, cst.Name) and self.ctx.class_named(func.value) is not None:
            return False  # constructing, not running
        cls = self.ctx.instance_class(func, call)
        if cls is not None:
            return self.is_module_class(cls)
        made_by = self.ctx.constructed_qualnames(func, call)
        for q in made_by:
            if q and (q in ("torch.nn.Sequential",) or builds_model(q)):
                return True
        if made_by and all(q and q.startswith(MODEL_CONSTRUCTOR_PREFIXES) for q in made_by):
            return False  # a tokenizer or processor of a model library: `tokenizer([text])`
        # By name only with an input: `solver.model()` (z3) is not a forward pass.
        return bool(call.node.args) and looks_like_model_name(name)  # type: ignore[attr-defined]

    def model_key(self, call: CallSite) -> Optional[str]:
        func = call.func
        if isinstance(func, cst.Attribute) and func.attr.value == "forward":
            func = func.value
        return dotted(func)


# -- order and branches within one iteration ------------------------------------------------
def event_path(event: Event) -> Tuple[Site, ...]:
    """The sites from the unit's own body down to the event: the calls, then the event's site."""
    return event.chain + (event.site,)


def in_helper_loop(event: Event) -> bool:
    """The event runs inside a loop of a called helper (it may run any number of times)."""
    return any(site.loops for site in event_path(event)[1:])


def _if_chain(block: Block) -> set:
    """Ids of the `if` node of `block` and of its `elif`/`else` branches."""
    ids = set()
    node = block.node
    while isinstance(node, cst.If):
        ids.add(id(node))
        node = node.orelse
    if isinstance(node, cst.Else):
        ids.add(id(node))
    return ids


def exclusive_sites(x: Site, y: Site) -> bool:
    """`x` and `y` (same function) lie in different branches of one `if`/`elif`/`else`."""
    xs = [b for b in x.ifs if b not in y.ifs]
    ys = [b for b in y.ifs if b not in x.ifs]
    for a in xs:
        chain = _if_chain(a) if a.kind == "if" else set()
        for b in ys:
            if id(b.node) in chain or (b.kind == "if" and id(a.node) in _if_chain(b)):
                return True
    return False


def exclusive(a: Event, b: Event) -> bool:
    """At most one of two events of one iteration runs: where their call chains part, they
    lie in different branches of one `if`."""
    pa, pb = event_path(a), event_path(b)
    for x, y in zip(pa, pb):
        if x is not y:
            return x.function is y.function and exclusive_sites(x, y)
    return False


_EXITS = (cst.Return, cst.Raise, cst.Continue, cst.Break)


def _exit_of(block: Block) -> Optional[cst.CSTNode]:
    """The statement an `if`/`else` body always ends with when it leaves the code after it:
    `return`, `raise`, `continue` or `break`; None otherwise."""
    body = getattr(block.node, "body", None)
    stmts = getattr(body, "body", None)
    if not stmts:
        return None
    last = stmts[-1]
    if isinstance(last, cst.SimpleStatementLine):
        last = last.body[-1] if last.body else None
    return last if isinstance(last, _EXITS) else None


def exits_before_sites(x: Site, y: Site) -> bool:
    """`x` (same function as `y`) lies in an `if`/`else` body that ends with `return`/`raise`
    (or `continue`/`break` of a loop that also holds `y`) and `y` comes after that body:
    when `x` runs, `y` does not in the same pass."""
    if y.order < x.order:
        return False
    for block in x.ifs:
        if block in y.ifs or y.order <= block.end:
            continue
        exit_ = _exit_of(block)
        if exit_ is None:
            continue
        if isinstance(exit_, (cst.Continue, cst.Break)):
            loop = next((l for l in reversed(x.loops) if l.contains(block.start)), None)
            if loop is None or loop not in y.loops:
                continue
        return True
    return False


def exits_before(a: Event, b: Event) -> bool:
    """`a` runs in a branch that leaves the function or the iteration (`if ...: ...; return`)
    before the later `b` is reached: in one pass in program order, `a` is never followed by
    `b`. (Directional: an event of the previous iteration may still precede `b`.)"""
    pa, pb = event_path(a), event_path(b)
    for x, y in zip(pa, pb):
        if x is not y:
            return x.function is y.function and exits_before_sites(x, y)
    return False


def conditions(event: Event, loop: Optional[Block] = None) -> Tuple[Block, ...]:
    """The `if` bodies an event depends on: those around its anchor inside `loop` (all of
    the anchor's when no loop is given), and every `if` on the way down its call chain."""
    path = event_path(event)
    first = path[0]
    out = tuple(b for b in first.ifs if loop is None or loop.contains(b.start))
    for site in path[1:]:
        out += site.ifs
    return out


def is_conditional_wrt(a: Event, b: Event, loop: Optional[Block] = None) -> bool:
    """`a` depends on an `if` that `b` does not: it may be skipped when `b` runs."""
    cb = conditions(b, loop)
    return any(blk not in cb for blk in conditions(a, loop))


def clip_measures_only(ctx: FileContext, event: Event) -> bool:
    """`clip_grad_norm_(params, float("inf"))`: computes the norm (for logging), clips nothing."""
    site = event.site
    if not isinstance(site, CallSite):
        return False
    limit = site.arg(1, "max_norm")
    if limit is None:
        limit = site.keyword("clip_value")
    if limit is None:
        return False
    text = ctx.module.code_for_node(limit).lower()
    return "inf" in text or "1e9" in text or "1e10" in text
