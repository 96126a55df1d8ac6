"""Which weights train: everything, everything but the vision tower, or LoRA adapters (via peft).

    florence-tune train --strategy freeze-vision          # what the original blog found best for DocVQA
    florence-tune train --strategy lora --lora-rank 16    # adapters only; export --merge folds them in
    florence-tune train --freeze 'model.language_model.encoder.*'   # any extra glob patterns

Freezing is ``requires_grad_(False)`` on the parameters themselves: the optimizer never receives
them, so they are bit-identical after training (tests prove it). Setting an attribute such as
``p.is_trainable = False`` does nothing — nothing reads it.
"""

from __future__ import annotations

import fnmatch
import logging
from dataclasses import dataclass
from enum import Enum

from florence_tune.config import LoraFields
from florence_tune.errors import UsageError

log = logging.getLogger(__name__)


class Strategy(str, Enum):
    FULL = "full"
    FREEZE_VISION = "freeze-vision"
    LORA = "lora"
    QLORA = "qlora"


# Every linear layer of both towers in the native Florence-2 modules: BART attention and MLP
# (q/k/v/out_proj, fc1/fc2), DaViT window/channel attention and MLP (qkv, proj, fc1/fc2), and the
# image-to-text projection.
DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2", "qkv", "proj", "image_projection")
VISION_PREFIX = "model.vision_tower."


@dataclass(frozen=True)
class LoraSettings:
    """Defaults: the --lora-* settings' own (config.py)."""

    rank: int = LoraFields.lora_rank
    alpha: int = LoraFields.lora_alpha
    dropout: float = LoraFields.lora_dropout
    targets: tuple[str, ...] = DEFAULT_LORA_TARGETS
    use_dora: bool = LoraFields.use_dora
    use_rslora: bool = LoraFields.use_rslora
    init: str = LoraFields.lora_init  # 'default' or 'gaussian' (peft's init_lora_weights)


def parse_strategy(name: str) -> Strategy:
    try:
        return Strategy(name)
    except ValueError:
        choices = ", ".join(s.value for s in Strategy)
        raise UsageError(f"unknown --strategy '{name}'; choose one of {choices}") from None


def apply(model, strategy: Strategy, *, freeze: tuple[str, ...] = (), lora: LoraSettings | None = None):
    """Return the model to train (the same object, or a peft wrapper for LoRA)."""
    if strategy is Strategy.FREEZE_VISION:
        model.model.vision_tower.requires_grad_(False)
    if freeze:
        freeze_matching(model, freeze)
    if strategy in (Strategy.LORA, Strategy.QLORA) and not is_adapter_model(model):  # adapters loaded: go on with them
        model = add_lora(model, lora or LoraSettings())
    return model


def freeze_matching(model, patterns: tuple[str, ...]) -> int:
    """Freeze parameters whose names match any glob pattern; a pattern matching nothing is an error."""
    frozen = 0
    for pattern in patterns:
        matched = [p for name, p in model.named_parameters() if fnmatch.fnmatchcase(name, pattern)]
        if not matched:
            raise UsageError(f"--freeze pattern '{pattern}' matches no parameter (names look like "
                             f"'{next(iter(dict(model.named_parameters())))}')")
        for parameter in matched:
            parameter.requires_grad_(False)
        frozen += len(matched)
    return frozen


def add_lora(model, settings: LoraSettings):
    from peft import LoraConfig, get_peft_model

    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [t for t in settings.targets if t not in present]
    if missing:
        raise UsageError(f"--lora-targets {missing} name no module of this model (it has e.g. "
                         f"{', '.join(sorted(present & set(DEFAULT_LORA_TARGETS)))})")
    config = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.targets),
        use_dora=settings.use_dora,
        use_rslora=settings.use_rslora,
        init_lora_weights=True if settings.init == "default" else settings.init,
        bias="none",
    )
    return get_peft_model(model, config)


def quantization_config():
    """4-bit NF4 loading for QLoRA; only where a CUDA GPU and bitsandbytes exist."""
    import importlib.util

    import torch

    if not torch.cuda.is_available():
        raise UsageError("--strategy qlora needs a CUDA GPU (4-bit bitsandbytes kernels); use --strategy lora on CPU")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise UsageError("--strategy qlora needs the bitsandbytes package: pip install bitsandbytes")
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16)


def is_adapter_model(model) -> bool:
    return hasattr(model, "peft_config")
