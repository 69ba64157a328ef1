"""One traversal per file that records what every rule asks about.

Every recorded site carries its enclosing function, the loops, `with` blocks and `if`
bodies around it inside that function, and an `order` number: program order within the
file. Containment is a range test on order numbers (a loop's body spans `start..end`),
so rules never walk parents (libcst's ParentNodeProvider costs ~2x a parse).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import libcst as cst

from trainlint.analysis.names import Imports, dotted


@dataclass(eq=False)
class ClassInfo:
    node: cst.ClassDef
    name: str
    bases: List[cst.BaseExpression]
    function: Optional["FunctionInfo"]
    start: int
    end: int = 0
    methods: Dict[str, "FunctionInfo"] = field(default_factory=dict)


@dataclass(eq=False)
class FunctionInfo:
    node: cst.FunctionDef
    name: str
    cls: Optional[ClassInfo]  # set for methods defined directly in a class body
    parent: Optional["FunctionInfo"]  # the enclosing function of a nested def
    params: List[str]
    decorators: List[cst.BaseExpression]
    start: int
    end: int = 0

    @property
    def qualname(self) -> str:
        return f"{self.cls.name}.{self.name}" if self.cls else self.name

    def contains(self, order: int) -> bool:
        return self.start < order < self.end


@dataclass(eq=False)
class Block:
    """A loop body, a `with` body or an `if` body: a range of program order."""

    kind: str  # "for", "while", "with", "if", "else", "comp" (a comprehension)
    node: cst.CSTNode
    function: Optional[FunctionInfo]
    start: int
    end: int = 0

    def contains(self, order: int) -> bool:
        return self.start < order < self.end

    @property
    def iter(self) -> Optional[cst.BaseExpression]:
        """What a `for` loop iterates over (None for other blocks)."""
        return self.node.iter if isinstance(self.node, (cst.For, cst.CompFor)) else None

    @property
    def test(self) -> Optional[cst.BaseExpression]:
        return getattr(self.node, "test", None)

    @property
    def items(self) -> Tuple[cst.BaseExpression, ...]:
        if isinstance(self.node, cst.With):
            return tuple(item.item for item in self.node.items)
        return ()


@dataclass(eq=False)
class Site:
    node: cst.CSTNode
    function: Optional[FunctionInfo]
    loops: Tuple[Block, ...]
    withs: Tuple[Block, ...]
    ifs: Tuple[Block, ...]
    order: int


@dataclass(eq=False)
class CallSite(Site):
    func: cst.BaseExpression = None  # type: ignore[assignment]
    qualname: Optional[str] = None  # from imports: "torch.nn.functional.softmax"
    attr: Optional[str] = None  # method or function simple name: "softmax"
    receiver: Optional[cst.BaseExpression] = None  # `x` in `x.softmax()`

    @property
    def args(self) -> List[cst.Arg]:
        return list(self.node.args)  # type: ignore[attr-defined]

    def positional(self, index: int) -> Optional[cst.BaseExpression]:
        pos = [a for a in self.node.args if a.keyword is None and not a.star]  # type: ignore[attr-defined]
        return pos[index].value if index < len(pos) else None

    def keyword(self, name: str) -> Optional[cst.BaseExpression]:
        for a in self.node.args:  # type: ignore[attr-defined]
            if a.keyword is not None and a.keyword.value == name:
                return a.value
        return None

    def arg(self, index: int, name: str) -> Optional[cst.BaseExpression]:
        kw = self.keyword(name)
        return kw if kw is not None else self.positional(index)

    @property
    def has_star_args(self) -> bool:
        return any(a.star for a in self.node.args)  # type: ignore[attr-defined]


@dataclass(eq=False)
class AssignSite(Site):
    targets: Tuple[cst.BaseExpression, ...] = ()  # flattened: `a, b = ...` gives a and b
    value: Optional[cst.BaseExpression] = None  # None when the target is unpacked from a tuple
    op: str = "="  # "=", "+=", "-=", ..., "del", "for" (a loop target)
    whole_value: Optional[cst.BaseExpression] = None  # the right-hand side, also when unpacked


@dataclass(eq=False)
class ReturnSite(Site):
    value: Optional[cst.BaseExpression] = None


_AUG_OPS = {
    cst.AddAssign: "+=",
    cst.SubtractAssign: "-=",
    cst.MultiplyAssign: "*=",
    cst.DivideAssign: "/=",
}


def _flatten_targets(target: cst.BaseExpression) -> List[cst.BaseExpression]:
    if isinstance(target, (cst.Tuple, cst.List)):
        out: List[cst.BaseExpression] = []
        for el in target.elements:
            out.extend(_flatten_targets(el.value))
        return out
    if isinstance(target, cst.StarredElement):
        return _flatten_targets(target.value)
    return [target]


def _pairs(target: cst.BaseExpression, value: cst.BaseExpression):
    """(name, value) pairs of `a, b = x, y`; empty when the shapes differ or star-unpack."""
    if not (isinstance(target, (cst.Tuple, cst.List)) and isinstance(value, (cst.Tuple, cst.List))):
        return []
    ts, vs = target.elements, value.elements
    if len(ts) != len(vs) or any(isinstance(e, (cst.StarredElement,)) for e in (*ts, *vs)):
        return []
    if not all(isinstance(e.value, (cst.Name, cst.Attribute, cst.Subscript)) for e in ts):
        return []
    return [(t.value, v.value) for t, v in zip(ts, vs)]


def _params(node: cst.FunctionDef) -> List[str]:
    p = node.params
    names = [x.name.value for x in (*p.posonly_params, *p.params, *p.kwonly_params)]
    if isinstance(p.star_arg, cst.Param):
        names.append(p.star_arg.name.value)
    if p.star_kwarg is not None:
        names.append(p.star_kwarg.name.value)
    return names


_SKIP_FIELD = re.compile(
    r"whitespace|^(lpar|rpar|comma|semicolon|leading_lines|lines_after_decorators|header|footer|newline|"
    r"equal|colon|dot|star|lbracket|rbracket|lbrace|rbrace|operator|asynchronous|indent|encoding|"
    r"default_indent|default_newline|has_trailing_newline|trailing_whitespace|walrus|arrow|"
    r"first_line|empty_lines|last_line|relative|import_alias)$"
)
_CHILD_FIELDS: Dict[type, Tuple[str, ...]] = {}


def _child_fields(t: type) -> Tuple[str, ...]:
    fields = _CHILD_FIELDS.get(t)
    if fields is None:
        fields = tuple(f.name for f in dataclasses.fields(t) if not _SKIP_FIELD.search(f.name))
        _CHILD_FIELDS[t] = fields
    return fields


# type -> is it a CSTNode: `isinstance(x, cst.CSTNode)` goes through ABCMeta's instance
# check, which made up a tenth of a cold run; a dict lookup per concrete type does not.
_IS_NODE: Dict[type, bool] = {}


def _is_node_type(t: type) -> bool:
    known = _IS_NODE.get(t)
    if known is None:
        known = _IS_NODE[t] = issubclass(t, cst.CSTNode)
    return known


def iter_children(node: cst.CSTNode):
    """The child nodes that can hold code (not whitespace, commas, parentheses)."""
    for name in _child_fields(type(node)):
        value = getattr(node, name)
        t = type(value)
        if t is tuple or t is list:
            for item in value:
                if _is_node_type(type(item)):
                    yield item
        elif _is_node_type(t):
            yield value


def walk(node: cst.CSTNode):
    """Every code-bearing node under `node` (pre-order), without libcst's visitor machinery."""
    stack = [node]
    while stack:
        n = stack.pop()
        yield n
        children = list(iter_children(n))
        children.reverse()
        stack.extend(children)


