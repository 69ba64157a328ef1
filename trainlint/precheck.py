"""The text pre-check: what a file must contain for each rule to be able to fire at all.

Parsing with libcst is most of the linter's cost (and importing libcst most of a one-file
run), so a file is parsed only when at least one selected rule passes its pre-check here.
The table lives in this module, not on the rule classes, so the pre-check runs without
importing libcst or any rule: a file no rule can fire on costs a scan of its text.

Every entry is a *necessary* condition, read off the rule's own logic: a rule that needs
`ctx.uses_torch` cannot fire in a file that never names a PyTorch-family package; a rule
built on training events needs the words those events are calls of (`backward`, `step`).
No entry skips a file by its name: test modules are told by their content once parsed
(`analysis/pytest_modules.py`; a script named `test_*.py` is linted like any other), and
no text test can promise the parse will agree. The rule tests check that each
rule's INVALID examples pass and that linting with and without the pre-check agrees on
every example; `benchmarks/precheck_soundness.py` does the same on a real corpus.

Speed: Python's `re` scans a whole file for every `\\b`-anchored pattern, which would cost
a tenth of a parse; instead the file's words (and their `_`-separated parts) are collected
once, lazily, and most needles are set lookups or plain substring searches.
"""

from __future__ import annotations

import re
from functools import cached_property
from typing import Callable, Dict, FrozenSet, Iterable, List, Tuple

# `ctx.uses_torch`: an import whose root is one of these.
TORCH_ROOTS = frozenset({
    "torch", "lightning", "pytorch_lightning", "lightning_fabric", "transformers", "timm", "accelerate",
    "torchvision", "fastai", "skorch", "ignite", "poutyne", "deepspeed",
})
# Every ASCII byte that cannot be part of an identifier becomes a space; splitting the
# result gives the words (bytes.translate + split is about 3x faster than re.findall).
_NOT_WORD = bytes(c if (chr(c).isalnum() or c == ord("_") or c >= 128) else ord(" ") for c in range(256))


def _fold(word: bytes) -> bytes:
    """Lowercase as `re.I` matches: ASCII fast; other words case-folded (`teſt` is `test`)."""
    return word.lower() if word.isascii() else word.decode("utf-8", "replace").casefold().encode("utf-8")


class Scan:
    """One file's text, with its words and lowercase word parts computed on first use."""

    def __init__(self, text: str, path: str) -> None:
        self.text = text
        self.path = path

    @cached_property
    def lower(self) -> str:
        return self.text.lower()

    @cached_property
    def words(self) -> FrozenSet[bytes]:
        """Every run of identifier characters, UTF-8 encoded: names, attributes, keywords,
        words in strings and comments."""
        return frozenset(self.text.encode("utf-8", "replace").translate(_NOT_WORD).split())

    @cached_property
    def parts(self) -> FrozenSet[bytes]:
        """The lowercase `_`-separated parts of every word (`val_loader` -> val, loader): what
        the analysis's `(^|_)word(_|$)` name patterns match."""
        return frozenset(p for w in self.words for p in _fold(w).split(b"_"))

    @cached_property
    def mentions_torch(self) -> bool:
        """Necessary for `ctx.uses_torch` (an import rooted in one of TORCH_ROOTS)."""
        return any(r in self.text for r in TORCH_ROOTS)


Needle = Callable[[Scan], bool]


def sub(*strings: str) -> Needle:
    """One of these substrings (case as written)."""
    return lambda s: any(x in s.text for x in strings)


def isub(*strings: str) -> Needle:
    """One of these lowercase substrings in any case (`softmax`, `Softmax`, `LogSoftmax`)."""
    return lambda s: any(x in s.lower for x in strings)


def word(*words: str) -> Needle:
    """One of these whole words (`log` but not `logits`)."""
    wanted = frozenset(w.encode() for w in words)
    return lambda s: not wanted.isdisjoint(s.words)


def name_part(words: Iterable[str], suffixes: Iterable[str]) -> Needle:
    """A word part that is one of `words`, or starts with one followed by a suffix: what
    the analysis's `(^|_)(word)(_|$|suffix)` name patterns find (`val` in `x_val`,
    `testdataloader`, `my_valloaders`)."""
    exact = frozenset(w.encode() for w in words)
    starts = tuple(w.encode() + x.encode() for w in words for x in suffixes)
    return lambda s: not exact.isdisjoint(s.parts) or any(p.startswith(starts) for p in s.parts)


