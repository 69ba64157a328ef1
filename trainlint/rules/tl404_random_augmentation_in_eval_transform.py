from __future__ import annotations

import re
from typing import Iterator, List, Optional, Set, Tuple

import libcst as cst

from trainlint.analysis.containers import dict_entries, dict_entry
from trainlint.analysis.facts import AssignSite, Site, walk
from trainlint.analysis.names import dotted
from trainlint.analysis.splits import built_as_heldout_split, built_as_training_split, is_heldout_name, is_train_name
from trainlint.rules.base import Report, Rule

# torchvision (transforms and transforms.v2): random whatever their arguments.
TORCHVISION_RANDOM = frozenset({
    "RandomCrop", "RandomResizedCrop", "RandomSizedCrop", "RandomRotation", "RandomAffine", "RandomPerspective",
    "ColorJitter", "RandAugment", "AutoAugment", "TrivialAugmentWide", "AugMix", "RandomErasing", "RandomChoice",
    "RandomOrder", "ElasticTransform", "RandomPhotometricDistort", "RandomZoomOut", "RandomIoUCrop",
    "RandomShortestSize", "RandomResize", "ScaleJitter", "RandomChannelPermutation",
})
# torchvision: a fixed operation applied with probability `p` (deterministic at p=1).
TORCHVISION_WITH_P = frozenset({
    "RandomHorizontalFlip", "RandomVerticalFlip", "RandomGrayscale", "RandomInvert", "RandomPosterize",
    "RandomSolarize", "RandomAdjustSharpness", "RandomAutocontrast", "RandomEqualize", "RandomApply",
})
# albumentations: random parameters (random at any `p` above 0).
ALBUMENTATIONS_RANDOM = frozenset({
    "RandomCrop", "RandomResizedCrop", "RandomSizedCrop", "RandomSizedBBoxSafeCrop", "ShiftScaleRotate", "Rotate",
    "SafeRotate", "Affine", "Perspective", "ElasticTransform", "GridDistortion", "OpticalDistortion",
    "RandomBrightnessContrast", "RandomBrightness", "RandomContrast", "ColorJitter", "HueSaturationValue",
    "RGBShift", "RandomGamma", "GaussNoise", "ISONoise", "MotionBlur", "CoarseDropout", "Cutout", "GridDropout",
    "RandomScale", "RandomFog", "RandomRain", "RandomShadow", "RandomSunFlare", "RandomSnow", "RandomToneCurve",
    "OneOf", "SomeOf", "OneOrOther", "RandomRotate90", "ChannelShuffle", "RandomGridShuffle",
})
# albumentations: a fixed operation applied with probability `p` (default 0.5).
ALBUMENTATIONS_WITH_P = frozenset({"HorizontalFlip", "VerticalFlip", "Flip", "Transpose", "ToGray", "InvertImg", "Equalize", "Solarize", "Posterize"})
# Containers whose elements are transforms.
COMPOSERS = frozenset({"Compose", "Sequential", "ReplayCompose", "AugmentationSequential", "SequentialCompose"})
LIBRARIES = ("torchvision.transforms", "albumentations", "kornia.augmentation", "monai.transforms")
# Test-time augmentation is random on purpose.
TTA_NAME = re.compile(r"tta|test_?time|multi_?crop|(^|_)mc(_|$)", re.I)
TRANSFORM_NAME = re.compile(r"transform|trans|tfms?|tf|augment|aug|preprocess|pipeline|compose", re.I)
HELDOUT_PATH = re.compile(r"(^|[/\\_])(val|valid|validation|test|testing|dev|eval)([/\\_.]|$)", re.I)
MAX_DEPTH = 8


def _literal_p(call: cst.Call) -> Optional[float]:
    for a in call.args:
        if a.keyword is not None and a.keyword.value in ("p", "prob", "always_apply"):
            v = a.value
            if a.keyword.value == "always_apply":
                return 1.0 if isinstance(v, cst.Name) and v.value == "True" else None
            if isinstance(v, (cst.Integer, cst.Float)):
                return float(v.evaluated_value)
            return None
    return None


