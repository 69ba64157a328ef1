from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, List, Optional, Tuple

import libcst as cst

from trainlint.analysis.facts import AssignSite, CallSite
from trainlint.analysis.names import expression_facts
from trainlint.analysis.splits import is_heldout_name, is_train_name, root_name, scopes
from trainlint.analysis.training import exclusive_sites
from trainlint.rules.base import Report, Rule

CHOICE_FUNCS = {"numpy.random.choice", "random.sample", "random.choices"}
PERMUTATION_FUNCS = {"numpy.random.permutation", "torch.randperm"}
SPLIT_FUNCS = {"sklearn.model_selection.train_test_split", "sklearn.cross_validation.train_test_split"}


@dataclass(eq=False)
class Draw:
    """One random sampling of rows, and the part of the data it stands for."""

    kind: str  # "sample", "choice", "permutation", "split"
    call: CallSite
    population: str  # the source text of what is sampled from
    part: str  # the target name that holds the train or held-out part
    role: str  # "train" or "heldout"


class OverlappingRandomSplits(Rule):
    """## What it does
    Finds a train/validation (or test) split drawn by two independent random samplings of
    one data set: `train = df.sample(frac=0.8)` and `val = df.sample(frac=0.2)`, two
    `np.random.choice` / `random.sample` / `randperm(n)[:k]` draws over the same population,
    or two `train_test_split` calls on the same data whose training part comes from one
    and the held-out part from the other, without one shared `random_state`.

    ## Why is this bad?
    Each sampling draws its rows without knowing the other's, so the parts overlap: with a
    20% validation sample, about 80% of its rows are also training rows (with pandas and
    the same seed, all of them). The validation score is then measured largely on
    training data and looks far better than it is. Draw once and take complementary parts
    (`val = df.drop(train.index)`, one permutation sliced in two, one `train_test_split`).

    Left alone: draws in different branches of an `if`, a second draw from what the first
    left (`df.drop(train.index).sample(...)`), two `train_test_split` calls with the same
    arguments and seed (the same split), nested splits (`train_test_split(X_train, ...)`) and test
    modules.

    ## Example
    ```python
    train_df = df.sample(frac=0.8)
    val_df = df.sample(frac=0.2)
    ```

    ## Use instead
    ```python
    train_df = df.sample(frac=0.8, random_state=0)
    val_df = df.drop(train_df.index)
    ```
    """

    code = "TL408"
    name = "overlapping-random-splits"
    severity = "error"

    VALID = (
        """
        import pandas as pd
        train_df = df.sample(frac=0.8, random_state=42)
        val_df = df.drop(train_df.index)
        """,
        """
        import numpy as np
        perm = np.random.permutation(len(X))
        train_idx, val_idx = perm[:800], perm[800:]
        """,
        """
        from sklearn.model_selection import train_test_split
        X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=0)
        X_train, X_val, y_train, y_val = train_test_split(X_train, y_train, test_size=0.25, random_state=0)
        """,
        """
        from sklearn.model_selection import train_test_split
        # the same arguments and seed: the same split, read twice
        X_train, _, y_train, _ = train_test_split(X, y, test_size=0.2, random_state=7)
        _, X_test, _, y_test = train_test_split(X, y, test_size=0.2, random_state=7)
        """,
        """
        import numpy as np
        if args.small:
            train_idx = np.random.choice(n, 1000, replace=False)
        else:
            val_idx = np.random.choice(n, 200, replace=False)
        """,
        """
        import pandas as pd
        # two samples for plots, not a split
        preview = df.sample(5)
        background = df.sample(100)
        """,
    )
    INVALID = (
        """
        import pandas as pd
        df = pd.read_csv("ratings.csv")
        train_df = df.sample(frac=0.8, random_state=1)
        val_df = df.sample(frac=0.2, random_state=1)  # !
        """,
        """
        import numpy as np
        n = len(dataset)
        train_idx = np.random.choice(n, int(0.9 * n), replace=False)
        valid_idx = np.random.choice(n, n // 10, replace=False)  # !
        train_set = Subset(dataset, train_idx)
        valid_set = Subset(dataset, valid_idx)
        """,
        """
        import torch
        class Data:
            def setup(self):
                self.train_ids = torch.randperm(self.n)[: self.n_train]
                self.test_ids = torch.randperm(self.n)[: self.n_test]  # !
        """,
        """
        from sklearn.model_selection import train_test_split
        X_train, _, y_train, _ = train_test_split(X, y, test_size=0.2)
        _, X_test, _, y_test = train_test_split(X, y, test_size=0.2)  # !
        """,
        """
        import random
        rows = list(range(len(samples)))
        train_rows = random.sample(rows, 8000)
        test_rows = random.sample(rows, 2000)  # !
        """,
    )

    def check(self, ctx) -> Iterator[Report]:
        if ctx.is_test_file:
            return  # test modules build random transforms and splits on purpose
        for calls, assigns in scopes(ctx):
            draws = [d for c in calls for d in self._draws(ctx, c, assigns)]
            reported = set()
            for second in draws:
                if id(second.call) in reported:
                    continue
                for first in draws:
                    if first.call.order >= second.call.order or first.kind != second.kind or first.role == second.role:
                        continue
                    if first.population != second.population or exclusive_sites(first.call, second.call):
                        continue
                    if not self._same_population(ctx, first, second):
                        continue
                    if first.kind == "split" and self._same_split(first.call, second.call):
                        continue
                    reported.add(id(second.call))
                    train, held = (first, second) if first.role == "train" else (second, first)
                    yield Report(
                        second.call.node,
                        f"`{train.part}` and `{held.part}` are drawn by two independent random samplings of "
                        f"`{second.population}`: the parts overlap, so the held-out score is measured partly on "
                        f"training rows. Sample once and split into complementary parts (e.g. "
                        f"`df.drop(train.index)`, or one permutation sliced in two).",
                    )
                    break

    # -- draws ---------------------------------------------------------------------------
    def _draws(self, ctx, call: CallSite, assigns: List[AssignSite]) -> List[Draw]:
        kind, population = self._sampling(ctx, call)
        if kind is None:
            return []
        out = []
        for a in assigns:
            if a.op != "=" or a.whole_value is None or id(call.node) not in expression_facts(a.whole_value).nodes:
                continue
            if kind == "split":
                if a.value is not None or a.whole_value is not call.node:
                    continue
                # X_train, X_test(, y_train, y_test): even positions train, odd held out.
                for i, t in enumerate(a.targets):
                    name = root_name(t)
                    role = _role(name)
                    if role is not None and role == ("train" if i % 2 == 0 else "heldout"):
                        out.append(Draw(kind, call, population, name, role))  # type: ignore[arg-type]
            else:
                if not _draw_is_whole_value(a.whole_value, call.node) or len(a.targets) != 1:
                    continue
                name = _target_name(a.targets[0])
                role = _role(name)
                if role is not None:
                    out.append(Draw(kind, call, population, name, role))  # type: ignore[arg-type]
        return out

    @staticmethod
    def _sampling(ctx, call: CallSite) -> Tuple[Optional[str], str]:
        """(kind, population text) of a random sampling call; (None, "") for anything else."""
        q = call.qualname
        text = ctx.module.code_for_node
        if q in SPLIT_FUNCS:
            first = call.positional(0)
            if first is None or _literal_false(call.keyword("shuffle")):
                return None, ""
            return "split", text(first)
        if q in CHOICE_FUNCS or (q is None and call.attr == "choice" and _is_generator(ctx, call)):
            pop = call.arg(0, "a") if q != "random.sample" else call.arg(0, "population")
            return ("choice", text(pop)) if pop is not None else (None, "")
        if q in PERMUTATION_FUNCS or (q is None and call.attr == "permutation" and _is_generator(ctx, call)):
            pop = call.positional(0)
            return ("permutation", text(pop)) if pop is not None else (None, "")
        if q is None and call.attr == "sample" and isinstance(call.receiver, (cst.Name, cst.Attribute)):
            if call.keyword("frac") is None and call.keyword("n") is None and call.positional(0) is None:
                return None, ""
            if _literal_frac_one(call.keyword("frac")):
                return None, ""  # `df.sample(frac=1)`: a shuffle of all rows
            return "sample", text(call.receiver)
        return None, ""

    @staticmethod
    def _same_population(ctx, first: Draw, second: Draw) -> bool:
        """The population's root name is bound to the same value at both draws."""
        def root(d: Draw) -> Optional[str]:
            node = d.call.receiver if d.kind == "sample" else (d.call.positional(0) if d.kind != "choice" else d.call.arg(0, "a") or d.call.positional(0))
            return root_name(node) if node is not None else None

        name = root(first)
        if name is None:
            return True  # a literal population (`range(1000)`, `10000`)
        a, b = ctx.reaching(name, first.call), ctx.reaching(name, second.call)
        return [id(s) for s in a] == [id(s) for s in b]

    @staticmethod
    def _same_split(a: CallSite, b: CallSite) -> bool:
        """Two `train_test_split` calls with the same literal seed and sizes draw the same split."""
        def key(c: CallSite):
            seed = c.keyword("random_state")
            if not isinstance(seed, cst.Integer):
                return None
            return tuple(
                (arg.keyword.value if arg.keyword else None, cst.Module([]).code_for_node(arg.value)) for arg in c.args
            )

        ka, kb = key(a), key(b)
        return ka is not None and ka == kb