# Packages a project's own module is not named after: an import of one of these cannot
# bring in a model class the project summaries know (analysis/project.py).
_NOT_PROJECT = TORCH_ROOTS | frozenset({
    "__future__", "abc", "argparse", "collections", "copy", "dataclasses", "datetime", "functools",
    "glob", "itertools", "json", "logging", "math", "os", "pathlib", "pickle", "random", "re",
    "shutil", "sys", "time", "typing", "warnings", "numpy", "scipy", "sklearn", "pandas",
    "matplotlib", "seaborn", "tqdm", "PIL", "cv2", "wandb", "yaml", "h5py", "tensorboard",
})
_IMPORT_LINE = re.compile(r"^[ \t]*(?:from[ \t]+(\.+|[A-Za-z_]\w*)|import[ \t]+([A-Za-z_][\w., \t]*))", re.M)


def project_import() -> Needle:
    """An import that may name a module of the project itself: a relative import, or an
    absolute one whose top-level name is not a well-known library (`from models import Net`,
    `import utils as U`), so a model class of another module may be in play."""

    def needle(s: Scan) -> bool:
        for m in _IMPORT_LINE.finditer(s.text):
            if m.group(1) is not None:
                if m.group(1).startswith(".") or m.group(1) not in _NOT_PROJECT:
                    return True
                continue
            for part in m.group(2).split(","):
                top = part.strip().split(" ")[0].split(".")[0]
                if top and top not in _NOT_PROJECT:
                    return True
        return False

    return needle


def rx(pattern: str, flags: int = 0) -> Needle:
    compiled = re.compile(pattern, flags)
    return lambda s: compiled.search(s.text) is not None


class Precheck:
    """The file must satisfy one needle of every group in `all_of` and name a PyTorch-family
    package when `needs_torch`; when
    `any_of` is given, it must also pass one of those pre-checks (a rule with two kinds of
    finding)."""

    def __init__(
        self,
        *all_of: Tuple[Needle, ...],
        needs_torch: bool = False,
        any_of: Tuple["Precheck", ...] = (),
    ) -> None:
        self.all_of = all_of
        self.needs_torch = needs_torch
        self.any_of = any_of

    def passes(self, text: str, path: str) -> bool:
        return self.passes_scan(Scan(text, path))

    def passes_scan(self, s: Scan) -> bool:
        if self.needs_torch and not s.mentions_torch:
            return False
        if not all(any(n(s) for n in group) for group in self.all_of):
            return False
        return not self.any_of or any(p.passes_scan(s) for p in self.any_of)


# Training events (analysis/training.py) are calls named `backward`, `step`, ...
_BACKWARD = (sub("backward"),)
_STEP = (sub("step"),)


# TL301/TL302 (analysis/evaluation.py): a function named with an evaluation word
# (`def validate(`, `def run_eval_epoch(`), or a loop over data named for evaluation
# (`val_loader`, `testloader`, `loaders["dev"]`).
_EVAL_FUNCTION_PARTS = frozenset({
    "eval", "evaluate", "evaluation", "validate", "validation", "valid", "val", "test", "testing",
    "predict", "prediction", "inference", "infer",
})
_DEF_NAME = re.compile(r"def\s+(\w+)")  # no leading \b: a literal start lets `re` skip ahead


def _eval_function(s: Scan) -> bool:
    return any(not _EVAL_FUNCTION_PARTS.isdisjoint(n.casefold().split("_")) for n in _DEF_NAME.findall(s.text))


_EVAL_DATA = name_part(
    ("val", "valid", "validation", "test", "testing", "eval", "evaluation", "dev", "holdout"),
    ("loader", "dl", "data", "set", "ds", "iter"),
)
_EVAL_PASS = Precheck((_eval_function, _EVAL_DATA), needs_torch=True)
# ... or, in a module that names no PyTorch package, an evaluation function that callers in
# other modules hand a PyTorch model (analysis/project.py, `passed_models`): those callers
# import PyTorch and name the function, which the project's text shows (`called_from_torch`).
_EVAL_FUNCTION_CALLED = Precheck((_eval_function,))