def random_augmentation(q: Optional[str], call: cst.Call) -> Optional[str]:
    """The augmentation's short name when `call` builds a random transform, else None."""
    if not q or not q.startswith(LIBRARIES):
        return None
    last = q.rsplit(".", 1)[-1]
    p = _literal_p(call)
    if p is not None and p <= 0:
        return None  # switched off
    if q.startswith("torchvision.transforms"):
        if last in TORCHVISION_RANDOM:
            return last
        if last in TORCHVISION_WITH_P:
            if last == "RandomApply":
                return last if p is None or p < 1 else None
            # RandomHorizontalFlip(p), RandomGrayscale(p), RandomInvert(p): `p` first;
            # RandomPosterize(bits, p), RandomSolarize(threshold, p), RandomAdjustSharpness(factor, p): second.
            pos = [a.value for a in call.args if a.keyword is None]
            index = 0 if last in ("RandomHorizontalFlip", "RandomVerticalFlip", "RandomGrayscale", "RandomInvert", "RandomAutocontrast", "RandomEqualize") else 1
            if p is None and len(pos) > index and isinstance(pos[index], (cst.Integer, cst.Float)):
                p = float(pos[index].evaluated_value)
            return last if p is None or 0 < p < 1 else None
        return None
    if q.startswith("albumentations"):
        if last in ALBUMENTATIONS_RANDOM:
            return last
        if last in ALBUMENTATIONS_WITH_P:
            return last if p is None or p < 1 else None
        return None
    if q.startswith("kornia.augmentation"):
        if last.startswith("Random") or last == "ColorJitter" or last == "ColorJiggle":
            return last if p is None or p > 0 else None
        return None
    if q.startswith("monai.transforms") and re.match(r"Rand[A-Z]", last):
        return last if p is None or p > 0 else None
    return None