def _role(name: Optional[str]) -> Optional[str]:
    if is_train_name(name):
        return "train"
    if is_heldout_name(name):
        return "heldout"
    return None


def _target_name(t) -> Optional[str]:
    if isinstance(t, cst.Name):
        return t.value
    if isinstance(t, cst.Attribute):
        return t.attr.value
    return None


def _draw_is_whole_value(value, call: cst.Call) -> bool:
    """The assigned value is the draw itself, sliced or converted (`perm(n)[:k]`,
    `df.sample(frac=.8).index`, `.tolist()`), not something merely built with it."""
    while value is not call:
        if isinstance(value, (cst.Subscript, cst.Attribute)):
            value = value.value
        elif isinstance(value, cst.Call) and isinstance(value.func, cst.Attribute):
            value = value.func.value
        else:
            return False
    return True


def _is_generator(ctx, call: CallSite) -> bool:
    """`rng.choice(...)` where `rng = np.random.default_rng(...)` / `RandomState(...)`."""
    for q in ctx.constructed_qualnames(call.receiver, call):
        if q in ("numpy.random.default_rng", "numpy.random.RandomState", "numpy.random.Generator"):
            return True
    return False


def _literal_false(v) -> bool:
    return isinstance(v, cst.Name) and v.value == "False"


def _literal_frac_one(v) -> bool:
    return isinstance(v, (cst.Integer, cst.Float)) and float(v.evaluated_value) >= 1


RULE = OverlappingRandomSplits
