from __future__ import annotations

import re
from typing import Iterator, List, Optional, Set, Tuple

import libcst as cst

from trainlint.analysis.facts import AssignSite, CallSite
from trainlint.analysis.names import dotted, expression_facts
from trainlint.analysis.splits import LABEL_NAME, TRAIN_IN_NAME, carries, derives, is_heldout_name, is_split_call, later_split, root_name, scopes, wrapped
from trainlint.rules.base import Report, Rule

# Fitted preprocessing other than normalisation (TL402 owns the scalers): what each learns
# from the rows it is fitted on.
ESTIMATORS = [
    (re.compile(r"^sklearn\.decomposition\.(PCA|IncrementalPCA|KernelPCA|TruncatedSVD|FastICA|NMF|FactorAnalysis|SparsePCA)$"), "dimensionality reduction"),
    (re.compile(r"^sklearn\.(cross_decomposition\.(PLSRegression|CCA)|discriminant_analysis\.LinearDiscriminantAnalysis)$"), "a supervised projection"),
    (re.compile(r"^sklearn\.feature_selection\.(SelectKBest|SelectPercentile|SelectFpr|SelectFdr|SelectFwe|GenericUnivariateSelect|RFE|RFECV|SelectFromModel|SequentialFeatureSelector)$"), "feature selection"),
    (re.compile(r"^sklearn\.impute\.(SimpleImputer|KNNImputer|IterativeImputer)$"), "imputation"),
    (re.compile(r"^(sklearn\.preprocessing\.TargetEncoder|category_encoders\.\w*(TargetEncoder|CatBoostEncoder|LeaveOneOutEncoder|JamesSteinEncoder|MEstimateEncoder|WOEEncoder|GLMMEncoder))$"), "target encoding"),
    (re.compile(r"^imblearn\.(over_sampling|under_sampling|combine)\.\w+$"), "resampling"),
    (re.compile(r"^(umap\.UMAP|umap\.umap_\.UMAP)$"), "dimensionality reduction"),
]
FIT_METHODS = {"fit", "fit_transform", "fit_resample", "fit_sample"}


def estimator_kind(q: Optional[str]) -> Optional[str]:
    if not q:
        return None
    for pattern, kind in ESTIMATORS:
        if pattern.match(q):
            return kind
    return None