class RandomAugmentationInEvalTransform(Rule):
    """## What it does
    Finds random data augmentation (`RandomCrop`, `RandomResizedCrop`,
    `RandomHorizontalFlip`, `ColorJitter`, `RandAugment`, `AutoAugment`,
    `TrivialAugmentWide`, `RandomErasing`, albumentations' `HorizontalFlip`,
    `ShiftScaleRotate`, `RandomBrightnessContrast`, ..., kornia's `Random*`, MONAI's `Rand*`)
    in the transform of validation or test data: a `Compose` assigned to a name like
    `val_transform`/`test_tf`, the `"val"`/`"test"` entry of a transforms dict, or the
    `transform=` of a data set that is held out by its name, by `train=False` /
    `split="val"`, or by its folder (`ImageFolder(".../val", ...)`).

    ## Why is this bad?
    Evaluation must measure the model on the data as it is. With random crops, flips or
    colour jitter every evaluation sees different images: validation scores are noisy from
    epoch to epoch (so early stopping and checkpoint selection follow noise), biased
    (usually pessimistic), and not comparable with anyone else's. The usual cause is the
    training transform reused for the test set.

    The transform is followed through variables, `self.` attributes, dict entries
    (`data_transforms["val"]`), lists and `+`; a transform built by a helper function is not
    followed (helpers usually branch on a `train` flag). Test-time augmentation (a transform or
    data set named with `tta`/`test_time`, even on a test folder or `train=False`), a flip with
    `p=1`, a training split (`train=True`) and test modules are left alone.

    ## Example
    ```python
    transform = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.ToTensor()])
    testset = torchvision.datasets.CIFAR10(root, train=False, transform=transform)
    ```

    ## Use instead
    ```python
    test_transform = transforms.Compose([transforms.ToTensor()])
    testset = torchvision.datasets.CIFAR10(root, train=False, transform=test_transform)
    ```
    """

    code = "TL404"
    name = "random-augmentation-in-eval-transform"
    severity = "error"

    VALID = (
        """
        import torchvision.transforms as T
        from torchvision import datasets
        train_tf = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor()])
        val_tf = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor()])
        train_ds = datasets.ImageFolder("data/train", transform=train_tf)
        val_ds = datasets.ImageFolder("data/val", transform=val_tf)
        """,
        """
        from torchvision import transforms
        data_transforms = {
            "train": transforms.Compose([transforms.RandomResizedCrop(224), transforms.ToTensor()]),
            "val": transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor()]),
        }
        image_datasets = {x: datasets.ImageFolder(os.path.join(data_dir, x), data_transforms[x]) for x in ["train", "val"]}
        """,
        """
        import albumentations as A
        # test-time augmentation is random on purpose
        tta_transforms = A.Compose([A.HorizontalFlip(), A.Normalize()])
        test_hflip = A.Compose([A.HorizontalFlip(p=1.0), A.Normalize()])  # deterministic
        """,
        """
        import torchvision
        import torchvision.transforms as transforms
        transform = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.ToTensor()])
        trainset = torchvision.datasets.CIFAR10(root="./data", train=True, transform=transform)
        """,
        """
        import torchvision
        import torchvision.transforms as T
        from torchvision.datasets import ImageFolder
        # test-time augmentation given to held-out data: averaged over views on purpose
        tta_transform = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor()])
        tta_test_set = ImageFolder("data/pets/test", transform=tta_transform)
        cifar_test = torchvision.datasets.CIFAR10("data", train=False, transform=tta_transform)
        """,
        """
        from torchvision import transforms
        def build_transform(is_train):
            if is_train:
                return transforms.Compose([transforms.RandomResizedCrop(224), transforms.ToTensor()])
            return transforms.Compose([transforms.Resize(256), transforms.ToTensor()])
        val_transform = build_transform(False)  # a helper: not followed
        val_set = Flowers(root, split="val", transform=build_transform(False))
        """,
        """
        import torchvision.transforms as T
        class Data:
            def __init__(self):
                self.train_transform = T.Compose([T.RandomCrop(28), T.ToTensor()])
                self.test_transform = T.Compose([T.ToTensor()])
            def test_dataset(self):
                return MNIST(self.root, train=False, transform=self.test_transform)
        """,
        """
        import pytest
        from torchvision import transforms
        def test_dataset_applies_its_transform(tmp_path):
            ds = ImageDataset(tmp_path, transform=transforms.RandomCrop(8))
            assert ds[0][0].shape[-1] == 8
        """,
        """
        import torch
        from torchvision import datasets, transforms
        data = datasets.ImageFolder("leaves", transform=transforms.Compose([transforms.Resize(224), transforms.ToTensor()]))
        train_set, val_set = torch.utils.data.random_split(data, [800, 200])
        """,
    )
    INVALID = (
        """
        import torchvision.transforms as T
        from torchvision.datasets import ImageFolder
        # the TTA transform is deterministic; the random one reaches the test folder
        tta_transform = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor()])
        aug = T.Compose([T.RandomResizedCrop(224), T.ToTensor()])
        tta_views = [tta_transform]
        test_set = ImageFolder("data/pets/test", transform=aug)  # !
        """,
        """
        import torchvision
        import torchvision.transforms as transforms
        transform = transforms.Compose([
            transforms.RandomCrop(32, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
        ])
        trainset = torchvision.datasets.CIFAR10(root="./data", train=True, transform=transform)
        testset = torchvision.datasets.CIFAR10(root="./data", train=False, transform=transform)  # !
        """,
        """
        from torchvision import transforms as T
        val_transform = T.Compose([
            T.Resize(256),
            T.RandomResizedCrop(224),  # !
            T.ToTensor(),
        ])
        """,
        """
        from torchvision import transforms
        data_transforms = {
            "train": transforms.Compose([transforms.RandomResizedCrop(224), transforms.ToTensor()]),
            "val": transforms.Compose([transforms.Resize(256), transforms.ColorJitter(0.2, 0.2), transforms.ToTensor()]),  # !
        }
        """,
        """
        import albumentations as A
        from albumentations.pytorch import ToTensorV2
        augs = [A.HorizontalFlip(), A.ShiftScaleRotate()]
        class LeafData:
            def __init__(self, root):
                self.train_aug = A.Compose([A.Resize(256, 256), *augs, ToTensorV2()])
                self.valid = LeafDataset(root, "valid.csv", transform=self.train_aug)  # !
        """,
        """
        from torchvision import datasets, transforms
        base = [transforms.Resize(224), transforms.ToTensor()]
        augment = [transforms.RandomHorizontalFlip(p=0.5), transforms.RandAugment()]
        tf = transforms.Compose(augment + base)
        val_dataset = datasets.ImageFolder("/data/imagenet/val", tf)  # !
        """,
        """
        import albumentations as A
        train_tfms = A.Compose([A.RandomResizedCrop(256, 256), A.HorizontalFlip(), A.Normalize()])
        valid_ds = CassavaDataset(valid_df, train_tfms)  # !
        """,
        """
        import torch
        from torchvision import datasets, transforms
        def load_data(folder, ratio=0.8):
            tf = transforms.Compose([transforms.Resize(256), transforms.RandomCrop(224), transforms.ToTensor()])
            data = datasets.ImageFolder(root=folder, transform=tf)
            n = int(ratio * len(data))
            data, data_val = torch.utils.data.random_split(data, [n, len(data) - n])  # !
            return data, data_val
        """,
        """
        from torchvision import datasets, transforms
        def load_testing(root_path, batch_size):
            transform = transforms.Compose([transforms.Resize(256), transforms.RandomCrop(224), transforms.ToTensor()])
            data = datasets.ImageFolder(root=root_path, transform=transform)  # !
            return torch.utils.data.DataLoader(data, batch_size=batch_size)
        """,
        """
        import torch.utils.data as data
        import torchvision.datasets as datasets
        import torchvision.transforms as transforms

        # a builder named for test data (with parameters, but this is no pytest module)
        def test_loader(path, batch_size=16):
            tf = transforms.Compose([transforms.RandomResizedCrop(224), transforms.ToTensor()])
            return data.DataLoader(datasets.ImageFolder(path, tf), batch_size=batch_size)  # !
        """,
    )

    def check(self, ctx) -> Iterator[Report]:
        if ctx.is_test_file:
            return  # test modules build random transforms and splits on purpose
        reported: Set[int] = set()
        # 1. A transform named for held-out data, or the held-out entry of a dict.
        for a in ctx.facts.assigns:
            if a.op != "=" or a.value is None:
                continue
            for t in a.targets:
                name = _target_name(t)
                if name and _heldout_transform_name(name):
                    yield from self._report_augs(ctx, a.value, a, f"`{name}`", reported)
        for node, site in self._dict_displays(ctx):
            for key, value in dict_entries(node) or []:
                if key is not None and is_heldout_name(key) and not TTA_NAME.search(key):
                    if self._is_transform(ctx, value, site):
                        yield from self._report_augs(ctx, value, site, f"the `{key!r}` entry", reported)
        # 2. The `transform=` of a held-out data set.
        for call in ctx.facts.calls:
            tf = _transform_argument(call)
            if tf is None:
                continue
            if self._named_for_tta(ctx, call, tf):
                continue  # test-time augmentation on held-out data is the point of TTA
            owner = self._heldout_owner(ctx, call)
            if owner is None:
                continue
            augs = [(n, label) for n, label in self._augs(ctx, tf, call, 0) if id(n) not in reported]
            if not augs:
                continue
            reported.update(id(n) for n, _ in augs)
            names = ", ".join(sorted({f"`{label}`" for _, label in augs}))
            yield Report(
                tf,
                f"the transform of {owner} applies random augmentation ({names}): every evaluation sees "
                f"differently augmented images, so its scores are noisy and biased. Give held-out data "
                f"a deterministic transform (resize, center crop, to tensor, normalise).",
            )

        # 3. A held-out part split off a data set built with random augmentation.
        for call in ctx.facts.calls:
            if not (call.qualname or "").endswith(("random_split", "train_test_split")):
                continue
            found = self._heldout_split_targets(ctx, call)
            data = call.positional(0)
            if not found or data is None:
                continue
            held, assign = found
            augs = []
            # Resolved from the assignment: in `ds, val = random_split(ds, ...)` the `ds` read is
            # the earlier one, not the name this statement binds.
            for value, site in ctx.resolve(data, assign):
                if isinstance(value, cst.Call):
                    tf = _transform_of_call(ctx, value)
                    if tf is not None:
                        augs.extend(self._augs(ctx, tf, site, 0))
            if not augs:
                continue  # (a split is its own place to fix: not merged with the reports above)
            names = ", ".join(sorted({f"`{label}`" for _, label in augs}))
            yield Report(
                call.node,
                f"`{held}` is split off a data set whose transform applies random augmentation ({names}): "
                f"the held-out part is evaluated on augmented images, so its scores are noisy and biased. "
                f"Build the held-out part from a copy of the data set with a deterministic transform.",
            )

    @staticmethod
    def _heldout_split_targets(ctx, call) -> Optional[Tuple[str, AssignSite]]:
        """The held-out name among the targets the split is unpacked into, when nothing later
        gives it a transform of its own (`val_set.dataset.transform = ...`)."""
        for a in ctx.facts.assigns:
            if a.whole_value is not call.node:
                continue
            held = [t.value for t in a.targets if isinstance(t, cst.Name) and is_heldout_name(t.value)]
            if not held:
                return None
            for other in ctx.facts.assigns:
                for t in other.targets:
                    if isinstance(t, cst.Attribute) and t.attr.value in ("transform", "transforms") and (dotted(t) or "").split(".")[0] in held:
                        return None
            return held[0], a
        return None

    # -- where held-out transforms are --------------------------------------------------
    @staticmethod
    def _dict_displays(ctx) -> List[Tuple[cst.BaseExpression, Site]]:
        out = []
        for a in ctx.facts.assigns:
            if a.op == "=" and a.value is not None and dict_entries(a.value) is not None:
                out.append((a.value, a))
        return out

    def _is_transform(self, ctx, value, site) -> bool:
        """The entry is a transform (not a data set or a loader built with one)."""
        if isinstance(value, (cst.List, cst.Tuple)):
            return True
        if isinstance(value, cst.Call):
            q = ctx.qualname(value.func) or ""
            return q.startswith(LIBRARIES)
        return isinstance(value, (cst.Name, cst.Attribute)) and bool(TRANSFORM_NAME.search(dotted(value) or ""))

    @staticmethod
    def _named_for_tta(ctx, call, tf) -> bool:
        """The transform (`transform=tta_transform`) or the data set it builds (`tta_test_set =
        ...`) is named for test-time augmentation: however held out the data is, its random
        views are deliberate."""
        if isinstance(tf, (cst.Name, cst.Attribute)) and TTA_NAME.search((dotted(tf) or "").rsplit(".", 1)[-1]):
            return True
        for a in ctx.facts.assigns:
            if a.value is call.node and a.op == "=":
                return any(TTA_NAME.search(n) for n in (_target_name(t) for t in a.targets) if n)
        return False

    def _heldout_owner(self, ctx, call) -> Optional[str]:
        """How the data set built by `call` is held out (for the message), or None."""
        node = call.node
        if built_as_training_split(node):
            return None
        func = ctx.module.code_for_node(node.func)
        if built_as_heldout_split(node):
            return f"the held-out split `{func}(...)`"
        for a in ctx.facts.assigns:
            if a.value is node and a.op == "=":
                names = [n for n in (_target_name(t) for t in a.targets) if n]
                held = [n for n in names if is_heldout_name(n) and not TTA_NAME.search(n)]
                if held and len(held) == len(names):
                    return f"`{held[0]}`"
                if any(is_train_name(n) for n in names) or held:
                    return None  # named for training data (or for both)
        for a in ctx.facts.assigns:
            if a.op == "=" and a.value is not None and not isinstance(a.value, cst.Call):
                for key, value in dict_entries(a.value) or []:
                    if value is node and key is not None and is_heldout_name(key) and not TTA_NAME.search(key):
                        return f"the `{key!r}` data"
        fn = call.function
        # (a pytest module never gets here: the rule skips test modules as a whole)
        if fn is not None and is_heldout_name(fn.name) and not TTA_NAME.search(fn.name):
            return f"the data built by `{fn.name}()`"
        first = call.positional(0) if call.positional(0) is not None else call.keyword("root")
        if first is not None:
            for s in _strings(first):
                if HELDOUT_PATH.search(s) and not re.search(r"train", s, re.I):
                    return f"the data under `{s}`"
        return None

    # -- the augmentations a transform applies ------------------------------------------
    def _report_augs(self, ctx, value, site, where: str, reported: Set[int]) -> Iterator[Report]:
        for node, label in self._augs(ctx, value, site, 0):
            if id(node) in reported:
                continue
            reported.add(id(node))
            yield Report(
                node,
                f"`{label}` is random augmentation in the transform of held-out data ({where}): every "
                f"evaluation sees differently augmented images, so validation/test scores are noisy and "
                f"biased. Use deterministic transforms (resize, center crop, to tensor, normalise) there.",
            )

    def _augs(self, ctx, expr, at: Site, depth: int) -> List[Tuple[cst.Call, str]]:
        """The random augmentation calls `expr` applies, followed through names, `self.`
        attributes, dict entries, composers, lists and `+`; [] when unknown."""
        if depth > MAX_DEPTH or expr is None:
            return []
        out: List[Tuple[cst.Call, str]] = []
        if isinstance(expr, cst.Call):
            q = ctx.qualname(expr.func)
            label = random_augmentation(q, expr)
            if label is not None:
                return [(expr, label)]
            last = (q or "").rsplit(".", 1)[-1]
            if q is not None and last in COMPOSERS and (q.startswith(LIBRARIES) or q == "torch.nn.Sequential"):
                for a in expr.args:
                    out.extend(self._augs(ctx, a.value, at, depth + 1))
            return out
        if isinstance(expr, (cst.List, cst.Tuple)):
            for el in expr.elements:
                out.extend(self._augs(ctx, el.value, at, depth + 1))
            return out
        if isinstance(expr, cst.BinaryOperation) and isinstance(expr.operator, cst.Add):
            return self._augs(ctx, expr.left, at, depth + 1) + self._augs(ctx, expr.right, at, depth + 1)
        if isinstance(expr, cst.Subscript):
            for value, site in dict_entry(ctx, expr, at):
                out.extend(self._augs(ctx, value, site, depth + 1))
            return out
        if isinstance(expr, (cst.Name, cst.Attribute)) and ctx.qualname(expr) is None:
            if isinstance(expr, cst.Name) and _bound_conditionally(ctx, expr.value, at):
                return []
            for value, site in ctx.resolve(expr, at):
                if value is not expr:
                    out.extend(self._augs(ctx, value, site, depth + 1))
        return out