# TL402: statistics of a whole data set before a split (a split function, a single slice
# `X[:800]` / `df.iloc[n:]`, not `x[:, 0]`) or of held-out data; a scaler fitted on it.
_STATISTIC = word("mean", "std", "var", "min", "max", "amin", "amax", "nanmean", "nanstd", "nanvar", "nanmin", "nanmax", "median")
_SCALER_FIT = Precheck((word("fit", "fit_transform"),), (isub("sklearn", "scaler"),))
# Inside the brackets: anything but brackets, parentheses and commas, or a bracketed or
# parenthesised group nested up to two deep (`X[:min(800, len(X))]`); line breaks allowed.
_GROUP = r"(?:\((?:[^()]|\([^()]*\))*\)|\[(?:[^\[\]]|\[[^\[\]]*\])*\])"
_SPLIT_OR_HELDOUT = (
    sub("train_test_split", "random_split", "KFold", "ShuffleSplit", "TimeSeriesSplit", "Leave"),
    rx(r"\[(?:[^\[\](),]|%s)*:(?:[^\[\](),]|%s)*\]" % (_GROUP, _GROUP)),
    name_part(("test", "val", "valid", "validation", "holdout", "dev"), ("set", "data")),
)

# TL404: a random augmentation from an augmentation library (its name appears in the text,
# imported or as an attribute) and data held out by a name, a dict key, a path or `train=False`.
_AUGMENTATION_LIBRARY = (sub("torchvision", "albumentations", "kornia", "monai"),)
_RANDOM_AUGMENTATION = (isub(
    "rand", "jitter", "jiggle", "augment", "augmix", "flip", "rotat", "affine", "perspective", "distort", "noise",
    "blur", "dropout", "cutout", "erasing", "transpose", "gray", "shuffle", "gamma", "brightness", "hue", "shift",
    "scale", "fog", "snow", "shadow", "sunflare", "tonecurve", "oneof", "someof", "oneorother", "elastic", "crop",
    "invert", "equalize", "solarize", "posterize", "sharpness", "autocontrast", "permutation", "zoomout",
),)
# analysis/splits.py's HELDOUT_PART, and `train=False`.
_HELDOUT_PARTS = ("val", "valid", "validation", "test", "testing", "eval", "evaluation", "dev", "holdout", "heldout")
_HELDOUT_DATA = name_part(_HELDOUT_PARTS, ("set", "data", "loader", "dl", "ds", "iter", "transform", "tfm", "tf", "aug"))

# TL501: `W1`, `w_2`, `weights1` (hand-written weight matrices).
_WEIGHT_MATRIX = re.compile(r"[Ww](?:eights?)?_?\d+")


def _weight_matrix(s: Scan) -> bool:
    return any(w[:1] in (b"W", b"w") and _WEIGHT_MATRIX.fullmatch(w.decode("utf-8", "replace")) for w in s.words)


# TL503: a name assigned or passed as a keyword that looks like `requires_grad` but is not;
# `requires_grad_` counts unless every use is a call of the method.
_REQUIRES_GRAD_METHOD_NOT_CALLED = re.compile(r"\brequires_grad_\b(?!\s*\()")


def _requires_grad_typo(s: Scan) -> bool:
    for w in s.words:
        if w[:1] != b"r" or b"q" not in w or w == b"requires_grad":
            continue
        squashed = w.replace(b"_", b"")
        if b"grad" not in squashed and b"gard" not in squashed:
            continue
        if w != b"requires_grad_" or _REQUIRES_GRAD_METHOD_NOT_CALLED.search(s.text):
            return True
    return False


