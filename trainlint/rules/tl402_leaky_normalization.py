from __future__ import annotations

import re
from typing import Dict, Iterator, List, Optional, Set

import libcst as cst

from trainlint.analysis.facts import AssignSite, CallSite, walk
from trainlint.analysis.names import dotted, expression_facts
from trainlint.analysis.splits import (
    HELDOUT_NAME,
    LABEL_NAME,
    SPLIT_FUNCS,
    TRAIN_IN_NAME,
    built_as_training_split,
    later_split,
    root_name,
    wrapped,
)
from trainlint.analysis.torch_api import DATALOADERS
from trainlint.rules.base import Report, Rule

STAT_METHODS = {"mean", "std", "var", "min", "max", "amin", "amax", "nanmean", "nanstd", "nanvar", "nanmin", "nanmax", "median"}
STAT_MODULES = ("numpy.", "torch.")
SKLEARN_SCALERS = re.compile(r"sklearn\.preprocessing\.\w*(Scaler|Normalizer|Transformer|Standard)\w*$")
# Methods that see one item (or one batch) at a time: a Dataset's `__getitem__`, a
# transform's `__call__`/`forward`. Statistics there describe that sample (an audio clip's
# channel mean, an image's own min/max), not the data set.
PER_ITEM_METHODS = {"__getitem__", "__call__", "forward", "transform_sample", "_transform"}


