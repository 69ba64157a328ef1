"""One traversal per file that records what every rule asks about.

Every recorded site carries its enclosing function, the loops, `with` blocks and `if`
bodies around it inside that function, and an `order` number: program order within the
file. Containment is a range test on order numbers (a loop's body spans `start..end`),
so rules never walk parents (libcst's ParentNodeProvider costs ~2x a parse).
"""

from __future__ import annotations

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

    kind: str  # "for", "while", "with", "if", "else"
    node: cst.CSTNode
    function: Optional[FunctionInfo]
    start: int
    end: int = 0

    def contains(self, order: int) -> bool:
        return self.start < order < self.end

    @property
    def iter(self) -> Optional[cst.BaseExpression]:
        """What a `for` loop iterates over (None for other blocks)."""
        return self.node.iter if isinstance(self.node, cst.For) else None

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


def _params(node: cst.FunctionDef) -> List[str]:
    p = node.params
    names = [x.name.value for x in (*p.posonly_params, *p.params, *p.kwonly_params)]
    if isinstance(p.star_arg, cst.Param):
        names.append(p.star_arg.name.value)
    if p.star_kwarg is not None:
        names.append(p.star_kwarg.name.value)
    return names


class ModuleFacts(cst.CSTVisitor):
    """The facts of one module, collected in a single traversal."""

    def __init__(self) -> None:
        self.imports = Imports()
        self.functions: List[FunctionInfo] = []
        self.classes: Dict[str, ClassInfo] = {}
        self.blocks: List[Block] = []
        self.calls: List[CallSite] = []
        self.assigns: List[AssignSite] = []
        self.returns: List[ReturnSite] = []
        self._order = 0
        self._scopes: List[object] = []  # ClassInfo / FunctionInfo
        self._function: Optional[FunctionInfo] = None
        self._loops: Tuple[Block, ...] = ()
        self._withs: Tuple[Block, ...] = ()
        self._ifs: Tuple[Block, ...] = ()
        self._saved: List[tuple] = []
        self._pending_fn: List[FunctionInfo] = []

    def _tick(self) -> int:
        self._order += 1
        return self._order

    # -- scopes -------------------------------------------------------------------
    def visit_Import(self, node: cst.Import) -> bool:
        self.imports.add_import(node)
        return False

    def visit_ImportFrom(self, node: cst.ImportFrom) -> bool:
        self.imports.add_import_from(node)
        return False

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        info = ClassInfo(node, node.name.value, [a.value for a in node.bases], self._function, self._tick())
        # The first definition of a name wins (re-definitions under `if` are rare and ambiguous).
        self.classes.setdefault(info.name, info)
        self._scopes.append(info)

    def leave_ClassDef(self, node: cst.ClassDef) -> None:
        info = self._scopes.pop()
        info.end = self._tick()  # type: ignore[attr-defined]

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        owner = self._scopes[-1] if self._scopes else None
        cls = owner if isinstance(owner, ClassInfo) else None
        info = FunctionInfo(
            node,
            node.name.value,
            cls,
            self._function,
            _params(node),
            [d.decorator for d in node.decorators],
            0,
        )
        if cls is not None:
            cls.methods.setdefault(info.name, info)
        self.functions.append(info)
        self._pending_fn.append(info)

    def visit_FunctionDef_body(self, node: cst.FunctionDef) -> None:
        info = self._pending_fn.pop()
        info.start = self._tick()
        self._saved.append((self._function, self._loops, self._withs, self._ifs))
        self._function = info
        self._loops, self._withs, self._ifs = (), (), ()
        self._scopes.append(info)

    def leave_FunctionDef_body(self, node: cst.FunctionDef) -> None:
        info = self._scopes.pop()
        info.end = self._tick()  # type: ignore[attr-defined]
        self._function, self._loops, self._withs, self._ifs = self._saved.pop()

    # -- blocks -------------------------------------------------------------------
    def _open(self, kind: str, node: cst.CSTNode) -> Block:
        block = Block(kind, node, self._function, self._tick())
        self.blocks.append(block)
        return block

    def visit_For_body(self, node: cst.For) -> None:
        block = self._open("for", node)
        # The loop variable is assigned each iteration: record it like an assignment.
        for t in _flatten_targets(node.target):
            self.assigns.append(
                AssignSite(node, self._function, self._loops, self._withs, self._ifs, block.start, (t,), None, "for", node.iter)
            )
        self._loops = self._loops + (block,)

    def leave_For_body(self, node: cst.For) -> None:
        self._loops[-1].end = self._tick()
        self._loops = self._loops[:-1]

    def visit_While_body(self, node: cst.While) -> None:
        self._loops = self._loops + (self._open("while", node),)

    def leave_While_body(self, node: cst.While) -> None:
        self._loops[-1].end = self._tick()
        self._loops = self._loops[:-1]

    def visit_With_body(self, node: cst.With) -> None:
        self._withs = self._withs + (self._open("with", node),)

    def leave_With_body(self, node: cst.With) -> None:
        self._withs[-1].end = self._tick()
        self._withs = self._withs[:-1]

    def visit_If_body(self, node: cst.If) -> None:
        self._ifs = self._ifs + (self._open("if", node),)

    def leave_If_body(self, node: cst.If) -> None:
        self._ifs[-1].end = self._tick()
        self._ifs = self._ifs[:-1]

    def visit_Else_body(self, node: cst.Else) -> None:
        self._ifs = self._ifs + (self._open("else", node),)

    def leave_Else_body(self, node: cst.Else) -> None:
        self._ifs[-1].end = self._tick()
        self._ifs = self._ifs[:-1]

    # -- sites --------------------------------------------------------------------
    def visit_Call(self, node: cst.Call) -> None:
        func = node.func
        attr = receiver = None
        if isinstance(func, cst.Attribute):
            attr, receiver = func.attr.value, func.value
        elif isinstance(func, cst.Name):
            attr = func.value
        self.calls.append(
            CallSite(
                node, self._function, self._loops, self._withs, self._ifs, self._tick(),
                func, self.imports.qualify(func), attr, receiver,
            )
        )

    def _assign(self, node, targets, value, op, whole=None) -> None:
        self.assigns.append(
            AssignSite(node, self._function, self._loops, self._withs, self._ifs, self._tick(), tuple(targets), value, op, whole if whole is not None else value)
        )

    def visit_Assign(self, node: cst.Assign) -> None:
        for t in node.targets:
            flat = _flatten_targets(t.target)
            if len(flat) == 1 and flat[0] is t.target:
                self._assign(node, flat, node.value, "=")
            else:
                self._assign(node, flat, None, "=", node.value)

    def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
        if node.value is not None:
            self._assign(node, [node.target], node.value, "=")

    def visit_AugAssign(self, node: cst.AugAssign) -> None:
        op = _AUG_OPS.get(type(node.operator), "op=")
        self._assign(node, [node.target], node.value, op)

    def visit_Del(self, node: cst.Del) -> None:
        self._assign(node, _flatten_targets(node.target), None, "del")

    def visit_Return(self, node: cst.Return) -> None:
        self.returns.append(ReturnSite(node, self._function, self._loops, self._withs, self._ifs, self._tick(), node.value))


def collect(module: cst.Module) -> ModuleFacts:
    facts = ModuleFacts()
    module.visit(facts)
    return facts