CATALOGUE: Dict[str, Precheck] = {
    # backward and an optimizer step in one loop, the gradients never cleared
    "TL101": Precheck(_BACKWARD, _STEP, needs_torch=True),
    # gradients cleared (`zero_grad()`, `p.grad = None`, `p.grad.zero_()`) between the two
    "TL102": Precheck(_BACKWARD, _STEP, (sub("grad"),), needs_torch=True),
    # a running total of a backpropagated loss
    "TL103": Precheck(_BACKWARD, needs_torch=True),
    # the step under `% k`, the backward every iteration
    "TL104": Precheck(_BACKWARD, _STEP, (sub("%"),), needs_torch=True),
    # `clip_grad_norm_`/`clip_grad_value_` before backward or after step
    "TL105": Precheck((sub("clip_grad"),), _BACKWARD, _STEP, needs_torch=True),
    # clipping `scaler.scale(loss).backward()` gradients
    "TL106": Precheck((sub("clip_grad"),), (sub("scale"),), _BACKWARD, _STEP, needs_torch=True),
    # a scheduler (`lr_scheduler`, `*_schedule_*`, `SWALR`, one named `warmup`) stepped
    # before its optimizer
    "TL107": Precheck((isub("sched", "swalr", "warmup"),), _STEP, needs_torch=True),
    # backward on a loss computed under no_grad/inference_mode/set_grad_enabled(False)
    "TL108": Precheck((sub("no_grad", "inference_mode", "set_grad_enabled"),), _BACKWARD, needs_torch=True),
    # a backpropagated loss built from cut outputs (`.detach()`, `.data`, `.item()`,
    # `.tolist()`, `.numpy()`, `float(out)`, a copy with `torch.tensor(out)`), or a loss given
    # `requires_grad` (`loss.requires_grad = True`, `loss.requires_grad_()`)
    "TL109": Precheck(
        _BACKWARD, (word("detach", "data", "item", "tolist", "numpy", "float", "tensor", "requires_grad", "requires_grad_"),),
        needs_torch=True,
    ),
    # a step whose gradients are cleared (`zero_grad()`, `p.grad = None`) before any backward
    "TL110": Precheck(_BACKWARD, _STEP, (sub("grad"),), needs_torch=True),
    # softmax output (`softmax`, `Softmax`, `Softmax2d`) into cross-entropy; the softmax may
    # be a model's, and the loss a loss class wrapping it (a focal loss), imported from
    # another module of the project (analysis/project.py, analysis/losses.py)
    "TL201": Precheck((sub("cross_entropy", "CrossEntropyLoss"), project_import()), (isub("softmax"), project_import()), needs_torch=True),
    # sigmoid output (`sigmoid`, `Sigmoid`, `torch.special.expit`) into a with-logits loss
    "TL202": Precheck(
        (sub("binary_cross_entropy_with_logits", "BCEWithLogitsLoss"), project_import()),
        (isub("sigmoid", "expit"), project_import()),
        needs_torch=True,
    ),
    # NLL loss fed the output of a Linear/convolution layer (`Linear`, `F.linear`, `Conv2d`)
    # or of a softmax -- or a model imported from another module of the project
    "TL205": Precheck((sub("nll_loss", "NLLLoss"),), (isub("linear", "conv", "softmax"), project_import()), needs_torch=True),
    # BCE (not with logits: a necessary condition only) fed a Linear/convolution layer's output
    "TL206": Precheck((sub("binary_cross_entropy", "BCELoss"),), (isub("linear", "conv"), project_import()), needs_torch=True),
    # a ReLU (`relu`, `ReLU`, `relu6`) or dropout output into a loss that takes logits
    "TL207": Precheck(
        (sub("cross_entropy", "CrossEntropyLoss", "BCEWithLogitsLoss"),), (isub("relu", "dropout"), project_import()), needs_torch=True
    ),
    # raw scores of a with-logits model cut at 0.5 (`> 0.5`, `.gt(.5)`) or rounded
    "TL208": Precheck(
        (sub("binary_cross_entropy_with_logits", "BCEWithLogitsLoss"),), (sub(".5", "round"),), (isub("linear", "conv"), project_import()),
        needs_torch=True,
    ),
    # `log(softmax(x))` / `log(sigmoid(x))`, or `exp(x) / exp(x).sum()`
    "TL203": Precheck(
        needs_torch=True,
        any_of=(
            Precheck((isub("softmax", "sigmoid", "expit"),), (word("log"),)),
            Precheck((word("exp"),), (word("sum"),)),
        ),
    ),
    # softmax/log_softmax/softmin without `dim`
    "TL204": Precheck((isub("softmax", "softmin"),), needs_torch=True),
    "TL301": _EVAL_PASS,
    "TL302": _EVAL_PASS,
    # `model.eval()` / `model.train(False)` (any spacing, `mode=False`) inside a loop that
    # also trains
    "TL303": Precheck((sub("eval", "train"),), _BACKWARD, needs_torch=True),
    # a training metric compared with the best so far, a validation metric beside it
    "TL304": Precheck(
        (isub("best", "min_", "max_", "lowest", "highest"),),
        (isub("train"), name_part(("tr", "trn", "fit"), ())),
        (name_part(("val", "valid", "validation", "dev", "eval", "evaluation", "holdout", "validate"), ("loss", "acc", "err", "score", "metric", "f1", "auc", "loader", "dl", "ds", "set", "data")),),
    ),
    # a training DataLoader without shuffle
    "TL401": Precheck((sub("DataLoader"),), needs_torch=True),
    "TL402": Precheck(_SPLIT_OR_HELDOUT, any_of=(_SCALER_FIT, Precheck((_STATISTIC,)))),
    "TL404": Precheck(_AUGMENTATION_LIBRARY, _RANDOM_AUGMENTATION, (_HELDOUT_DATA, word("False"))),
    # a backward and an optimizer step over data named for evaluation (the loop's iterable,
    # or the argument a caller passes): TL301's data names
    # ... or a held-out set concatenated into training data (ConcatDataset, np.concatenate,
    # pd.concat, torch.cat, vstack/hstack) and evaluated on
    "TL405": Precheck(
        needs_torch=True,
        any_of=(
            Precheck((_EVAL_DATA,), _BACKWARD, _STEP),
            Precheck((word("ConcatDataset", "concatenate", "concat", "cat", "vstack", "hstack"),), (_HELDOUT_DATA,)),
            # a framework's training entry point handed held-out data
            Precheck((sub("train_data", "train_loader", "fit"),), (_EVAL_DATA,)),
        ),
    ),
    # a fit of a decomposition/selection/imputation/encoding/resampling estimator (imported from
    # one of these packages) before a split or on held-out data
    "TL406": Precheck(
        (sub("fit"),), (sub("sklearn", "imblearn", "category_encoders", "umap"),), _SPLIT_OR_HELDOUT + (_HELDOUT_DATA, sub("cross_val", "learning_curve", "validation_curve")),
    ),
    # two random samplings (`sample`, `choice`, `permutation`, `randperm`, `train_test_split`)
    # whose parts are named for training and for held-out data
    "TL408": Precheck(
        (sub("sample", "choice", "permutation", "randperm", "train_test_split"),), (_HELDOUT_DATA,), (isub("train"),)
    ),
    # a comparison with the best value so far of a metric named for (or computed over) test data
    "TL407": Precheck(
        (name_part(("test", "testing"), ("set", "data", "loader", "dl", "ds", "acc", "loss", "err", "score", "metric", "f1", "auc", "iter")),),
        (isub("best", "min_", "max_", "lowest", "highest"),),
    ),
    # a DataLoader with a tiny batch where the model uses BatchNorm
    "TL403": Precheck((sub("BatchNorm"),), (sub("DataLoader"),), needs_torch=True),
    # a layer's weight set to a constant (`nn.init.zeros_(m.weight)`, `m.weight.data.fill_(0)`),
    # or a hand-written `W1 = np.zeros((784, 128))`
    "TL501": Precheck(
        any_of=(
            Precheck((sub(".weight"),), (sub("zeros", "ones", "constant", "zero_", "fill_", "full"),)),
            Precheck((_weight_matrix,), (sub("zeros", "ones", "full"),)),
        ),
    ),
    # `Adam(..., lr=0.1)`
    "TL502": Precheck((sub("Adam"),), needs_torch=True),
    "TL503": Precheck((_requires_grad_typo,), needs_torch=True),
    # weight decay (`weight_decay=`, or AdamW's default) over a model with normalisation layers
    "TL504": Precheck((sub("weight_decay", "AdamW"),), (isub("norm"),), needs_torch=True),
    # `torch.save(...)` of a checkpoint without the optimizer
    "TL601": Precheck((word("save"),), needs_torch=True),
    # `torch.load(...)` without `weights_only=True`
    "TL602": Precheck((word("load"),), needs_torch=True),
    # a model's `load_state_dict` from a `torch.load`ed checkpoint that the file `torch.save`s
    # with an optimizer state, in a file that trains
    "TL603": Precheck((word("load_state_dict"),), (word("save"),), _BACKWARD, _STEP, needs_torch=True),
}


# Rules that can also fire on a module failing its pre-check here, when the project holds
# callers this module's text cannot show: the module's own necessary condition, and the
# names of the functions the callers must name.
PROJECT_CALLED: Dict[str, Precheck] = {"TL301": _EVAL_FUNCTION_CALLED, "TL302": _EVAL_FUNCTION_CALLED}


def eval_function_names(text: str) -> List[str]:
    """The evaluation-named functions `text` defines (a superset: methods too, and a module-
    level one under an `if` or `try`, which the callers of other modules may import)."""
    return sorted({n for n in _DEF_NAME.findall(text) if not _EVAL_FUNCTION_PARTS.isdisjoint(n.casefold().split("_"))})


def mentions_torch(data: bytes) -> bool:
    return any(r.encode() in data for r in TORCH_ROOTS)


def applicable(codes: Iterable[str], text: str, path: str) -> List[str]:
    """The codes among `codes` whose rules can fire on this file. A code without an entry
    (a rule outside the catalogue, e.g. a test's) always can."""
    s = Scan(text, path)
    return [c for c in codes if c not in CATALOGUE or CATALOGUE[c].passes_scan(s)]