class LeakyNormalization(Rule):
    """## What it does
    Finds normalisation statistics (`mean`/`std`/`min`/`max` with NumPy, PyTorch or pandas,
    or a scikit-learn scaler's `fit`/`fit_transform`) computed on the whole data set before
    it is split into train and test parts (`train_test_split`, `random_split`, a K-fold
    splitter, slicing), or fitted on validation/test data.

    ## Why is this bad?
    The statistics then carry information about the held-out data into training: the test
    score is optimistic, and the model is tuned to numbers it will not have in production.
    Fit the normalisation on the training split only and apply it to the others. (Label
    statistics such as `y.max() + 1` classes are not normalisation and are not reported.)

    Not reported either: statistics of one sample, computed in a method that sees one item
    at a time (a Dataset's `__getitem__`, a transform's `__call__`/`forward`: an audio clip's
    channel mean), and statistics of data that is itself a part a split returned (`X_tr,
    X_te, ... = train_test_split(...)` then `scaler.fit(X_tr)`), whatever it is named.

    ## Example
    ```python
    X = (X - X.mean(0)) / X.std(0)
    X_train, X_test, y_train, y_test = train_test_split(X, y)
    ```

    ## Use instead
    ```python
    X_train, X_test, y_train, y_test = train_test_split(X, y)
    mean, std = X_train.mean(0), X_train.std(0)
    X_train, X_test = (X_train - mean) / std, (X_test - mean) / std
    ```
    """

    code = "TL402"
    name = "leaky-normalization"
    severity = "error"

    VALID = (
        """
        import pandas as pd
        from sklearn.preprocessing import StandardScaler
        from sklearn.model_selection import train_test_split
        train_df, test_df = train_test_split(df, test_size=0.2)
        scaler = StandardScaler()
        train_df[num_cols] = scaler.fit_transform(train_df[num_cols])
        test_df[num_cols] = scaler.transform(test_df[num_cols])
        """,
        """
        import numpy as np
        # the label column's statistics are not normalisation
        df["target"] = (df["target"] - df["target"].mean()) / df["target"].std()
        train, test = df.iloc[:800], df.iloc[800:]
        """,
        """
        from sklearn.model_selection import train_test_split
        X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2)
        mean, std = X_train.mean(0), X_train.std(0)
        X_train = (X_train - mean) / std
        X_test = (X_test - mean) / std
        """,
        """
        from sklearn.preprocessing import StandardScaler
        from sklearn.model_selection import train_test_split
        X_train, X_test, y_train, y_test = train_test_split(X, y)
        scaler = StandardScaler()
        X_train = scaler.fit_transform(X_train)
        X_test = scaler.transform(X_test)
        """,
        """
        import numpy as np
        from sklearn.model_selection import train_test_split
        num_classes = int(y.max()) + 1  # label statistics are not normalisation
        X_train, X_test, y_train, y_test = train_test_split(X, y)
        """,
        """
        import numpy as np
        # per-sample normalisation (axis=1) uses no other sample's data
        X = (X - X.mean(axis=1, keepdims=True)) / X.std(axis=1, keepdims=True)
        X_train, X_test = X[:800], X[800:]
        """,
        """
        # statistics printed, not used to normalise
        print(X.mean(), X.std())
        X_train, X_test = X[:800], X[800:]
        """,
        """
        import torch
        from torch.utils.data import DataLoader, random_split
        from torchvision import datasets, transforms
        # statistics of the official training split, then a validation part carved from it
        train_full = datasets.CIFAR10("data", train=True, transform=transforms.ToTensor())
        mean = torch.zeros(3)
        for imgs, _ in DataLoader(train_full, batch_size=256):
            mean += imgs.mean(dim=(0, 2, 3))
        ds = datasets.CIFAR10("data", train=True, transform=transforms.Normalize(mean, 1.0))
        train_part, val_part = random_split(ds, [45000, 5000])
        """,
        """
        import torch
        from torch.utils.data import DataLoader
        # statistics over the whole folder, but nothing is split afterwards (a separate test set)
        loader = DataLoader(raw, batch_size=256)
        mean = torch.zeros(3)
        for imgs, _ in loader:
            mean += imgs.mean(dim=(0, 2, 3))
        full = ImageFolder(root, transform=Normalize(mean.tolist(), [0.5, 0.5, 0.5]))
        """,
        """
        import torch
        from torch.utils.data import DataLoader, random_split
        # per-image statistics (no axis 0): nothing is shared between samples
        norms = []
        for imgs, _ in DataLoader(raw, batch_size=256):
            norms.append(imgs.mean(dim=(1, 2, 3)))
        train_set, val_set = random_split(raw, [800, 200])
        """,
        """
        import torch
        # one audio clip's channel downmix in a transform: a per-sample statistic
        class AudioTransform:
            def __call__(self, audio_data):
                waveform, sr = audio_data
                if waveform.ndim == 2 and waveform.shape[0] > 1:
                    waveform = waveform.mean(dim=0, keepdim=True)
                if waveform.shape[-1] < self.window:
                    waveform = torch.cat([waveform, waveform.new_zeros(self.window - waveform.shape[-1])])
                mel = get_mel(waveform)
                mel = mel[:self.max_frames]
                return mel
        """,
        """
        from sklearn.model_selection import train_test_split
        # statistics of the split's training part (`X_tr`, whatever its name), then an
        # early-stopping slice of that part
        X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.3)
        mean, std = X_tr.mean(0), X_tr.std(0)
        X_tr = (X_tr - mean) / std
        X_te = (X_te - mean) / std
        X_fit, X_es = X_tr[:900], X_tr[900:]
        """,
    )
    INVALID = (
        """
        import torch
        from torch.utils.data import DataLoader, random_split
        from torchvision import datasets, transforms
        raw = datasets.ImageFolder("leaves", transform=transforms.ToTensor())
        loader = DataLoader(raw, batch_size=256)
        mean, std = torch.zeros(3), torch.zeros(3)
        for imgs, _ in loader:
            mean += imgs.mean(dim=(0, 2, 3)) * imgs.size(0)  # !
            std += imgs.std(dim=(0, 2, 3)) * imgs.size(0)
        mean /= len(raw)
        std /= len(raw)
        full = datasets.ImageFolder("leaves", transform=transforms.Normalize(mean.tolist(), std.tolist()))
        train_set, val_set = random_split(full, [800, 200])
        """,
        """
        import pandas as pd
        from sklearn.preprocessing import StandardScaler
        from sklearn.model_selection import train_test_split
        scaler = StandardScaler()
        df[num_cols] = scaler.fit_transform(df[num_cols])  # !
        X = df.drop(columns=["Exited"]).values
        X_train, X_val, y_train, y_val = train_test_split(X, y, test_size=0.2)
        """,
        """
        import pandas as pd
        from sklearn.preprocessing import RobustScaler
        scaled = pd.DataFrame(RobustScaler().fit_transform(features), columns=features.columns)  # !
        n = int(len(scaled) * 0.8)
        train_df, test_df = scaled.iloc[:n], scaled.iloc[n:]
        """,
        """
        from sklearn.preprocessing import MinMaxScaler
        scaler = MinMaxScaler()
        prices_scaled = scaler.fit_transform(prices)  # !
        X, y = create_sequences(prices_scaled, 30)
        X_train, X_test = X[:800], X[800:]
        """,
        """
        from sklearn.preprocessing import StandardScaler
        scaler = StandardScaler().fit(train_df[FEATURES])
        X_test = scaler.fit_transform(test_df[FEATURES])  # !
        """,
        """
        from sklearn.model_selection import train_test_split
        X = (X - X.mean(axis=0)) / X.std(axis=0)  # !
        X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2)
        """,
        """
        import numpy as np
        mean = np.mean(data, axis=0)  # !
        std = np.std(data, axis=0)
        data = (data - mean) / std
        train, test = data[:1000], data[1000:]
        """,
        """
        from sklearn.preprocessing import MinMaxScaler
        from sklearn.model_selection import train_test_split
        scaler = MinMaxScaler()
        X_scaled = scaler.fit_transform(X)  # !
        X_train, X_test, y_train, y_test = train_test_split(X_scaled, y)
        """,
        """
        from sklearn.preprocessing import StandardScaler
        scaler = StandardScaler()
        X_train = scaler.fit_transform(X_train)
        X_test = scaler.fit_transform(X_test)  # !
        """,
        """
        import torch
        from torch.utils.data import TensorDataset, random_split
        mu, sigma = features.mean(dim=0), features.std(dim=0)  # !
        features = (features - mu) / (sigma + 1e-8)
        dataset = TensorDataset(features, labels)
        train_set, val_set = random_split(dataset, [800, 200])
        """,
        """
        import torch
        from torch.utils.data import TensorDataset, random_split
        X = (X - X.min()) / (X.max() - X.min())  # !
        train_ds, val_ds = random_split(TensorDataset(X, y), [800, 200])
        """,
        """
        import numpy as np
        from sklearn.model_selection import train_test_split
        # near-miss of the split part: the parts are joined again, normalised together, re-split
        X_tr, X_te, y_tr, y_te = train_test_split(X, y)
        X_all = np.concatenate([X_tr, X_te])
        X_all = (X_all - X_all.mean(0)) / X_all.std(0)  # !
        X_tr, X_te = X_all[:n_train], X_all[n_train:]
        """,
        """
        import torch
        # near-miss of the per-item method: a loader function over the whole recording set
        def load_clips(waveforms):
            waveforms = (waveforms - waveforms.mean(dim=0)) / waveforms.std(dim=0)  # !
            train, test = waveforms[:800], waveforms[800:]
            return train, test
        """,
    )

    def check(self, ctx) -> Iterator[Report]:
        by_scope: Dict[int, List] = {}
        for call in ctx.facts.calls:
            by_scope.setdefault(id(call.function), []).append(call)
        assigns_by_scope: Dict[int, List[AssignSite]] = {}
        for a in ctx.facts.assigns:
            assigns_by_scope.setdefault(id(a.function), []).append(a)
        for key, calls in by_scope.items():
            assigns = assigns_by_scope.get(key, [])
            yield from self._check_scope(ctx, calls, assigns)

    def _check_scope(self, ctx, calls: List[CallSite], assigns: List[AssignSite]) -> Iterator[Report]:
        seen: Set[object] = set()  # normalised-name sets, (loop, data set) pairs
        for call in calls:
            stat = self._statistic(ctx, call)
            if stat is None:
                continue
            data, kind = stat
            if _per_item(ctx, call):
                continue
            over = self._loop_dataset(ctx, call, data) if kind == "stat" else None
            if over is not None:
                key = (id(over[0].node), over[1])
                found = None if key in seen else self._accumulated_then_split(ctx, calls, assigns, call, *over)
                if found is not None:
                    seen.add(key)  # `mean += ...; std += ...` in one loop: one report
                    yield found
                continue
            if kind == "fit" and HELDOUT_NAME.search(data) and not TRAIN_IN_NAME.search(data):
                yield Report(call.node, f"the scaler is fitted on `{data}`, held-out data: its statistics leak into "
                             f"the model's inputs. Fit on the training split and only `transform` the others.")
                continue
            normalized = self._normalized_names(call, data, kind, assigns)
            if normalized is None:
                continue
            key = frozenset(normalized)
            if key in seen:
                continue  # `(X - X.min()) / (X.max() - X.min())`: one report, not three
            seen.add(key)
            if TRAIN_IN_NAME.search(data):
                continue  # statistics of the training split: the right thing
            if _split_part(ctx, call, data):
                continue  # `X_tr, X_te, ... = train_test_split(...)`: already a split's part
            if HELDOUT_NAME.search(data) and kind == "stat":
                yield Report(call.node, f"normalisation statistics are computed on `{data}`, held-out data: use the "
                             f"training split's statistics for every split.")
                continue
            normalized = wrapped(assigns, call.order, normalized)
            split = later_split(ctx, calls, assigns, call.order, normalized)
            if split is not None:
                yield Report(
                    call.node,
                    f"normalisation statistics are computed on all of `{data}` before it is split "
                    f"({split}): test data leaks into training. Split first, then compute the "
                    f"statistics (or fit the scaler) on the training part only.",
                )

    @staticmethod
    def _statistic(ctx, call: CallSite):
        """(data name, "stat" | "fit") for a statistic over a whole data set, else None."""
        if call.attr in ("fit", "fit_transform") and call.receiver is not None:
            data = root_name(call.positional(0))
            quals = ctx.constructed_qualnames(call.receiver, call)
            scaler = any(q and SKLEARN_SCALERS.search(q) for q in quals) or "scaler" in (dotted(call.receiver) or "").lower()
            if scaler and data and not LABEL_NAME.search(data):
                return data, "fit"
            return None
        if call.attr not in STAT_METHODS:
            return None
        if call.qualname is not None:
            if not call.qualname.startswith(STAT_MODULES):
                return None
            data, axis = call.positional(0), call.arg(1, "axis") or call.keyword("dim")
        elif call.receiver is not None:
            data, axis = call.receiver, call.arg(0, "axis") or call.keyword("dim")
        else:
            return None
        name = root_name(data)
        if name in ctx.imports.alias:
            return None  # `np.max(...)` read as a method of the module `np`
        if not name or LABEL_NAME.search(name) or (isinstance(data, cst.Subscript) and _label_subscript(data)):
            return None
        if axis is not None and not _includes_axis_0(axis):
            return None  # per-sample or per-feature-row statistics
        return name, "stat"

    @staticmethod
    def _normalized_names(call: CallSite, data: str, kind: str, assigns: List[AssignSite]) -> Optional[Set[str]]:
        """Names holding data normalised with this statistic, or None if it normalises nothing."""
        names: Set[str] = set()
        if kind == "fit":
            names.add(data)
        stat_vars = {t.value for a in assigns if a.value is call.node for t in a.targets if isinstance(t, cst.Name)}
        # `df[cols] = ...` changes `df` itself.
        def targets(a):
            return {n for n in (root_name(t) for t in a.targets) if n}
        for a in assigns:
            if a.value is None or a.op != "=":
                continue
            facts = expression_facts(a.value)
            if a.order < call.order and id(call.node) not in facts.nodes:
                continue
            if kind == "fit" and id(call.node) in facts.nodes:
                names.update(targets(a))
                continue
            uses_stat = id(call.node) in facts.nodes or bool(stat_vars & facts.names)
            if uses_stat and data in facts.names and facts.ops & {"Subtract", "Divide"}:
                names.add(data)
                names.update(targets(a))
        return names or None

    # -- statistics accumulated over a loader ---------------------------------------------
    @staticmethod
    def _loop_dataset(ctx, call: CallSite, data: str):
        """(loop, data set name) when `data` is a variable of a `for` loop over a DataLoader
        of a named data set (or over the data set itself): `for imgs, _ in loader:
        mean += imgs.mean(...)`. None otherwise."""
        for loop in reversed(call.loops):
            node = loop.node
            if not isinstance(node, cst.For) or data not in {n.value for n in walk(node.target) if isinstance(n, cst.Name)}:
                continue
            source = node.iter
            for value, _ in ctx.constructions(source, call) if isinstance(source, (cst.Name, cst.Attribute)) else [(source, None)]:
                if isinstance(value, cst.Call) and ctx.qualname(value.func) in DATALOADERS and value.args:
                    source = value.args[0].value
                    break
            name = dotted(source) if isinstance(source, (cst.Name, cst.Attribute)) else None
            if name is None or TRAIN_IN_NAME.search(name) or HELDOUT_NAME.search(name):
                return None
            if any(isinstance(v, cst.Call) and built_as_training_split(v) for v, _ in ctx.constructions(source, call)):
                return None  # `CIFAR10(root, train=True)`: the training split's statistics
            return loop, name
        return None

    def _accumulated_then_split(self, ctx, calls, assigns, call: CallSite, loop, dataset: str) -> Optional[Report]:
        """The statistic is accumulated in the loop (`mean += ...`, `means.append(...)`),
        the result goes into normalising data (a `Normalize(mean, std)` transform, or
        `(X - mean) / std`), and that data, or the data set itself, is split afterwards."""
        totals = {root_name(t) for a in assigns if loop.contains(a.order) and a.value is not None
                  and id(call.node) in expression_facts(a.value).nodes for t in a.targets}
        totals |= {root_name(c.receiver) for c in calls if c.attr == "append" and c.receiver is not None
                   and loop.contains(c.order) and any(id(call.node) in expression_facts(a.value).nodes for a in c.node.args)}
        totals.discard(None)
        if not totals:
            return None
        # What the totals flow into (a transform, a normalised copy), not the totals
        # themselves (`mean[:3]` is no split), plus the data set.
        normalised = (wrapped(assigns, loop.end, set(totals)) - totals) | {dataset}
        split = later_split(ctx, calls, assigns, loop.end, normalised)
        if split is None:
            return None
        return Report(
            call.node,
            f"normalisation statistics are accumulated over all of `{dataset}` before it is split "
            f"({split}): test data leaks into training. Split first, then compute the statistics "
            f"on the training part only.",
        )


