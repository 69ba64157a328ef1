"""Where a value comes from outside the program: the command line (argparse, `sys.argv`),
the environment, or a parameter of a public function that no same-module caller fills in.

`external_origin(ctx, expr, at)` describes the first such origin found, or returns None when
the value is built inside the program or cannot be followed (precision first).
"""

from __future__ import annotations

from typing import Optional

import libcst as cst

from trainlint.analysis.context import MAX_DEPTH, FileContext
from trainlint.analysis.facts import FunctionInfo, Site
from trainlint.analysis.names import dotted

# Calls that keep "this is the same path": `Path(p)`, `os.path.expanduser(p)`, `str(p)`.
_PATH_WRAPPERS = {
    "pathlib.Path",
    "pathlib.PurePath",
    "os.path.expanduser",
    "os.path.expandvars",
    "os.path.abspath",
    "os.path.realpath",
    "os.path.normpath",
    "os.fspath",
    "os.path.join",
}
_PATH_METHODS = {"expanduser", "resolve", "absolute", "joinpath", "with_suffix"}
_ENV_CALLS = {"os.getenv", "os.environ.get", "os.environ.__getitem__"}
_ARGPARSE_METHODS = {"parse_args", "parse_known_args", "parse_intermixed_args"}
# Parameter names that hold a parsed command line: `def main(args): ... args.resume`.
_ARGS_PARAM_NAMES = {"args", "opt", "opts", "cli_args", "argv", "options"}


def external_origin(ctx: FileContext, expr: cst.BaseExpression, at: Site, depth: int = 0) -> Optional[str]:
    if depth > MAX_DEPTH or expr is None:
        return None
    if isinstance(expr, cst.Call):
        q = ctx.qualname(expr.func)
        if q in _ENV_CALLS:
            return f"the environment (`{ctx.module.code_for_node(expr.func)}`)"
        if q is not None and q.endswith(".argv"):
            return None
        if (q in _PATH_WRAPPERS or (q is None and dotted(expr.func) == "str")) and expr.args:
            return external_origin(ctx, expr.args[0].value, at, depth + 1)
        if isinstance(expr.func, cst.Attribute) and expr.func.attr.value in _PATH_METHODS and q is None:
            return external_origin(ctx, expr.func.value, at, depth + 1)
        return None
    if isinstance(expr, cst.IfExp):  # `sys.argv[1] if len(sys.argv) > 1 else "model.pt"`
        return external_origin(ctx, expr.body, at, depth + 1) or external_origin(ctx, expr.orelse, at, depth + 1)
    if isinstance(expr, cst.BinaryOperation) and isinstance(expr.operator, cst.Divide):
        # `Path(args.dir) / "model.pt"`
        return external_origin(ctx, expr.left, at, depth + 1)
    if isinstance(expr, cst.Subscript):
        base = ctx.qualname(expr.value)
        if base == "sys.argv":
            return "the command line (`sys.argv`)"
        if base == "os.environ":
            return "the environment (`os.environ`)"
        return None
    if isinstance(expr, cst.Attribute):
        if isinstance(expr.value, cst.Name) and expr.value.value in ("self", "cls"):
            return None
        root = expr.value
        while isinstance(root, cst.Attribute):
            root = root.value
        if isinstance(root, cst.Name) and _is_parsed_args(ctx, root, at, depth):
            return f"the command line (`{ctx.module.code_for_node(expr)}`)"
        return None
    if isinstance(expr, cst.Name):
        if ctx.qualname(expr) is not None:
            return None
        opened = _opened_path(ctx, expr, at)
        if opened is not None:
            return external_origin(ctx, opened, at, depth + 1)
        function = at.function
        if function is not None and expr.value in function.params and not ctx.reaching(expr.value, at):
            callers_args = ctx.param_arguments(function, expr.value) + _constructor_arguments(ctx, function, expr.value)
            if callers_args or _constructed_here(ctx, function):
                for arg, site in callers_args:
                    found = external_origin(ctx, arg, site, depth + 1)
                    if found:
                        return found
                return None
            if _public_parameter(ctx, function, expr.value):
                return f"a parameter of `{function.qualname}` (`{expr.value}`)"
            return None
        for value, site in ctx.resolve(expr, at):
            if value is expr:
                continue
            found = external_origin(ctx, value, site, depth + 1)
            if found:
                return found
        return None
    return None


