"""Data splits: which names hold training or held-out data, where a data set is split into
parts, and which names a value flows into before that split.

Shared by the leakage rules (statistics or a fitted transform computed before a split, two
independent random samplings of one data set) and the held-out data rules.

A split is `train_test_split`, `random_split`, a K-fold splitter's `split(...)` or slicing
rows into parts (`X[:800]`, `df.iloc[n:]`); with `cross_validation=True` also the
cross-validation helpers that split internally (`cross_val_score(model, X, y)`).
"""

from __future__ import annotations

import re
from typing import Dict, List, Optional, Set, Tuple

import libcst as cst

from trainlint.analysis.facts import AssignSite, CallSite
from trainlint.analysis.names import expression_facts

SPLIT_FUNCS = re.compile(r"(train_test_split|random_split)$")
CROSS_VALIDATION_FUNCS = re.compile(r"(cross_val_score|cross_validate|cross_val_predict|learning_curve|validation_curve)$")
KFOLD = re.compile(r"(KFold|ShuffleSplit|GroupKFold|TimeSeriesSplit|LeaveOneOut|StratifiedKFold|LeavePGroupsOut|LeaveOneGroupOut)")
LABEL_NAME = re.compile(r"^(y|ys|y_\w*|labels?|targets?|classes|n_classes|num_classes)$|label|target", re.I)
TRAIN_IN_NAME = re.compile(r"train", re.I)
HELDOUT_NAME = re.compile(r"(^|_)(test|val|valid|validation|holdout|dev)(_|$|set|data)", re.I)
# A held-out part by name, in any position of a word: `val_ds`, `X_test`, `testset`, `valid_loader`,
# `test_tf`, `transform_val` (not `device`, `latest`, `interval`, `validate_args`).
HELDOUT_PART = re.compile(
    r"(^|_)(val|valid|validation|test|testing|eval|evaluation|dev|holdout|heldout)(_|$|set|data|loader|dl|ds|iter|transforms?|tfms?|tf|aug)",
    re.I,
)


def is_heldout_name(name: Optional[str]) -> bool:
    """A name for validation/test data (and not for training data: `train_val_ds` is neither)."""
    if not name:
        return False
    last = name.rsplit(".", 1)[-1]
    return bool(HELDOUT_PART.search(last)) and not TRAIN_IN_NAME.search(last)


def is_train_name(name: Optional[str]) -> bool:
    if not name:
        return False
    last = name.rsplit(".", 1)[-1]
    return bool(TRAIN_IN_NAME.search(last)) and not HELDOUT_PART.search(last)


def scopes(ctx) -> List[Tuple[List[CallSite], List[AssignSite]]]:
    """The calls and assignments of each function (and of module level), in program order."""
    calls: Dict[int, List[CallSite]] = {}
    assigns: Dict[int, List[AssignSite]] = {}
    for c in ctx.facts.calls:
        calls.setdefault(id(c.function), []).append(c)
    for a in ctx.facts.assigns:
        assigns.setdefault(id(a.function), []).append(a)
    return [(calls.get(k, []), assigns.get(k, [])) for k in {*calls, *assigns}]


def root_name(expr) -> Optional[str]:
    """`df` for `df`, `df[cols]`, `df.values`, `df.drop(columns=c).values`."""
    while True:
        if isinstance(expr, cst.Name):
            return expr.value
        if isinstance(expr, (cst.Attribute, cst.Subscript)):
            expr = expr.value
        elif isinstance(expr, cst.Call) and isinstance(expr.func, cst.Attribute):
            expr = expr.func.value
        else:
            return None


_METADATA = {"shape", "size", "columns", "dtype", "dtypes", "index", "ndim", "device", "nbytes"}
_NOT_DATA_FUNCS = {"len", "range", "int", "float", "round", "str", "print", "id", "type", "isinstance", "enumerate"}


def derives(expr, names: Set[str]) -> bool:
    """`expr` is computed from one of `names` (through conversions, containers, helpers);
    sizes and shapes (`len(X)`, `X.shape[0]`) are not the data."""
    if _metadata(expr):
        return False
    if root_name(expr) in names:
        return True
    if isinstance(expr, cst.Call):
        if isinstance(expr.func, cst.Name) and expr.func.value in _NOT_DATA_FUNCS:
            return False
        return any(derives(a.value, names) for a in expr.args)
    if isinstance(expr, (cst.Tuple, cst.List)):
        return any(derives(e.value, names) for e in expr.elements)
    return False


def carries(expr, node: cst.CSTNode) -> bool:
    """`expr` is the value of the expression `node` or computed from it, as `derives` judges
    names: `node`, `(node, y)`, `np.asarray(node)`, `node[:, :10]`, `node.astype(...)`; not
    `node.shape` or `len(node)`."""
    if expr is node:
        return True
    if _metadata(expr):
        return False
    if isinstance(expr, cst.Subscript):
        return carries(expr.value, node)
    if isinstance(expr, cst.Attribute):
        return carries(expr.value, node)
    if isinstance(expr, cst.Call):
        if isinstance(expr.func, cst.Name) and expr.func.value in _NOT_DATA_FUNCS:
            return False
        if isinstance(expr.func, cst.Attribute) and carries(expr.func.value, node):
            return True
        return any(carries(a.value, node) for a in expr.args)
    if isinstance(expr, (cst.Tuple, cst.List)):
        return any(carries(e.value, node) for e in expr.elements)
    return False