class ModuleFacts:
    """The facts of one module, collected in a single traversal.

    A hand-written walk rather than a libcst visitor: libcst's `visit` rebuilds every node
    it passes (about 2.5x the cost of parsing); reading the dataclass fields directly costs
    a fraction of that.
    """

    def __init__(self) -> None:
        self.imports = Imports()
        self.functions: List[FunctionInfo] = []
        self.classes: Dict[str, ClassInfo] = {}
        self.blocks: List[Block] = []
        self.calls: List[CallSite] = []
        self.assigns: List[AssignSite] = []
        self.returns: List[ReturnSite] = []
        self.lambda_params: set = set()
        self._order = 0
        self._scopes: List[object] = []  # ClassInfo / FunctionInfo
        self._function: Optional[FunctionInfo] = None
        self._loops: Tuple[Block, ...] = ()
        self._withs: Tuple[Block, ...] = ()
        self._ifs: Tuple[Block, ...] = ()
        self._handlers = {
            cst.Import: self._import,
            cst.ImportFrom: self._import_from,
            cst.ClassDef: self._class,
            cst.FunctionDef: self._function_def,
            cst.For: self._for,
            cst.While: self._while,
            cst.With: self._with,
            cst.If: self._if,
            cst.Call: self._call,
            cst.Assign: self._assign_stmt,
            cst.AnnAssign: self._ann_assign,
            cst.AugAssign: self._aug_assign,
            cst.Del: self._del,
            cst.Return: self._return,
            cst.Lambda: self._lambda,
            cst.GeneratorExp: self._comprehension,
            cst.ListComp: self._comprehension,
            cst.SetComp: self._comprehension,
            cst.DictComp: self._comprehension,
        }

    def _tick(self) -> int:
        self._order += 1
        return self._order

    def walk(self, node: Optional[cst.CSTNode]) -> None:
        if node is None:
            return
        handler = self._handlers.get(type(node))
        if handler is not None:
            handler(node)
            return
        for child in iter_children(node):
            self.walk(child)

    def _walk_all(self, nodes) -> None:
        for n in nodes:
            self.walk(n)

    def _site_args(self):
        return self._function, self._loops, self._withs, self._ifs, self._tick()

    # -- scopes -------------------------------------------------------------------
    def _import(self, node: cst.Import) -> None:
        self.imports.add_import(node)

    def _import_from(self, node: cst.ImportFrom) -> None:
        self.imports.add_import_from(node)

    def _class(self, node: cst.ClassDef) -> None:
        self._walk_all(d.decorator for d in node.decorators)
        self._walk_all(a.value for a in node.bases)
        info = ClassInfo(node, node.name.value, [a.value for a in node.bases], self._function, self._tick())
        # The first definition of a name wins (re-definitions under `if` are rare and ambiguous).
        self.classes.setdefault(info.name, info)
        self._scopes.append(info)
        self.walk(node.body)
        self._scopes.pop()
        info.end = self._tick()

    def _function_def(self, node: cst.FunctionDef) -> None:
        self._walk_all(d.decorator for d in node.decorators)
        self.walk(node.params)  # defaults run in the enclosing scope
        owner = self._scopes[-1] if self._scopes else None
        cls = owner if isinstance(owner, ClassInfo) else None
        info = FunctionInfo(node, node.name.value, cls, self._function, _params(node), [d.decorator for d in node.decorators], self._tick())
        if cls is not None:
            cls.methods.setdefault(info.name, info)
        self.functions.append(info)
        saved = (self._function, self._loops, self._withs, self._ifs)
        self._function = info
        self._loops, self._withs, self._ifs = (), (), ()
        self._scopes.append(info)
        self.walk(node.body)
        self._scopes.pop()
        info.end = self._tick()
        self._function, self._loops, self._withs, self._ifs = saved

    # -- blocks -------------------------------------------------------------------
    def _open(self, kind: str, node: cst.CSTNode) -> Block:
        block = Block(kind, node, self._function, self._tick())
        self.blocks.append(block)
        return block

    def _for(self, node: cst.For) -> None:
        self.walk(node.iter)
        block = self._open("for", node)
        # The loop variable is assigned each iteration: record it like an assignment.
        for t in _flatten_targets(node.target):
            self.assigns.append(
                AssignSite(node, self._function, self._loops, self._withs, self._ifs, block.start, (t,), None, "for", node.iter)
            )
        self._loop_body(block, node)

    def _while(self, node: cst.While) -> None:
        self.walk(node.test)
        self._loop_body(self._open("while", node), node)

    def _loop_body(self, block: Block, node) -> None:
        """Walk a loop's body inside `block`, then its `else:` outside it."""
        saved = self._loops
        self._loops = saved + (block,)
        self.walk(node.body)
        block.end = self._tick()
        self._loops = saved
        self.walk(node.orelse)

    def _comprehension(self, node) -> None:
        """A comprehension is a block of kind "comp" around its element and conditions (its
        first iterable runs outside it). It is not a loop for `Site.loops`, and its loop
        variables are not recorded as assignments: they do not outlive it."""
        comp = node.for_in
        self.walk(comp.iter)
        block = self._open("comp", comp)
        self._walk_all(comp.ifs)
        self.walk(comp.inner_for_in)
        for part in ("elt", "key", "value"):
            self.walk(getattr(node, part, None))
        block.end = self._tick()

    def _with(self, node: cst.With) -> None:
        for item in node.items:
            self.walk(item.item)
            if item.asname is not None:
                self.walk(item.asname)
        block = self._open("with", node)
        saved = self._withs
        self._withs = saved + (block,)
        self.walk(node.body)
        block.end = self._tick()
        self._withs = saved

    def _if(self, node: cst.If) -> None:
        self.walk(node.test)
        block = self._open("if", node)
        saved = self._ifs
        self._ifs = saved + (block,)
        self.walk(node.body)
        block.end = self._tick()
        self._ifs = saved
        orelse = node.orelse
        if isinstance(orelse, cst.If):
            self._if(orelse)
        elif isinstance(orelse, cst.Else):
            block = self._open("else", orelse)
            self._ifs = saved + (block,)
            self.walk(orelse.body)
            block.end = self._tick()
            self._ifs = saved

    # -- sites --------------------------------------------------------------------
    def _call(self, node: cst.Call) -> None:
        func = node.func
        attr = receiver = None
        if isinstance(func, cst.Attribute):
            attr, receiver = func.attr.value, func.value
        elif isinstance(func, cst.Name):
            attr = func.value
        self.calls.append(CallSite(node, *self._site_args(), func, self.imports.qualify(func), attr, receiver))
        self.walk(func)
        self._walk_all(a.value for a in node.args)

    def _record_assign(self, node, targets, value, op, whole=None) -> None:
        self.assigns.append(AssignSite(node, *self._site_args(), tuple(targets), value, op, whole if whole is not None else value))

    def _assign_stmt(self, node: cst.Assign) -> None:
        for t in node.targets:
            flat = _flatten_targets(t.target)
            if len(flat) == 1 and flat[0] is t.target:
                self._record_assign(node, flat, node.value, "=")
            elif _pairs(t.target, node.value):
                # `mu, sigma = x.mean(0), x.std(0)`: each name gets its own value.
                for target, value in _pairs(t.target, node.value):
                    self._record_assign(node, [target], value, "=", node.value)
            else:
                self._record_assign(node, flat, None, "=", node.value)
        self._walk_all(t.target for t in node.targets)
        self.walk(node.value)

    def _ann_assign(self, node: cst.AnnAssign) -> None:
        if node.value is not None:
            self._record_assign(node, [node.target], node.value, "=")
            self.walk(node.value)

    def _aug_assign(self, node: cst.AugAssign) -> None:
        self._record_assign(node, [node.target], node.value, _AUG_OPS.get(type(node.operator), "op="))
        self.walk(node.target)
        self.walk(node.value)

    def _del(self, node: cst.Del) -> None:
        self._record_assign(node, _flatten_targets(node.target), None, "del")

    def _return(self, node: cst.Return) -> None:
        self.returns.append(ReturnSite(node, *self._site_args(), node.value))
        self.walk(node.value)

    def _lambda(self, node: cst.Lambda) -> None:
        self.lambda_params.update(p.name.value for p in node.params.params)
        self.walk(node.body)


def collect(module: cst.Module) -> ModuleFacts:
    facts = ModuleFacts()
    facts.walk(module)
    return facts