def _opened_path(ctx: FileContext, name: cst.Name, at: Site) -> Optional[cst.BaseExpression]:
    """`path` when `name` is the file object of a `with open(path, "rb") as name:` around
    `at` (also `io.open(path)`, `Path(p).open("rb")`) and nothing rebinds it in between."""
    for block in reversed(at.withs):
        for item in getattr(block.node, "items", ()):
            if not (item.asname is not None and isinstance(item.asname.name, cst.Name) and item.asname.name.value == name.value):
                continue
            if any(s.order > block.start for s in ctx.reaching(name.value, at)):
                return None
            call = item.item
            if not isinstance(call, cst.Call):
                return None
            q = ctx.qualname(call.func)
            if q == "io.open" or (q is None and isinstance(call.func, cst.Name) and call.func.value == "open" and ctx.function_named("open", at.function) is None):
                return call.args[0].value if call.args and call.args[0].keyword is None and not call.args[0].star else None
            if q is None and isinstance(call.func, cst.Attribute) and call.func.attr.value == "open":
                return call.func.value
            return None
    return None


def _constructed_here(ctx: FileContext, function: FunctionInfo) -> bool:
    return function.name == "__init__" and function.cls is not None and bool(_constructions_of(ctx, function.cls.name))


def _constructions_of(ctx: FileContext, class_name: str):
    return [c for c in ctx.facts.calls if isinstance(c.func, cst.Name) and c.func.value == class_name and ctx.qualname(c.func) is None]


def _constructor_arguments(ctx: FileContext, function: FunctionInfo, name: str):
    """For `__init__`'s parameter `name`: what `ClassName(...)` calls in the module pass."""
    if function.name != "__init__" or function.cls is None:
        return []
    params = [p for p in function.params if p not in ("self",)]
    index = params.index(name) if name in params else -1
    out = []
    for call in _constructions_of(ctx, function.cls.name):
        arg = call.keyword(name)
        if arg is None and index >= 0 and not call.has_star_args:
            arg = call.positional(index)
        if arg is not None:
            out.append((arg, call))
    return out


def _public_parameter(ctx: FileContext, function: FunctionInfo, name: str) -> bool:
    """A parameter of a function that code outside this module may call with any value."""
    if name in ("self", "cls") or function.name.startswith("_") and not (function.name.startswith("__") and function.name.endswith("__")):
        return False
    if function.parent is not None:
        return False  # a nested function: only its enclosing function calls it
    cls = ctx.method_class(function)
    if cls is not None and cls.name.startswith("_"):
        return False
    if ctx.callers(function):
        return False  # same-module callers were followed instead
    return True


def _is_parsed_args(ctx: FileContext, name: cst.Name, at: Site, depth: int) -> bool:
    """`args` bound to `parser.parse_args()` (directly, through a helper that returns it), or
    a parameter named like a parsed command line that callers fill with one."""
    function = at.function
    if function is not None and name.value in function.params and not ctx.reaching(name.value, at):
        args = ctx.param_arguments(function, name.value)
        if args:
            return any(_value_is_parsed_args(ctx, a, s, depth + 1) for a, s in args)
        return name.value in _ARGS_PARAM_NAMES and _public_parameter(ctx, function, name.value)
    for value, site in ctx.resolve(name, at):
        if value is name:
            continue
        if _value_is_parsed_args(ctx, value, site, depth + 1):
            return True
    return False


def _value_is_parsed_args(ctx: FileContext, value: cst.BaseExpression, site: Site, depth: int) -> bool:
    if depth > MAX_DEPTH:
        return False
    if isinstance(value, cst.Subscript):  # parser.parse_known_args()[0]
        value = value.value
    if isinstance(value, cst.Name):
        return _is_parsed_args(ctx, value, site, depth + 1)
    if not isinstance(value, cst.Call):
        return False
    func = value.func
    if isinstance(func, cst.Attribute) and func.attr.value in _ARGPARSE_METHODS:
        return True
    if isinstance(func, cst.Name) and ctx.qualname(func) is None:
        fn = ctx.function_named(func.value, site.function)
        if fn is not None:
            return any(
                r.value is not None and _value_is_parsed_args(ctx, r.value, r, depth + 1) for r in ctx.returns_of(fn)
            )
    return False


def constructor_arguments(ctx: FileContext, function: FunctionInfo, name: str):
    """For `__init__`'s parameter `name`: (argument, call site) for what the module's
    `ClassName(...)` calls pass (shared with analysis/outputs.py)."""
    return _constructor_arguments(ctx, function, name)


def holds_namespace(ctx: FileContext, expr: cst.BaseExpression, at: Site) -> bool:
    """`expr` is an `argparse.Namespace`: `argparse.Namespace(...)`, or the parsed command
    line (`args` bound to `parser.parse_args()`, directly or through a helper)."""
    if isinstance(expr, cst.Call):
        return ctx.qualname(expr.func) == "argparse.Namespace" or _value_is_parsed_args(ctx, expr, at, 0)
    if isinstance(expr, cst.Name):
        return ctx.qualname(expr) is None and _is_parsed_args(ctx, expr, at, 0)
    return False