# torchvision data sets that take the transform positionally: `ImageFolder(root, transform)`,
# `CIFAR10(root, train, transform)`.
_POSITIONAL_TRANSFORM = {"ImageFolder": 1, "DatasetFolder": 3, "CIFAR10": 2, "CIFAR100": 2, "MNIST": 2, "FashionMNIST": 2, "KMNIST": 2, "EMNIST": 3}


def _transform_argument(call) -> Optional[cst.BaseExpression]:
    return _transform_in(call.node, call.qualname)


def _transform_of_call(ctx, node: cst.Call) -> Optional[cst.BaseExpression]:
    return _transform_in(node, ctx.qualname(node.func))


def _transform_in(node: cst.Call, q: Optional[str]) -> Optional[cst.BaseExpression]:
    """The transform a data set construction is given (`transform=`, or positionally for
    torchvision's own data sets)."""
    pos = []
    for a in node.args:
        if a.star:
            return None
        if a.keyword is not None and a.keyword.value in ("transform", "transforms"):
            return a.value
        if a.keyword is None:
            pos.append(a.value)
    q = q or ""
    if q.startswith("torchvision.datasets."):
        index = _POSITIONAL_TRANSFORM.get(q.rsplit(".", 1)[-1])
        if index is not None and index < len(pos):
            return pos[index]
        return None
    # A project's own data set: a positional argument named like a transform
    # (`LeafDataset(val_df, train_transform)`), or written out as a `Compose(...)`.
    named = [p for p in pos if isinstance(p, (cst.Name, cst.Attribute)) and TRANSFORM_NAME.search((dotted(p) or "").rsplit(".", 1)[-1])]
    composed = [p for p in pos if isinstance(p, cst.Call) and (dotted(p.func) or "").rsplit(".", 1)[-1] in COMPOSERS]
    found = named + composed
    return found[0] if len(found) == 1 else None


