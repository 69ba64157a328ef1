"""Boolean flag parameters and the branches they decide.

`def forward(self, x, apply_softmax=False): ...; if apply_softmax: y = F.softmax(y, 1)`:
a call that does not pass the flag (the training call `classifier(x)`) never takes the
branch, so what the function returns there is the value from before the `if`.

`call_flags(fn, call)` gives the value each flag parameter of `fn` has in one call (the
literal passed, or the default when none is); `bool_defaults(fn)` the defaults alone, for a
function reached without a known call. `branch_taken(ctx, block, flags)` says whether an
`if` body runs under those flags: True, False, or None when its test is not a flag.
"""

from __future__ import annotations

from typing import Dict, Optional

import libcst as cst

from trainlint.analysis.context import FileContext
from trainlint.analysis.facts import Block, FunctionInfo

Flags = Dict[str, bool]


def _literal_bool(expr: Optional[cst.BaseExpression]) -> Optional[bool]:
    if isinstance(expr, cst.Name) and expr.value in ("True", "False"):
        return expr.value == "True"
    return None


def _declared(fn: FunctionInfo):
    """(name, default) of every parameter that can be passed by position or keyword."""
    params = fn.node.params
    positional = [(p.name.value, p.default, False) for p in (*params.posonly_params, *params.params)]
    return positional + [(p.name.value, p.default, True) for p in params.kwonly_params]


def bool_defaults(fn: FunctionInfo) -> Flags:
    """The parameters of `fn` that default to a literal True/False, with that default."""
    out: Flags = {}
    for name, default, _ in _declared(fn):
        value = _literal_bool(default)
        if value is not None:
            out[name] = value
    return out


def call_flags(fn: FunctionInfo, call: cst.Call, bound_method: bool) -> Flags:
    """The value of each flag parameter of `fn` in `call`: the literal passed for it, or its
    default when the call does not pass it. A flag passed a non-literal, or any call with
    `*args`/`**kwargs`, leaves that flag (every flag) out: it cannot be read."""
    if any(a.star for a in call.args):
        return {}
    declared = _declared(fn)
    if bound_method and declared and declared[0][0] in ("self", "cls"):
        declared = declared[1:]
    positional = [a.value for a in call.args if a.keyword is None]
    keywords = {a.keyword.value: a.value for a in call.args if a.keyword is not None}
    out: Flags = {}
    index = 0
    for name, default, kwonly in declared:
        passed = None
        if not kwonly and index < len(positional):
            passed = positional[index]
        index += 0 if kwonly else 1
        passed = keywords.get(name, passed)
        value = _literal_bool(passed) if passed is not None else _literal_bool(default)
        if value is not None:
            out[name] = value
    return out


def _test_value(test: cst.BaseExpression, flags: Flags) -> Optional[bool]:
    if isinstance(test, cst.Name) and test.value in flags:
        return flags[test.value]
    if isinstance(test, cst.UnaryOperation) and isinstance(test.operator, cst.Not):
        inner = _test_value(test.expression, flags)
        return None if inner is None else not inner
    return None


def _is_elif(ctx: FileContext, block: Block) -> bool:
    return any(b.kind == "if" and isinstance(b.node, cst.If) and b.node.orelse is block.node for b in ctx.facts.blocks)


def branch_taken(ctx: FileContext, block: Block, flags: Flags) -> Optional[bool]:
    """Whether the body of `block` (an `if`) runs when the function's flags have these
    values. An `elif` or `else` depends on the tests before it: only a False test of its
    own is read (its body cannot run then)."""
    if block.kind != "if" or not isinstance(block.node, cst.If):
        return None
    value = _test_value(block.node.test, flags)
    if value is True and _is_elif(ctx, block):
        return None
    return value