def _per_item(ctx, call: CallSite) -> bool:
    """The statistic is computed in a method that sees one sample at a time (or in a function
    nested in one)."""
    return any(f.name in PER_ITEM_METHODS and f.cls is not None for f in ctx.enclosing_function_chain(call.function))


def _split_part(ctx, call: CallSite, data: str) -> bool:
    """`data` is one of the parts a split returned (`X_tr, X_te, y_tr, y_te =
    train_test_split(X, y)`): statistics of it come after the split, whatever the name. (A
    held-out part by name is reported before this is asked.)"""
    defs = ctx.reaching(data, call)
    if not defs:
        return False
    for d in defs:
        value = d.whole_value if d.whole_value is not None else d.value
        if not isinstance(value, cst.Call):
            return False
        q = ctx.qualname(value.func) or (value.func.attr.value if isinstance(value.func, cst.Attribute) else "")
        if not SPLIT_FUNCS.search(q or ""):
            return False
    return True


def _includes_axis_0(axis: cst.BaseExpression) -> bool:
    """`0`, or `(0, 2, 3)`: a statistic across samples (per channel, say), not per sample."""
    items = [e.value for e in axis.elements] if isinstance(axis, (cst.Tuple, cst.List)) else [axis]
    return any(isinstance(i, cst.Integer) and i.value == "0" for i in items)


def _label_subscript(expr: cst.Subscript) -> bool:
    """`df["label"]`, `df['target']`: a label column."""
    sl = expr.slice[0].slice if len(expr.slice) == 1 else None
    value = getattr(sl, "value", None)
    return isinstance(value, cst.SimpleString) and bool(LABEL_NAME.search(value.value.strip("'\"")))


RULE = LeakyNormalization