def _metadata(expr) -> bool:
    while isinstance(expr, (cst.Attribute, cst.Subscript, cst.Call)):
        if isinstance(expr, cst.Attribute) and expr.attr.value in _METADATA:
            return True
        expr = expr.func if isinstance(expr, cst.Call) else expr.value
    return False


def wrapped(assigns: List[AssignSite], after: int, names: Set[str]) -> Set[str]:
    """`names` plus the names that hold their data converted, wrapped or reshaped after
    `after`: `ds = TensorDataset(torch.from_numpy(X), y)`, `X = df.drop(columns=[...]).values`,
    `X, y = make_windows(X_scaled, 30)` (label names are not followed)."""
    names = set(names)
    for _ in range(4):
        grew = False
        for a in assigns:
            if a.order <= after or a.op != "=":
                continue
            value = a.value if a.value is not None else a.whole_value
            if value is None or not derives(value, names):
                continue
            for t in a.targets:
                n = root_name(t)
                if n and n not in names and not LABEL_NAME.search(n):
                    names.add(n)
                    grew = True
        if not grew:
            break
    return names


def is_split_call(ctx, c: CallSite, cross_validation: bool = False) -> bool:
    q = c.qualname or c.attr or ""
    if SPLIT_FUNCS.search(q) or (cross_validation and CROSS_VALIDATION_FUNCS.search(q)):
        return True
    return c.attr == "split" and c.receiver is not None and any(KFOLD.search(v or "") for v in ctx.constructed_qualnames(c.receiver, c))


def later_split(ctx, calls: List[CallSite], assigns: List[AssignSite], after: int, names: Set[str], cross_validation: bool = False) -> Optional[str]:
    """How data held in `names` is split after `after` in this scope (a description for a
    message), or None when it is not."""
    for c in calls:
        if c.order <= after or not is_split_call(ctx, c, cross_validation):
            continue
        facts = [expression_facts(a.value) for a in c.node.args]  # type: ignore[attr-defined]
        if any(names & f.names for f in facts):
            q = c.qualname or c.attr or ""
            return f"`{q.rsplit('.', 1)[-1]}`"
    for a in assigns:
        if a.order <= after or a.whole_value is None:
            continue
        for part in _parts(a.whole_value):
            if (
                isinstance(part, cst.Subscript)
                and root_name(part.value) in names
                and _row_indexer(part.value)
                and len(part.slice) == 1
                and isinstance(part.slice[0].slice, cst.Slice)
                and not _off_by_one(part.slice[0].slice)
            ):
                return f"slicing `{ctx.module.code_for_node(part.value)}[...]`"
    return None


def built_as_training_split(call: cst.Call) -> bool:
    """`CIFAR10(root, train=True)`, `load_dataset(..., split="train")` (any split naming
    the training data, `"train[:90%]"` too)."""
    for a in call.args:
        if a.keyword is None:
            continue
        v = a.value
        if a.keyword.value == "train" and isinstance(v, cst.Name) and v.value == "True":
            return True
        if a.keyword.value == "split" and isinstance(v, cst.SimpleString) and TRAIN_IN_NAME.search(v.value):
            return True
    return False


_HELDOUT_SPLIT = re.compile(r"(val|valid|validation|test|testing|dev|eval|evaluation|holdout)", re.I)


def built_as_heldout_split(call: cst.Call) -> bool:
    """`CIFAR10(root, train=False)`, `load_dataset(..., split="validation")`,
    `STL10(root, split="test")`, `VOCSegmentation(root, image_set="val")`."""
    for a in call.args:
        if a.keyword is None:
            continue
        v = a.value
        if a.keyword.value == "train" and isinstance(v, cst.Name) and v.value == "False":
            return True
        if a.keyword.value in ("split", "image_set", "subset") and isinstance(v, cst.SimpleString):
            text = v.evaluated_value
            if isinstance(text, str) and _HELDOUT_SPLIT.fullmatch(text):
                return True
    return False


def _off_by_one(sl: cst.Slice) -> bool:
    """`x[1:]`, `x[:-1]`: neighbours (bin edges, shifted sequences), not a train/test split."""
    bounds = [b for b in (sl.lower, sl.upper) if b is not None]

    def one(b):
        if isinstance(b, cst.UnaryOperation) and isinstance(b.operator, cst.Minus):
            b = b.expression
        return isinstance(b, cst.Integer) and b.value == "1"

    return len(bounds) == 1 and one(bounds[0])


def _row_indexer(expr) -> bool:
    """`X[...]`, `df.iloc[...]`, `df.loc[...]`: indexing rows (not `df.columns[...]`)."""
    return isinstance(expr, cst.Name) or (isinstance(expr, cst.Attribute) and expr.attr.value in ("iloc", "loc"))


def _parts(expr: cst.BaseExpression):
    if isinstance(expr, (cst.Tuple, cst.List)):
        return [e.value for e in expr.elements]
    return [expr]
