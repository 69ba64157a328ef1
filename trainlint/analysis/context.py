"""What a rule sees of a file: the parsed module plus the facts and queries built on them.

Values are followed through local assignments (the nearest assignment before the use in
the same function, then module level), through `self.x` attributes (every assignment of
`self.x` in the class's methods) and through same-module calls (a helper's `return`s, a
model class's `forward`). Everything is computed once per file, lazily.
"""

from __future__ import annotations

from functools import cached_property
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Set, Tuple

import libcst as cst

from trainlint import precheck
from trainlint.analysis.facts import AssignSite, Block, CallSite, ClassInfo, FunctionInfo, ModuleFacts, ReturnSite, Site, collect, walk
from trainlint.analysis.names import dotted

# Calls that return (a view of) their receiver or first argument for our purposes:
# `Net().to(device)`, `torch.compile(model)`, `nn.DataParallel(model)`.
_PASS_THROUGH_METHODS = {"to", "cuda", "cpu", "float", "double", "half", "bfloat16", "train", "eval", "requires_grad_", "share_memory"}
_WRAPPERS = {
    "torch.compile",
    "torch.nn.DataParallel",
    "torch.nn.parallel.DataParallel",
    "torch.nn.parallel.DistributedDataParallel",
    "torch.nn.parallel.DistributedDataParallel",
    "torch.jit.script",
}

MAX_DEPTH = 6


def _same_sites(a: Sequence[Site], b: Sequence[Site]) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b))
TORCH_ROOTS = frozenset(precheck.TORCH_ROOTS)


