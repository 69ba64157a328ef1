"""Vocabulary: which qualified names are softmax, losses, optimizers, loaders, ... in PyTorch."""

from __future__ import annotations

import re
from typing import Optional

SOFTMAX_FUNCS = {
    "torch.softmax",
    "torch.nn.functional.softmax",
    "torch.special.softmax",
    "torch.Tensor.softmax",
}
SOFTMAX_MODULES = {"torch.nn.Softmax", "torch.nn.modules.activation.Softmax", "torch.nn.Softmax2d"}
LOG_SOFTMAX_FUNCS = {"torch.log_softmax", "torch.nn.functional.log_softmax", "torch.special.log_softmax"}
SIGMOID_FUNCS = {"torch.sigmoid", "torch.nn.functional.sigmoid", "torch.special.expit"}
SIGMOID_MODULES = {"torch.nn.Sigmoid", "torch.nn.modules.activation.Sigmoid"}

CROSS_ENTROPY_FUNCS = {"torch.nn.functional.cross_entropy"}
CROSS_ENTROPY_MODULES = {"torch.nn.CrossEntropyLoss", "torch.nn.modules.loss.CrossEntropyLoss"}

NO_GRAD_CONTEXTS = {
    "torch.no_grad",
    "torch.inference_mode",
    "torch.autograd.no_grad",
    "torch.autograd.grad_mode.no_grad",
    "torch.autograd.inference_mode",
    "torch.autograd.grad_mode.inference_mode",
}
SET_GRAD_ENABLED = {"torch.set_grad_enabled", "torch.autograd.set_grad_enabled", "torch.autograd.grad_mode.set_grad_enabled"}

CLIP_FUNCS = {
    "torch.nn.utils.clip_grad_norm_",
    "torch.nn.utils.clip_grad_value_",
    "torch.nn.utils.clip_grad_norm",
    "torch.nn.utils.clip_grad.clip_grad_norm_",
    "torch.nn.utils.clip_grad.clip_grad_value_",
}

DATALOADERS = {"torch.utils.data.DataLoader", "torch.utils.data.dataloader.DataLoader"}

# Layers whose behaviour differs between train() and eval().
MODE_DEPENDENT_LAYER = re.compile(r"(Dropout|BatchNorm|InstanceNorm|SyncBatchNorm|AlphaDropout|RReLU)")


def is_optimizer_qualname(q: Optional[str]) -> bool:
    if not q:
        return False
    if q.startswith("torch.optim.") and ".lr_scheduler" not in q and not q.endswith("swa_utils.SWALR"):
        return True
    return bool(re.search(r"(^|\.)(Adam\w*|SGD|RMSprop|Adagrad|Adadelta|Adafactor|Lion|LAMB|Lamb|LARS|AdaBelief|Ranger\w*|Novograd|Shampoo|Muon|Prodigy|SophiaG|FusedAdam|FusedLAMB|DeepSpeedCPUAdam)$", q)) or q.endswith("create_optimizer_v2") or q.endswith("create_optimizer")


def is_scheduler_qualname(q: Optional[str]) -> bool:
    return bool(q) and (".lr_scheduler." in q or "scheduler" in q.lower() or "_schedule_" in q or q.endswith("SWALR"))  # type: ignore[operator]


_OPT_NAME = re.compile(r"opt", re.I)
_NOT_OPT_NAME = re.compile(r"sched|option|adopt|opts$|optional|optuna|optimum|optimal|opt_level|optimization", re.I)


def looks_like_optimizer_name(name: str) -> bool:
    last = name.rsplit(".", 1)[-1]
    return bool(_OPT_NAME.search(last)) and not _NOT_OPT_NAME.search(last)


def looks_like_scheduler_name(name: str) -> bool:
    last = name.rsplit(".", 1)[-1].lower()
    return "sched" in last or last in ("lr_sched", "warmup", "swa_scheduler")


# A model by name: `model`, `net`, `netG`, `model_ema`, `ddp_model`, `self.classifier`;
# not `model_validate` or `modules` (a suffix must be short or a known one).
_MODEL_NAME = re.compile(
    r"^_?(?:ddp_|ema_|base_|my_|the_|raw_|unwrapped_|compiled_)?"
    r"(model|net|network|classifier|backbone|generator|discriminator|cnn|rnn|lstm|mlp|resnet|vgg|unet|student|teacher)"
    r"(?:_?(?:\d+|[gdGDab]|ema|ddp|engine|without_ddp|to_train|fp32|ft|s))?$",
    re.I,
)


def looks_like_model_name(name: str) -> bool:
    return bool(_MODEL_NAME.match(name.rsplit(".", 1)[-1]))


MODEL_CONSTRUCTOR_PREFIXES = ("torchvision.models.", "timm.create_model", "transformers.Auto", "transformers.models.")
# What those libraries build besides models: tokenizers, processors, configurations
# (`AutoTokenizer.from_pretrained(...)`); calling one encodes text, it runs no network.
_NOT_MODEL_CLASS = re.compile(r"(Tokenizer(Fast)?|Processor|FeatureExtractor|Config|GenerationConfig|Pipeline)$")


def builds_model(qualname: str) -> bool:
    """A constructor (or `Class.from_pretrained`) of a model library that builds a model."""
    if not qualname.startswith(MODEL_CONSTRUCTOR_PREFIXES):
        return False
    parts = qualname.split(".")
    cls = parts[-2] if parts[-1] in ("from_pretrained", "from_config") and len(parts) > 1 else parts[-1]
    return not _NOT_MODEL_CLASS.search(cls)
MODEL_MODULE_BASES = ("torch.nn.Module", "torch.nn.modules.module.Module", "nn.Module", "lightning", "pytorch_lightning", "transformers.PreTrainedModel")