class PreprocessingFittedBeforeSplit(Rule):
    """## What it does
    Finds preprocessing that learns from data — dimensionality reduction (`PCA`,
    `TruncatedSVD`, `UMAP`), feature selection (`SelectKBest`, `RFE`, `SelectFromModel`),
    imputation (`SimpleImputer`, `KNNImputer`, `IterativeImputer`),
    target encoding (`TargetEncoder`, category_encoders) and resampling (imbalanced-learn's
    `SMOTE`, `RandomOverSampler`, `fit_resample`) — fitted on the whole data set before it
    is split (`train_test_split`, `random_split`, a K-fold splitter, slicing rows,
    `cross_val_score`), or fitted on validation/test data.

    ## Why is this bad?
    The fitted transform carries information about the held-out rows into training: PCA
    directions and imputation means computed with the test rows, features chosen because
    they correlate with the test labels, category means that include the test targets.
    Oversampling before the split is worst: SMOTE's synthetic rows interpolate between
    neighbours, so near-copies of test rows land in the training set and the test score is
    far too high. Fit on the training part only (or put the step in a `Pipeline` that the
    cross-validation refits per fold), then `transform` the others.

    Normalisation (`StandardScaler` and friends, `mean`/`std`) is TL402's; `VarianceThreshold`
    (dropping constant columns) learns next to nothing from the held-out rows and is left alone. The estimator
    must be built visibly (`PCA(...)`, `SMOTE(...)`, through names and `self.`
    attributes); a fit inside a same-module helper function or method that returns the
    transformed data is reported where the helper is called on the whole data set. An
    estimator fitted inside a `Pipeline`, and test modules, are left alone.

    ## Example
    ```python
    X_res, y_res = SMOTE().fit_resample(X, y)
    X_train, X_test, y_train, y_test = train_test_split(X_res, y_res)
    ```

    ## Use instead
    ```python
    X_train, X_test, y_train, y_test = train_test_split(X, y)
    X_train, y_train = SMOTE().fit_resample(X_train, y_train)
    ```
    """

    code = "TL406"
    name = "preprocessing-fitted-before-split"
    severity = "error"

    VALID = (
        """
        from imblearn.over_sampling import SMOTE
        from sklearn.model_selection import train_test_split
        X_train, X_test, y_train, y_test = train_test_split(X, y, stratify=y)
        X_train, y_train = SMOTE(random_state=0).fit_resample(X_train, y_train)
        """,
        """
        from sklearn.decomposition import PCA
        from sklearn.model_selection import train_test_split
        X_train, X_test, y_train, y_test = train_test_split(X, y)
        pca = PCA(n_components=50).fit(X_train)
        X_train, X_test = pca.transform(X_train), pca.transform(X_test)
        """,
        """
        from imblearn.pipeline import make_pipeline
        from imblearn.over_sampling import SMOTE
        from sklearn.model_selection import cross_val_score
        # resampling inside the pipeline: refitted on each training fold
        pipe = make_pipeline(SMOTE(), LogisticRegression())
        scores = cross_val_score(pipe, X, y, cv=5)
        """,
        """
        from sklearn.impute import SimpleImputer
        # fitted on everything, but nothing is split afterwards (a separate test file)
        imputer = SimpleImputer(strategy="median")
        X = imputer.fit_transform(X)
        model.fit(X, y)
        """,
        """
        from sklearn.decomposition import PCA
        from sklearn.model_selection import train_test_split
        # a 2-D projection for a plot: the split uses the raw features
        coords = PCA(n_components=2).fit_transform(X)
        plt.scatter(coords[:, 0], coords[:, 1])
        X_train, X_test, y_train, y_test = train_test_split(X, y)
        """,
        """
        from sklearn.feature_selection import SelectKBest, f_classif
        class Selector:
            def fit(self, X_train, y_train):
                self.sel = SelectKBest(f_classif, k=20)
                self.sel.fit(X_train, y_train)
                return self
        """,
        """
        from imblearn.over_sampling import SMOTE
        from sklearn.model_selection import train_test_split
        def balance(X, y, seed):
            return SMOTE(random_state=seed).fit_resample(X, y)
        X_train, X_test, y_train, y_test = train_test_split(X, y)
        # the helper resamples the training part only
        X_train, y_train = balance(X_train, y_train, 0)
        """,
        """
        import matplotlib.pyplot as plt
        from sklearn.decomposition import PCA
        from sklearn.model_selection import train_test_split
        def plot_embedding(X):
            coords = PCA(n_components=2).fit_transform(X)
            fig = plt.figure()
            plt.scatter(coords[:, 0], coords[:, 1])
            return fig
        # the helper hands back a figure: the split uses the raw features
        fig = plot_embedding(X)
        X_train, X_test, y_train, y_test = train_test_split(X, y)
        """,
    )
    INVALID = (
        """
        from imblearn.over_sampling import SMOTE
        from sklearn.model_selection import train_test_split
        sm = SMOTE(random_state=42)
        X_res, y_res = sm.fit_resample(X, y)  # !
        X_train, X_test, y_train, y_test = train_test_split(X_res, y_res, test_size=0.2)
        """,
        """
        import pandas as pd
        from sklearn.decomposition import PCA
        from sklearn.model_selection import train_test_split
        pca = PCA(n_components=0.95)
        features = pd.DataFrame(pca.fit_transform(df[feature_cols]))  # !
        X_train, X_val, y_train, y_val = train_test_split(features, df["label"])
        """,
        """
        import torch
        from sklearn.impute import KNNImputer
        from torch.utils.data import TensorDataset, random_split
        class Data:
            def __init__(self, X, y):
                self.imputer = KNNImputer(n_neighbors=5)
                X = self.imputer.fit_transform(X)  # !
                ds = TensorDataset(torch.tensor(X), torch.tensor(y))
                self.train_set, self.val_set = random_split(ds, [0.8, 0.2])
        """,
        """
        from sklearn.feature_selection import SelectKBest, chi2
        from sklearn.model_selection import StratifiedKFold
        selector = SelectKBest(chi2, k=100)
        selector.fit(X, y)  # !
        X_sel = selector.transform(X)
        for train_idx, test_idx in StratifiedKFold(5).split(X_sel, y):
            clf.fit(X_sel[train_idx], y[train_idx])
        """,
        """
        from imblearn.over_sampling import RandomOverSampler
        from sklearn.model_selection import cross_val_score
        X_over, y_over = RandomOverSampler().fit_resample(X, y)  # !
        print(cross_val_score(RandomForestClassifier(), X_over, y_over, cv=5).mean())
        """,
        """
        from sklearn.decomposition import TruncatedSVD
        svd = TruncatedSVD(100).fit(X_train)
        X_test_red = TruncatedSVD(100).fit_transform(X_test)  # !
        """,
        """
        from imblearn.over_sampling import SMOTE
        from sklearn.model_selection import StratifiedKFold
        def balance(X, y, seed):
            sampler = SMOTE(random_state=seed, k_neighbors=5)
            return sampler.fit_resample(X, y)
        X, y = balance(X, y, 0)  # !
        for tr, va in StratifiedKFold(n_splits=5, shuffle=True).split(X, y):
            clf.fit(X[tr], y[tr])
        """,
        """
        import torch
        from sklearn.feature_selection import SelectKBest, f_classif
        from sklearn.impute import SimpleImputer
        from torch.utils.data import TensorDataset, random_split
        class Preprocessor:
            def __init__(self, k=30):
                self.imputer = SimpleImputer(strategy="median")
                self.selector = SelectKBest(f_classif, k=k)
            def fit_transform(self, X, y):
                X = self.imputer.fit_transform(X)
                return self.selector.fit_transform(X, y)
        prep = Preprocessor(k=30)
        X_sel = prep.fit_transform(X_raw, y_raw)  # !
        dataset = TensorDataset(torch.tensor(X_sel), torch.tensor(y_raw))
        train_ds, val_ds = random_split(dataset, [0.8, 0.2])
        """,
    )

    def check(self, ctx) -> Iterator[Report]:
        if ctx.is_test_file:
            return  # test modules build random transforms and splits on purpose
        for calls, assigns in scopes(ctx):
            yield from self._check_scope(ctx, calls, assigns)

    def _check_scope(self, ctx, calls: List[CallSite], assigns: List[AssignSite]) -> Iterator[Report]:
        for call in calls:
            fitted = self._fitted(ctx, call)
            if fitted is None:
                helper = self._fitting_helper(ctx, call, 0)
                if helper is None or TRAIN_IN_NAME.search(helper[0]) or is_heldout_name(helper[0]):
                    continue
                data, kind, what = helper
                held = self._result_names(call.node, assigns)
            else:
                data, kind, what = fitted
                held = None
            if held is None and is_heldout_name(data) and not TRAIN_IN_NAME.search(data):
                yield Report(
                    call.node,
                    f"{what} is fitted on `{data}`, held-out data: it learns from the rows that should "
                    f"measure the model. Fit it on the training split and only `transform` the others"
                    + (" (and never resample held-out data)." if kind == "resampling" else "."),
                )
                continue
            if TRAIN_IN_NAME.search(data):
                continue
            if held is None:
                held = self._holding(ctx, call, data, assigns, calls)
            if not held:
                continue
            held = wrapped(assigns, call.order, held)
            split = later_split(ctx, calls, assigns, call.order, held, cross_validation=True)
            if split is None:
                continue
            if kind == "resampling":
                effect = "synthetic or duplicated copies of held-out rows end up in the training data"
            else:
                effect = "it has learned from the held-out rows, which leak into training"
            yield Report(
                call.node,
                f"{what} is fitted on all of `{data}` before it is split ({split}): {effect}. Split first, "
                f"then fit on the training part only (or put the step in a `Pipeline` that each fold refits).",
            )

    @staticmethod
    def _fitted(ctx, call: CallSite) -> Optional[Tuple[str, str, str]]:
        """(data name, kind, description) for `estimator.fit*(data, ...)` of a known estimator."""
        if call.attr not in FIT_METHODS or call.receiver is None:
            return None
        data = root_name(call.arg(0, "X"))
        if not data or LABEL_NAME.search(data):
            return None
        recv = call.receiver
        if isinstance(recv, cst.Call):
            quals = [ctx.qualname(recv.func)]
        else:
            try:
                quals = ctx.constructed_qualnames(recv, call)
            except RecursionError:
                return None
        kinds = {estimator_kind(q) for q in quals}
        if len(kinds) != 1 or None in kinds:
            return None  # unknown, or one of several candidates is something else
        kind = kinds.pop()
        name = quals[0].rsplit(".", 1)[-1]  # type: ignore[union-attr]
        return data, kind, f"`{name}` ({kind})"

    @classmethod
    def _fitting_helper(cls, ctx, call: CallSite, depth: int) -> Optional[Tuple[str, str, str]]:
        """(data name, kind, description) for a call of a same-module function or method that
        fits a known estimator on the data passed in and returns what it produced
        (`X, y = balance(X, y)` with `def balance(X, y): return SMOTE().fit_resample(X, y)`;
        a wrapper class's `fit_transform` calling `self.imputer.fit_transform(X)`): the data
        at the call site is what the estimator learns from (reported at the call: the helper
        itself may also be used correctly). Helpers calling helpers are
        followed a few levels. Left alone: a fit under an `if` in the helper (fitted only
        sometimes), a helper that splits after fitting (it is checked on its own), one that
        does not return the fitted result."""
        if depth > 2:
            return None
        try:
            fn = ctx.callee(call)
        except RecursionError:
            return None
        if fn is None or fn is call.function:
            return None
        inner_calls = ctx.calls_in(fn)
        inner_assigns = [a for a in ctx.facts.assigns if a.function is fn]
        returns = [r.value for r in ctx.returns_of(fn) if r.value is not None]
        if not returns:
            return None
        for fc in inner_calls:
            if fc.ifs:
                continue
            found = cls._fitted(ctx, fc) or cls._fitting_helper(ctx, fc, depth + 1)
            if found is None:
                continue
            param, kind, what = found
            # The data handed in, not rebound before the fit (`X = imp.fit_transform(X)` is
            # recorded before the call on its right-hand side: that one does not count).
            rebound = [a for a in ctx.reaching(param, fc) if a.whole_value is None or id(fc.node) not in expression_facts(a.whole_value).nodes]
            if param not in fn.params or rebound:
                continue
            if any(c.order > fc.order and is_split_call(ctx, c, cross_validation=True) for c in inner_calls):
                return None
            if fc.attr == "fit" and cls._fitted(ctx, fc) is not None:
                held = cls._holding(ctx, fc, param, inner_assigns, inner_calls)
            else:
                held = cls._result_names(fc.node, inner_assigns)
            held = wrapped(inner_assigns, fc.order, held)
            if not any(carries(r, fc.node) or derives(r, held) for r in returns):
                continue
            arg = ctx.argument_of(fn, call, param)
            data = root_name(arg) if arg is not None else None
            if not data or LABEL_NAME.search(data):
                return None
            return data, kind, f"{what} inside `{fn.qualname}`"
        return None

    @staticmethod
    def _result_names(node: cst.CSTNode, assigns: List[AssignSite]) -> Set[str]:
        """Names (not labels) assigned the result of the call `node`, as written or inside an expression."""
        out: Set[str] = set()
        for a in assigns:
            value = a.value if a.value is not None else a.whole_value
            if a.op == "=" and value is not None and (value is node or id(node) in expression_facts(value).nodes):
                out.update(n for n in (root_name(t) for t in a.targets) if n and not LABEL_NAME.search(n))
        return out

    @staticmethod
    def _holding(ctx, call: CallSite, data: str, assigns: List[AssignSite], calls: List[CallSite]) -> Set[str]:
        """Names that hold what the fitted estimator produced: the targets of the assignment
        of `fit_transform`/`fit_resample`'s result (`X_res, y_res = sm.fit_resample(X, y)`),
        and after a plain `fit`, the results of the estimator's later `transform` calls
        (`selector.fit(X, y)` ... `X_sel = selector.transform(X)`). Fitting alone changes no
        data: `PCA(2).fit_transform(X)` for a plot leaves `X` as it was."""
        def targets_of(node) -> Set[str]:
            return PreprocessingFittedBeforeSplit._result_names(node, assigns)

        if call.attr != "fit":
            return targets_of(call.node)
        estimators = {dotted(call.receiver)} | targets_of(call.node)  # `pca = PCA().fit(X)` returns the estimator
        estimators.discard(None)
        held: Set[str] = set()
        for c in calls:
            if c.order > call.order and c.attr == "transform" and c.receiver is not None and dotted(c.receiver) in estimators:
                held |= targets_of(c.node)
        return held


RULE = PreprocessingFittedBeforeSplit