class FileContext:
    def __init__(self, module: cst.Module, text: str, path: str) -> None:
        self.module = module
        self.text = text
        self.path = path
        self.facts: ModuleFacts = collect(module)
        self.imports = self.facts.imports
        self._building_callers = False
        # Factory functions being followed right now (analysis/outputs.py), so a factory
        # that hands back its own argument is not re-entered through every call site.
        self.open_factories: Set[str] = set()
        self._constructions_memo: Dict[Tuple[int, int], tuple] = {}
        # The other modules of the project (analysis/project.py), when the run reads them.
        self.project = None

    # -- indexes --------------------------------------------------------------------
    @cached_property
    def _assigns_by_name(self) -> Dict[Tuple[int, str], List[AssignSite]]:
        idx: Dict[Tuple[int, str], List[AssignSite]] = {}
        for a in self.facts.assigns:
            for t in a.targets:
                if isinstance(t, cst.Name):
                    idx.setdefault((id(a.function), t.value), []).append(a)
        return idx

    @cached_property
    def _self_attr_assigns(self) -> Dict[Tuple[str, str], List[AssignSite]]:
        idx: Dict[Tuple[str, str], List[AssignSite]] = {}
        for a in self.facts.assigns:
            cls = self.method_class(a.function)
            if cls is None:
                continue
            for t in a.targets:
                if isinstance(t, cst.Attribute) and isinstance(t.value, cst.Name) and t.value.value == "self":
                    idx.setdefault((cls.name, t.attr.value), []).append(a)
        return idx

    @cached_property
    def _functions_by_name(self) -> Dict[str, List[FunctionInfo]]:
        idx: Dict[str, List[FunctionInfo]] = {}
        for f in self.facts.functions:
            if f.cls is None:
                idx.setdefault(f.name, []).append(f)
        return idx

    @staticmethod
    def _by_function(sites: Iterable[Site]) -> Dict[int, list]:
        idx: Dict[int, list] = {}
        for s in sites:
            idx.setdefault(id(s.function), []).append(s)
        return idx

    @cached_property
    def _calls_by_function(self) -> Dict[int, List[CallSite]]:
        return self._by_function(self.facts.calls)

    @cached_property
    def _calls_by_node(self) -> Dict[int, CallSite]:
        return {id(c.node): c for c in self.facts.calls}

    @cached_property
    def _returns_by_function(self) -> Dict[int, List[ReturnSite]]:
        return self._by_function(self.facts.returns)

    @cached_property
    def _callers(self) -> Dict[int, List[CallSite]]:
        idx: Dict[int, List[CallSite]] = {}
        # While the index is built, values are not followed into parameters (that needs the index).
        self._building_callers = True
        try:
            for c in self.facts.calls:
                target = self.callee(c)
                if target is not None:
                    idx.setdefault(id(target), []).append(c)
        finally:
            self._building_callers = False
        return idx

    @cached_property
    def uses_torch(self) -> bool:
        """The file imports PyTorch or a framework built on it (mode/autograd rules need it)."""
        roots = {q.split(".", 1)[0] for q in self.imports.alias.values()}
        return bool(roots & TORCH_ROOTS)

    @cached_property
    def is_test_file(self) -> bool:
        """A pytest/unittest module, judged by its content (see analysis/pytest_modules.py):
        the rules that exempt tests skip it; a script named `test_*.py` is linted."""
        from trainlint.analysis.pytest_modules import is_test_module

        return is_test_module(self)

    @cached_property
    def loops(self) -> List[Block]:
        return [b for b in self.facts.blocks if b.kind in ("for", "while")]

    # -- basic queries ----------------------------------------------------------------
    def qualname(self, expr: Optional[cst.CSTNode]) -> Optional[str]:
        return self.imports.qualify(expr) if expr is not None else None

    def calls_in(self, function: Optional[FunctionInfo]) -> List[CallSite]:
        """Calls whose innermost enclosing function is `function` (None: module level)."""
        return self._calls_by_function.get(id(function), [])

    def call_site(self, node: cst.CSTNode) -> Optional[CallSite]:
        """The recorded site of a call node (its function, loops, order)."""
        return self._calls_by_node.get(id(node))

    def returns_of(self, function: FunctionInfo) -> List[ReturnSite]:
        return self._returns_by_function.get(id(function), [])

    def callers(self, function: FunctionInfo) -> List[CallSite]:
        """Same-module call sites that resolve to `function`."""
        return self._callers.get(id(function), [])

    @staticmethod
    def method_class(function: Optional[FunctionInfo]) -> Optional[ClassInfo]:
        """The class whose method (or a function nested in it) `function` is."""
        while function is not None:
            if function.cls is not None:
                return function.cls
            function = function.parent
        return None

    def class_named(self, name: str) -> Optional[ClassInfo]:
        return self.facts.classes.get(name)

    def function_named(self, name: str, scope: Optional[FunctionInfo] = None) -> Optional[FunctionInfo]:
        cands = self._functions_by_name.get(name)
        if not cands:
            return None
        # Prefer a function nested in the caller's scope or an enclosing one (a closure sees
        # its siblings: `def a(): ...` and `def b(): a()` both nested in one function), then
        # a module-level one.
        for enclosing in self.enclosing_function_chain(scope):
            for f in cands:
                if f.parent is enclosing:
                    return f
        for f in cands:
            if f.parent is None:
                return f
        return None

    def method(self, cls: ClassInfo, name: str, _seen: Optional[set] = None) -> Optional[FunctionInfo]:
        """`cls.name` looked up through the class and its same-module bases."""
        if name in cls.methods:
            return cls.methods[name]
        seen = _seen or set()
        seen.add(cls.name)
        for base in cls.bases:
            base_cls = self._local_class(base)
            if base_cls is not None and base_cls.name not in seen:
                found = self.method(base_cls, name, seen)
                if found is not None:
                    return found
        return None

    def base_qualnames(self, cls: ClassInfo, _seen: Optional[set] = None) -> List[str]:
        """Qualified names of all imported ancestors of a same-module class."""
        out: List[str] = []
        seen = _seen or set()
        seen.add(cls.name)
        for base in cls.bases:
            q = self.qualname(base)
            if q:
                out.append(q)
                continue
            base_cls = self._local_class(base)
            if base_cls is not None and base_cls.name not in seen:
                out.extend(self.base_qualnames(base_cls, seen))
            elif base_cls is None and dotted(base):
                out.append("?." + (dotted(base) or ""))  # not imported, not here: unknown origin
        return out

    def _local_class(self, base: cst.BaseExpression) -> Optional[ClassInfo]:
        """`Base` or `pkg.Base` naming a class defined in this module."""
        name = dotted(base) or ""
        return self.class_named(name.rsplit(".", 1)[-1]) if name else None

    # -- value following ------------------------------------------------------------
    def reaching(self, name: str, at: Site) -> List[AssignSite]:
        """Assignments of `name` that the use at `at` can see.

        The nearest earlier assignment in the same function; failing that, the enclosing
        functions' and the module's last assignments (closures and globals). An empty list
        means unknown (a parameter, an import, a builtin).
        """
        function = at.function
        order = at.order
        while True:
            sites = self._assigns_by_name.get((id(function), name), [])
            if function is not None and name in function.params and not any(s.order < order for s in sites):
                return []
            earlier = [s for s in sites if s.order < order]
            if earlier:
                return [earlier[-1]]
            if sites and function is None:
                return [sites[-1]]
            if function is None:
                return []
            function = function.parent
            order = 10**12  # a closure sees the enclosing scope's final binding

    def self_attr_values(self, attr: str, at: Site) -> List[AssignSite]:
        cls = self.method_class(at.function)
        if cls is None:
            return []
        return self.class_attr_values(cls, attr)

    def class_attr_values(self, cls: ClassInfo, attr: str) -> List[AssignSite]:
        """The assignments `self.attr = ...` in the methods of `cls`."""
        return self._self_attr_assigns.get((cls.name, attr), [])

    def self_aliases(self, name: str, at: Site) -> List[str]:
        """The `self.` attributes that hold the object the local name `name` holds at `at`
        (`def __init__(self, model): self.model = model` with `model` read in `__init__`):
        every assignment of the attribute in the class is `self.x = name` (wrappers that
        share the parameters, `.to(device)`, `DDP(...)`, peeled), made in the same function
        and reading the same binding of `name` (the same parameter or assignment) as `at`."""
        cls = self.method_class(at.function)
        if cls is None or at.function is None:
            return []
        binding = self.reaching(name, at)
        if not binding and name not in at.function.params:
            return []  # a global or builtin: not followed
        out: List[str] = []
        for (cls_name, attr), sites in self._self_attr_assigns.items():
            if cls_name != cls.name:
                continue
            if all(
                s.op == "=" and s.value is not None and s.function is at.function
                and isinstance(self.unwrap_model(s.value), cst.Name) and self.unwrap_model(s.value).value == name  # type: ignore[attr-defined]
                and _same_sites(self.reaching(name, s), binding)
                for s in sites
            ):
                out.append("self." + attr)
        return out

    def resolve(self, expr: cst.BaseExpression, at: Site, depth: int = 0, defaults: bool = False) -> List[Tuple[cst.BaseExpression, Site]]:
        """The expressions `expr` may stand for, following names and `self.` attributes.

        Returns (expression, site it appears at) pairs; a name that cannot be followed
        resolves to itself. Every candidate is returned: callers decide whether all or any
        must match (precision: usually all). A parameter follows what the same-module
        callers pass; with `defaults`, it follows `param_values` instead (a call that
        leaves the argument out contributes the parameter's default).
        """
        if depth > MAX_DEPTH:
            return [(expr, at)]
        if isinstance(expr, cst.Name):
            sites = self.reaching(expr.value, at)
            if not sites and at.function is not None and expr.value in at.function.params and not self._building_callers:
                # A parameter: follow what the same-module callers pass.
                if defaults:
                    args = self.param_values(at.function, expr.value) or []
                else:
                    args = self.param_arguments(at.function, expr.value)
                if not args:
                    return [(expr, at)]
                out = []
                for arg, site in args:
                    out.extend(self.resolve(arg, site, depth + 1, defaults))
                return out
            if not sites or any(s.value is None for s in sites):
                return [(expr, at)]
            out = []
            for s in sites:
                out.extend(self.resolve(s.value, s, depth + 1, defaults))  # type: ignore[arg-type]
            return out
        if isinstance(expr, cst.Attribute) and isinstance(expr.value, cst.Name) and expr.value.value == "self":
            sites = self.self_attr_values(expr.attr.value, at)
            sites = [s for s in sites if s.op == "="]
            if not sites or any(s.value is None for s in sites):
                return [(expr, at)]
            out = []
            for s in sites:
                out.extend(self.resolve(s.value, s, depth + 1, defaults))  # type: ignore[arg-type]
            return out
        return [(expr, at)]

    def unwrap_model(self, expr: cst.BaseExpression) -> cst.BaseExpression:
        """`Net().to(dev)` -> `Net()`; `torch.compile(Net())` -> `Net()`."""
        for _ in range(MAX_DEPTH):
            if isinstance(expr, cst.Call):
                f = expr.func
                if isinstance(f, cst.Attribute) and f.attr.value in _PASS_THROUGH_METHODS and isinstance(f.value, (cst.Call, cst.Name, cst.Attribute)):
                    expr = f.value
                    continue
                if self.qualname(f) in _WRAPPERS and expr.args:
                    expr = expr.args[0].value
                    continue
            break
        return expr

    def constructions(self, expr: cst.BaseExpression, at: Site, depth: int = 0) -> List[Tuple[cst.BaseExpression, Site]]:
        """What `expr` resolves to, with wrappers like `.to(device)` peeled off, followed again
        (`self.model = DDP(self.model)` refers to itself: followed MAX_DEPTH times at most).
        Memoised per (expression, site): several rules ask about every call of the file."""
        if depth == 0:
            key = (id(expr), id(at))
            known = self._constructions_memo.get(key)
            if known is None:
                # the key's objects are kept alive with the answer, so their ids stay theirs
                known = self._constructions_memo[key] = (expr, at, self._constructions(expr, at, 0))
            return list(known[2])
        return self._constructions(expr, at, depth)

    def _constructions(self, expr: cst.BaseExpression, at: Site, depth: int) -> List[Tuple[cst.BaseExpression, Site]]:
        out = []
        for value, site in self.resolve(expr, at):
            inner = self.unwrap_model(value)
            if inner is not value:
                if isinstance(inner, cst.Call) or depth >= MAX_DEPTH:
                    out.append((inner, site))
                else:
                    out.extend(self.constructions(inner, site, depth + 1))
            else:
                out.append((value, site))
        return out

    def factory_returns(self, call: cst.Call, at: Site) -> Optional[List[Tuple[cst.BaseExpression, Site]]]:
        """What a call of a same-module factory function returns (`model = build_small(12)`
        with `def build_small(n): return nn.Sequential(...)`): the construction every
        `return` makes, names followed and wrappers such as `.to(device)` peeled. None when
        `call` is no such call, when some return is not a construction, or when the factory
        changes the object after building it (`m.add_module(...)`, `m.fc = ...`)."""
        func = call.func
        if not isinstance(func, cst.Name) or func.value in self.imports.alias or self.class_named(func.value) is not None:
            return None
        fn = self.function_named(func.value, at.function)
        return self.built_by(fn) if fn is not None else None

    def built_by(self, fn: FunctionInfo) -> Optional[List[Tuple[cst.BaseExpression, Site]]]:
        """The construction every `return` of factory `fn` makes (see `factory_returns`);
        None when `fn` is decorated, some return is not a construction, it hands back its
        own argument, or it changes the object after building it."""
        if fn.decorators:
            return None
        returns = self.returns_of(fn)
        if not returns or any(r.value is None for r in returns):
            return None
        out: List[Tuple[cst.BaseExpression, Site]] = []
        for r in returns:
            if isinstance(r.value, cst.Name) and self._changed_in(fn, r.value.value):
                return None
            if isinstance(r.value, cst.Name) and r.value.value in fn.params and not self.reaching(r.value.value, r):
                return None  # `def fit(model): ...; return model` hands back what it was given
            for value, site in self.constructions(r.value, r):  # type: ignore[arg-type]
                if not isinstance(value, cst.Call):
                    return None
                out.append((value, site))
        return out

    def _changed_in(self, fn: FunctionInfo, name: str) -> bool:
        """`name` (or a part of it) gets a method call other than a pass-through, or an
        attribute or item assigned, in `fn`: the object returned is not the one built."""
        for c in self.calls_in(fn):
            recv = dotted(c.receiver) if c.receiver is not None else None
            if recv and (recv == name or recv.startswith(name + ".")) and c.attr not in _PASS_THROUGH_METHODS | {"apply"}:
                return True
        for a in self.facts.assigns:
            if a.function is not fn:
                continue
            for t in a.targets:
                base = t.value if isinstance(t, (cst.Attribute, cst.Subscript)) else None
                text = dotted(base) if base is not None else None
                if text and (text == name or text.startswith(name + ".")):
                    return True
        return False

    def constructed_qualnames(self, expr: cst.BaseExpression, at: Site) -> List[Optional[str]]:
        """For each candidate value: the qualified name of the class/function that made it."""
        out: List[Optional[str]] = []
        for value, _ in self.constructions(expr, at):
            out.append(self.qualname(value.func) if isinstance(value, cst.Call) else None)
        return out

    def instance_class(self, expr: cst.BaseExpression, at: Site) -> Optional[ClassInfo]:
        """The same-module class `expr` is an instance of, when every candidate agrees."""
        found: Optional[ClassInfo] = None
        for value, _ in self.constructions(expr, at):
            if not (isinstance(value, cst.Call) and isinstance(value.func, cst.Name)):
                return None
            cls = self.class_named(value.func.value)
            if cls is None or (found is not None and found is not cls):
                return None
            found = cls
        return found

    def callee(self, call: CallSite) -> Optional[FunctionInfo]:
        """The same-module function or method a call runs, when it can be shown."""
        func = call.func
        if isinstance(func, cst.Name):
            if func.value in self.imports.alias:
                return None
            return self.function_named(func.value, call.function)
        if isinstance(func, cst.Attribute):
            recv = func.value
            if isinstance(recv, cst.Name) and recv.value == "self":
                cls = self.method_class(call.function)
                return self.method(cls, func.attr.value) if cls is not None else None
            if isinstance(recv, (cst.Name, cst.Attribute)) and self.qualname(recv) is None:
                cls = self.instance_class(recv, call)
                if cls is not None:
                    return self.method(cls, func.attr.value)
        return None

    def alias_callers(self, function: FunctionInfo) -> List[CallSite]:
        """Calls of a nested function through a local name its enclosing function binds to it
        (`fn = [basic, mirror][level]; fn(x, model)`): they run it at that call's point, as a
        direct call would. Only names bound in the enclosing function (or functions nested
        in it) are followed; a nested function passed elsewhere is not."""
        outer = function.parent
        if outer is None:
            return []
        out = []
        for a in self.facts.assigns:
            if a.op != "=" or a.value is None or not any(o is outer for o in self.enclosing_function_chain(a.function)):
                continue
            if not any(isinstance(n, cst.Name) and n.value == function.name for n in walk(a.value)):
                continue
            for t in a.targets:
                if not isinstance(t, cst.Name) or t.value == function.name:
                    continue
                for c in self.facts.calls:
                    if isinstance(c.func, cst.Name) and c.func.value == t.value and any(r is a for r in self.reaching(t.value, c)):
                        out.append(c)
        return out

    def element_values(self, expr: cst.BaseExpression, at: Site, depth: int = 0) -> Optional[List[Tuple[cst.BaseExpression, Site]]]:
        """The elements a container may hold, for `for model in models`: a list/tuple literal,
        a slice of a container (`models[:5]`), a name bound to one, a parameter (what the
        same-module callers pass), and a list built empty then filled by `.append(v)`.
        None when that cannot be shown (another mutation, an unknown value)."""
        if depth > MAX_DEPTH:
            return None
        if isinstance(expr, cst.Subscript) and all(isinstance(e.slice, cst.Slice) for e in expr.slice):
            return self.element_values(expr.value, at, depth + 1)
        if isinstance(expr, (cst.List, cst.Tuple)):
            if any(isinstance(e, cst.StarredElement) for e in expr.elements):
                return None
            return [(e.value, at) for e in expr.elements]
        if not isinstance(expr, cst.Name) or self.qualname(expr) is not None:
            return None
        sites = self.reaching(expr.value, at)
        if not sites:
            if at.function is None or expr.value not in at.function.params:
                return None
            args = self.param_arguments(at.function, expr.value)
            if not args:
                return None
            out: List[Tuple[cst.BaseExpression, Site]] = []
            for arg, site in args:
                found = self.element_values(arg, site, depth + 1)
                if found is None:
                    return None
                out.extend(found)
            return out
        out = []
        for s in sites:
            if s.op != "=" or s.value is None:
                return None
            value = s.value
            empty = (isinstance(value, cst.List) and not value.elements) or (
                isinstance(value, cst.Call) and isinstance(value.func, cst.Name) and value.func.value == "list" and not value.args
            )
            if not empty:
                found = self.element_values(value, s, depth + 1)
                if found is None:
                    return None
                out.extend(found)
                continue
            for c in self.facts.calls:
                if not (isinstance(c.receiver, cst.Name) and c.receiver.value == expr.value and c.function is s.function and c.order > s.order):
                    continue
                if c.attr != "append" or c.positional(0) is None:
                    return None  # extended, inserted into, ...: not followed
                out.append((c.positional(0), c))  # type: ignore[arg-type]
        return out

    def param_arguments(self, function: FunctionInfo, name: str) -> List[Tuple[cst.BaseExpression, Site]]:
        """Argument expressions that same-module callers pass for parameter `name`."""
        if name not in function.params:
            return []
        out = []
        for call in self.callers(function):
            arg = self.argument_of(function, call, name)
            if arg is not None:
                out.append((arg, call))
        return out

    @staticmethod
    def argument_of(function: FunctionInfo, call: CallSite, name: str) -> Optional[cst.BaseExpression]:
        """The argument `call` (a call of `function`) passes for parameter `name`: by keyword,
        or by position (a method's `self`/`cls` is the receiver, not an argument). None when
        it is left out or hidden in `*args`."""
        arg = call.keyword(name)
        if arg is not None:
            return arg
        p = function.node.params
        params = [x.name.value for x in (*p.posonly_params, *p.params)]  # keyword-only ones are not positional
        if function.cls is not None and params and params[0] in ("self", "cls"):
            params = params[1:]
        if name not in params or call.has_star_args:
            return None
        return call.positional(params.index(name))

    def param_values(self, function: FunctionInfo, name: str) -> Optional[List[Tuple[cst.BaseExpression, Site]]]:
        """Every value parameter `name` of a plain function holds when it runs: what each
        same-module call passes, or the parameter's default where a call leaves it out
        (`def main(wd=5e-4)` run as `main()`). The default is read at the `def`, in the
        enclosing scope, where Python evaluates it.

        None when some run cannot be seen: a method (frameworks call those), a decorated
        function (a CLI or framework wrapper supplies the arguments), a function named
        anywhere but as the callee of a same-module call (`fire.Fire(main)`,
        `Thread(target=main)`, an export: called with arguments we do not see), no same-module
        call at all, or a call with `*args`/`**kwargs`."""
        if function.cls is not None or function.decorators or name not in function.params:
            return None
        callers = self.callers(function)
        if not callers or any(c.has_star_args for c in callers):
            return None
        direct = [c for c in callers if isinstance(c.func, cst.Name) and c.func.value == function.name]
        # The def's own name node plus one per direct call: any other mention hands the
        # function on.
        if len(direct) != len(callers) or self._name_counts.get(function.name, 0) != len(direct) + 1:
            return None
        p = function.node.params
        param = next((x for x in (*p.posonly_params, *p.params, *p.kwonly_params) if x.name.value == name), None)
        if param is None:
            return None  # `*args` / `**kwargs`
        at_def = Site(param, function.parent, (), (), (), function.start)
        out: List[Tuple[cst.BaseExpression, Site]] = []
        for call in callers:
            arg = self.argument_of(function, call, name)
            if arg is not None:
                out.append((arg, call))
            elif param.default is not None:
                out.append((param.default, at_def))
            else:
                return None  # a call that Python would reject: not a run we can read
        return out

    @cached_property
    def _name_counts(self) -> Dict[str, int]:
        """How many times each name is written in the module (as a `Name` node)."""
        counts: Dict[str, int] = {}
        for node in walk(self.module):
            if isinstance(node, cst.Name):
                counts[node.value] = counts.get(node.value, 0) + 1
        return counts

    # -- structure ----------------------------------------------------------------------
    def innermost_loop(self, site: Site) -> Optional[Block]:
        return site.loops[-1] if site.loops else None

    def sites_in(self, block: Block, sites: Iterable[Site]) -> List[Site]:
        return [s for s in sites if s.function is block.function and block.contains(s.order)]

    def calls_within(self, block: Block) -> List[CallSite]:
        return [c for c in self.calls_in(block.function) if block.contains(c.order)]

    def assigns_within(self, block: Block) -> List[AssignSite]:
        return [a for a in self.facts.assigns if a.function is block.function and block.contains(a.order)]

    def enclosing_function_chain(self, function: Optional[FunctionInfo]) -> Iterator[FunctionInfo]:
        while function is not None:
            yield function
            function = function.parent

    # -- derived analyses ---------------------------------------------------------------
    @cached_property
    def training(self):
        """Training events (backward/step/zero_grad/...) for this file."""
        from trainlint.analysis.training import Training

        return Training(self)

    @cached_property
    def evaluation(self):
        """Evaluation passes and the modes they run in."""
        from trainlint.analysis.evaluation import Evaluation

        return Evaluation(self)