def _bound_conditionally(ctx, name: str, at: Site) -> bool:
    """More than one assignment of `name` reaches `at` through branches (`if train: tf = ...
    else: tf = ...`): which one holds cannot be told."""
    sites = [a for a in ctx.facts.assigns if a.function is at.function and a.order < at.order
             and any(isinstance(t, cst.Name) and t.value == name for t in a.targets)]
    return len(sites) > 1 and any(s.ifs != at.ifs for s in sites)


def _target_name(t) -> Optional[str]:
    if isinstance(t, cst.Name):
        return t.value
    if isinstance(t, cst.Attribute) and isinstance(t.value, cst.Name) and t.value.value == "self":
        return t.attr.value
    return None


def _heldout_transform_name(name: str) -> bool:
    return is_heldout_name(name) and bool(TRANSFORM_NAME.search(name)) and not TTA_NAME.search(name)


def _strings(expr) -> List[str]:
    """String literals in a path expression: `"data/val"`, `os.path.join(root, "val")`, f-strings."""
    out = []
    for n in walk(expr):
        if isinstance(n, cst.SimpleString) and isinstance(n.evaluated_value, str):
            out.append(n.evaluated_value)
        elif isinstance(n, cst.FormattedStringText):
            out.append(n.value)
    return out


RULE = RandomAugmentationInEvalTransform
